"""Which harvester a sending worker serves next, and when it waits: the run's pure decisions.

A run sends with up to ``max_concurrent_transfers`` workers.  Each worker opens a session to
the harvester with the most room (after the plots already sent or on their way there) that can
take another session, and keeps sending plots through it while that harvester has room and
plots remain.  A harvester takes at most as many sessions as its export says it has receives
available (each session claims a drive of its receive set), and at most as many plots as its
receive set has room for.

A receiver that answers busy (every drive of its set claimed, by other plotters) is "not now",
not a failure: the plot goes back to the front of the queue, the harvester takes no more
sessions than this plotter still has open there, and after ``retry`` seconds one more session
may try again.  A worker with nowhere to go waits (woken when a session ends, or after the retry
interval); after ``busy_wait`` seconds of nothing but busy answers the rest waits for the next
run.

Everything here is plain data and decisions, with the time passed in, so the tests drive it
without threads or clocks; ``send_loop.py`` runs it with threads under one lock.

A plot whose last attempt failed on a harvester (``affinity``) goes back there first when that
harvester can take a session: its receiver may hold the plot's part, and a resume (issue 13)
sends only what is missing.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from utilities.transfer.protocol import ERR_BUSY, ERR_NO_SPACE
from utilities.transfer.sender import CANNOT_START, TransferResult

P = TypeVar("P")

#: Seconds after a busy answer before one more session to that harvester is tried.
BUSY_RETRY_SECONDS = 5.0


@dataclass
class HarvesterSlots:
    """What one harvester can take this run, and what this run has given it so far.

    ``receives`` starts as the receives its export says it has available.  That export may be a
    minute old and count our previous run's sessions as taken, so when its receive set could
    take more (``ceiling``: available plus the receives in flight then), one more session is
    tried after the retry interval, and again after each plot that arrived through it.  A busy
    answer brings ``receives`` down to what we keep open there and restarts the interval.
    """

    name: str
    room: int  # plots its receive set can take this run (harvester_choice.receive_room)
    rank: int  # room for the configured priority: the most of it wins (room_for_plots)
    receives: int  # sessions it takes at once now
    ceiling: int  # sessions its receive set could take if nobody else sent to it
    assigned: int = 0  # plots sent there or on their way this run
    open: int = 0  # sessions this plotter has open there now
    retry_at: float = math.inf  # from then on, one session more than ``receives`` may try
    down: str = ""  # why it takes nothing more this run (connection lost)

    @property
    def left(self) -> int:
        """Plots it can still take this run."""
        return 0 if self.down else self.room - self.assigned

    def limit(self, now: float) -> int:
        """Sessions it may have open now."""
        return self.receives + (1 if now >= self.retry_at and self.receives < self.ceiling else 0)

    def held_back(self, now: float) -> bool:
        """Room left and another session might be taken, but not now: wait for the retry."""
        return self.left >= 1 and self.open >= self.limit(now) and self.receives < self.ceiling


@dataclass(frozen=True)
class Start:
    """Open a session to this harvester."""

    harvester: str


@dataclass(frozen=True)
class Wait:
    """Nothing to start now: wait until woken, or ``seconds`` at most."""

    seconds: float


@dataclass(frozen=True)
class Stop:
    """This worker is done for the run."""


Step = Start | Wait | Stop


@dataclass
class Dispatch(Generic[P]):
    """The run's queue of plots (oldest first) and its harvesters' room and sessions."""

    harvesters: dict[str, HarvesterSlots]
    queue: deque[P]
    max_sessions: int
    busy_wait: float
    retry: float = BUSY_RETRY_SECONDS
    busy_since: float | None = None  # first busy answer since a plot last went through
    gave_up: bool = False  # busy_wait ran out: the rest waits for the next run
    waiting: dict[str, str] = field(default_factory=dict)  # harvester -> why it is held back
    affinity: Callable[[P], str | None] | None = None  # the harvester that may hold a plot's part

    @classmethod
    def of(
        cls,
        plots: Iterable[P],
        harvesters: Iterable[HarvesterSlots],
        max_sessions: int,
        busy_wait: float,
        now: float,
        retry: float = BUSY_RETRY_SECONDS,
        affinity: Callable[[P], str | None] | None = None,
    ) -> Dispatch[P]:
        """A harvester whose export says no receive is available now (every drive of its set
        claimed) is tried with one session at once; one that could take more than it said,
        after the retry interval."""
        slots = {h.name: h for h in harvesters}
        for h in slots.values():
            h.ceiling = max(h.ceiling, h.receives, 1)
            if h.receives < h.ceiling:
                h.retry_at = now if h.receives == 0 else now + retry
        return cls(slots, deque(plots), max_sessions, busy_wait, retry, affinity=affinity)

    # -- decisions -----------------------------------------------------------------------------

    @property
    def open_sessions(self) -> int:
        return sum(h.open for h in self.harvesters.values())

    def choose(self, now: float) -> str | None:
        """The harvester with the most room for the priority (after what it was given this run)
        that may take another session now; ties go to the first name."""
        if not self.queue or self.open_sessions >= self.max_sessions:
            return None
        preferred = self.affinity(self.queue[0]) if self.affinity is not None else None
        h = self.harvesters.get(preferred) if preferred is not None else None
        if h is not None and h.left >= 1 and h.open < h.limit(now):
            return h.name
        best: HarvesterSlots | None = None
        for name in sorted(self.harvesters):
            h = self.harvesters[name]
            if h.left < 1 or h.open >= h.limit(now):
                continue
            if best is None or h.rank - h.assigned > best.rank - best.assigned:
                best = h
        return best.name if best is not None else None

    def next_step(self, now: float) -> Step:
        """What an idle worker does now."""
        if self.gave_up:
            return Stop()
        if not self.queue:
            # A session still sending may hand a plot back (busy): stay for it.
            return Wait(self.retry) if self.open_sessions else Stop()
        if self.busy_since is not None and now - self.busy_since >= self.busy_wait and not self.open_sessions:
            self.gave_up = True  # nothing but busy answers for busy_wait: the rest waits
            return Stop()
        name = self.choose(now)
        if name is not None:
            return Start(name)
        held = [h for h in self.harvesters.values() if h.held_back(now)]
        if held:
            until = min((h.retry_at for h in held if h.retry_at > now), default=now + self.retry)
            return Wait(max(0.0, min(until - now, self.retry)))
        if self.open_sessions:
            return Wait(self.retry)  # a session that ends frees a session or room
        return Stop()

    def keep_going(self, name: str) -> bool:
        """Does the worker's session to ``name`` take another plot?"""
        return bool(self.queue) and self.harvesters[name].left >= 1

    # -- what happened -------------------------------------------------------------------------

    def open(self, name: str) -> P:
        """A worker opens a session to ``name`` (what next_step said) with the first plot."""
        self.harvesters[name].open += 1
        plot = self.take(name)
        assert plot is not None, "next_step said Start with nothing to take"
        return plot

    def closed(self, name: str) -> None:
        self.harvesters[name].open -= 1

    def take(self, name: str) -> P | None:
        """The next plot for the session to ``name``, counted against its room; None if done."""
        if not self.keep_going(name):
            return None
        self.harvesters[name].assigned += 1
        if self.affinity is not None:
            for index, plot in enumerate(self.queue):
                if self.affinity(plot) == name:
                    del self.queue[index]
                    return plot
        return self.queue.popleft()

    def sent(self, name: str) -> None:
        """The plot arrived: a session tried beyond ``receives`` worked, so it counts from now."""
        h = self.harvesters[name]
        h.receives = max(h.receives, h.open)
        self.busy_since = None
        self.waiting.pop(name, None)

    def failed(self, name: str, no_room: bool = False, lost: str = "") -> None:
        """A real failure: the plot is done for this run and its room is free again.  ``no_room``:
        the harvester had less room than its export said; ``lost``: its connection is gone."""
        h = self.harvesters[name]
        h.assigned -= 1
        if no_room:
            h.room = h.assigned
        if lost:
            h.down = lost

    def busy(self, name: str, plot: P, now: float, detail: str = "") -> None:
        """The harvester answered busy: the plot goes back to the front of the queue, and the
        harvester takes no more sessions than we keep open there (this one is ending)."""
        h = self.harvesters[name]
        h.assigned -= 1
        self.queue.appendleft(plot)
        h.receives = max(0, h.open - 1)
        h.retry_at = now + self.retry
        if self.busy_since is None:
            self.busy_since = now
        self.waiting[name] = detail or "busy"

    def leftovers(self) -> list[P]:
        return list(self.queue)


def slots_of(rooms: Mapping[str, tuple[int, int, int, int]]) -> list[HarvesterSlots]:
    """HarvesterSlots from name -> (room, rank, receives, ceiling): a shorthand for the tests."""
    return [HarvesterSlots(name, *figures) for name, figures in rooms.items()]


# -- what a transfer's result means for the run -------------------------------------------------

SENT = "sent"
BUSY = "busy"  # not now: the plot goes back to the queue, no failure
NO_ROOM = "no room"  # a failure, and the harvester takes nothing more this run
LOST = "lost"  # a failure, and the connection to the harvester is gone for this run
FAILED = "failed"  # a failure of this plot only
REFUSING_SCRIPT_STATUS = 75  # receive_plot.sh when drive_manager found no drive with room


def verdict(result: TransferResult) -> str:
    """How the run goes on after this result (pure)."""
    if result.ok:
        return SENT
    if result.receiver_error == ERR_BUSY:
        return BUSY
    if result.receiver_error == ERR_NO_SPACE or result.receiver_status == REFUSING_SCRIPT_STATUS:
        return NO_ROOM
    if result.reason.startswith(CANNOT_START):
        return LOST
    return FAILED
