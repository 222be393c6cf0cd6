"""Held-back drives in practice: record each SMART read, decide, store, tell the farmer, release.

The decision is ``drive_health.decide_holds`` (pure). This module is its edge: the minute
pass hands it the SMART read it just made (before choosing the receive set, so a sick drive
leaves the set in the same pass), it appends the read to the history (``smart_history``),
loads the few readings the rule compares, stores the holds in the state database and sends one
alert per new hold and one per hot drive that returned. ``drive_manager.py -on DRIVE`` ends a
hold with ``release_hold``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from utilities.config import Settings
from utilities.harvester.drive_health import (
    REASON_TEXT,
    HealthPolicy,
    Hold,
    HoldDecision,
    Release,
    decide_holds,
)
from utilities.harvester.smart import SmartInfo
from utilities.harvester.smart_history import Reading, load_anchors, reading_from_smart, record_readings
from utilities.harvester_export import DriveSummary
from utilities.notify import Notification, Notifier
from utilities.state import StateDB

log = logging.getLogger(__name__)

# {drive: Hold.to_dict()} of the drives held back now.
HOLDS_KEY = "drive_holds"
# {drive: Release.to_dict()}: the last -on for each drive that was held.
RELEASES_KEY = "drive_hold_releases"
EVENT = "drive_held_back"


def health_policy(settings: Settings) -> HealthPolicy:
    h = settings.harvester
    return HealthPolicy(
        temperature_limit_c=h.alerts.temperature_limit_c,
        hot_hysteresis_c=h.health.hot_hysteresis_c,
        window_hours=h.health.window_hours,
        pending_growth_limit=h.health.pending_growth_limit,
        reallocated_growth_limit=h.health.reallocated_growth_limit,
        uncorrectable_growth_limit=h.health.uncorrectable_growth_limit,
    )


def load_holds(db: StateDB) -> dict[str, Hold]:
    holds = {}
    for name, data in (db.get(HOLDS_KEY) or {}).items():
        hold = Hold.from_dict(data) if isinstance(data, Mapping) else None
        if hold is not None and hold.drive == name:
            holds[name] = hold
    return holds


def load_releases(db: StateDB) -> dict[str, Release]:
    releases = {}
    for name, data in (db.get(RELEASES_KEY) or {}).items():
        release = Release.from_dict(name, data) if isinstance(data, Mapping) else None
        if release is not None:
            releases[name] = release
    return releases


def held_back_list(holds: Mapping[str, Hold]) -> list[dict[str, Any]]:
    """The holds as the snapshot (export, ``-pr``) carries them, by drive name."""
    return [holds[name].to_dict() for name in sorted(holds)]


def held_names(extra: Mapping[str, Any]) -> set[str]:
    """The held drives a snapshot's ``extra["held_back"]`` names (tolerant: it is also parsed
    from other harvesters' exports)."""
    entries = extra.get("held_back")
    if not isinstance(entries, list):
        return set()
    return {e["name"] for e in entries if isinstance(e, Mapping) and isinstance(e.get("name"), str)}


@dataclass
class HealthCheck:
    """What one SMART read changed: the holds now, and the alerts it raised."""

    holds: dict[str, Hold]
    decision: HoldDecision | None = None
    readings: dict[str, Reading] = field(default_factory=dict)


