"""Which drive receives the next plot (pure): fill in order or most free, offline and unmounted
drives skipped, reserved slots, and replace mode's fill-first, replace, fall-back order."""

from __future__ import annotations

from utilities.harvester.drive_choice import choose_receive_drive, choose_receive_target
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
