"""Which drives receive plots (pure): fill in order or most free, offline and unmounted drives
skipped, reserved slots, replace mode's fill-first, replace, fall-back order, and the receive
set of up to N drives built from the same rules."""

from __future__ import annotations

import pytest

from utilities.harvester.drive_choice import (
    ReceiveChoice,
    choose_receive_drive,
    choose_receive_set,
    choose_receive_target,
)
from utilities.harvester.drives import DriveLocation, DriveState

GB = 10**9
PLOT = 100 * GB


def _drive(name: str, free_plots: float, mounted: bool = True) -> DriveState:
    loc = DriveLocation(name, f"/mnt/e0/front/column0/{name}", f"/dev/{name}", "xfs", (f"/mnt/e0/front/column0/{name}",))
    return DriveState(loc, total_bytes=10 * PLOT, used_bytes=0, free_bytes=int(free_plots * PLOT), mounted=mounted)


def test_fill_in_order_skips_full_offline_and_unmounted() -> None:
    drives = [_drive("drive0", 0.5), _drive("drive1", 3), _drive("drive2", 9, mounted=False), _drive("drive3", 8)]
    assert choose_receive_drive(drives, [], PLOT).name == "drive1"
    assert choose_receive_drive(drives, ["drive1"], PLOT).name == "drive3"
    assert choose_receive_drive(drives, ["drive1", "drive3"], PLOT) is None


def test_reserve_slots_and_most_free_policy() -> None:
    drives = [_drive("drive0", 1.2), _drive("drive1", 3), _drive("drive2", 5)]
    assert choose_receive_drive(drives, [], PLOT, reserve_slots=1).name == "drive1"
    assert choose_receive_drive(drives, [], PLOT, policy="most_free").name == "drive2"
    assert choose_receive_drive(drives, [], PLOT, reserve_slots=5) is None


def _og_drive(name: str, free_plots: float, og: int) -> DriveState:
    base = _drive(name, free_plots)
    return DriveState(base.location, base.total_bytes, base.used_bytes, base.free_bytes, plots_og=og)


def test_replace_mode_fills_first_then_replaces_then_falls_back() -> None:
    drives = [_og_drive("drive0", 0, 5), _og_drive("drive1", 0, 3), _og_drive("drive2", 4, 0)]
    assert choose_receive_target(drives, [], PLOT)[0].name == "drive2"  # replacement off
    fill_first = choose_receive_target(drives, [], PLOT, replace=True, low_water_mark=2)
    assert (fill_first[0].name, fill_first[1]) == ("drive2", False)  # 4 free slots > mark 2
    at_mark = choose_receive_target(drives, [], PLOT, replace=True, low_water_mark=4)
    assert (at_mark[0].name, at_mark[1]) == ("drive0", True)
    no_fill_first = choose_receive_target(drives, ["drive0"], PLOT, replace=True, fill_empty_first=False)
    assert (no_fill_first[0].name, no_fill_first[1]) == ("drive1", True)
    no_og_left = [_og_drive("drive0", 0, 0), _og_drive("drive2", 4, 0)]
    assert choose_receive_target(no_og_left, [], PLOT, replace=True, low_water_mark=10) == (no_og_left[1], False)
    nothing = [_og_drive("drive0", 0, 0)]
    assert choose_receive_target(nothing, [], PLOT, replace=True) == (None, False)


def _set(choices: list[ReceiveChoice]) -> list[tuple[str, bool]]:
    return [(c.name, c.replace) for c in choices]


def test_receive_set_fill_in_order_takes_the_first_drives_with_room() -> None:
    drives = [_drive(f"drive{i}", free) for i, free in enumerate([0.5, 3, 1, 9, 2, 7])]
    assert _set(choose_receive_set(drives, [], PLOT)) == [
        ("drive1", False), ("drive2", False), ("drive3", False), ("drive4", False)]
    assert [c.name for c in choose_receive_set(drives, [], PLOT, size=2)] == ["drive1", "drive2"]
    assert [c.name for c in choose_receive_set(drives, [], PLOT, size=64)] == [
        "drive1", "drive2", "drive3", "drive4", "drive5"]


def test_receive_set_most_free_takes_the_emptiest_first() -> None:
    drives = [_drive("drive0", 3), _drive("drive1", 9), _drive("drive2", 5), _drive("drive3", 9), _drive("drive4", 0)]
    assert [c.name for c in choose_receive_set(drives, [], PLOT, policy="most_free", size=3)] == [
        "drive1", "drive3", "drive2"]  # a tie keeps natural order


def test_receive_set_never_holds_offline_unmounted_or_full_drives() -> None:
    drives = [_drive("drive0", 3), _drive("drive1", 3, mounted=False), _drive("drive2", 0.9), _drive("drive3", 3),
              _drive("drive4", 3)]
    assert [c.name for c in choose_receive_set(drives, ["drive3"], PLOT)] == ["drive0", "drive4"]
    assert [c.name for c in choose_receive_set(drives, [], PLOT, reserve_slots=3)] == []
    assert choose_receive_set(drives, ["drive0", "drive3", "drive4"], PLOT) == []


def test_receive_set_first_is_the_single_receive_target() -> None:
    drives = [_og_drive("drive0", 0, 5), _og_drive("drive1", 2, 3), _og_drive("drive2", 4, 0), _og_drive("drive3", 0, 0)]
    for kwargs in ({}, {"replace": True}, {"replace": True, "low_water_mark": 10},
                   {"replace": True, "fill_empty_first": False}, {"policy": "most_free"}):
        target, replace = choose_receive_target(drives, [], PLOT, **kwargs)
        first = choose_receive_set(drives, [], PLOT, **kwargs)[0]
        assert (first.drive, first.replace) == (target, replace), kwargs


def test_receive_set_replace_mode_decides_per_drive() -> None:
    drives = [_og_drive("drive0", 0, 5), _og_drive("drive1", 2, 3), _og_drive("drive2", 4, 0), _og_drive("drive3", 0, 0)]
    # Above the low-water mark with fill_empty_first: only free space, nothing replaced.
    assert _set(choose_receive_set(drives, [], PLOT, replace=True, low_water_mark=5)) == [
        ("drive1", False), ("drive2", False)]
    # At the mark: drives with old OG plots first (each may replace one), then free drives.
    assert _set(choose_receive_set(drives, [], PLOT, replace=True, low_water_mark=6)) == [
        ("drive0", True), ("drive1", True), ("drive2", False)]
    assert _set(choose_receive_set(drives, [], PLOT, replace=True, fill_empty_first=False, size=2)) == [
        ("drive0", True), ("drive1", True)]
    # Replacement off: OG plots are never touched, a drive without a free slot is never in the set.
    assert _set(choose_receive_set(drives, [], PLOT, low_water_mark=6)) == [("drive1", False), ("drive2", False)]
    # No free slot anywhere: replacing is all there is, even above the mark (0 free > mark 0 fails).
    full = [_og_drive("drive0", 0, 5), _og_drive("drive1", 0, 0), _og_drive("drive2", 0, 1)]
    assert _set(choose_receive_set(full, [], PLOT, replace=True)) == [("drive0", True), ("drive2", True)]
    assert choose_receive_set(full, ["drive0", "drive2"], PLOT, replace=True) == []


def test_receive_set_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one drive"):
        choose_receive_set([_drive("drive0", 3)], [], PLOT, size=0)
