"""The drive reserved for local plots (pure): never one of the network's receive set while
another drive has room, and kept out of that set when the set would take every drive."""

from __future__ import annotations

from utilities.harvester.drive_choice import choose_local_receive_target, choose_receive_set, choose_receive_target
from utilities.harvester.drives import DriveLocation, DriveState

PLOT = 100


def drive(name: str, free_slots: int, og: int = 0, mounted: bool = True) -> DriveState:
    location = DriveLocation(name, f"/mnt/{name}", f"/dev/{name}", "xfs", (f"/mnt/{name}",))
    return DriveState(location, total_bytes=10**6, used_bytes=0, free_bytes=free_slots * PLOT, plots_og=og,
                      mounted=mounted)


def names(choice: tuple[DriveState | None, bool]) -> tuple[str | None, bool]:
    chosen, replace = choice
    return (chosen.name if chosen else None), replace


def test_local_drive_differs_from_the_network_drive_when_two_have_room() -> None:
    drives = [drive("d0", 3), drive("d1", 3), drive("d2", 3)]
    network, _ = choose_receive_target(drives, [], PLOT)
    assert network is not None and network.name == "d0"
    assert names(choose_local_receive_target(drives, [], PLOT, [network.name])) == ("d1", False)


def test_every_drive_of_the_receive_set_is_avoided() -> None:
    drives = [drive("d0", 0), drive("d1", 3), drive("d2", 3), drive("d3", 3)]
    assert names(choose_local_receive_target(drives, [], PLOT, ["d1", "d2"])) == ("d3", False)


def test_offline_unmounted_and_full_drives_are_skipped() -> None:
    drives = [drive("d0", 3), drive("d1", 3), drive("d2", 0), drive("d3", 3, mounted=False), drive("d4", 1)]
    assert names(choose_local_receive_target(drives, ["d1"], PLOT, ["d0"])) == ("d4", False)


def test_shares_the_network_drive_only_when_it_is_the_last_with_room() -> None:
    drives = [drive("d0", 0), drive("d1", 2), drive("d2", 0)]
    assert names(choose_local_receive_target(drives, [], PLOT, ["d1"])) == ("d1", False)
    assert names(choose_local_receive_target([drive("d0", 0)], [], PLOT, ["d0"])) == (None, False)


def test_most_free_policy_applies_among_the_other_drives() -> None:
    drives = [drive("d0", 9), drive("d1", 2), drive("d2", 5)]
    assert names(choose_local_receive_target(drives, [], PLOT, ["d0"], policy="most_free")) == ("d2", False)


def test_replace_mode_uses_another_drive_with_old_plots() -> None:
    drives = [drive("d0", 0, og=4), drive("d1", 0, og=2), drive("d2", 0)]
    assert names(choose_local_receive_target(drives, [], PLOT, ["d0"], replace=True)) == ("d1", True)
    # Free space first while the farm has more free slots than the low-water mark.
    roomy = [drive("d0", 0, og=4), drive("d1", 0, og=2), drive("d2", 5)]
    assert names(choose_local_receive_target(roomy, [], PLOT, ["d0"], replace=True)) == ("d2", False)
    # Below the mark, old plots are replaced even though free space is left.
    assert names(choose_local_receive_target(roomy, [], PLOT, ["d0"], replace=True, low_water_mark=10)) == ("d1", True)


def test_replace_mode_falls_back_to_the_network_drive_last() -> None:
    drives = [drive("d0", 0, og=4), drive("d1", 0)]
    assert names(choose_local_receive_target(drives, [], PLOT, ["d0"], replace=True)) == ("d0", True)


def set_names(drives: list[DriveState], **kwargs: object) -> list[str]:
    return [c.name for c in choose_receive_set(drives, [], PLOT, keep_local_drive=True, **kwargs)]  # type: ignore[arg-type]


def local_for(drives: list[DriveState], network: list[str], **kwargs: object) -> str | None:
    chosen, _ = choose_local_receive_target(drives, [], PLOT, network, **kwargs)  # type: ignore[arg-type]
    return chosen.name if chosen else None


def test_a_set_smaller_than_the_drives_with_room_leaves_the_local_drive_outside() -> None:
    drives = [drive(f"d{i}", 3) for i in range(6)]
    network = set_names(drives)
    assert network == ["d0", "d1", "d2", "d3"]
    assert local_for(drives, network) == "d4"
    roomy = [drive("d0", 2), drive("d1", 9), drive("d2", 5), drive("d3", 7)]
    network = set_names(roomy, policy="most_free", size=2)
    assert network == ["d1", "d3"] and local_for(roomy, network, policy="most_free") == "d2"


def test_a_set_that_would_take_every_drive_leaves_one_to_local_plots() -> None:
    drives = [drive("d0", 3), drive("d1", 3), drive("d2", 0), drive("d3", 3)]
    network = set_names(drives)
    assert network == ["d0", "d3"]  # d1, local plots' drive with one receive drive, stays theirs
    assert local_for(drives, network) == "d1"
    assert set_names(drives, policy="most_free") == ["d0", "d3"]
    # Without local moves the set takes them all.
    assert [c.name for c in choose_receive_set(drives, [], PLOT)] == ["d0", "d1", "d3"]


def test_the_last_drive_with_room_stays_in_the_set() -> None:
    drives = [drive("d0", 0), drive("d1", 2), drive("d2", 0)]
    assert set_names(drives) == ["d1"]
    assert local_for(drives, ["d1"]) == "d1"  # shared, as before, only when nothing else has room
    assert set_names([drive("d0", 0)]) == []


def test_replace_mode_local_drive_is_an_og_drive_outside_the_set() -> None:
    # Free space is filled first by the network; local plots replace OG plots on another drive.
    drives = [drive("d0", 0, og=4), drive("d1", 5), drive("d2", 5)]
    assert set_names(drives, replace=True) == ["d1", "d2"]
    assert local_for(drives, ["d1", "d2"], replace=True) == "d0"
    # Past the mark every drive is in the order (OG drives first): the second leaves the set.
    assert set_names(drives, replace=True, low_water_mark=10) == ["d0", "d2"]
    assert local_for(drives, ["d0", "d2"], replace=True, low_water_mark=10) == "d1"
