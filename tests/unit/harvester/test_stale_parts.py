"""The stale-part sweep's decisions (pure), its figures in the export and -pr, and the two
part_files additions it rests on (on real files in a temp directory)."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from pathlib import Path

import pytest

from utilities.harvester.reports import plot_report_data, plot_report_text, stale_parts_text
from utilities.harvester.stale_parts import (
    MAX_REMEMBERED,
    WINDOW_SECONDS,
    Listing,
    directories_to_list,
    listings_to_store,
    next_listings,
    parse_listings,
    parts_to_check,
    recent_removals,
    sweep_directory,
    tally,
)
from utilities.harvester_export import DriveSummary, HarvesterSnapshot, PartsRemoved, parse_export
from utilities.text import REPORT_WIDTH
from utilities.transfer import part_files

NAME = "plot-k32-2021-05-01-00-00-" + "d" * 64 + ".plot"
PART = f".{NAME}.part"


# -- which directories are listed, what is remembered ----------------------------------------------


def test_only_new_and_changed_directories_are_listed() -> None:
    listings = {"/d/a": Listing(10, ()), "/d/b": Listing(20, (PART,)), "/d/gone": Listing(5, ())}
    mtimes = {"/d/a": 10, "/d/b": 21, "/d/new": 1}
    assert directories_to_list(listings, mtimes) == ["/d/b", "/d/new"]
    assert directories_to_list({}, {}) == []


def test_unchanged_directories_keep_their_parts_and_unscanned_ones_are_forgotten() -> None:
    listings = {"/d/a": Listing(10, (PART,)), "/d/b": Listing(20, (PART,)), "/d/unmounted": Listing(5, (PART,))}
    mtimes = {"/d/a": 10, "/d/b": 21, "/d/unlistable": 3}
    fresh = {"/d/b": ()}  # listed again (changed); /d/unlistable could not be listed
    remembered = next_listings(listings, fresh, mtimes)
    assert remembered == {"/d/a": Listing(10, (PART,)), "/d/b": Listing(21, ())}
    assert parts_to_check(remembered) == {"/d/a": (PART,)}
    # The part of an unchanged directory is checked every pass until its directory changes.
    assert directories_to_list(remembered, mtimes) == ["/d/unlistable"]


def test_recorded_listings_survive_the_database_and_garbage_is_dropped() -> None:
    listings = {"/d/a": Listing(10, (PART,)), "/d/b": Listing(20, ())}
    stored = json.loads(json.dumps(listings_to_store(listings)))
    assert parse_listings(stored) == listings
    assert parse_listings({"/d/a": [10, [PART]], "/d/x": "junk", "/d/y": [1], "/d/z": ["nan?", []]}) == {
        "/d/a": Listing(10, (PART,))
    }
    assert parse_listings(None) == {} and parse_listings(["not", "a", "dict"]) == {}


# -- the 24-hour figures ----------------------------------------------------------------------------


def test_removals_count_for_a_day_then_drop_out() -> None:
    now = 1_000_000.0
    records = [
        {"at": now - WINDOW_SECONDS - 1, "bytes": 100},  # a day and a second ago
        {"at": now - WINDOW_SECONDS, "bytes": 200},
        {"at": now, "bytes": 300},
        {"at": "yesterday", "bytes": 1},
        {"at": now, "bytes": "lots"},
        "junk",
    ]
    recent = recent_removals(records, now)
    assert [r["bytes"] for r in recent] == [200, 300]
    assert tally(recent) == PartsRemoved(files=2, bytes=500)
    assert tally(recent_removals(None, now)) == PartsRemoved()
    many = [{"at": now, "bytes": i} for i in range(MAX_REMEMBERED + 5)]
    assert [r["bytes"] for r in recent_removals(many, now)] == list(range(5, MAX_REMEMBERED + 5))


def _snapshot(stale: PartsRemoved) -> HarvesterSnapshot:
    drive = DriveSummary("drive0", "/mnt/drive0", "/dev/sdb", None, "xfs", 10 * 2**30, 2**30, 1, 1, 0, 0, 1, False, True)
    return HarvesterSnapshot("chianas01", 1_700_000_000.0, 2**30, (drive,), receive_drive="drive0", stale_parts=stale)


def test_the_export_carries_the_figures_and_older_exports_read_as_none() -> None:
    snap = _snapshot(PartsRemoved(files=2, bytes=5 * 2**30))
    data = json.loads(json.dumps(snap.to_dict()))
    assert data["stale_parts_removed_24h"] == {"files": 2, "bytes": 5 * 2**30}
    assert HarvesterSnapshot.from_dict(data).stale_parts == PartsRemoved(2, 5 * 2**30)
    del data["stale_parts_removed_24h"]  # a harvester from before this change
    assert HarvesterSnapshot.from_dict(data).stale_parts == PartsRemoved()


@pytest.mark.parametrize("garbage", ["2", [2, 3], {"files": 2}, {"files": -1, "bytes": 0}, {"files": True, "bytes": 0}])
def test_garbage_figures_make_the_export_malformed(garbage: object) -> None:
    data = _snapshot(PartsRemoved()).to_dict()
    data["stale_parts_removed_24h"] = garbage
    with pytest.raises(ValueError, match="malformed"):
        HarvesterSnapshot.from_dict(data)


def test_plot_report_shows_the_figures() -> None:
    data = plot_report_data(_snapshot(PartsRemoved(files=2, bytes=int(200.5 * 2**30))), None)
    assert (data["stale_parts_removed_24h"], data["stale_part_bytes_freed_24h"]) == (2, int(200.5 * 2**30))
    line = next(li for li in plot_report_text(data, "k32").splitlines() if li.startswith("Stale Part Files Removed"))
    assert line.endswith(" 2 (200.5 GiB freed)") and len(line) == REPORT_WIDTH
    assert stale_parts_text(0, 0) == "0"


# -- part_files: the bytes freed, and a turn taken without waiting -----------------------------------


def test_reclaim_reports_the_allocation_it_freed(tmp_path: Path) -> None:
    fd = part_files.open_directory(tmp_path)
    try:
        stale = tmp_path / PART
        with open(stale, "wb") as handle:
            handle.write(os.urandom(64 * 1024))
            handle.truncate(1 << 30)  # sparse: the length is not what the drive gets back
        allocated = stale.stat().st_blocks * 512
        assert 64 * 1024 <= allocated < 1 << 20
        assert part_files.reclaim_if_stale(fd, PART) == (part_files.StaleCheck(gone=True, removed=True), allocated)
        assert not stale.exists()
        assert part_files.reclaim_if_stale(fd, PART) == (part_files.StaleCheck(gone=True), 0)
        stale.write_bytes(b"held")
        with open(stale, "rb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            assert part_files.reclaim_if_stale(fd, PART) == (part_files.StaleCheck(gone=False), 0)
        assert stale.exists()
    finally:
        os.close(fd)


def test_a_directory_turn_is_taken_only_when_free(tmp_path: Path) -> None:
    ours, writer = part_files.open_directory(tmp_path), part_files.open_directory(tmp_path)
    try:
        # A writer checking space and creating its part holds the turn: not ours to take.
        with part_files.directory_turn(writer), part_files.try_directory_turn(ours) as got:
            assert not got
        with part_files.try_directory_turn(ours) as got:
            assert got
            with part_files.try_directory_turn(writer) as other:
                assert not other  # held until we leave
        with part_files.try_directory_turn(writer) as other:
            assert other
    finally:
        os.close(ours)
        os.close(writer)


def test_a_part_kept_for_a_resume_is_reported_until_it_expires(tmp_path: Path) -> None:
    from utilities.transfer.journal import Journal, write_journal

    drive = tmp_path / "drive"
    drive.mkdir()
    name = PART[1 : -len(".part")]
    (drive / PART).write_bytes(b"x" * 5000)
    fd = part_files.open_directory(drive)
    try:
        write_journal(fd, PART, Journal(name, 5000, "abc", 1024, ["0" * 32] * 3))
    finally:
        os.close(fd)
    kept: list[tuple[str, int]] = []
    assert sweep_directory(str(drive), [PART], kept) == [] and kept == [(PART, 3072)]
    assert (drive / PART).exists()
    assert [n for n, _ in sweep_directory(str(drive), [PART], [], keep_seconds=0)] == [PART]
    assert os.listdir(drive) == []


def test_plot_report_shows_the_parts_kept_to_resume() -> None:
    snap = dataclasses.replace(_snapshot(PartsRemoved()), resumable_parts=PartsRemoved(files=1, bytes=60 * 2**30))
    data = plot_report_data(snap, None)
    line = next(li for li in plot_report_text(data, "k32").splitlines() if li.startswith("Kept Part Files"))
    assert line.endswith(" 1 (partial, resumable, 60.0 GiB)") and len(line) == REPORT_WIDTH
    back = parse_export(json.dumps(snap.to_dict()).encode(), snap.hostname)
    assert back.resumable_parts == PartsRemoved(1, 60 * 2**30)
