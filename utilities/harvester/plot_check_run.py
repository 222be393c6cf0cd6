"""``drive_manager.py --check-plots [DRIVE|all]``: one budgeted, low-priority pass of plot checks.

The order of a run: resolve the drive argument (an unknown drive is an error before anything
else), take the check lock (its own, not the minute pass's: the minute pass must never wait for
a check), drop to idle I/O priority and the lowest CPU priority, list the plot files, plan
(``plot_check.plan_checks``), then check plot after plot until the plan or the budget runs out,
recording each result as it comes (a run killed midway keeps what it found). Plots that newly
fail are alerted once, together, at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import psutil

from utilities.config import Settings
from utilities.errors import LockBusy, PlotFileError
from utilities.harvester.drives import DriveLocation, discover_drives, find_drive
from utilities.harvester.plot_check import (
    CANNOT_CHECK,
    FAILING,
    READ_ERROR,
    RESULT_LABELS,
    CheckOutcome,
    PlotFile,
    budget_allows,
    cannot_check_reason,
    plan_checks,
    summarise,
)
from utilities.harvester.plot_check_prover import check_plot
from utilities.harvester.plot_check_store import forget, load_records, save_result
from utilities.locking import exclusive_lock
from utilities.notify import Notification, Notifier
from utilities.plots import is_counted_plot_name, read_plot_header
from utilities.state import CachedHeader, StateDB

log = logging.getLogger(__name__)

ALERT_PREFIX = "plot_check:"
EVENT = "plot_check_failed"


def lock_path(settings: Settings) -> Path:
    return settings.state_path / "plot_check.lock"


def lower_priority() -> list[str]:
    """Idle I/O class and nice 19 for this process (and the checker children it forks).

    Idle I/O is served only when the disk has nothing else to do, so the harvester's own
    lookups go first (honoured by the BFQ and mq-deadline schedulers; ``none`` ignores it).
    Returns what could not be set, to be said once; a check still runs without it.
    """
    missed = []
    try:
        psutil.Process().ionice(psutil.IOPRIO_CLASS_IDLE)
    except (psutil.Error, OSError, AttributeError, ValueError) as exc:
        missed.append(f"idle I/O priority ({exc})")
    try:
        os.nice(max(0, 19 - os.nice(0)))
    except OSError as exc:
        missed.append(f"nice 19 ({exc})")
    return missed


def list_plots(locations: Sequence[DriveLocation]) -> tuple[list[PlotFile], list[str]]:
    """Every plot file on the drives, in natural drive order, and the directories listed."""
    plots: list[PlotFile] = []
    listed: list[str] = []
    for location in locations:
        for directory in location.plot_dirs:
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError as exc:
                log.warning("cannot list %s: %s", directory, exc)
                continue
            listed.append(directory)
            for entry in entries:
                if not is_counted_plot_name(entry.name):
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                plots.append(PlotFile(entry.path, location.name, st.st_size, st.st_mtime_ns))
    return plots, listed


def _header_facts(plot: PlotFile, headers: Mapping[str, CachedHeader]) -> tuple[str | None, int]:
    """(format, compression) from the minute pass's header cache if current, else the header."""
    cached = headers.get(plot.path)
    if cached is not None and cached.size == plot.size and cached.mtime_ns == plot.mtime_ns and cached.format:
        return cached.format, cached.compression
    if not plot.name.endswith(".plot"):  # .plot2 / .gplot: the name says enough
        return None, 0
    header = read_plot_header(plot.path)
    return header.format, header.compression


def check_one(plot: PlotFile, headers: Mapping[str, CachedHeader], challenges: int, full_proofs: int | None) -> CheckOutcome:
    """Check one plot, or say why it cannot be checked (never as a failure)."""
    try:
        fmt, compression = _header_facts(plot, headers)
    except PlotFileError as exc:
        return CheckOutcome(READ_ERROR, 0, challenges, 0.0, f"unreadable header: {exc}")
    reason = cannot_check_reason(plot.name, fmt, compression)
    if reason is not None:
        return CheckOutcome(CANNOT_CHECK, 0, 0, 0.0, reason)
    return check_plot(plot.path, challenges, full_proofs)


def result_line(plot: PlotFile, outcome: CheckOutcome) -> str:
    """One line per plot: result, drive, proofs, time, bytes read, name; the error on its own line."""
    label = RESULT_LABELS[outcome.result].upper()
    proofs = f"{outcome.proofs}/{outcome.challenges} proofs" if outcome.result != CANNOT_CHECK else "-"
    read = f"{outcome.read_bytes / 1e6:.1f} MB read" if outcome.read_bytes is not None else ""
    line = f"{label:<13} {plot.drive:<10} {proofs:<16} {outcome.seconds:7.2f} s  {read:<13} {plot.name}"
    if outcome.error:
        line += f"\n{'':14}{outcome.error}"
    return line


