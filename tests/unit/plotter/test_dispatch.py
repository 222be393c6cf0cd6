"""The run's pure decisions: where each session goes, how many per harvester, busy and waiting."""

from __future__ import annotations

import time

from utilities.harvester_export import DriveSummary, HarvesterSnapshot, ReceiveSetDrive
from utilities.plotter.dispatch import (
    BUSY,
    FAILED,
    LOST,
    NO_ROOM,
    SENT,
    Dispatch,
    HarvesterSlots,
    Start,
    Stop,
    Wait,
    slots_of,
    verdict,
)
from utilities.plotter.harvester_choice import receive_room, session_capacity, speaks_sessions
from utilities.plotter.sending import harvester_slots
from utilities.transfer.claims import ReceiveInFlight
from utilities.transfer.sender import CANNOT_START, TransferResult

RETRY = 5.0
T0 = 1000.0


def dispatch(rooms: dict[str, tuple[int, int, int, int]], plots: int = 10, max_sessions: int = 4,
             busy_wait: float = 60.0) -> Dispatch[str]:
    return Dispatch.of([f"p{i}" for i in range(plots)], slots_of(rooms), max_sessions, busy_wait, T0, RETRY)


def open_sessions(d: Dispatch[str], now: float = T0, plots: list[str] | None = None) -> list[str]:
    """Start sessions while the dispatch says Start: the harvesters in order (and each
    session's first plot appended to ``plots``)."""
    opened = []
    while isinstance(step := d.next_step(now), Start):
        first = d.open(step.harvester)
        if plots is not None:
            plots.append(first)
        opened.append(step.harvester)
    return opened


def test_sessions_spread_over_harvesters_by_their_receives_available() -> None:
    # a has more room, but takes two sessions at once; b takes the rest.
    d = dispatch({"a": (20, 20, 2, 2), "b": (10, 10, 3, 3)})
    assert open_sessions(d) == ["a", "a", "b", "b"]
    assert d.next_step(T0) == Wait(RETRY)  # max_concurrent_transfers reached: woken when one ends
    d.closed("a")
    assert open_sessions(d) == ["a"]


def test_each_session_keeps_going_while_its_harvester_has_room() -> None:
    d = dispatch({"a": (3, 3, 1, 1)}, plots=5)
    taken: list[str] = []
    assert open_sessions(d, plots=taken) == ["a"]
    d.sent("a")
    while (plot := d.take("a")) is not None:
        taken.append(plot)
        d.sent("a")
    assert taken == ["p0", "p1", "p2"]  # its receive set's room, no more
    d.closed("a")
    assert d.next_step(T0) == Stop()
    assert d.leftovers() == ["p3", "p4"]
    assert not d.gave_up  # no room: these are unplaced, not waiting


def test_an_old_harvester_takes_one_session() -> None:
    snap = _snap("old", [(5, False)], protocol=1, available=None)
    assert not speaks_sessions(snap)
    assert session_capacity(snap) == 1
    (slots,) = harvester_slots({"old": snap}, "fill")
    assert (slots.room, slots.receives, slots.ceiling) == (5, 1, 1)
    d = Dispatch.of(["p0", "p1"], [slots], 4, 60, T0)
    assert open_sessions(d) == ["old"]


def test_room_comes_from_the_receive_set_and_replace_counts_old_plots_per_drive() -> None:
    snap = _snap("h", [(2, False), (0, True), (1, False)], og=4, in_set=[0, 1], available=2)
    assert receive_room(snap) == 2 + 4  # drive 2 has a slot but is not in the set
    offline = _snap("h", [(2, False), (3, False)], in_set=[0, 1], offline={1})
    assert receive_room(offline) == 2
    assert receive_room(_snap("h", [(2, False)], in_set=[], available=0)) == 0


