"""The drive reserved for local plots (pure): never the network's while another has room."""

from __future__ import annotations

from utilities.harvester.drive_choice import choose_local_receive_target, choose_receive_target
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


def test_pending_network_drive_is_avoided_too() -> None:
    drives = [drive("d0", 0), drive("d1", 3), drive("d2", 3)]
    # The receive script still points at d0 (a transfer deferred the change) and d1 is next.
    assert names(choose_local_receive_target(drives, [], PLOT, ["d0", "d1"])) == ("d2", False)


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
