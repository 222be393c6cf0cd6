"""One plot through a worker's channel: its lock, the send, the source's deletion, the records.

``PlotSender`` is what every sending worker calls for each plot.  It claims the plot with its
own ``flock`` (a manual ``--send`` and a cron run never send the same plot), sends it through
the worker's channel (a receiver session, or single-plot receivers for an older harvester),
deletes the source only after OK and only if it is still the very file that was sent, records
the transfer, warns and notifies.  A busy answer is none of that: it is neither recorded nor a
failure (``dispatch.py`` puts the plot back in the queue).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from utilities.config import Settings
from utilities.errors import LockBusy
from utilities.harvester_export import HarvesterSnapshot
from utilities.locking import exclusive_lock
from utilities.notify import Notification, Notifier
from utilities.plot_finder import FinishedPlot
from utilities.plotter.dispatch import BUSY, verdict
from utilities.plotter.harvester_choice import speaks_resume, speaks_sessions
from utilities.settings.farm import HarvesterTarget
from utilities.state import StateDB, TransferRecord
from utilities.transfer.channel import ExecFn
from utilities.transfer.protocol import TransferError
from utilities.transfer.sender import SendOptions, TransferResult, delete_source_after_ok
from utilities.transfer.session import PlotChannel, ReceiverSession, SinglePlots

log = logging.getLogger(__name__)

ProgressFactory = Callable[[FinishedPlot, str], Callable[[int, int], None] | None]


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


class PlotSender:
    """Sends one plot through a worker's channel, records it and deletes a source that arrived
    intact; opens the channels (over the run's one SSH connection per harvester)."""

    def __init__(
        self,
        settings: Settings,
        db: StateDB,
        notifier: Notifier,
        snapshots: Mapping[str, HarvesterSnapshot],
        exec_for: Callable[[HarvesterTarget], ExecFn],
        progress: ProgressFactory | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.notifier = notifier
        self.snapshots = snapshots
        self.exec_for = exec_for
        self.progress = progress
        self.targets = {t.name: t for t in settings.farm.harvesters}
        self._db_lock = threading.Lock()  # one sqlite connection shared by the worker threads

    def open_channel(self, harvester: str, slot: int) -> PlotChannel:
        """A session to ``harvester`` (single-plot receivers for an older one) on worker
        ``slot``'s own ports; RemoteError when it cannot be reached."""
        target = self.targets[harvester]
        transfer = self.settings.plotter.transfer
        exec_fn = self.exec_for(target)
        first_port, ports = port_slice(transfer.port_base, transfer.port_count, transfer.max_concurrent_transfers, slot)
        snapshot = self.snapshots.get(harvester)
        resume = transfer.resume and snapshot is not None and speaks_resume(snapshot)
        options = SendOptions(idle_timeout=transfer.idle_timeout_seconds, nc="nc" if transfer.stream_with == "nc" else None,
                              resume=resume)
        host = target.data_host or target.host
        if snapshot is not None and speaks_sessions(snapshot):
            return ReceiverSession(exec_fn, target.receive_script, host, first_port, port_count=ports, options=options)
        return SinglePlots(exec_fn, target.receive_script, host, first_port, port_count=ports, options=options)

    def deliver(self, plot: FinishedPlot, harvester: str, channel: PlotChannel) -> TransferResult:
        """Send ``plot`` under its lock; a busy answer is neither recorded nor a failure."""
        target = self.targets[harvester]
        lock = self.settings.state_path / "sending" / f"{plot.name}.lock"
        started = time.time()
        try:
            with exclusive_lock(lock, f"a transfer of {plot.name}"):
                if not plot.path.exists():  # sent by another run meanwhile
                    return TransferResult(False, plot.name, "source is gone (sent by another run)")
                result = self._send_locked(plot, target, channel)
        except LockBusy as busy:
            log.info("%s", busy)
            return TransferResult(False, plot.name, "another run is sending it")
        if verdict(result) == BUSY:
            log.info("%s is busy (%s): %s goes elsewhere or later", target.name, result.reason, plot.name)
            return result
        self._record(plot, target, result, started)
        return result

    def _send_locked(self, plot: FinishedPlot, target: HarvesterTarget, channel: PlotChannel) -> TransferResult:
        transfer = self.settings.plotter.transfer
        progress = self.progress(plot, target.name) if self.progress else None
        log.info("sending %s to %s", plot.path, target.name)
        result = channel.send(plot.path, dest_name=destination_name(plot, transfer.portable_prefix), progress_cb=progress)
        close = getattr(progress, "close", None)
        if callable(close):  # a terminal bar of a plot that did not get through (busy: it comes again)
            close()
        if result.ok:
            try:
                delete_source_after_ok(plot.path, result)
            except TransferError as exc:
                log.error("%s", exc)
                return TransferResult(False, result.name, f"arrived, but the source was kept: {exc}",
                                      size=result.size, seconds=result.seconds)
            log.info("sent %s to %s: %d bytes in %.2f s (%.0f MB/s); source deleted",
                     result.name, target.name, result.size, result.seconds, result.mb_per_s)
        return result

    def _record(self, plot: FinishedPlot, target: HarvesterTarget, result: TransferResult, started: float) -> None:
        with self._db_lock:
            self.db.record_transfer(
                TransferRecord(
                    plot=plot.name, harvester=target.name,
                    destination=destination_name(plot, self.settings.plotter.transfer.portable_prefix),
                    bytes=result.size if result.ok else 0, started_at=started,
                    seconds=result.seconds, ok=result.ok, reason=None if result.ok else result.reason,
                    saved=result.saved if result.ok else 0,
                )
            )
            failures = 0 if result.ok else self.db.failures_since_success(plot.name)
        if not result.ok:
            # Cron mails whatever reaches stderr: a plot that keeps failing warns on its first
            # failure and when the farmer is alerted, and is logged quietly in between.
            alert_at = self.settings.plotter.transfer.failures_before_alert
            loud = failures in (1, alert_at)
            log.log(logging.WARNING if loud else logging.INFO, "sending %s to %s failed (%d in a row%s): %s",
                    plot.name, target.name, failures, "" if loud else ", reported before", result.reason)
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
                    subject=f"{self.settings.hostname}: {plot.name} failed {failures} times",
                    short_text=f"{self.settings.hostname}: sending {plot.name} failed {failures} times: {result.reason}",
                    context={"hostname": self.settings.hostname, "plot": plot.name, "harvester": target.name,
                             "failures": failures, "last_reason": result.reason},
                )
            )