def test_busy_puts_the_plot_back_first_and_caps_the_harvester_at_what_we_hold() -> None:
    d = dispatch({"a": (10, 10, 2, 2), "b": (5, 5, 1, 1)}, plots=4, max_sessions=3)
    firsts: list[str] = []
    assert open_sessions(d, plots=firsts) == ["a", "a", "b"]
    first, second, _ = firsts
    d.busy("a", second, T0, "all 2 drives taken")
    d.closed("a")
    assert d.leftovers()[0] == second  # back at the front
    assert d.harvesters["a"].receives == 1  # the session still open there
    assert d.busy_since == T0 and d.waiting == {"a": "all 2 drives taken"}
    assert d.next_step(T0 + 1) == Wait(RETRY - 1)  # a is held back; b is full of our sessions
    assert open_sessions(d, T0 + RETRY) == ["a"]  # one more may try again
    d.sent("a")
    assert d.harvesters["a"].receives == 2 and d.busy_since is None and d.waiting == {}
    assert first == "p0"


def test_busy_is_waited_for_and_then_given_up_for_this_run() -> None:
    d = dispatch({"a": (10, 10, 1, 1)}, plots=2, busy_wait=30)
    plots: list[str] = []
    assert open_sessions(d, plots=plots) == ["a"]
    d.busy("a", plots.pop(), T0)
    d.closed("a")
    assert isinstance(d.next_step(T0 + 1), Wait)
    assert open_sessions(d, T0 + RETRY, plots) == ["a"]  # the retry: busy again
    d.busy("a", plots.pop(), T0 + RETRY)
    d.closed("a")
    assert isinstance(d.next_step(T0 + RETRY + 1), Wait)
    assert d.next_step(T0 + 29) == Start("a")  # tried again every retry interval
    assert d.next_step(T0 + 30) == Stop()
    assert d.gave_up and d.leftovers() == ["p0", "p1"]
    assert d.next_step(T0 + 30) == Stop()  # every worker stops


def test_a_plot_that_arrives_restarts_the_busy_clock() -> None:
    d = dispatch({"a": (10, 10, 2, 2)}, plots=3, busy_wait=30)
    plots: list[str] = []
    assert open_sessions(d, plots=plots) == ["a", "a"]
    d.busy("a", plots[0], T0)
    d.closed("a")
    d.sent("a")  # the other session delivered
    d.closed("a")
    assert d.busy_since is None
    assert d.next_step(T0 + 31) == Start("a")


def test_no_receive_available_is_tried_at_once_and_a_stale_count_after_the_retry() -> None:
    # Every drive was claimed when the export was written (maybe by our previous run).
    d = dispatch({"a": (10, 10, 0, 4)})
    assert open_sessions(d) == ["a"]
    d.sent("a")
    assert d.harvesters["a"].receives == 1
    assert open_sessions(d) == ["a"]  # one more after each plot that went through
    # One of two receives was taken then: two more sessions, the third after the retry.
    d = dispatch({"b": (10, 10, 1, 2)})
    assert open_sessions(d) == ["b"]
    assert open_sessions(d, T0 + RETRY) == ["b"]
    assert d.next_step(T0 + RETRY) == Wait(RETRY)


def test_failures_free_their_room_no_space_and_lost_connections_end_the_harvester() -> None:
    d = dispatch({"a": (3, 3, 1, 1), "b": (3, 2, 1, 1)}, plots=6, max_sessions=2)
    assert open_sessions(d) == ["a", "b"]
    d.failed("a")
    assert d.harvesters["a"].left == 3
    d.take("a")
    d.failed("a", no_room=True)
    assert d.harvesters["a"].left == 0 and not d.keep_going("a")
    d.failed("b", lost="b: unreachable")
    assert d.harvesters["b"].left == 0 and d.harvesters["b"].down
    d.closed("a")
    d.closed("b")
    assert d.next_step(T0) == Stop()
    assert d.leftovers() == ["p3", "p4", "p5"]


def test_an_empty_queue_waits_for_sessions_that_may_hand_a_plot_back() -> None:
    d = dispatch({"a": (10, 10, 2, 2)}, plots=1)
    plots: list[str] = []
    assert open_sessions(d, plots=plots) == ["a"]  # one plot: one session
    (plot,) = plots
    assert d.next_step(T0) == Wait(RETRY)
    d.busy("a", plot, T0)
    d.closed("a")
    assert isinstance(d.next_step(T0), Wait)


def test_ties_go_to_the_first_name_and_rank_counts_what_was_given() -> None:
    d = dispatch({"b": (10, 5, 1, 1), "a": (10, 5, 1, 1)}, max_sessions=1)
    assert d.choose(T0) == "a"
    d.harvesters["a"].assigned = 1
    assert d.choose(T0) == "b"


