"""The sending workers of one plotter run: threads that follow ``dispatch.py``'s decisions.

Each worker asks the dispatch where to open a session, opens a channel there (a receiver
session, or single-plot receivers for an older harvester) and sends plot after plot through it
while the dispatch says go on; then it closes the channel and asks again.  All decisions and
all changes to the dispatch happen under one lock; the sending itself does not hold it.  A
worker with nowhere to go waits on a condition, woken whenever a session ends or a plot's fate
is known, and at the latest after the wait the dispatch asked for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from utilities.plotter.dispatch import BUSY, LOST, NO_ROOM, SENT, Dispatch, Start, Stop, Wait, verdict
from utilities.remote import RemoteError
from utilities.transfer.sender import TransferResult
from utilities.transfer.session import PlotChannel
from utilities.transfer.stream import ProgressCallback

log = logging.getLogger(__name__)

P = TypeVar("P")

OpenChannel = Callable[[str, int], PlotChannel]
"""(harvester, worker slot) -> a channel to it; RemoteError when it cannot be reached."""

Deliver = Callable[[P, str, int, PlotChannel], TransferResult]
"""(plot, harvester, worker slot, channel): sends the plot (with its lock, records and source
deletion) and says how it went."""


class Unreachable:
    """The channel of a harvester the worker could not connect to: every send fails with why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def send(
        self, path: str | Path, *, dest_name: str | None = None, progress_cb: ProgressCallback | None = None
    ) -> TransferResult:
        return TransferResult(False, dest_name or Path(path).name, self.reason)

    def close(self, timeout: float = 30.0) -> int | None:
        return None


class SendLoop(Generic[P]):
    """Runs ``workers`` threads over one dispatch until every worker is told to stop."""

    def __init__(
        self,
        dispatch: Dispatch[P],
        open_channel: OpenChannel,
        deliver: Deliver[P],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dispatch = dispatch
        self.open_channel = open_channel
        self.deliver = deliver
        self.clock = clock
        self._cond = threading.Condition()
        self._errors: list[BaseException] = []

    def run(self, workers: int) -> None:
        """Send until done; an unexpected error in a worker is raised here once all have ended."""
        threads = [
            threading.Thread(target=self._worker, args=(slot,), name=f"send-{slot}", daemon=True)
            for slot in range(workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._errors:
            raise self._errors[0]

    def _worker(self, slot: int) -> None:
        try:
            while True:
                with self._cond:
                    step = self.dispatch.next_step(self.clock())
                    while isinstance(step, Wait):
                        self._cond.wait(max(step.seconds, 0.01))
                        step = self.dispatch.next_step(self.clock())
                    if isinstance(step, Stop):
                        self._cond.notify_all()  # the others may be done too
                        return
                    assert isinstance(step, Start)
                    name = step.harvester
                    first = self.dispatch.open(name)
                try:
                    self._serve(name, slot, first)
                finally:
                    with self._cond:
                        self.dispatch.closed(name)
                        self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - raised again by run(), after the others end
            with self._cond:
                self._errors.append(exc)
                self.dispatch.gave_up = True  # the others finish their plot and stop
                self._cond.notify_all()

    def _serve(self, name: str, slot: int, first: P) -> None:
        """One session to ``name``: plot after plot while the dispatch says go on."""
        channel: PlotChannel | None = None
        plot: P | None = first
        try:
            while plot is not None:
                if channel is None:
                    try:
                        channel = self.open_channel(name, slot)
                    except RemoteError as exc:
                        channel = Unreachable(str(exc))
                result = self.deliver(plot, name, slot, channel)
                fate = LOST if isinstance(channel, Unreachable) else verdict(result)
                with self._cond:
                    if fate == BUSY:
                        self.dispatch.busy(name, plot, self.clock(), result.reason)
                    elif fate == SENT:
                        self.dispatch.sent(name)
                    else:
                        self.dispatch.failed(name, no_room=fate == NO_ROOM, lost=result.reason if fate == LOST else "")
                    self._cond.notify_all()
                    if fate in (BUSY, LOST):
                        return
                    plot = None if self.dispatch.gave_up else self.dispatch.take(name)
        finally:
            if channel is not None:
                channel.close()
