"""Pure: which drives receive plots, from the network or from this harvester itself.

Decided over the ``DriveState``s a scan produced (``drives.scan_drives``), with no disk touched:
a drive is a candidate when it is mounted, not in ``offline`` and has a free plot slot (its
free space in plots, less the reserved slots); ``fill_in_order`` or ``most_free`` orders them.
``offline`` names every drive no plot may go to: those the farmer took offline and those held
back for their SMART health or heat (``receive_set.unavailable_drives``).
In replace mode drives holding old OG plots come first instead once the farm's free slots are
down to the low-water mark (at once without ``fill_empty_first``).

The network receives onto a *set* of drives (``choose_receive_set``): several plots at once,
each onto its own drive, because one HDD cannot keep up with one fast plotter. Plots made on
this harvester (move_local_plots.py) go to a drive outside that set while one has room, so a
local copy and a transfer do not write to one disk.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from utilities.harvester.drives import DriveState


def online_drives(drives: Sequence[DriveState], offline: Iterable[str]) -> list[DriveState]:
    """Pure: the drives plots may go to: mounted and not taken offline (natural order kept)."""
    offline_names = set(offline)
    return [d for d in drives if d.mounted and d.name not in offline_names]


@dataclass(frozen=True)
class ReceiveChoice:
    """One drive of the receive set, and whether a receiver may replace one old OG plot on it."""

    drive: DriveState
    replace: bool = False

    @property
    def name(self) -> str:
        return self.drive.name


def online_free_slots(
    drives: Sequence[DriveState], offline: Iterable[str], plot_size: int, reserve_slots: int = 0
) -> int:
    """Pure: the free plot slots of the mounted drives that are not offline."""
    return sum(d.free_slots(plot_size, reserve_slots) for d in online_drives(drives, offline))


def _policy_order(drives: Sequence[DriveState], plot_size: int, reserve_slots: int, policy: str) -> list[DriveState]:
    """The drives with a free slot, in the policy's order (ties keep natural order).

    ``fill_in_order`` fills drives one after another in natural order of their mountpoints (the
    original's behaviour: a farmer can tell from the mountpoint which drives are done);
    ``most_free`` spreads plots over the drives with the most free slots.
    """
    free = [d for d in drives if d.free_slots(plot_size, reserve_slots) >= 1]
    if policy == "most_free":
        return sorted(free, key=lambda d: -d.free_slots(plot_size, reserve_slots))
    return free


def choose_receive_drive(
    drives: Sequence[DriveState],
    offline: Iterable[str],
    plot_size: int,
    reserve_slots: int = 0,
    policy: str = "fill_in_order",
) -> DriveState | None:
    """The drive with a free slot the policy puts first, or None when no online drive has one."""
    return next(iter(_policy_order(online_drives(drives, offline), plot_size, reserve_slots, policy)), None)


def receive_order(
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
) -> list[ReceiveChoice]:
    """Every online drive that may receive a plot now, best first, each with its replace flag.

    Without replacement: the drives with a free slot, in policy order. With it: the same while
    ``fill_empty_first`` and the farm's free slots are above the low-water mark; past the mark
    (at once without ``fill_empty_first``) the drives with old OG plots first (natural order,
    each may replace one), then the drives with a free slot. The farm's free slots are those
    of ``drives`` unless ``farm_free_slots`` says otherwise (the local drive is chosen among
    some drives, but the mark is the farm's).
    """
    online = online_drives(drives, offline)
    fill = [ReceiveChoice(d) for d in _policy_order(online, plot_size, reserve_slots, policy)]
    if not replace:
        return fill
    if farm_free_slots is None:
        farm_free_slots = sum(d.free_slots(plot_size, reserve_slots) for d in online)
    if fill and fill_empty_first and farm_free_slots > low_water_mark:
        return fill
    replacing = [ReceiveChoice(d, True) for d in online if d.plots_og > 0]
    taken = {c.name for c in replacing}
    return replacing + [c for c in fill if c.name not in taken]


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
    """The one best receive drive (``receive_order``'s first) and whether incoming plots may
    replace old OG plots on it; (None, False) when no drive can take a plot."""
    order = receive_order(drives, offline, plot_size, reserve_slots, policy, replace, fill_empty_first,
                          low_water_mark, farm_free_slots=farm_free_slots)
    return (order[0].drive, order[0].replace) if order else (None, False)


def choose_receive_set(
    drives: Sequence[DriveState],
    offline: Iterable[str],
    plot_size: int,
    reserve_slots: int = 0,
    policy: str = "fill_in_order",
    replace: bool = False,
    fill_empty_first: bool = True,
    low_water_mark: int = 0,
    *,
    size: int = 4,
    keep_local_drive: bool = False,
) -> list[ReceiveChoice]:
    """The receive set: up to ``size`` drives in ``receive_order``; empty when none has room.

    Each receiver claims one drive of the set for its whole transfer, so ``size`` is how many
    plots the harvester takes at once. With ``keep_local_drive`` (local moves on) the drive
    reserved for local plots stays out of the set while another drive has room: it is
    ``choose_local_receive_target`` over the drives not in the set; when the set would hold
    every drive with room, the drive local plots had with a single receive drive (the best one
    after the set's first) leaves the set, unless the set's first is all there is.
    """
    if size < 1:
        raise ValueError(f"a receive set holds at least one drive, not {size}")
    offline_names = set(offline)
    local = functools.partial(
        choose_local_receive_target, drives, offline_names, plot_size, reserve_slots=reserve_slots, policy=policy,
        replace=replace, fill_empty_first=fill_empty_first, low_water_mark=low_water_mark,
    )
    chosen = receive_order(drives, offline_names, plot_size, reserve_slots, policy, replace, fill_empty_first,
                           low_water_mark)[:size]
    names = [c.name for c in chosen]
    if not keep_local_drive or len(chosen) < 2:
        return chosen
    outside, _ = local(network_drives=names)
    if outside is None or outside.name not in names:
        return chosen  # the local drive is outside the set already (or there is none)
    kept_out, _ = local(network_drives=names[:1])
    return [c for c in chosen if kept_out is None or c.name != kept_out.name]


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
    from the network (``network_drives``: the receive set), so a local copy and a network
    transfer never write to one disk at once. Only when no other drive has room does the local
    drive fall back to the network's best one. The farm's free slots (for the replace low-water
    mark) count every online drive, the network's included.
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