def summary_text(summary: dict[str, Any]) -> str:
    if not summary["plots_checked"]:
        left = summary["left_for_next_run"]
        return f"no plot checked ({left} left for the next run: budget reached)" if left else "no plot to check"
    per_plot = summary["bytes_read_per_plot"]
    read = f", {per_plot / 1e6:.1f} MB read per plot" if per_plot is not None else ""
    rate = summary["plots_per_minute"]
    text = (
        f"{summary['plots_checked']} plots checked in {summary['seconds']:.1f} s"
        f"{f' ({rate} plots/minute{read})' if rate is not None else ''}: "
        f"{summary['ok']} ok, {summary['failing']} failing, {summary['cannot_check']} cannot check"
    )
    if summary["left_for_next_run"]:
        text += f"; {summary['left_for_next_run']} left for the next run (budget reached)"
    return text


def _alert(settings: Settings, db: StateDB, checked: Sequence[tuple[PlotFile, CheckOutcome]], challenges: int) -> list[str]:
    """Latch one alert per plot; one notification for every plot that newly fails this run."""
    newly = []
    for plot, outcome in checked:
        if outcome.result == CANNOT_CHECK:
            continue
        failing = outcome.result in FAILING
        if db.alert_transition(ALERT_PREFIX + plot.path, failing, outcome.error or RESULT_LABELS[outcome.result]) and failing:
            newly.append((plot, outcome))
    if not newly:
        return []
    host = settings.hostname
    rows = [{"plot": p.name, "path": p.path, "drive": p.drive, "label": RESULT_LABELS[o.result],
             "proofs": o.proofs, "challenges": o.challenges, "error": o.error} for p, o in newly]
    names = ", ".join(r["plot"] for r in rows)
    Notifier(settings.notifications).send(Notification(
        event=EVENT,
        subject=f"{host}: {len(rows)} plot(s) failed their check",
        short_text=f"{host}: plot(s) failing their check: {names}",
        context={"hostname": host, "plots": rows, "challenges": challenges},
        template="plot_check_failed",
    ))
    return [p.path for p, _ in newly]


def run_plot_checks(args: argparse.Namespace, settings: Settings, db: StateDB, out: TextIO = sys.stdout) -> int:
    """The --check-plots action. Exit status 1 when a plot checked in this run failed, else 0."""
    cfg = settings.harvester.plot_checks
    challenges = args.challenges or cfg.challenges
    budget_seconds = (args.budget_minutes or cfg.budget_minutes) * 60
    wanted = args.check_plots
    named = wanted != "all"
    locations = discover_drives(settings.harvester.drive_discovery)
    if named:
        locations = [find_drive(locations, wanted)]
    try:
        with exclusive_lock(lock_path(settings), "drive_manager.py --check-plots"):
            return _checks(args, settings, db, locations, named, challenges, budget_seconds, out)
    except LockBusy as busy:
        print(f"{busy}: nothing checked", file=out)
        return 0


def _checks(
    args: argparse.Namespace, settings: Settings, db: StateDB, locations: Sequence[DriveLocation],
    named: bool, challenges: int, budget_seconds: float, out: TextIO,
) -> int:
    cfg = settings.harvester.plot_checks
    for missed in lower_priority() if cfg.idle_priority else ():
        log.warning("plot checks run without %s", missed)
    started = time.monotonic()
    plots, listed = list_plots(locations)
    records = load_records(db)
    headers = db.load_headers()
    present, listed_dirs = {p.path for p in plots}, set(listed)
    forget(db, [path for path in records if path not in present and os.path.dirname(path) in listed_dirs])
    plan = plan_checks(plots, records, time.time(), cfg.recheck_days, named)
    checked: list[tuple[PlotFile, CheckOutcome]] = []
    for plot in plan:
        if not budget_allows(time.monotonic() - started, budget_seconds, len(checked)):
            break
        outcome = check_one(plot, headers, challenges, cfg.full_proofs)
        save_result(db, plot, outcome, time.time())
        checked.append((plot, outcome))
        log.info("checked %s: %s (%d/%d proofs, %.2f s)%s", plot.path, outcome.result, outcome.proofs,
                 outcome.challenges, outcome.seconds, f": {outcome.error}" if outcome.error else "")
        if not args.json:
            print(result_line(plot, outcome), file=out, flush=True)
    summary = summarise(checked, time.monotonic() - started, len(plan) - len(checked))
    summary.update(skipped_recently_checked=len(plots) - len(plan), challenges=challenges)
    alerted = _alert(settings, db, checked, challenges)
    if args.json:
        print(json.dumps({"summary": summary, "plots": [
            {"path": p.path, "plot": p.name, "drive": p.drive, "size": p.size, "result": o.result,
             "proofs": o.proofs, "challenges": o.challenges, "seconds": round(o.seconds, 3),
             "error": o.error, "read_bytes": o.read_bytes, "alerted": p.path in alerted}
            for p, o in checked]}, indent=2), file=out)
    else:
        print(summary_text(summary), file=out)
        if summary["skipped_recently_checked"]:
            print(f"{summary['skipped_recently_checked']} plots checked within {cfg.recheck_days:g} days were "
                  "skipped (name a drive to check them again)", file=out)
    return 1 if summary["failing"] else 0
