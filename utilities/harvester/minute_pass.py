"""The harvester's minute job: scan, decide, then act (script, export, alerts).

Order matters for safety: everything is scanned and decided first (pure functions over the
snapshot), and only then do we touch the receive script, the export file and the notifiers. A
failing notifier is logged by the notifier and never stops the pass. The one change made while
scanning is the removal of part files dead writers left (utilities/harvester/stale_parts.py): the free
slots every decision starts from must include the room it wins back.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from utilities.chia_log import last_farming_status
from utilities.config import Settings
from utilities.harvester.drive_choice import choose_local_receive_target
from utilities.harvester.drive_holds import (
    HealthCheck,
    check_drive_health,
    held_back_list,
    load_holds,
    send_hold_alerts,
)
from utilities.harvester.drive_presence import missing_drives, track_presence
from utilities.harvester.drives import (
    DriveLocation,
    DriveState,
    UuidLookup,
    discover_drives,
    probe_uuids,
    scan_drives,
)
from utilities.harvester.plot_ids import encode_prefixes
from utilities.harvester.receive_set import (
    RECEIVE_KEY,
    claims_dir,
    live_receives,
    unavailable_drives,
    update_receive_set,
    with_receive_set,
)
from utilities.harvester.smart import SmartInfo, read_many
from utilities.harvester.stale_parts import RemovedPart, removed_last_day, resumable_parts, sweep_stale_parts
from utilities.harvester_export import DriveSummary, HarvesterSnapshot, write_export
from utilities.metrics import harvester_metrics, write_textfile
from utilities.notify import Notification, Notifier
from utilities.settings.local_moves import LOCAL_RECEIVE_KEY
from utilities.state import StateDB
from utilities.transfer.forget import take_requests

log = logging.getLogger(__name__)

TEMPERATURE_CHECK_KEY = "last_temperature_check"
UUID_CACHE_KEY = "uuid_cache"
TEMPERATURES_KEY = "last_temperatures"
DIR_MTIMES_KEY = "plot_dir_mtimes"
# The drive reserved for move_local_plots.py: {name, mountpoint, device, receive_dir, replace,
# decided_at}; {"decided_at": ...} alone when no drive has room.


@dataclass
class Scan:
    """Drives as found now, with the snapshot built from them."""

    locations: list[DriveLocation]
    states: list[DriveState]
    snapshot: HarvesterSnapshot
    headers_read: int
    parts_removed: list[RemovedPart] = field(default_factory=list)  # by this scan (cron pass only)


@dataclass
class PassOutcome:
    snapshot: HarvesterSnapshot
    previous_drive: str | None
    chosen_drive: str | None  # the receive set's first drive
    chosen_set: list[str] = field(default_factory=list)  # the receive set, in order
    alerts: list[str] = field(default_factory=list)
    local_drive: str | None = None  # reserved for move_local_plots.py (local_moves.enabled)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _cached_uuid_lookup(db: StateDB) -> UuidLookup:
    """blkid probes read superblocks (and may wake a disk): ask once per device per boot."""

    def lookup(devices: Sequence[str]) -> dict[str, str]:
        boot = _boot_id()
        cache = db.get(UUID_CACHE_KEY) or {}
        known = cache.get("uuids", {}) if cache.get("boot_id") == boot else {}
        missing = [d for d in devices if d not in known]
        if missing:
            found = probe_uuids(missing)
            known = {**known, **{d: found.get(d) for d in missing}}  # misses too: no re-probing
            db.set(UUID_CACHE_KEY, {"boot_id": boot, "uuids": known})
        return {d: known[d] for d in devices if known.get(d)}

    return lookup


def _recorded_local_drive(settings: Settings, db: StateDB) -> dict[str, object]:
    """The drive the last pass reserved for local plots (only with local moves on), so a
    report shows it as it shows the receive drive."""
    if not settings.harvester.local_moves.enabled:
        return {}
    local = db.get(LOCAL_RECEIVE_KEY) or {}
    return {"local_receive_drive": local.get("name"), "local_replaces_old_plots": bool(local.get("replace"))}


def scan_harvester(settings: Settings, db: StateDB, now: float | None = None, *, sweep_parts: bool = False) -> Scan:
    """Discover and scan the drives, keep the header cache current, and build the snapshot.

    The snapshot's receive set is the one the current receive script names, and its receives
    in flight are the drive claims held now, so a report shows where plots really go right now.
    With ``sweep_parts`` (the cron pass; reports only
    look) part files left by dead writers are removed first and their drives re-measured, so
    this very snapshot, and the receive-drive choice made from it, has the slots won back.
    """
    now = time.time() if now is None else now
    locations = discover_drives(settings.harvester.drive_discovery, uuid_lookup=_cached_uuid_lookup(db))
    cache = db.load_headers()
    known_dirs = db.get(DIR_MTIMES_KEY) or {}
    result = scan_drives(locations, cache, now, known_dirs)
    if result.header_upserts or result.header_deletes:
        db.update_headers(result.header_upserts, result.header_deletes)
    if result.dir_mtimes != known_dirs:
        db.set(DIR_MTIMES_KEY, result.dir_mtimes)
    states, removed = (
        sweep_stale_parts(
            result.drives, result.dir_mtimes, db, now, settings.harvester.resume_keep_hours * 3600,
            forget=take_requests(str(claims_dir(settings))),
        )
        if sweep_parts else (result.drives, [])
    )
    offline = db.offline_drives()
    plot_size = settings.plot_size_bytes
    summaries = tuple(
        summarise_drive(s, plot_size, settings.harvester.reserve_slots, s.name in offline)
        for s in states
    )
    chia = last_farming_status(settings.chia_log_path)
    snapshot = HarvesterSnapshot(
        hostname=settings.hostname,
        generated_at=now,
        plot_size_bytes=plot_size,
        drives=summaries,
        chia_plots=chia.total_plots if chia else None,
        chia_plots_at=chia.timestamp.timestamp() if chia else None,
        chia_bytes=getattr(chia, "total_size_bytes", None) if chia else None,
        extra={
            "replace_non_pool_plots": settings.harvester.replace_non_pool_plots,
            **_recorded_local_drive(settings, db),
            "held_back": held_back_list(load_holds(db)),
        },
        stale_parts=removed_last_day(db, now),
        resumable_parts=resumable_parts(db),
        receiving=live_receives(settings),
        missing_drives=missing_drives(db, summaries, set(offline), now),
        plot_ids={s.name: encode_prefixes(s.plot_ids) for s in states if s.mounted},
    )
    snapshot = with_receive_set(snapshot, db.get(RECEIVE_KEY) or {}, settings.harvester.receives_per_drive)
    return Scan(locations, states, snapshot, result.headers_read, removed)


def _update_receive_drive(
    settings: Settings, config_path: Path, db: StateDB, scan: Scan, notifier: Notifier, outcome: PassOutcome
) -> None:
    """Choose the receive set and point receive_plot.sh at it (utilities/harvester/receive_set.py)."""
    scan.snapshot, chosen = update_receive_set(settings, config_path, db, scan.states, scan.snapshot, notifier)
    outcome.chosen_set = [c.name for c in chosen]
    outcome.chosen_drive = chosen[0].name if chosen else None


def _update_local_drive(settings: Settings, db: StateDB, scan: Scan, outcome: PassOutcome) -> None:
    """Reserve the drive move_local_plots.py copies to (only with harvester.local_moves.enabled).

    Chosen after the network's receive set, never one of its drives while another drive has
    room (choose_receive_set leaves that drive out of the set). Written every pass with its time, so move_local_plots.py can tell a fresh choice from a stale one.
    """
    h = settings.harvester
    if not h.local_moves.enabled:
        return
    snap = scan.snapshot
    offline = unavailable_drives(snap)
    chosen, replace = choose_local_receive_target(
        scan.states, offline, settings.plot_size_bytes, outcome.chosen_set,
        h.reserve_slots, h.receive_drive_policy, replace=h.replace_non_pool_plots,
        fill_empty_first=h.fill_empty_drives_first, low_water_mark=h.empty_drives_low_water_mark,
    )
    record: dict[str, object] = {"decided_at": snap.generated_at}
    if chosen is not None:
        loc = chosen.location
        record.update(name=loc.name, mountpoint=loc.mountpoint, device=loc.device, receive_dir=loc.receive_dir,
                      replace=replace)
    previous = db.get(LOCAL_RECEIVE_KEY) or {}
    db.set(LOCAL_RECEIVE_KEY, record)
    outcome.local_drive = chosen.name if chosen else None
    if (previous.get("name"), bool(previous.get("replace"))) != (outcome.local_drive, replace):
        log.info("local plot drive: %s -> %s%s", previous.get("name"), chosen.location.mountpoint if chosen else "none",
                 " (may replace old OG plots)" if replace else "")
    scan.snapshot = dataclasses.replace(
        snap, extra={**snap.extra, "local_receive_drive": outcome.local_drive, "local_replaces_old_plots": replace},
    )


def decide_alerts(snap: HarvesterSnapshot, settings: Settings) -> dict[str, tuple[bool, str]]:
    """Pure: which latching alert conditions hold now (key -> (active, detail))."""
    low_water = settings.harvester.alerts.free_slots_low_water
    slots = snap.slots_until_full
    return {
        "no_receive_drive": (snap.receive_drive is None, f"{snap.drive_count} plot drives, none with a free slot"),
        "drives_filling": (0 < slots <= low_water, f"{slots} plot slots left (alert at {low_water})"),
    }


def read_drive_smart(settings: Settings, drives: Sequence[DriveSummary]) -> dict[str, SmartInfo]:
    """SMART for each drive, keyed by drive name; each disk is read once, sleeping disks are not woken."""
    disks = {d.name: settings.smart_device(d.name, d.mountpoint, d.device) for d in drives}
    by_disk = read_many(sorted(set(disks.values())), smartctl=settings.harvester.smartctl)
    return {name: by_disk[disk] for name, disk in disks.items()}


ALERT_SUBJECTS = {
    "no_receive_drive": "no plot drive can receive plots",
    "drives_filling": "plot drives are filling up",
}


def hot_drives(
    drives: Sequence[DriveSummary], smart: dict[str, SmartInfo], limit_c: int
) -> dict[str, tuple[bool, str]]:
    """Pure: per-drive temperature alert conditions (a drive in standby is not hot)."""
    result = {}
    for drive in drives:
        info = smart.get(drive.name)
        temp = info.temperature_c if info and info.state == "active" else None
        result[f"temperature:{drive.name}"] = (
            temp is not None and temp >= limit_c,
            f"{drive.name} ({drive.device}) at {temp}°C, limit {limit_c}°C",
        )
    return result


def _read_smart_if_due(settings: Settings, db: StateDB, snap: HarvesterSnapshot) -> dict[str, SmartInfo] | None:
    """SMART of the mounted drives when a read is due (every temperature_check_minutes), else None.

    Read before the receive set is chosen: a drive this read finds sick or hot leaves the set in
    this very pass (utilities/harvester/drive_holds.py).
    """
    interval = settings.harvester.alerts.temperature_check_minutes * 60
    last = db.get(TEMPERATURE_CHECK_KEY, 0.0)
    if snap.generated_at - last < interval:
        return None
    db.set(TEMPERATURE_CHECK_KEY, snap.generated_at)
    return read_drive_smart(settings, [d for d in snap.drives if d.mounted])


def _check_drive_health(
    settings: Settings, db: StateDB, scan: Scan, smart: dict[str, SmartInfo] | None
) -> HealthCheck | None:
    """Record the SMART read in the history and hold back the drives it finds sick or hot; the
    snapshot then names the held drives, so the choice below leaves them out."""
    if smart is None:
        return None
    check = check_drive_health(settings, db, scan.snapshot.drives, smart, scan.snapshot.generated_at)
    snap = scan.snapshot
    scan.snapshot = dataclasses.replace(snap, extra={**snap.extra, "held_back": held_back_list(check.holds)})
    return check


def _send_alerts(
    settings: Settings, db: StateDB, notifier: Notifier, snap: HarvesterSnapshot, outcome: PassOutcome,
    smart: dict[str, SmartInfo] | None = None,
) -> dict[str, int | None]:
    """Latching alerts; returns the latest drive temperatures (``smart``: this pass's SMART
    read, made every few minutes only)."""
    for key, (active, detail) in decide_alerts(snap, settings).items():
        if db.alert_transition(key, active, detail):
            outcome.alerts.append(key)
            notifier.send(
                Notification(
                    event=key,
                    subject=f"{snap.hostname}: {ALERT_SUBJECTS[key]}",
                    short_text=f"{snap.hostname}: {detail}",
                    context={"hostname": snap.hostname, "detail": detail, "slots_until_full": snap.slots_until_full},
                    template=None,
                )
            )
    if smart is None:
        return db.get(TEMPERATURES_KEY, {})
    mounted = [d for d in snap.drives if d.mounted]
    limit = settings.harvester.alerts.temperature_limit_c
    newly_hot = []
    for key, (active, detail) in hot_drives(mounted, smart, limit).items():
        if db.alert_transition(key, active, detail):
            newly_hot.append(key.partition(":")[2])
    if newly_hot:
        outcome.alerts.append("drive_temperature")
        rows = [
            {"mountpoint": d.mountpoint, "device": d.device, "serial": smart[d.name].serial,
             "temperature": smart[d.name].temperature_c, "limit": limit}
            for d in mounted if d.name in newly_hot
        ]
        notifier.send(
            Notification(
                event="drive_temperature",
                subject=f"{snap.hostname}: {len(rows)} plot drive(s) at or above {limit}°C",
                short_text=f"{snap.hostname}: hot drives: " + ", ".join(f"{r['mountpoint']} {r['temperature']}°C" for r in rows),
                context={"hostname": snap.hostname, "drives": rows},
                template="drive_temperature",
            )
        )
    temperatures = {name: info.temperature_c if info.state == "active" else None for name, info in smart.items()}
    db.set(TEMPERATURES_KEY, temperatures)
    return temperatures


def run_harvester_pass(
    settings: Settings, config_path: Path, db: StateDB, notifier: Notifier, now: float | None = None
) -> PassOutcome:
    """One cron pass. The caller holds the drive_manager lock."""
    scan = scan_harvester(settings, db, now, sweep_parts=True)
    outcome = PassOutcome(scan.snapshot, previous_drive=scan.snapshot.receive_drive, chosen_drive=None)
    smart = _read_smart_if_due(settings, db, scan.snapshot)
    health = _check_drive_health(settings, db, scan, smart)
    _update_receive_drive(settings, config_path, db, scan, notifier, outcome)
    _update_local_drive(settings, db, scan, outcome)
    # The drive temperatures of the last SMART read (every temperature_check_minutes), so farm
    # views (the dashboard) show a remote harvester's temperatures; the export is written before
    # the alerts so a slow notifier never delays what plotters read.
    scan.snapshot = dataclasses.replace(
        scan.snapshot, extra={**scan.snapshot.extra, "temperatures": db.get(TEMPERATURES_KEY, {})}
    )
    outcome.snapshot = scan.snapshot
    write_export(scan.snapshot, settings.export_path)
    temperatures = _send_alerts(settings, db, notifier, scan.snapshot, outcome, smart)
    if health is not None and send_hold_alerts(settings, db, notifier, scan.snapshot.hostname, health):
        outcome.alerts.append("drive_held_back")
    outcome.alerts += track_presence(db, notifier, settings.hostname, scan.snapshot.drives,
                                     set(db.offline_drives()), scan.snapshot.generated_at)
    if settings.harvester.metrics_dir is not None:
        write_textfile(settings.harvester.metrics_dir, "plot_manager_harvester", harvester_metrics(scan.snapshot, temperatures))
    log.debug(
        "pass done: %d drives, %d plots, %d headers read, %d stale part files removed", scan.snapshot.drive_count,
        scan.snapshot.total_plots, scan.headers_read, len(scan.parts_removed),
    )
    return outcome


def summarise_drive(state: DriveState, plot_size: int, reserve_slots: int, offline: bool) -> DriveSummary:
    loc = state.location
    return DriveSummary(
        name=loc.name,
        mountpoint=loc.mountpoint,
        device=loc.device,
        uuid=loc.uuid,
        fstype=loc.fstype,
        total_bytes=state.total_bytes,
        free_bytes=state.free_bytes,
        plots_og=state.plots_og,
        plots_pool=state.plots_pool,
        plots_unknown=state.plots_unknown,
        plots_last_24h=state.plots_last_24h,
        free_slots=state.free_slots(plot_size, reserve_slots) if state.mounted else 0,
        offline=offline,
        mounted=state.mounted,
    )
