"""Pure: which drive receives the next plot, from the network or from this harvester itself.

Decided over the ``DriveState``s a scan produced (``drives.scan_drives``), with no disk touched:
a drive is a candidate when it is mounted, not taken offline and has a free plot slot (its
free space in plots, less the reserved slots); ``fill_in_order`` or ``most_free`` picks among
them. In replace mode a drive holding old OG plots is chosen instead once the farm's free
slots are down to the low-water mark (at once without ``fill_empty_first``). Plots made on this
harvester (move_local_plots.py) go to another drive than the network's while one has room, so
a local copy and a transfer do not write to one disk.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from utilities.harvester.drives import DriveState


def online_drives(drives: Sequence[DriveState], offline: Iterable[str]) -> list[DriveState]:
    """Pure: the drives plots may go to: mounted and not taken offline (natural order kept)."""
    offline_names = set(offline)
    return [d for d in drives if d.mounted and d.name not in offline_names]


def choose_receive_drive(
    drives: Sequence[DriveState],
    offline: Iterable[str],
    plot_size: int,
    reserve_slots: int = 0,
    policy: str = "fill_in_order",
) -> DriveState | None:
    """The drive that receives the next plot, or None when no online drive has a free slot.

    ``fill_in_order`` fills drives one after another in natural order of their mountpoints (the
    original's behaviour: a farmer can tell from the mountpoint which drives are done);
    ``most_free`` spreads plots to the drive with the most free slots.
    """
    candidates = [d for d in online_drives(drives, offline) if d.free_slots(plot_size, reserve_slots) >= 1]
    if not candidates:
        return None
    if policy == "most_free":
        return max(candidates, key=lambda d: d.free_slots(plot_size, reserve_slots))
    return candidates[0]


def choose_replace_drive(drives: Sequence[DriveState], offline: Iterable[str]) -> DriveState | None:
    """Replace mode: the first online drive (natural order) that still holds old OG plots."""
    return next((d for d in online_drives(drives, offline) if d.plots_og > 0), None)


def online_free_slots(
    drives: Sequence[DriveState], offline: Iterable[str], plot_size: int, reserve_slots: int = 0
) -> int:
    """Pure: the free plot slots of the mounted drives that are not offline."""
    return sum(d.free_slots(plot_size, reserve_slots) for d in online_drives(drives, offline))


def choose_receive_target(
    drives: Sequence[DriveState],
    offline: Iterable[str],
    plot_size: int,
    reserve_slots: int = 0,
    policy: str = "fill_in_order",
    replace: bool = False,
    fill_empty_first: bool = True,
    low_water_mark: int = 0,
    *,
    farm_free_slots: int | None = None,
) -> tuple[DriveState | None, bool]:
    """The receive drive and whether incoming plots may replace old OG plots on it.

    Without replacement this is ``choose_receive_drive``. With it: free space first while the
    farm's free slots are above the low-water mark (if ``fill_empty_first``), then the first
    drive with OG plots; with no OG plot left, free space again; None when neither is possible.
    The farm's free slots are those of ``drives`` unless ``farm_free_slots`` says otherwise
    (``choose_local_receive_target`` chooses among some drives, but the mark is the farm's).
    """
    offline_names = set(offline)
    fill = choose_receive_drive(drives, offline_names, plot_size, reserve_slots, policy)
    if not replace:
        return fill, False
    if farm_free_slots is None:
        farm_free_slots = online_free_slots(drives, offline_names, plot_size, reserve_slots)
    if fill is not None and fill_empty_first and farm_free_slots > low_water_mark:
        return fill, False
    target = choose_replace_drive(drives, offline_names)
    if target is not None:
        return target, True
    return fill, False


def choose_local_receive_target(
    drives: Sequence[DriveState],
    offline: Iterable[str],
    plot_size: int,
    network_drives: Iterable[str | None],
    reserve_slots: int = 0,
    policy: str = "fill_in_order",
    replace: bool = False,
    fill_empty_first: bool = True,
    low_water_mark: int = 0,
) -> tuple[DriveState | None, bool]:
    """The drive reserved for plots made on this harvester (move_local_plots.py), and whether
    they may replace old OG plots on it.

    The same rules as ``choose_receive_target``, but over the drives that are not receiving
    from the network (``network_drives``: the current and any pending receive drive), so a
    local copy and a network transfer never write to one disk at once. Only when no other
    drive has room does the local drive fall back to the network's. The farm's free slots
    (for the replace low-water mark) count every online drive, the network's included.
    """
    offline_names = set(offline)
    busy = {name for name in network_drives if name}
    choose = functools.partial(
        choose_receive_target, offline=offline_names, plot_size=plot_size, reserve_slots=reserve_slots,
        policy=policy, replace=replace, fill_empty_first=fill_empty_first, low_water_mark=low_water_mark,
    )
    farm = online_free_slots(drives, offline_names, plot_size, reserve_slots)
    target, may_replace = choose([d for d in drives if d.name not in busy], farm_free_slots=farm)
    if target is not None:
        return target, may_replace
    return choose(drives)
