"""move_local_plots.py's run: finished local plots onto the drive drive_manager.py reserved.

One run, in order: disk usage alerts for the temp and output directories; remove part files
an earlier (killed) run left; find finished plots (the plotter's finder: exact names, valid
header, no writer); re-check the reserved drive (still mounted, still online); then move the
plots one at a time, each claimed with the same per-plot lock plot_manager.py uses, so a plot
in a directory both scripts watch is never copied twice at once. A plot that failed
``failures_before_alert`` times is held back (one ``local_move_failed`` alert) until the
farmer runs ``--clear-error``. The decisions and the records they rest on (the reservation,
failures, part files) are ``local_move_records.py``'s; this module does the effects, and
``run_move_local_plots`` is the script's command line.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from utilities.config import Settings
from utilities.errors import ConfigError, LockBusy, UsageError
from utilities.harvester.drives import current_mounts
from utilities.harvester.local_move_records import (
    SCHEMA,
    HeldPlot,
    LocalDrive,
    clean_recorded_parts,
    clear_errors,
    held_plots,
    parse_reservation,
    part_recorder,
    record_failure,
    record_move,
    reservation_problem,
)
from utilities.harvester.usage_alerts import DirectoryUsage, measure_usage, usage_alert_active
from utilities.locking import exclusive_lock
from utilities.notify import Notification, Notifier
from utilities.plot_finder import FinishedPlot, finished_plots
from utilities.progress import bar_per_phase, quarter_marks_per_phase
from utilities.settings.local_moves import LOCAL_RECEIVE_KEY
from utilities.state import StateDB
from utilities.transfer.copy_worker import Progress, Reader, pread_into
from utilities.transfer.local_copy import FAILED, MOVED, NO_ROOM, MoveOptions, MoveResult, move_plot

log = logging.getLogger(__name__)

# A reservation older than this means drive_manager.py's cron is not running: still used
# after the re-checks, but the farmer is told.
STALE_RESERVATION_SECONDS = 15 * 60
# Alert-table key latching "plots wait for a usable drive", so cron warns once, not every run.
BLOCKED_KEY = "local_moves_blocked"


# -- the run --------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    lines: list[tuple[int, str]] = field(default_factory=list)  # (logging level, text)
    moved: list[MoveResult] = field(default_factory=list)
    failed: list[MoveResult] = field(default_factory=list)
    held: list[HeldPlot] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # plots left where they are (no usable drive)
    usage: list[tuple[DirectoryUsage, bool]] = field(default_factory=list)
    problem: str | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.problem else 0

    def say(self, text: str, level: int = logging.INFO) -> None:
        self.lines.append((level, text))


def check_usage(settings: Settings, db: StateDB, notifier: Notifier, outcome: RunOutcome, dry_run: bool) -> None:
    """Usage alerts with hysteresis: the alert table remembers whether each one is active."""
    lm = settings.harvester.local_moves
    for usage in measure_usage(lm.temp_directories, lm.plot_directories):
        rows = db.query("SELECT active FROM alerts WHERE key = ?", (usage.alert_key,))
        was_active = bool(rows[0][0]) if rows else False
        active = usage_alert_active(was_active, usage.used_percent, lm.usage_critical_percent, lm.usage_clear_percent)
        outcome.usage.append((usage, active))
        detail = (f"{usage.role} directory {usage.directory} is {usage.used_percent:.1f}% full "
                  f"({usage.free_bytes / 1e9:.1f} GB free; alert at {lm.usage_critical_percent:g}%)")
        if dry_run:
            continue
        if db.alert_transition(usage.alert_key, active, detail):
            outcome.say(f"ALERT: {detail}", logging.WARNING)
            notifier.send(Notification(
                event="disk_usage",
                subject=f"{settings.hostname}: {usage.directory} is {usage.used_percent:.0f}% full",
                short_text=f"{settings.hostname}: {detail}",
                context={"hostname": settings.hostname, "detail": detail, "directory": usage.directory, "role": usage.role,
                         "used_percent": round(usage.used_percent, 1), "free_bytes": usage.free_bytes,
                         "critical_percent": lm.usage_critical_percent, "clear_percent": lm.usage_clear_percent},
            ))


def usable_drive(settings: Settings, db: StateDB) -> tuple[LocalDrive | None, str | None]:
    """The reserved drive after re-checking it now, or None and why not."""
    drive = parse_reservation(db.get(LOCAL_RECEIVE_KEY))
    if drive is None:
        return None, ("no local plot drive is reserved: drive_manager.py's cron pass reserves one "
                      "(with harvester.local_moves.enabled), unless no drive has room")
    problem = reservation_problem(drive, list(db.offline_drives()), current_mounts())
    if problem is None and not drive.receive_dir.is_dir():
        problem = f"{drive.receive_dir} is not a directory"
    if problem is not None:
        return None, f"{problem}; waiting for drive_manager.py to reserve another"
    age = time.time() - drive.decided_at
    if age > STALE_RESERVATION_SECONDS:
        log.warning("the local drive was reserved %.0f minutes ago: is drive_manager.py's cron running?", age / 60)
    return drive, None


def _move_one(
    settings: Settings, db: StateDB, notifier: Notifier, plot: FinishedPlot, drive: LocalDrive,
    progress: Callable[[FinishedPlot], Progress | None] | None, read: Reader, committed_in: Path | None = None,
) -> MoveResult | None:
    """Move one plot under its claim lock; None when another process has it or it is gone.

    ``committed_in``: a killed run already renamed this plot into place there; finishing it
    there (hash comparison, then the source goes) keeps the farm from holding it twice.
    """
    lm = settings.harvester.local_moves
    options = MoveOptions(
        stall_seconds=lm.stall_seconds, verify=lm.verify_after_copy,
        bytes_per_second=lm.max_mb_per_second * 1e6, may_replace_og=drive.replace,
    )
    lock = settings.state_path / "sending" / f"{plot.name}.lock"
    started = time.time()
    try:
        with exclusive_lock(lock, f"a move of {plot.name}"):
            if not plot.path.exists():
                return None
            dest = committed_in or drive.receive_dir
            log.info("moving %s to %s", plot.path, dest)
            result = move_plot(plot.path, dest, options, kind=plot.header.kind,
                               progress_cb=progress(plot) if progress else None,
                               on_part=part_recorder(db, plot), read=read)
    except LockBusy as busy:
        log.info("%s", busy)
        return None
    record_move(db, plot, result, started)
    if result.replaced is not None:
        db.record_replaced(str(result.replaced), f"move_local_plots.py: room for {plot.name}")
    if result.status == FAILED:
        failures, alert = record_failure(db, plot, result.reason, lm.failures_before_alert)
        # The run's FAILED line is the warning; this records the count in the log file.
        log.info("moving %s failed (%d of %d): %s", plot.name, failures, lm.failures_before_alert, result.reason)
        if alert:
            notifier.send(Notification(
                event="local_move_failed",
                subject=f"{settings.hostname}: moving {plot.name} failed {failures} times",
                short_text=(f"{settings.hostname}: moving {plot.name} failed {failures} times, no longer retried "
                            f"(move_local_plots.py --clear-error {plot.name}): {result.reason}"),
                context={"hostname": settings.hostname, "plot": plot.name, "source": str(plot.path),
                         "destination": str(drive.receive_dir), "failures": failures, "last_reason": result.reason,
                         "retry_with": f"move_local_plots.py --clear-error {plot.name}"},
            ))
    return result


def run_local_moves(
    settings: Settings,
    db: StateDB,
    notifier: Notifier,
    *,
    dry_run: bool = False,
    progress: Callable[[FinishedPlot], Progress | None] | None = None,
    read: Reader = pread_into,
) -> RunOutcome:
    """One run (the caller holds the run lock). Never deletes a source that was not moved."""
    lm = settings.harvester.local_moves
    if not lm.enabled:
        raise ConfigError("harvester.local_moves.enabled is false: set it to true and list the plotter's output "
                          "directories in harvester.local_moves.plot_directories")
    db.ensure_tables(SCHEMA)
    outcome = RunOutcome()
    check_usage(settings, db, notifier, outcome, dry_run)
    committed: dict[str, Path] = {}
    if not dry_run:
        removed, committed = clean_recorded_parts(db)
        for part in removed:
            outcome.say(f"removed {part} left by a copy that was killed")
    plots, skipped = finished_plots(lm.plot_directories)
    for line in skipped:
        log.info("not moving %s", line)
    held = held_plots(db)
    outcome.held = [held[p.name] for p in plots if p.name in held]
    ready = [p for p in plots if p.name not in held]
    for h in outcome.held:
        outcome.say(f"held after {h.failures} failures: {h.source} (last: {h.last_reason}); "
                    f"retry with: move_local_plots.py --clear-error {h.plot}")
    if not ready:
        log.debug("no finished local plots to move")
        if not dry_run:
            db.alert_transition(BLOCKED_KEY, False)
        return outcome
    drive, problem = usable_drive(settings, db)
    if drive is None:
        outcome.problem = problem
        outcome.waiting = [str(p.path) for p in ready]
        _blocked(db, outcome, f"{len(ready)} plot(s) stay where they are: {problem}", dry_run)
        return outcome
    for index, plot in enumerate(ready):
        if dry_run:
            replace = " (may replace one old OG plot)" if drive.replace and plot.header.kind == "pool" else ""
            outcome.say(f"would move {plot.path} ({plot.header.kind}, {plot.size} bytes) to "
                        f"{drive.receive_dir} ({drive.name}){replace}")
            continue
        result = _move_one(settings, db, notifier, plot, drive, progress, read, committed.get(plot.name))
        if result is None:
            continue
        if result.status == MOVED:
            outcome.moved.append(result)
            note = f"; {result.reason}" if result.reason else ""
            replaced = f"; replaced old OG plot {result.replaced}" if result.replaced else ""
            outcome.say(
                f"moved {plot.path} to {result.destination}: {result.size} bytes in {result.seconds:.1f} s "
                f"({result.mb_per_s:.0f} MB/s), xxh3-128 {result.hexdigest}, "
                f"{'source deleted' if result.source_deleted else 'source kept'}{replaced}{note}"
            )
        elif result.status == FAILED:
            outcome.failed.append(result)
            outcome.say(f"FAILED {plot.path}: {result.reason} (source kept, retried next run)", logging.WARNING)
            rest = len(ready) - index - 1
            if result.stalled and rest:
                # A disk that stopped answering will stall the next copy too, and each stalled
                # copy leaves a thread waiting on it: the rest wait for the next run.
                outcome.say(f"{rest} more plot(s) wait for the next run after the stall")
                break
        else:  # NO_ROOM or DRIVE_GONE: the drive is the problem; the rest wait for the next run
            what = "is full" if result.status == NO_ROOM else "is not usable"
            outcome.problem = f"the local plot drive {drive.name} {what}: {result.reason}"
            outcome.waiting = [str(p.path) for p in ready[index:]]
            _blocked(db, outcome, f"{outcome.problem}; {len(outcome.waiting)} plot(s) kept where they are "
                                  f"until drive_manager.py reserves a drive with room", dry_run)
            break
    if outcome.problem is None and not dry_run:
        db.alert_transition(BLOCKED_KEY, False)
    return outcome


def _blocked(db: StateDB, outcome: RunOutcome, text: str, dry_run: bool) -> None:
    """Plots wait for a usable drive: a warning (cron mail) when that starts, then the log only."""
    newly = not dry_run and db.alert_transition(BLOCKED_KEY, True, text)
    outcome.say(text, logging.WARNING if newly or dry_run else logging.INFO)


# -- command line ---------------------------------------------------------------------------------


def terminal_progress(plot: FinishedPlot) -> Progress:
    """A tqdm bar per phase on a terminal."""
    return bar_per_phase(lambda phase: f"{'copy  ' if phase == 'copy' else 'verify'} {plot.name[:40]}")


def logged_progress(plot: FinishedPlot) -> Progress:
    """For cron runs: a log line at every quarter of each phase, so a slow copy shows in the log."""
    return quarter_marks_per_phase(lambda phase, percent, done, total: log.info(
        "%s: %s %d%% (%d of %d bytes)", plot.name, phase, percent, done, total))


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run like Ctrl-C, so every ``finally`` removes its part file."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_move_local_plots(args: argparse.Namespace, settings: Settings, config_path: Path) -> int:
    with StateDB(settings.database_path) as db:
        if args.clear_error is not None:
            cleared = clear_errors(db, args.clear_error)
            if not cleared and args.clear_error == "all":
                print("no plot has recorded failures: nothing to clear")
                return 0
            if not cleared:
                known = ", ".join(held_plots(db)) or "none"
                raise UsageError(f"--clear-error: {args.clear_error!r} has no recorded failures (held plots: {known})")
            for name in cleared:
                print(f"cleared the failures of {name}: it is tried again on the next run")
            return 0
        progress = terminal_progress if sys.stderr.isatty() else logged_progress
        with exclusive_lock(settings.state_path / "move_local_plots.lock", "move_local_plots.py run"), _signals_interrupt():
            outcome = run_local_moves(settings, db, Notifier(settings.notifications), dry_run=args.dry_run,
                                      progress=progress)
    if args.dry_run:
        for usage, active in outcome.usage:
            state = "ALERT" if active else "ok"
            print(f"{usage.role} {usage.directory}: {usage.used_percent:.1f}% used ({state})")
    # On a terminal (or for --dry-run) every line is shown; from cron only warnings reach
    # stderr (and cron mail), the rest goes to the log file.
    show = args.dry_run or sys.stdout.isatty()
    for level, text in outcome.lines:
        if show:
            print(text)
            log.info("%s", text)
        else:
            log.log(level, "%s", text)
    return outcome.exit_code