def test_verdicts() -> None:
    assert verdict(TransferResult(True, "p")) == SENT
    assert verdict(TransferResult(False, "p", "x", receiver_error="busy")) == BUSY
    assert verdict(TransferResult(False, "p", "x", receiver_error="no space")) == NO_ROOM
    assert verdict(TransferResult(False, "p", "ended", receiver_status=75)) == NO_ROOM  # refusing script
    assert verdict(TransferResult(False, "p", f"{CANNOT_START}: SSH connection is not open")) == LOST
    assert verdict(TransferResult(False, "p", "x", receiver_error="mismatch")) == FAILED


def test_one_more_session_than_receives_only_from_the_retry_time_and_up_to_the_ceiling() -> None:
    h = HarvesterSlots("a", room=5, rank=5, receives=1, ceiling=3, retry_at=T0)
    assert h.limit(T0 - 1) == 1 and h.limit(T0) == 2
    h.open = 1
    assert h.held_back(T0 - 1) and not h.held_back(T0)
    h.receives = 3
    assert h.limit(T0) == 3


# -- snapshots -----------------------------------------------------------------------------------


def _snap(
    name: str,
    drives: list[tuple[int, bool]],
    og: int = 0,
    in_set: list[int] | None = None,
    available: int | None = 1,
    protocol: int = 2,
    offline: set[int] = frozenset(),  # type: ignore[assignment]
) -> HarvesterSnapshot:
    summaries = tuple(
        DriveSummary(f"d{i}", f"/mnt/d{i}", f"/dev/sd{i}", None, "xfs", 10, 5, og, 0, 0, 0, slots, i in offline, True)
        for i, (slots, _replace) in enumerate(drives)
    )
    chosen = range(len(drives)) if in_set is None else in_set
    receive_set = tuple(ReceiveSetDrive(f"d{i}", drives[i][1]) for i in chosen)
    receiving = (ReceiveInFlight("d0", "x.plot", 1, 0, time.time(), time.time(), 1),) if available == 0 else ()
    return HarvesterSnapshot(
        name, time.time(), 100, summaries, receive_drive=receive_set[0].name if receive_set else None,
        receive_set=receive_set, receives_available=available, receiving=receiving, receive_protocol=protocol,
    )  # fmt: skip


def test_harvester_slots_from_exports() -> None:
    snaps = {
        "new": _snap("new", [(3, False), (2, False)], available=2),
        "full": _snap("full", [(3, False)], available=0),
    }
    slots = {s.name: s for s in harvester_slots(snaps, "fill")}
    assert (slots["new"].room, slots["new"].receives, slots["new"].ceiling) == (5, 2, 2)
    assert (slots["full"].receives, slots["full"].ceiling) == (0, 1)  # one receive in flight there
    assert [s.name for s in harvester_slots(snaps, "fill", only="full")] == ["full"]


def test_a_plot_goes_back_first_to_the_harvester_that_may_hold_its_part() -> None:
    """Issue 13: p2's last attempt failed on b (its part may wait there): b gets a session for
    it although a has more room, and b's session takes p2 before the older plots."""
    d = Dispatch.of([f"p{i}" for i in range(4)], slots_of({"a": (20, 20, 1, 1), "b": (5, 5, 1, 1)}), 1, 60.0, T0,
                    RETRY, affinity=lambda plot: "b" if plot == "p2" else None)
    assert d.next_step(T0) == Start("a")  # the queue's head has no preference: the most room
    d2 = Dispatch.of(["p2", "p0"], slots_of({"a": (20, 20, 1, 1), "b": (5, 5, 1, 1)}), 1, 60.0, T0, RETRY,
                     affinity=lambda plot: "b" if plot == "p2" else None)
    assert d2.next_step(T0) == Start("b") and d2.open("b") == "p2"
    assert d.open("a") == "p0" and d.take("a") == "p1"
    d.closed("a")
    assert d.open("b") == "p2"
    full = Dispatch.of(["p2"], slots_of({"a": (20, 20, 1, 1), "b": (0, 0, 1, 1)}), 1, 60.0, T0, RETRY,
                       affinity=lambda plot: "b")
    assert full.next_step(T0) == Start("a")  # no room there: anywhere, as before
