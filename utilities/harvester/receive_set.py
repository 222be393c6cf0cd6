"""The receive set in the minute pass: choose it, write it into ``receive_plot.sh``, record it,
and show it (with the receives in flight) in the snapshot.

The choice is ``drive_choice.choose_receive_set`` (pure); what a receiver does with the set is
``utilities/transfer/claims.py`` and the receiver's. The state database keeps the set the
script names now (``RECEIVE_KEY``), so reports that only scan (``-pr``, ``-fr``) show where plots
really go, and the next pass sees what changed. The "new plot drive" notification still follows
the set's first drive, the drive the reports call the current plot drive.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from utilities.config import Settings
from utilities.harvester.drive_choice import ReceiveChoice, choose_receive_set
from utilities.harvester.drive_holds import held_names
from utilities.harvester.drives import DriveLocation, DriveState
from utilities.harvester.reports import format_health, format_temperature
from utilities.harvester.smart import SmartInfo, read_smart
from utilities.harvester_export import HarvesterSnapshot, ReceiveSetDrive, receives_available
from utilities.notify import Notification, Notifier
from utilities.state import StateDB
from utilities.text import format_size
from utilities.transfer.claims import CLAIMS_DIRNAME, ReceiveInFlight, receives_in_flight

log = logging.getLogger(__name__)

# {name, mountpoint, receive_dir, replace} of the set's first drive (what older code and -rp
# read), and "set": the same for every drive of the set, in order; {} when no drive has room.
RECEIVE_KEY = "receive_drive"


def claims_dir(settings: Settings) -> Path:
    """Where receivers claim their drives, and the pass and reports read what they receive."""
    return settings.state_path / CLAIMS_DIRNAME


def live_receives(settings: Settings) -> tuple[ReceiveInFlight, ...]:
    """The receives in flight now (held claims), read without taking a lock."""
    return tuple(receives_in_flight(claims_dir(settings)))


def unavailable_drives(snap: HarvesterSnapshot) -> set[str]:
    """Pure: the drives no plot may go to, whatever their room: taken offline by the farmer
    (``-off``) or held back for their health (``drive_holds``, in ``extra["held_back"]``)."""
    return {d.name for d in snap.drives if d.offline} | held_names(snap.extra)


def set_record(chosen: Sequence[ReceiveChoice]) -> dict[str, Any]:
    """Pure: the state record of a receive set."""
    entries = [
        {"name": c.drive.location.name, "mountpoint": c.drive.location.mountpoint,
         "receive_dir": c.drive.location.receive_dir, "replace": c.replace}
        for c in chosen
    ]
    return {**entries[0], "set": entries} if entries else {}


def recorded_set(record: Mapping[str, Any]) -> tuple[ReceiveSetDrive, ...]:
    """Pure: the set a state record names; a record from before receive sets is its drive alone."""
    entries = record.get("set")
    if not isinstance(entries, list):
        entries = [record] if record.get("name") else []
    return tuple(
        ReceiveSetDrive(entry["name"], bool(entry.get("replace")))
        for entry in entries
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str) and entry["name"]
    )


def with_receive_set(snap: HarvesterSnapshot, record: Mapping[str, Any], per_drive: int) -> HarvesterSnapshot:
    """Pure: ``snap`` showing the recorded set (its first drive as the receive drive) and the
    receives it can take now, given the receives in flight ``snap`` already carries."""
    chosen = recorded_set(record)
    return dataclasses.replace(
        snap,
        receive_drive=record.get("name"),
        receive_dir=record.get("receive_dir"),
        receive_set=chosen,
        receives_available=receives_available(chosen, snap.drives, per_drive, snap.receiving),
        extra={**snap.extra, "receive_replaces_old_plots": bool(record.get("replace"))},
    )


def new_drive_notification(
    snap: HarvesterSnapshot, previous: str | None, chosen: DriveLocation, smart: SmartInfo | None
) -> Notification:
    drive = snap.drive(chosen.name)
    prev = snap.drive(previous)
    context = {
        "hostname": snap.hostname,
        "time": datetime.fromtimestamp(snap.generated_at).strftime("%H:%M:%S"),
        "previous_drive": prev.mountpoint if prev else previous,
        "previous_drive_plots": prev.plot_count if prev else None,
        "new_drive_mountpoint": chosen.mountpoint,
        "new_drive_device": chosen.device,
        "drive_size": format_size(drive.total_bytes) if drive else None,
        "free_slots": drive.free_slots if drive else None,
        "serial": smart.serial if smart else None,
        "temperature": format_temperature(smart),
        "health": format_health(smart),
        "total_plots": snap.total_plots,
        "drive_count": snap.drive_count,
        "slots_until_full": snap.slots_until_full,
        "max_plots": snap.max_plots,
        "days_to_fill": snap.days_to_fill,
    }
    was = prev.mountpoint if prev else (previous or "none")
    return Notification(
        event="new_plot_drive",
        subject=f"{snap.hostname}: new plot drive {chosen.mountpoint}",
        short_text=f"Plot Drive Updated on {snap.hostname}: Was: {was}, Now: {chosen.mountpoint}",
        context=context,
        template="new_plot_drive",
    )


def _names(entries: Sequence[ReceiveSetDrive]) -> str:
    return ", ".join(e.name + (" (replace)" if e.replace else "") for e in entries) or "none"


def update_receive_set(
    settings: Settings,
    config_path: Path,
    db: StateDB,
    states: Sequence[DriveState],
    snap: HarvesterSnapshot,
    notifier: Notifier,
) -> tuple[HarvesterSnapshot, list[ReceiveChoice]]:
    """Choose the receive set, rewrite the script and the record when either changed (at once:
    running receivers keep the set they started with), and tell the farmer when the set's first
    drive changed. Returns the snapshot showing the new set, and the set. Drives taken offline
    or held back (``unavailable_drives``) are never in it."""
    # Only the cron pass writes receive_plot.sh; the reports that scan need not import its
    # renderer (and jinja2 with it).
    from utilities.harvester.receive_script import SetDrive, install_receive_script, render_receive_script, same_script

    h = settings.harvester
    offline = unavailable_drives(snap)
    chosen = choose_receive_set(
        states, offline, settings.plot_size_bytes, h.reserve_slots, h.receive_drive_policy,
        replace=h.replace_non_pool_plots, fill_empty_first=h.fill_empty_drives_first,
        low_water_mark=h.empty_drives_low_water_mark, size=h.concurrent_receive_drives,
        keep_local_drive=h.local_moves.enabled,
    )
    text = render_receive_script(
        [SetDrive(c.drive.location, c.replace) for c in chosen], settings.hostname, config_path,
        claims_dir(settings), snap.generated_at, idle_timeout=h.receive_idle_timeout_seconds,
        per_drive=h.receives_per_drive, resume_keep_hours=h.resume_keep_hours,
        resume_chunk=int(h.resume_chunk_mib * 1024 * 1024),
    )
    record = set_record(chosen)
    recorded = db.get(RECEIVE_KEY) or {}
    script_path = settings.receive_script_path
    # Compare whole scripts (less the time stamp): a changed setting rewrites it too.
    if same_script(script_path, text) and recorded == record:
        log.debug("receive set unchanged: %s", _names(recorded_set(record)))
        return with_receive_set(snap, record, h.receives_per_drive), chosen
    install_receive_script(script_path, text)
    db.set(RECEIVE_KEY, record)
    if recorded_set(recorded) != recorded_set(record):
        log.info("receive set: %s -> %s", _names(recorded_set(recorded)), _names(recorded_set(record)))
    previous, first = recorded.get("name"), (chosen[0].drive.location if chosen else None)
    updated = with_receive_set(snap, record, h.receives_per_drive)
    if (first.name if first else None) != previous:
        log.info("receive drive: %s -> %s", previous, first.mountpoint if first else "none")
    if first is not None and first.name != previous:
        smart = read_smart(settings.smart_device(first.name, first.mountpoint, first.device), smartctl=h.smartctl)
        notifier.send(new_drive_notification(updated, previous, first, smart))
    return updated, chosen
