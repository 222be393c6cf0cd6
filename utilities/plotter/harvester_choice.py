"""Which harvester gets the next plot: pure decisions over the harvesters' exports.

The plotter reads every harvester's export (written each minute by its drive_manager.py), drops
the ones it cannot trust (unreachable, garbage, stale, nowhere to receive), and sends to the one
with the most room for the configured priority, counting plots already on their way to it.
How many plots a harvester takes this run is what its receive set can hold (``receive_room``),
how many at once what its export says it can take now (``session_capacity``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from utilities.harvester_export import HarvesterSnapshot


@dataclass(frozen=True)
class HarvesterChoice:
    name: str
    room: int
    snapshot: HarvesterSnapshot


def _receive_entries(snapshot: HarvesterSnapshot) -> list[tuple[str, bool]]:
    """(drive, may replace) for each drive of the receive set; a snapshot without a set (an old
    harvester's) receives onto its receive drive, replacing when its extra says so."""
    entries = [(entry.name, entry.replace) for entry in snapshot.receive_set]
    if not entries and snapshot.receive_drive is not None:
        entries = [(snapshot.receive_drive, bool(snapshot.extra.get("receive_replaces_old_plots")))]
    return entries


def receive_room(snapshot: HarvesterSnapshot) -> int:
    """Plots the harvester can take this run: over its receive set's online drives, free slots,
    plus old OG plots on a drive it may replace on.  The set changes only when its
    drive_manager.py runs, so this is the most one plotter run sends there."""
    room = 0
    for name, replace in _receive_entries(snapshot):
        drive = snapshot.drive(name)
        if drive is not None and drive.mounted and not drive.offline:
            room += drive.free_slots + (drive.plots_og if replace else 0)
    return room


def speaks_sessions(snapshot: HarvesterSnapshot) -> bool:
    """Its receiver takes sessions and answers busy (receive_protocol 2); older ones take one
    plot per receiver (send_plot)."""
    return snapshot.receive_protocol >= 2


def speaks_resume(snapshot: HarvesterSnapshot) -> bool:
    """Its receiver journals resumable plots and answers RESUME (receive_protocol 3)."""
    return snapshot.receive_protocol >= 3


def session_capacity(snapshot: HarvesterSnapshot) -> int:
    """Sessions this plotter may open there at once: the receives it can take now
    (``receives_available``, 0 when every drive of its set is claimed), or one when its export
    does not say (an older harvester: one receive drive)."""
    if snapshot.receives_available is None or not speaks_sessions(snapshot):
        return 1
    return snapshot.receives_available



def room_for_plots(snapshot: HarvesterSnapshot, priority: str) -> int:
    """How many more plots the harvester can take: free slots, plus old OG plots in replace mode."""
    room = snapshot.slots_until_full
    if priority == "replace" and snapshot.extra.get("replace_non_pool_plots"):
        room += sum(d.plots_og for d in snapshot.online_drives)
    return room


def usable_reason(snapshot: HarvesterSnapshot, now: float, max_age_seconds: float) -> str | None:
    """Why a parsed export cannot be used now, or None when it can."""
    age = now - snapshot.generated_at
    if age > max_age_seconds:
        return f"export is {age / 60:.0f} minutes old (is drive_manager.py running from cron?)"
    if snapshot.receive_drive is None:
        return "no drive can receive plots"
    return None


def choose_harvester(
    snapshots: Mapping[str, HarvesterSnapshot],
    priority: str,
    in_flight: Mapping[str, int] | None = None,
    only: str | None = None,
) -> HarvesterChoice | None:
    """The harvester with the most room after the plots already being sent to it; ties go to
    the first name in sorted order, so the choice is deterministic."""
    in_flight = in_flight or {}
    best: HarvesterChoice | None = None
    for name in sorted(snapshots):
        if only is not None and name != only:
            continue
        room = room_for_plots(snapshots[name], priority) - in_flight.get(name, 0)
        if room >= 1 and (best is None or room > best.room):
            best = HarvesterChoice(name, room, snapshots[name])
    return best