def check_drive_health(
    settings: Settings, db: StateDB, drives: Sequence[DriveSummary], smart: Mapping[str, SmartInfo], now: float
) -> HealthCheck:
    """Record this SMART read and decide the holds (stored at once: the receive set is chosen
    from them right after)."""
    health = settings.harvester.health
    readings = {name: reading_from_smart(name, info, now) for name, info in smart.items()}
    record_readings(db, list(readings.values()), keep_days=health.history_days)
    previous = load_holds(db)
    if not health.hold_back_sick_drives:
        if previous:
            db.set(HOLDS_KEY, {})
            for hold in previous.values():  # so a hold after the rule is switched on again alerts
                db.alert_transition(_alert_key(hold.drive, hold.reason), False)
        return HealthCheck({}, HoldDecision({}), readings)
    policy = health_policy(settings)
    releases = load_releases(db)
    histories: dict[str, list[Reading]] = {}
    for name, reading in readings.items():
        if not reading.active or (name in previous and previous[name].sticky):
            continue
        since = now - policy.window_hours * 3600
        if name in releases:
            since = max(since, releases[name].at)
        histories[name] = load_anchors(db, name, (since,), latest=reading, oldest_after=since)
    mountpoints = {d.name: d.mountpoint for d in drives}
    decision = decide_holds(histories, readings, previous, releases, policy, now, mountpoints)
    if decision.holds != previous:
        db.set(HOLDS_KEY, {name: hold.to_dict() for name, hold in decision.holds.items()})
    for hold in decision.new:
        log.warning("plot drive held back: %s", hold.text)
    for hold, reading in decision.returned:
        log.info("plot drive %s cooled to %s°C: receives plots again", hold.drive, reading.temperature_c)
    return HealthCheck(decision.holds, decision, readings)


def _alert_key(drive: str, reason: str) -> str:
    return f"held_back:{reason}:{drive}"


def send_hold_alerts(settings: Settings, db: StateDB, notifier: Notifier, hostname: str, check: HealthCheck) -> list[str]:
    """One alert per new hold and one per hot drive that returned; returns the drives alerted."""
    decision = check.decision
    if decision is None:
        return []
    alerted = []
    for hold in decision.new:
        for reason in REASON_TEXT:  # a hold that changed its reason (hot -> sectors) alerts again
            if reason != hold.reason:
                db.alert_transition(_alert_key(hold.drive, reason), False)
        if not db.alert_transition(_alert_key(hold.drive, hold.reason), True, hold.text):
            continue
        alerted.append(hold.drive)
        then = (f"drive_manager.py -on {hold.drive} puts it back" if hold.sticky
                else "it returns by itself when it cools down")
        where = hold.mountpoint or hold.drive
        notifier.send(Notification(
            event=EVENT,
            subject=f"{hostname}: plot drive {where} held back: {REASON_TEXT[hold.reason]}",
            short_text=f"{hostname}: {where} ({hold.drive}) receives no more plots: {hold.detail}; {then}",
            context={"hostname": hostname, "drive": hold.drive, "mountpoint": hold.mountpoint,
                     "reason": REASON_TEXT[hold.reason], "detail": hold.detail, "what_next": then},
            template=None,
        ))
    for hold, reading in decision.returned:
        db.alert_transition(_alert_key(hold.drive, hold.reason), False)
        alerted.append(hold.drive)
        where = hold.mountpoint or hold.drive
        notifier.send(Notification(
            event=EVENT,
            subject=f"{hostname}: plot drive {where} cooled down and receives plots again",
            short_text=f"{hostname}: {where} ({hold.drive}) at {reading.temperature_c}°C receives plots again",
            context={"hostname": hostname, "drive": hold.drive, "mountpoint": hold.mountpoint,
                     "temperature": reading.temperature_c, "held_since": time.ctime(hold.since)},
            template=None,
        ))
    return alerted


def release_hold(db: StateDB, wanted: str, now: float | None = None) -> Hold | None:
    """``-on``: end the hold of the drive named (or at the mountpoint) ``wanted``; None when no
    such drive is held. The evidence so far is accepted (drive_health.Release)."""
    holds = load_holds(db)
    wanted = wanted.rstrip("/")
    hold = next((h for h in holds.values() if wanted in (h.drive, (h.mountpoint or "").rstrip("/"))), None)
    if hold is None:
        return None
    now = time.time() if now is None else now
    releases = db.get(RELEASES_KEY) or {}
    releases[hold.drive] = Release(hold.drive, now, hold.reason).to_dict()
    del holds[hold.drive]
    with db.transaction() as cur:
        db.set(RELEASES_KEY, releases, cur)
        db.set(HOLDS_KEY, {name: h.to_dict() for name, h in holds.items()}, cur)
    db.alert_transition(_alert_key(hold.drive, hold.reason), False)
    return hold
