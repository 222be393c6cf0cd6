"""Which plot drives vanished and which came back: the pure decision over recorded and found
drives, and the records kept in a real SQLite state database across passes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from utilities.harvester.drive_presence import (
    DAY,
    NOT_FOUND,
    OTHER_FILESYSTEM,
    UNREADABLE,
    DriveRecord,
    MissingDrive,
    diff_presence,
    forget_drive,
    load_records,
    missing_drives,
    save_records,
)
from utilities.harvester_export import DriveSummary, HarvesterSnapshot, parse_export
from utilities.state import StateDB

NOW = 1_700_000_000.0


def _drive(name: str, plots: int = 5, uuid: str | None = "u-", device: str | None = None, **kw: object) -> DriveSummary:
    base: dict[str, object] = dict(
        name=name, mountpoint=f"/mnt/{name}", device=device or f"/dev/{name}", uuid=(uuid + name) if uuid else None,
        fstype="xfs", total_bytes=100, free_bytes=10, plots_og=0, plots_pool=plots, plots_unknown=0,
        plots_last_24h=0, free_slots=1, offline=False, mounted=True,
    )
    base.update(kw)
    return DriveSummary(**base)  # type: ignore[arg-type]


def _known(*drives: DriveSummary) -> dict[str, DriveRecord]:
    return diff_presence({}, drives, set(), NOW - 60).records


def test_the_first_pass_records_every_drive_and_reports_nothing() -> None:
    change = diff_presence({}, [_drive("drive0"), _drive("drive1", 0)], set(), NOW)
    assert (change.vanished, change.returned, change.missing) == ([], [], [])
    assert change.records["drive0"] == DriveRecord("drive0", "/mnt/drive0", "/dev/drive0", "u-drive0", 5)


def test_an_unmounted_drive_is_missing_with_the_plots_it_held_once_and_stays_missing() -> None:
    known = _known(_drive("drive0"), _drive("drive1", 7))
    first = diff_presence(known, [_drive("drive0")], set(), NOW)
    (gone,) = first.vanished
    assert (gone.name, gone.plots, gone.missing_since, gone.reason) == ("drive1", 7, NOW, NOT_FOUND)
    later = diff_presence(first.records, [_drive("drive0")], set(), NOW + 600)
    assert later.vanished == [] and later.missing == [MissingDrive("drive1", "/mnt/drive1", "/dev/drive1", "u-drive1", 7,
                                                                   NOW, NOT_FOUND)]


def test_its_return_is_noticed_once() -> None:
    missing = diff_presence(_known(_drive("drive1", 7)), [], set(), NOW).records
    back = diff_presence(missing, [_drive("drive1", 7)], set(), NOW + 60)
    ((was, now),) = back.returned
    assert was.missing_since == NOW and now.name == "drive1" and back.missing == []
    assert diff_presence(back.records, [_drive("drive1", 7)], set(), NOW + 120).returned == []


def test_an_unreadable_drive_is_missing() -> None:
    change = diff_presence(_known(_drive("drive0")), [_drive("drive0", 0, mounted=False)], set(), NOW)
    assert [(g.name, g.reason) for g in change.vanished] == [("drive0", UNREADABLE)]


def test_another_filesystem_without_plots_at_its_place_is_missing_but_an_empty_drive_is_not() -> None:
    known = _known(_drive("drive0", 5), _drive("drive1", 0))
    # Unmounted under plot_directories globs: the directory is found again on the root filesystem.
    root = {"uuid": "root-uuid", "device": "/dev/sda2"}
    change = diff_presence(known, [_drive("drive0", 0, **root), _drive("drive1", 0, **root)], set(), NOW)
    assert [(g.name, g.reason) for g in change.vanished] == [("drive0", OTHER_FILESYSTEM)]
    # Its own filesystem with no plots (replace mode between two plots, or emptied): present.
    assert diff_presence(known, [_drive("drive0", 0), _drive("drive1", 0)], set(), NOW).vanished == []
    # Same UUID under another device name (after a reboot): the same drive.
    assert diff_presence(known, [_drive("drive0", 0, device="/dev/sdq1"), _drive("drive1")], set(), NOW).vanished == []


def test_a_drive_taken_offline_and_pulled_is_forgotten_quietly() -> None:
    change = diff_presence(_known(_drive("drive0"), _drive("drive1")), [_drive("drive0")], {"drive1"}, NOW)
    assert change.vanished == [] and [r.name for r in change.forgotten] == ["drive1"] and "drive1" not in change.records


def test_a_missing_drive_is_forgotten_after_thirty_days() -> None:
    missing = diff_presence(_known(_drive("drive0")), [], set(), NOW).records
    assert diff_presence(missing, [], set(), NOW + 29 * DAY).missing != []
    late = diff_presence(missing, [], set(), NOW + 30 * DAY)
    assert late.missing == [] and [r.name for r in late.forgotten] == ["drive0"]


def test_a_drive_remounted_under_another_name_has_returned() -> None:
    missing = diff_presence(_known(_drive("drive3")), [], set(), NOW).records
    moved = dataclasses.replace(_drive("drive9"), uuid="u-drive3")
    change = diff_presence(missing, [moved], set(), NOW + 60)
    assert [(was.name, now.name) for was, now in change.returned] == [("drive3", "drive9")]
    assert set(change.records) == {"drive9"} and change.missing == []


def test_records_persist_in_the_state_database_and_only_changes_are_written(tmp_path: Path) -> None:
    with StateDB(tmp_path / "state.db") as db:
        assert load_records(db) == {}
        first = diff_presence({}, [_drive("drive0"), _drive("drive1")], set(), NOW)
        save_records(db, {}, first.records)
        assert load_records(db) == first.records
        second = diff_presence(load_records(db), [_drive("drive0")], set(), NOW + 60)
        save_records(db, first.records, second.records)
        assert load_records(db) == second.records
        # Read only (-pr): the recorded state plus this scan, without writing.
        assert [m.name for m in missing_drives(db, [_drive("drive0")], set(), NOW + 120)] == ["drive1"]
        assert [m.name for m in missing_drives(db, [], set(), NOW + 120)] == ["drive0", "drive1"]
        assert set(load_records(db)) == {"drive0", "drive1"} and not load_records(db)["drive0"].missing
        assert forget_drive(db, "/mnt/drive0/") is None  # present, not missing: nothing to forget
        assert forget_drive(db, "/mnt/drive1/").name == "drive1"  # type: ignore[union-attr]
        assert set(load_records(db)) == {"drive0"}


def test_missing_drives_ride_in_the_export_and_garbage_entries_are_left_out() -> None:
    gone = MissingDrive("drive1", "/mnt/drive1", "/dev/sdb1", None, 7, NOW, NOT_FOUND)
    snap = HarvesterSnapshot("chianas01", NOW, 100, (_drive("drive0"),), missing_drives=(gone,))
    data = json.loads(json.dumps(snap.to_dict()))
    assert parse_export(json.dumps(data).encode(), "chianas01").missing_drives == (gone,)
    data["missing_drives"] = [gone.to_dict(), {"name": "x"}, 3, {**gone.to_dict(), "plots": -1}]
    assert parse_export(json.dumps(data).encode(), "chianas01").missing_drives == (gone,)
    data["missing_drives"] = "garbage"
    assert parse_export(json.dumps(data).encode(), "chianas01").missing_drives == ()
    del data["missing_drives"]  # an older harvester
    assert parse_export(json.dumps(data).encode(), "chianas01").missing_drives == ()
