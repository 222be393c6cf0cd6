"""SMART history in a real SQLite state database: recorded, pruned, and the trend read back.

The readings are real reads (pySMART over real captures through the stand-in smartctl), placed
at the times each test needs; the database is the real StateDB file in a temporary directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fake_smartctl import SATA_HDD, FakeSmartctl
from utilities.config import validate_config
from utilities.harvester.drive_holds import (
    HOLDS_KEY,
    check_drive_health,
    held_names,
    load_holds,
    release_hold,
)
from utilities.harvester.smart import SmartInfo, read_smart
from utilities.harvester.smart_history import (
    DAY,
    drive_trend,
    grown_drives,
    history,
    load_anchors,
    load_trends,
    reading_from_smart,
    record_readings,
)
from utilities.harvester_export import DriveSummary
from utilities.state import StateDB

NOW = 1_900_000_000.0
HOUR = 3600.0


@pytest.fixture(scope="module")
def reads(tmp_path_factory) -> dict[str, SmartInfo]:
    fake = FakeSmartctl(tmp_path_factory.mktemp("smart"))
    variants = {
        "/dev/sdb": {}, "/dev/sdc": {"raw": {"197": 2}, "temperature": 44},
        "/dev/sdd": {"raw": {"197": 5, "5": 9}, "temperature": 46}, "/dev/sde": {"state": "standby"},
        "/dev/sdf": {"temperature": 58},
    }
    for device, settings in variants.items():
        fake.add(device, SATA_HDD, **settings)
    with pytest.MonkeyPatch.context() as patch:
        fake.install(patch)
        return {
            name: read_smart(device, smartctl=fake.path)
            for name, device in zip(("healthy", "pending2", "pending5", "standby", "hot"), variants, strict=True)
        }


@pytest.fixture
def db(tmp_path: Path):
    with StateDB(tmp_path / "state.db") as database:
        yield database


def _drive(name: str) -> DriveSummary:
    return DriveSummary(name, f"/mnt/{name}", f"/dev/{name}", None, "xfs", 10, 5, 0, 0, 0, 0, 3, False, True)


def test_each_read_is_one_row_and_standby_records_its_state_only(db, reads) -> None:
    record_readings(db, [reading_from_smart("drive1", reads["healthy"], NOW - HOUR),
                         reading_from_smart("drive2", reads["standby"], NOW - HOUR)])
    record_readings(db, [reading_from_smart("drive1", reads["pending2"], NOW)])
    rows = history(db, "drive1")
    assert [(r.state, r.pending, r.temperature_c) for r in rows] == [("active", 0, 38), ("active", 2, 44)]
    assert rows[0].serial == "00008AXB" and rows[0].power_on_hours == 252 and rows[0].health == "PASS"
    (standby,) = history(db, "drive2")
    assert standby.state == "standby" and standby.serial is None and standby.temperature_c is None


def test_rows_older_than_the_kept_days_are_pruned(db, reads) -> None:
    record_readings(db, [reading_from_smart("drive1", reads["healthy"], NOW - 31 * DAY)])
    record_readings(db, [reading_from_smart("drive1", reads["healthy"], NOW - 29 * DAY)])
    record_readings(db, [reading_from_smart("drive1", reads["pending2"], NOW)], keep_days=30)
    assert [r.read_at for r in history(db, "drive1")] == [NOW - 29 * DAY, NOW]


def test_trend_compares_now_with_a_day_and_a_week_ago(db, reads) -> None:
    for hours_ago, variant in ((10 * 24, "healthy"), (7 * 24 + 1, "healthy"), (30, "pending2"), (2, "pending2"),
                               (0, "pending5")):
        record_readings(db, [reading_from_smart("drive1", reads[variant], NOW - hours_ago * HOUR)])
    trend = load_trends(db, ["drive1", "drive9"], NOW)
    drive1 = trend["drive1"]
    assert (drive1.now.pending, drive1.day_ago.pending, drive1.week_ago.pending) == (5, 2, 0)
    assert drive1.day_ago.read_at == NOW - 30 * HOUR  # nearest at or before 24 h ago
    assert drive1.week_ago.read_at == NOW - (7 * 24 + 1) * HOUR
    assert drive1.grown_24h == {"pending": (2, 5), "reallocated": (0, 9)}
    data = drive1.to_dict()
    assert data["now"]["temperature_c"] == 46 and data["24h"]["temperature_c"] == 44 and data["7d"]["pending"] == 0
    assert data["grown_24h"]["pending"] == {"from": 2, "to": 5}
    assert trend["drive9"].now is None and trend["drive9"].state == "unavailable"
    (grown,) = grown_drives(trend.values())
    assert grown["drive"] == "drive1" and grown["grown"] == "reallocated sectors 0 -> 9, pending sectors 2 -> 5"


def test_anchors_give_the_same_trend_as_the_whole_history(db, reads) -> None:
    for hours in range(0, 24 * 9, 6):
        variant = "pending5" if hours < 12 else "pending2" if hours < 100 else "healthy"
        record_readings(db, [reading_from_smart("drive1", reads[variant], NOW - hours * HOUR)])
    whole = drive_trend("drive1", history(db, "drive1"), NOW)
    anchored = drive_trend("drive1", load_anchors(db, "drive1", (NOW - DAY, NOW - 7 * DAY)), NOW)
    assert anchored == whole
    assert len(load_anchors(db, "drive1", (NOW - DAY, NOW - 7 * DAY))) == 3


def test_growth_in_a_history_younger_than_a_day_counts_from_its_first_read(db, reads) -> None:
    record_readings(db, [reading_from_smart("drive1", reads["healthy"], NOW - 3 * HOUR)])
    record_readings(db, [reading_from_smart("drive1", reads["pending2"], NOW - HOUR)])
    record_readings(db, [reading_from_smart("drive1", reads["pending5"], NOW)])
    trend = load_trends(db, ["drive1"], NOW)["drive1"]
    assert trend.day_ago is None and trend.grown_24h["pending"] == (0, 5)


def test_a_drive_in_standby_shows_its_last_values_and_its_state(db, reads) -> None:
    record_readings(db, [reading_from_smart("drive1", reads["pending2"], NOW - 2 * HOUR)])
    record_readings(db, [reading_from_smart("drive1", reads["standby"], NOW)])
    live = {"drive1": reading_from_smart("drive1", reads["standby"], NOW + 60)}
    trend = load_trends(db, ["drive1"], NOW + 60, live)["drive1"]
    assert trend.state == "standby" and trend.now.pending == 2


def test_a_live_read_is_now_in_the_trend(db, reads) -> None:
    record_readings(db, [reading_from_smart("drive1", reads["pending2"], NOW - 25 * HOUR)])
    live = {"drive1": reading_from_smart("drive1", reads["pending5"], NOW)}
    trend = load_trends(db, ["drive1"], NOW, live)["drive1"]
    assert trend.state == "active" and (trend.now.pending, trend.day_ago.pending) == (5, 2)
    assert len(history(db, "drive1")) == 1  # -ct's own read is not stored


def _settings(**health):
    return validate_config({"harvester": {"alerts": {"temperature_limit_c": 50}, "health": health}})


def test_the_pass_step_records_decides_stores_and_on_releases(db, reads) -> None:
    settings = _settings()
    drives = [_drive("drive1"), _drive("drive2"), _drive("drive3")]
    first = check_drive_health(settings, db, drives, {"drive1": reads["healthy"], "drive2": reads["healthy"],
                                                      "drive3": reads["standby"]}, NOW - 2 * HOUR)
    assert first.holds == {} and len(history(db, "drive3")) == 1
    second = check_drive_health(settings, db, drives, {"drive1": reads["pending2"], "drive2": reads["hot"],
                                                       "drive3": reads["standby"]}, NOW)
    assert {n: h.reason for n, h in second.holds.items()} == {"drive1": "sectors", "drive2": "hot"}
    assert second.holds["drive1"].mountpoint == "/mnt/drive1"
    assert load_holds(db) == second.holds  # stored for the reports and the next pass
    released = release_hold(db, "/mnt/drive1/", NOW + 60)
    assert released is not None and released.drive == "drive1"
    assert set(load_holds(db)) == {"drive2"} and release_hold(db, "drive1") is None
    # The next read accepts what the farmer accepted: drive1 stays in service.
    third = check_drive_health(settings, db, drives, {"drive1": reads["pending2"], "drive2": reads["healthy"],
                                                      "drive3": reads["standby"]}, NOW + 600)
    assert third.holds == {} and [h.drive for h, _ in third.decision.returned] == ["drive2"]


def test_holding_back_switched_off_clears_every_hold(db, reads) -> None:
    db.set(HOLDS_KEY, {"drive1": {"name": "drive1", "reason": "failing", "detail": "x", "since": NOW}})
    db.alert_transition("held_back:failing:drive1", True)
    check = check_drive_health(_settings(hold_back_sick_drives=False), db, [_drive("drive1")],
                               {"drive1": reads["healthy"]}, NOW)
    assert check.holds == {} and load_holds(db) == {} and len(history(db, "drive1")) == 1
    assert db.alert_transition("held_back:failing:drive1", True)  # a later hold alerts again


def test_held_names_reads_an_export_defensively() -> None:
    assert held_names({"held_back": [{"name": "drive1"}, {"nom": "x"}, "drive2", {"name": 3}]}) == {"drive1"}
    assert held_names({"held_back": "garbage"}) == set() and held_names({}) == set()
