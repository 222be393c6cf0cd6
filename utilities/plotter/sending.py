"""The plotter's job: move every finished plot to the harvester with the most room.

One pass: find finished plots (oldest first); read every harvester's export over SSH in
parallel; plan which plots fit at all (pure: a harvester takes what its receive set has room
for); then send them with up to ``max_concurrent_transfers`` receiver sessions at once, over one
SSH connection per harvester (``dispatch.py`` decides where each session goes, ``send_loop.py``
runs the workers).  A source is deleted only after the receiver answered OK and only if it is
still the very file that was sent.  Each plot is claimed with its own ``flock``, so a manual
``--send`` and a cron run never send the same plot twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from utilities.config import Settings
from utilities.errors import ConfigError, PlotFileError, UsageError
from utilities.harvester_export import HarvesterSnapshot
from utilities.notify import Notification, Notifier
from utilities.plot_finder import FinishedPlot, finished_plots
from utilities.plotter.connections import Connections
from utilities.plotter.delivery import PlotSender, ProgressFactory
from utilities.plotter.dispatch import BUSY, BUSY_RETRY_SECONDS, Dispatch, HarvesterSlots, verdict
from utilities.plotter.forget_parts import forget_gone_sources, present_names
from utilities.plotter.harvester_choice import (
    choose_harvester,
    receive_room,
    room_for_plots,
    session_capacity,
    speaks_resume,
    speaks_sessions,
    usable_reason,
)
from utilities.plotter.send_loop import SendLoop
from utilities.remote import RemoteError, fetch_exports
from utilities.settings.farm import HarvesterTarget
from utilities.state import StateDB
from utilities.transfer.channel import ExecFn
from utilities.transfer.sender import TransferResult
from utilities.transfer.session import PlotChannel

log = logging.getLogger(__name__)

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
    # Plots that had room but wait for the next run (harvesters busy, or their connection lost).
    waiting: dict[str, str] = field(default_factory=dict)
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

    A harvester takes at most as many plots per pass as its receive set has room for (the set
    only changes when its drive_manager.py runs), and the harvester with the most room after the
    plots already planned for it gets the next one.  The run sends the planned plots in this
    order, but where each goes is decided as sessions open (``dispatch.py``).
    """
    in_flight: dict[str, int] = {}
    planned: list[PlannedTransfer] = []
    unplaced: list[str] = []
    for index, plot in enumerate(plots):
        eligible = {
            name: snap
            for name, snap in snapshots.items()
            if receive_room(snap) - in_flight.get(name, 0) >= 1
        }
        choice = choose_harvester(eligible, priority, in_flight, only=only)
        if choice is None:
            unplaced.append(plot.name)
            continue
        in_flight[choice.name] = in_flight.get(choice.name, 0) + 1
        planned.append(PlannedTransfer(plot, choice.name, index % max_concurrent))
    return planned, unplaced


def harvester_slots(
    snapshots: dict[str, HarvesterSnapshot], priority: str, only: str | None = None
) -> list[HarvesterSlots]:
    """What each usable harvester takes this run, for the dispatch (pure)."""
    slots = []
    for name, snap in sorted(snapshots.items()):
        if only is not None and name != only:
            continue
        ceiling = session_capacity(snap) + (len(snap.receiving) if speaks_sessions(snap) else 0)
        slots.append(HarvesterSlots(name, receive_room(snap), room_for_plots(snap, priority),
                                    session_capacity(snap), ceiling))
    return slots


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
    if not dry_run:
        drop_parts_of_gone_sources(settings, db)
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
    send_planned(settings, db, notifier, snapshots, outcome, only_harvester, progress)
    return outcome


def drop_parts_of_gone_sources(settings: Settings, db: StateDB) -> None:
    """Ask harvesters to drop the kept parts of plots whose source this plotter no longer has
    (``forget_parts.py``); connects only when there is one."""
    present = present_names(settings.plotter.plot_directories)
    if present is None:
        return
    with Connections(settings.farm.ssh) as connections:
        forget_gone_sources(db, present, {h.name: h for h in settings.farm.harvesters}, connections.exec_for)


def send_planned(
    settings: Settings,
    db: StateDB,
    notifier: Notifier,
    snapshots: dict[str, HarvesterSnapshot],
    outcome: PlotterOutcome,
    only_harvester: str | None = None,
    progress: ProgressFactory | None = None,
    *,
    exec_for: Callable[[HarvesterTarget], ExecFn] | None = None,
    retry: float = BUSY_RETRY_SECONDS,
) -> None:
    """Send the planned plots with up to max_concurrent_transfers sessions, over one SSH
    connection per harvester (``exec_for`` starts commands elsewhere: tests run receivers here).

    Fills ``outcome.results`` (every plot that was tried, not those answered busy) and lists
    the plots left over as waiting (busy, unreachable) or unplaced (no room after all).
    """
    transfer = settings.plotter.transfer
    # A plot whose last attempt failed goes back to that harvester first: its part may be there.
    resume_at = {
        p.plot.name: h for p in outcome.planned
        if transfer.resume and (h := db.last_failed_harvester(p.plot.name)) is not None
        and h in snapshots and speaks_resume(snapshots[h])
    }  # fmt: skip
    dispatch: Dispatch[FinishedPlot] = Dispatch.of(
        [p.plot for p in outcome.planned], harvester_slots(snapshots, settings.plotter.priority, only_harvester),
        transfer.max_concurrent_transfers, transfer.busy_wait_seconds, time.monotonic(), retry,
        affinity=lambda plot: resume_at.get(plot.name),
    )  # fmt: skip
    results_lock = threading.Lock()
    with Connections(settings.farm.ssh) as connections:
        sender = PlotSender(settings, db, notifier, snapshots, exec_for or connections.exec_for, progress)

        def deliver(plot: FinishedPlot, harvester: str, slot: int, channel: PlotChannel) -> TransferResult:
            result = sender.deliver(plot, harvester, channel)
            if verdict(result) != BUSY:
                with results_lock:
                    outcome.results.append((PlannedTransfer(plot, harvester, slot), result))
            return result

        SendLoop(dispatch, sender.open_channel, deliver).run(min(transfer.max_concurrent_transfers, len(outcome.planned)))
    _list_leftovers(dispatch, outcome, db, transfer.busy_wait_seconds)


def _list_leftovers(dispatch: Dispatch[FinishedPlot], outcome: PlotterOutcome, db: StateDB, busy_wait: float) -> None:
    """Plots the run did not get to: waiting for busy or unreachable harvesters, or unplaced."""
    down = {name: h.down for name, h in dispatch.harvesters.items() if h.down}
    why = ""
    if dispatch.gave_up:
        busy = "; ".join(f"{name}: {detail}" for name, detail in sorted(dispatch.waiting.items()))
        why = f"every harvester with room answered busy for {busy_wait:.0f} s ({busy})"
    elif down:
        why = "; ".join(f"{name} unreachable: {reason}" for name, reason in sorted(down.items()))
    for plot in dispatch.leftovers():
        if why:
            outcome.waiting[plot.name] = why
        else:
            outcome.unplaced.append(plot.name)
    newly = db.alert_transition("plotter_plots_waiting", bool(outcome.waiting), why)
    if outcome.waiting:
        log.log(logging.WARNING if newly else logging.INFO, "%d plot(s) wait for the next run: %s",
                len(outcome.waiting), why)
