"""The page model: drive cells, receives read defensively, transfer sums as --history makes them."""

from __future__ import annotations

import datetime as dt

from tests.unit.dashboard.samples import drive, snapshot
from utilities.dashboard.model import (
    daily_points,
    drive_cells,
    last_day_summary,
    receive_set_of,
    receives_of,
    shown,
    temperatures_of,
)
from utilities.state import DailyStats, TransferRecord

NOW = 1_000_000.0


def test_receives_are_read_from_dicts_and_objects_and_garbage_is_skipped() -> None:
    from utilities.transfer.claims import ReceiveInFlight

    snap = snapshot("h", (drive("drive0"),), extra={"receiving": [
        {"drive": "drive0", "plot": "plot-k32-a.plot", "size": 100, "received": 25, "started_at": 10, "updated_at": 20},
        {"plot": "no drive"}, "garbage", {"drive": "drive1", "size": "big", "received": -3},
    ]})
    first, second = receives_of(snap)
    assert (first.drive, first.percent, first.mb_per_second) == ("drive0", 25.0, 0.0)
    assert (second.drive, second.size, second.received) == ("drive1", 0, 0)
    live = ReceiveInFlight(drive="drive0", plot="p.plot", size=200, received=100, started_at=0.0, updated_at=1.0)
    snap = snapshot("h", (drive("drive0"),), receiving=(live,))
    assert receives_of(snap)[0].percent == 50.0
    assert receives_of(snapshot("h", (drive("drive0"),))) == []  # an older export: nothing known


def test_receive_set_falls_back_to_the_receive_drive() -> None:
    old = snapshot("h", (drive("drive0"), drive("drive1")), receive_drive="drive1")
    assert receive_set_of(old) == ["drive1"]
    new = snapshot("h", (drive("drive0"),), extra={"receive_set": [{"name": "drive0", "replace": False}, {"x": 1}]})
    assert receive_set_of(new) == ["drive0"]


def test_temperatures_keep_numbers_only() -> None:
    snap = snapshot("h", (drive("drive0"),), extra={"temperatures": {"drive0": 41, "drive1": None, "drive2": True}})
    assert temperatures_of(snap) == {"drive0": 41}
    assert temperatures_of(snap, {"drive0": 38.0}) == {"drive0": 38}
    assert temperatures_of(snapshot("h", (drive("drive0"),))) == {}


def test_drive_cells_say_what_state_each_drive_is_in() -> None:
    drives = (
        drive("drive0"), drive("drive1", offline=True), drive("drive2", mounted=False),
        drive("drive3", free_slots=0), drive("drive4"),
    )
    snap = snapshot("h", drives, extra={"receiving": [{"drive": "drive4", "plot": "x.plot", "size": 10, "received": 5}]})
    cells = {c.drive.name: c for c in drive_cells(snap, {"drive0": 55, "drive4": 30}, hot_limit_c=50)}
    assert {n: c.state for n, c in cells.items()} == {
        "drive0": "online", "drive1": "offline", "drive2": "unmounted", "drive3": "full", "drive4": "receiving",
    }
    assert cells["drive0"].hot and not cells["drive4"].hot and cells["drive0"].receive_drive
    assert cells["drive0"].used_percent == 75.0 and cells["drive0"].size_text == "25.0 GiB free of 100.0 GiB"
    assert drive_cells(snapshot("h", (drive("d", total_bytes=0, free_bytes=0),)), {}, None)[0].used_percent == 0.0


def _record(plot: str, started_at: float, ok: bool = True, size: int = 10**9, seconds: float = 10.0) -> TransferRecord:
    return TransferRecord(plot, "chianas01", "/mnt/d", size, started_at, seconds, ok, None if ok else "broken")


def test_last_day_summary_sums_as_history_does() -> None:
    records = [
        _record("old.plot", NOW - 25 * 3600), _record("a.plot", NOW - 3600), _record("b.plot", NOW - 60, seconds=30.0),
        _record("c.plot", NOW - 30, ok=False),
    ]
    summary = last_day_summary(records, NOW)
    assert (summary.plots_moved, summary.failed_attempts, summary.bytes_moved) == (2, 1, 2 * 10**9)
    assert summary.average_mb_per_second == 50.0 and summary.gigabytes == 2.0
    assert last_day_summary([], NOW).average_mb_per_second is None


def test_daily_points_cover_every_day_and_leave_quiet_days_empty() -> None:
    now = dt.datetime(2026, 12, 4, 12, 0).timestamp()
    yesterday = now - 86400
    records = [_record("a.plot", yesterday), _record("b.plot", yesterday, seconds=30.0), _record("c.plot", now, ok=False)]
    daily = [DailyStats("2026-12-04", now, 10, 4, 6, 3)]
    points = daily_points(records, daily, now, days=3)
    assert [p.day for p in points] == ["2026-12-02", "2026-12-03", "2026-12-04"]
    assert [(p.plots_moved, p.mb_per_second, p.new_plots) for p in points] == [
        (0, None, None), (2, 50.0, None), (0, None, 3),
    ]


def test_shown_matches_the_text_report() -> None:
    assert [shown(None), shown(0), shown(1.5), shown(True)] == ["n/a", "0", "1.5", "True"]
