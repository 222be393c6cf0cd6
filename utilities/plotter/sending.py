"""The plotter's job: move every finished plot to the harvester with the most room.

One pass: find finished plots (oldest first); read every harvester's export over SSH in
parallel; plan which plot goes where (pure, counting plots already planned for a harvester);
then send, up to ``max_concurrent_transfers`` at once. A source is deleted only after the
receiver answered OK and only if it is still the very file that was sent. Each plot is claimed
with its own ``flock``, so a manual ``--send`` and a cron run never send the same plot twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from utilities.config import Settings
from utilities.errors import ConfigError, LockBusy, PlotFileError, UsageError
from utilities.harvester_export import HarvesterSnapshot
from utilities.locking import exclusive_lock
from utilities.notify import Notification, Notifier
from utilities.plot_finder import FinishedPlot, finished_plots
from utilities.plotter.harvester_choice import choose_harvester, usable_reason
from utilities.remote import RemoteError, connect, fetch_exports
from utilities.settings.farm import HarvesterTarget
from utilities.state import StateDB, TransferRecord
from utilities.transfer.channel import ParamikoExec
from utilities.transfer.protocol import TransferError
from utilities.transfer.sender import TransferResult, delete_source_after_ok, send_plot

log = logging.getLogger(__name__)

ProgressFactory = Callable[[FinishedPlot, str], Callable[[int, int], None] | None]


@dataclass(frozen=True)
class PlannedTransfer:
    plot: FinishedPlot
    harvester: str
    slot: int  # which port slice this transfer uses


@dataclass
class PlotterOutcome:
    skipped: list[str] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    planned: list[PlannedTransfer] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)
    results: list[tuple[PlannedTransfer, TransferResult]] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(1 for _, r in self.results if not r.ok)


# -- pure planning ------------------------------------------------------------------------------


def plan_transfers(
    plots: Sequence[FinishedPlot],
    snapshots: dict[str, HarvesterSnapshot],
    priority: str,
    max_concurrent: int,
    only: str | None = None,
) -> tuple[list[PlannedTransfer], list[str]]:
    """Assign plots (oldest first) to harvesters; plots with nowhere to go are listed by name.

    A harvester takes at most as many plots per pass as its receive drive has free slots (the
    drive only changes when its drive_manager.py runs), and the harvester with the most room
    after the plots already planned for it gets the next one.
    """
    in_flight: dict[str, int] = {}
    planned: list[PlannedTransfer] = []
    unplaced: list[str] = []
    for index, plot in enumerate(plots):
        eligible = {
            name: snap
            for name, snap in snapshots.items()
            if _receive_slots(snap) - in_flight.get(name, 0) >= 1
        }
        choice = choose_harvester(eligible, priority, in_flight, only=only)
        if choice is None:
            unplaced.append(plot.name)
            continue
        in_flight[choice.name] = in_flight.get(choice.name, 0) + 1
        planned.append(PlannedTransfer(plot, choice.name, index % max_concurrent))
    return planned, unplaced


def _receive_slots(snapshot: HarvesterSnapshot) -> int:
    """Plots the receive drive can take now: free slots, plus old OG plots it may replace."""
    drive = snapshot.drive(snapshot.receive_drive)
    if drive is None:
        return 0
    replaceable = drive.plots_og if snapshot.extra.get("receive_replaces_old_plots") else 0
    return drive.free_slots + replaceable


def destination_name(plot: FinishedPlot, portable_prefix: bool) -> str:
    """The plot's name on the harvester: pool plots get "portable." in front when configured
    (the header, not the name, says whether a plot is a pool plot)."""
    if portable_prefix and plot.header.kind == "pool" and not plot.name.startswith("portable."):
        return f"portable.{plot.name}"
    return plot.name


def port_slice(base: int, count: int, slots: int, slot: int) -> tuple[int, int]:
    """Disjoint port ranges for concurrent transfers of one plotter: (first port, how many)."""
    width = max(1, count // slots)
    return base + slot * width, width


# -- effects ------------------------------------------------------------------------------------


def fetch_snapshots(settings: Settings, db: StateDB, notifier: Notifier, outcome: PlotterOutcome) -> dict[str, HarvesterSnapshot]:
    """Every enabled harvester's export, read in parallel; unusable ones are logged and skipped.

    An unreachable harvester is notified once (until it answers again), not on every run.
    """
    plotter = settings.plotter
    targets = [t for t in settings.farm.harvesters if t.enabled]
    answers = fetch_exports(settings.farm)
    now = time.time()
    usable: dict[str, HarvesterSnapshot] = {}
    for target in targets:
        answer = answers[target.name]
        reason = str(answer) if isinstance(answer, RemoteError) else usable_reason(
            answer, now, plotter.transfer.max_export_age_minutes * 60
        )
        reachable = not isinstance(answer, RemoteError)
        newly_down = db.alert_transition(f"harvester_unreachable:{target.name}", not reachable, reason or "")
        if newly_down:
            notifier.send(
                Notification(
                    event="harvester_unreachable",
                    subject=f"{settings.hostname}: harvester {target.name} cannot be reached",
                    short_text=f"{settings.hostname}: harvester {target.name} skipped: {reason}",
                    context={"hostname": settings.hostname, "harvester": target.name, "reason": reason},
                )
            )
        if reason:
            outcome.unreachable[target.name] = reason
            # A warning (stderr: cron mail) only when it starts; the log file has every run.
            log.log(logging.WARNING if newly_down else logging.INFO, "harvester %s skipped: %s", target.name, reason)
        else:
            assert isinstance(answer, HarvesterSnapshot)
            usable[target.name] = answer
    return usable


class PlotSender:
    """Sends planned transfers, records them and deletes sources that arrived intact."""

    def __init__(self, settings: Settings, db: StateDB, notifier: Notifier, progress: ProgressFactory | None = None) -> None:
        self.settings = settings
        self.db = db
        self.notifier = notifier
        self.progress = progress
        self._db_lock = threading.Lock()  # one sqlite connection shared by the worker threads

    def send(self, planned: PlannedTransfer) -> TransferResult:
        target = next(t for t in self.settings.farm.harvesters if t.name == planned.harvester)
        lock = self.settings.state_path / "sending" / f"{planned.plot.name}.lock"
        started = time.time()
        try:
            with exclusive_lock(lock, f"a transfer of {planned.plot.name}"):
                if not planned.plot.path.exists():  # sent by another run meanwhile
                    return TransferResult(False, planned.plot.name, "source is gone (sent by another run)")
                result = self._send_locked(planned, target)
        except LockBusy as busy:
            log.info("%s", busy)
            return TransferResult(False, planned.plot.name, "another run is sending it")
        self._record(planned, target, result, started)
        return result

    def _send_locked(self, planned: PlannedTransfer, target: HarvesterTarget) -> TransferResult:
        plotter = self.settings.plotter
        transfer = plotter.transfer
        first_port, ports = port_slice(transfer.port_base, transfer.port_count, transfer.max_concurrent_transfers, planned.slot)
        try:
            client = connect(target, self.settings.farm.ssh)
        except RemoteError as exc:
            return TransferResult(False, planned.plot.name, str(exc))
        try:
            progress = self.progress(planned.plot, target.name) if self.progress else None
            log.info("sending %s to %s (port %d..)", planned.plot.path, target.name, first_port)
            result = send_plot(
                ParamikoExec(client),
                target.receive_script,
                planned.plot.path,
                target.data_host or target.host,
                first_port,
                port_count=ports,
                idle_timeout=transfer.idle_timeout_seconds,
                progress_cb=progress,
                nc="nc" if transfer.stream_with == "nc" else None,
                dest_name=destination_name(planned.plot, transfer.portable_prefix),
            )
        finally:
            client.close()
        if result.ok:
            try:
                delete_source_after_ok(planned.plot.path, result)
            except TransferError as exc:
                log.error("%s", exc)
                return TransferResult(False, result.name, f"arrived, but the source was kept: {exc}",
                                      size=result.size, seconds=result.seconds)
            log.info("sent %s to %s: %d bytes in %.1f s (%.0f MB/s); source deleted",
                     result.name, target.name, result.size, result.seconds, result.mb_per_s)
        return result

    def _record(self, planned: PlannedTransfer, target: HarvesterTarget, result: TransferResult, started: float) -> None:
        with self._db_lock:
            self.db.record_transfer(
                TransferRecord(
                    plot=planned.plot.name, harvester=target.name, destination=None,
                    bytes=result.size if result.ok else 0, started_at=started,
                    seconds=result.seconds, ok=result.ok, reason=None if result.ok else result.reason,
                )
            )
            failures = 0 if result.ok else self.db.failures_since_success(planned.plot.name)
        if not result.ok:
            # Cron mails whatever reaches stderr: a plot that keeps failing warns on its first
            # failure and when the farmer is alerted, and is logged quietly in between.
            alert_at = self.settings.plotter.transfer.failures_before_alert
            loud = failures in (1, alert_at)
            log.log(logging.WARNING if loud else logging.INFO, "sending %s to %s failed (%d in a row%s): %s",
                    planned.plot.name, target.name, failures, "" if loud else ", reported before", result.reason)
        if result.ok:
            self.notifier.send(
                Notification(
                    event="plot_transferred",
                    subject=f"{self.settings.hostname}: {result.name} moved to {target.name}",
                    short_text=f"{result.name} -> {target.name} ({result.mb_per_s:.0f} MB/s)",
                    context={"hostname": self.settings.hostname, "plot": result.name, "harvester": target.name,
                             "bytes": result.size, "seconds": round(result.seconds, 1),
                             "mb_per_second": round(result.mb_per_s, 1)},
                )
            )
        elif failures == self.settings.plotter.transfer.failures_before_alert:
            self.notifier.send(
                Notification(
                    event="transfer_failed",
                    subject=f"{self.settings.hostname}: {planned.plot.name} failed {failures} times",
                    short_text=f"{self.settings.hostname}: sending {planned.plot.name} failed {failures} times: {result.reason}",
                    context={"hostname": self.settings.hostname, "plot": planned.plot.name, "harvester": target.name,
                             "failures": failures, "last_reason": result.reason},
                )
            )


def select_plots(settings: Settings, only_path: Path | None, outcome: PlotterOutcome) -> list[FinishedPlot]:
    """The finished plots of the configured directories, or the one plot named by --send."""
    if only_path is None:
        plots, skipped = finished_plots(settings.plotter.plot_directories)
    else:
        if not only_path.is_file():
            raise PlotFileError(f"--send: {only_path} is not a file")
        plots, skipped = finished_plots([str(only_path.parent)])
        skipped = [line for line in skipped if line.startswith(f"{only_path}:")]
        plots = [p for p in plots if p.path.resolve() == only_path.resolve()]
        if not plots:
            why = skipped[0].partition(": ")[2] if skipped else "not a finished plot name (.plot/.plot2)"
            raise PlotFileError(f"--send: {only_path} cannot be sent: {why}")
    for line in skipped:
        log.info("not sending %s", line)
    outcome.skipped = skipped
    return plots


def check_targets(settings: Settings, only_harvester: str | None) -> None:
    """Before any plot is looked at: is there anywhere to send to? These are mistakes in the
    config (exit 2) or in --to (exit 2), not failed transfers (exit 1, "try again next run")."""
    if not settings.farm.harvesters:
        raise ConfigError("farm.harvesters is empty: configure at least one harvester to send plots to")
    if only_harvester is not None and only_harvester not in {h.name for h in settings.farm.harvesters}:
        known = ", ".join(h.name for h in settings.farm.harvesters)
        raise UsageError(f"--to: {only_harvester!r} is not a harvester in farm.harvesters ({known})")


def run_plotter_pass(
    settings: Settings,
    db: StateDB,
    notifier: Notifier,
    *,
    only_path: Path | None = None,
    only_harvester: str | None = None,
    dry_run: bool = False,
    progress: ProgressFactory | None = None,
) -> PlotterOutcome:
    outcome = PlotterOutcome()
    check_targets(settings, only_harvester)
    plots = select_plots(settings, only_path, outcome)
    if not plots:
        log.debug("no finished plots")
        return outcome
    snapshots = fetch_snapshots(settings, db, notifier, outcome)
    transfer = settings.plotter.transfer
    outcome.planned, outcome.unplaced = plan_transfers(
        plots, snapshots, settings.plotter.priority, transfer.max_concurrent_transfers, only_harvester
    )
    # Warn (cron mail) when plots start waiting for room, not again every run while they wait.
    newly_waiting = db.alert_transition("plotter_plots_without_room", bool(outcome.unplaced), ", ".join(outcome.unplaced))
    if outcome.unplaced:
        log.log(logging.WARNING if newly_waiting else logging.INFO, "no harvester has room now for %d plot(s): %s",
                len(outcome.unplaced), ", ".join(outcome.unplaced))
    if dry_run or not outcome.planned:
        return outcome
    sender = PlotSender(settings, db, notifier, progress)
    with ThreadPoolExecutor(max_workers=transfer.max_concurrent_transfers, thread_name_prefix="send") as pool:
        for planned, result in zip(outcome.planned, pool.map(sender.send, outcome.planned), strict=True):
            outcome.results.append((planned, result))
    return outcome
