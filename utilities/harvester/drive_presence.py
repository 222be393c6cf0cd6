"""Plot drives that vanish between passes, and their return: noticed once, remembered until back.

A disk that drops off the bus, a mount that goes away, a dead controller: the minute pass then
simply finds fewer drives, and every report would quietly show a smaller farm. So each pass
compares the drives it finds with the ones the last pass recorded (table ``drive_presence``,
owned here) and decides, purely (``diff_presence``), which drive went missing and which came
back. A drive is missing when it is:

* not found any more (unmounted, gone from the mount table),
* found but unreadable (its filesystem answers I/O errors: ``mounted`` is false), or
* found at its place as *another* filesystem (other UUID or device) with no plots, where it
  held plots before: with ``plot_directories`` globs an unmounted drive's directory is found
  again on the filesystem underneath, empty.

A drive that merely holds no plots on its own filesystem is not missing: a replace-mode drive
with one old plot passes through zero while the new plot arrives. A drive the farmer took
offline (``-off``) and then pulled is not missing either: it is forgotten quietly. The very
first pass has nothing to compare with and alerts nothing. A missing drive stays listed (``-pr``,
the export) until it returns, or for ``FORGET_AFTER_DAYS``.

Alerts latch per drive in the alerts table (``drive_missing:<name>``), so two overlapping runs
never both mail; one notification per pass covers every drive that went (an enclosure losing
power is one mail, not thirty-six).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from utilities.state import StateDB

if TYPE_CHECKING:
    from utilities.harvester_export import DriveSummary
    from utilities.notify import Notifier

log = logging.getLogger(__name__)

FORGET_AFTER_DAYS = 30
DAY = 24 * 3600
ALERT_PREFIX = "drive_missing:"
EVENT = "drive_missing"

SCHEMA = """
CREATE TABLE IF NOT EXISTS drive_presence (
    name TEXT PRIMARY KEY,
    mountpoint TEXT NOT NULL,
    device TEXT NOT NULL,
    uuid TEXT,
    plots INTEGER NOT NULL,
    missing_since REAL,
    reason TEXT
)
"""

NOT_FOUND = "not mounted (no longer found)"
UNREADABLE = "unreadable (its filesystem does not answer)"
OTHER_FILESYSTEM = "its plots are no longer visible (another filesystem, without plots, at its mountpoint)"


@dataclass(frozen=True)
class DriveRecord:
    """A plot drive as last seen present; with ``missing_since`` once it went."""

    name: str
    mountpoint: str
    device: str
    uuid: str | None
    plots: int
    missing_since: float | None = None
    reason: str | None = None

    @property
    def missing(self) -> bool:
        return self.missing_since is not None

    def to_missing(self) -> MissingDrive:
        assert self.missing_since is not None and self.reason is not None
        return MissingDrive(self.name, self.mountpoint, self.device, self.uuid, self.plots, self.missing_since, self.reason)


@dataclass(frozen=True)
class MissingDrive:
    """A missing drive as reports and the export show it."""

    name: str
    mountpoint: str
    device: str
    uuid: str | None
    plots: int  # plots it held when last seen
    since: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mountpoint": self.mountpoint, "device": self.device, "uuid": self.uuid,
                "plots": self.plots, "since": self.since, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Any) -> MissingDrive:
        """TypeError/ValueError for anything but the fields ``to_dict`` writes."""
        if not isinstance(data, dict):
            raise TypeError("a missing_drives entry is not an object")
        name, mountpoint, device, uuid = data.get("name"), data.get("mountpoint"), data.get("device"), data.get("uuid")
        plots, since, reason = data.get("plots"), data.get("since"), data.get("reason")
        if not all(isinstance(v, str) and v for v in (name, mountpoint, device, reason)):
            raise ValueError("a missing_drives entry needs name, mountpoint, device and reason")
        if uuid is not None and not isinstance(uuid, str):
            raise ValueError(f"missing drive {name!r}: uuid is not text")
        if isinstance(plots, bool) or not isinstance(plots, int) or plots < 0:
            raise ValueError(f"missing drive {name!r}: plots is not a whole number")
        if isinstance(since, bool) or not isinstance(since, int | float):
            raise ValueError(f"missing drive {name!r}: since is not a time")
        return cls(name, mountpoint, device, uuid, plots, float(since), reason)


@dataclass
class PresenceChange:
    """What ``diff_presence`` decided: the records to keep and what to tell the farmer."""

    records: dict[str, DriveRecord]
    vanished: list[DriveRecord] = field(default_factory=list)  # missing since this pass
    returned: list[tuple[DriveRecord, DriveSummary]] = field(default_factory=list)  # (as it was, as it is)
    forgotten: list[DriveRecord] = field(default_factory=list)  # missing too long, or offline and pulled

    @property
    def missing(self) -> list[MissingDrive]:
        return [r.to_missing() for r in sorted(self.records.values(), key=lambda r: r.name) if r.missing]


# -- pure ---------------------------------------------------------------------------------------


def _other_filesystem(record: DriveRecord, drive: DriveSummary) -> bool:
    """Whether ``drive`` is another filesystem than the one recorded: by UUID when both are
    known (device names move between boots), else by device."""
    if record.uuid and drive.uuid:
        return record.uuid != drive.uuid
    return record.device != drive.device


def gone_reason(record: DriveRecord | None, drive: DriveSummary | None) -> str | None:
    """Pure: why the drive ``record`` describes is not there in this pass, or None if it is."""
    if drive is None:
        return NOT_FOUND
    if not drive.mounted:
        return UNREADABLE
    if record is not None and record.plots > 0 and drive.plot_count == 0 and _other_filesystem(record, drive):
        return OTHER_FILESYSTEM
    return None


def _record_of(drive: DriveSummary) -> DriveRecord:
    return DriveRecord(drive.name, drive.mountpoint, drive.device, drive.uuid, drive.plot_count)


def diff_presence(
    known: Mapping[str, DriveRecord],
    drives: Sequence[DriveSummary],
    offline: set[str] | frozenset[str],
    now: float,
    forget_after: float = FORGET_AFTER_DAYS * DAY,
) -> PresenceChange:
    """Pure: compare the drives found now with the records of the last pass.

    ``known`` empty (the first pass ever) records every drive and reports nothing. A drive
    missing for ``forget_after`` seconds is forgotten. A missing drive whose UUID turns up under
    another name (remounted elsewhere) has returned, under its new name.
    """
    by_name = {d.name: d for d in drives}
    present_uuids = {d.uuid: d for d in drives if d.uuid and gone_reason(known.get(d.name), d) is None}
    change = PresenceChange(records={})
    for name, record in sorted(known.items()):
        drive = by_name.get(name)
        reason = gone_reason(record, drive)
        if reason is None:
            assert drive is not None
            if record.missing:
                change.returned.append((record, drive))
            change.records[name] = _record_of(drive)
            continue
        if record.missing:
            moved = present_uuids.get(record.uuid) if record.uuid else None
            if moved is not None and moved.name != name:
                change.returned.append((record, moved))
            elif now - (record.missing_since or now) >= forget_after:
                change.forgotten.append(record)
            else:
                change.records[name] = record
            continue
        if name in offline:  # taken out of service by the farmer, then pulled: not news
            change.forgotten.append(record)
            continue
        gone = replace(record, missing_since=now, reason=reason)
        change.vanished.append(gone)
        change.records[name] = gone
    for drive in drives:  # new drives: recorded if present (a new empty mount at a known name is in records already)
        if drive.name not in change.records and drive.name not in known and gone_reason(None, drive) is None:
            change.records[drive.name] = _record_of(drive)
    return change


# -- state and effects ----------------------------------------------------------------------------


def _ensure_table(db: StateDB) -> None:
    """Create the table on first use; looked up first, so a report does not queue for the write
    lock behind a running cron pass just to learn the table is there."""
    if not db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'drive_presence'"):
        db.ensure_tables(SCHEMA)


def load_records(db: StateDB) -> dict[str, DriveRecord]:
    _ensure_table(db)
    rows = db.query("SELECT name, mountpoint, device, uuid, plots, missing_since, reason FROM drive_presence")
    return {row[0]: DriveRecord(*row) for row in rows}


def save_records(db: StateDB, before: Mapping[str, DriveRecord], after: Mapping[str, DriveRecord]) -> None:
    """Write only what changed (a pass where nothing moved writes nothing)."""
    gone = [name for name in before if name not in after]
    changed = [r for name, r in after.items() if before.get(name) != r]
    if not gone and not changed:
        return
    _ensure_table(db)
    with db.transaction() as cur:
        cur.executemany("DELETE FROM drive_presence WHERE name = ?", ((n,) for n in gone))
        cur.executemany(
            "INSERT OR REPLACE INTO drive_presence(name, mountpoint, device, uuid, plots, missing_since, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((r.name, r.mountpoint, r.device, r.uuid, r.plots, r.missing_since, r.reason) for r in changed),
        )


def missing_drives(db: StateDB, drives: Sequence[DriveSummary], offline: set[str] | frozenset[str], now: float) -> tuple[MissingDrive, ...]:
    """The drives missing now, read only (reports and the export): what the recorded state
    plus this scan says, whether or not a cron pass has recorded it yet."""
    return tuple(diff_presence(load_records(db), drives, offline, now).missing)


def _rows(records: Sequence[DriveRecord]) -> list[dict[str, Any]]:
    return [{"name": r.name, "mountpoint": r.mountpoint, "device": r.device, "uuid": r.uuid, "plots": r.plots,
             "reason": r.reason} for r in records]


def track_presence(
    db: StateDB, notifier: Notifier, hostname: str, drives: Sequence[DriveSummary], offline: set[str], now: float
) -> list[str]:
    """The cron pass's part: record what changed, alert on drives gone and back; returns the
    alert names raised (for the pass outcome)."""
    from utilities.notify import Notification

    known = load_records(db)
    change = diff_presence(known, drives, offline, now)
    save_records(db, known, change.records)
    alerts = []
    for record in change.forgotten:
        db.alert_transition(ALERT_PREFIX + record.name, False)
        log.info("drive %s (%s) forgotten: %s", record.name, record.mountpoint,
                 "taken offline and removed" if not record.missing else f"missing for {FORGET_AFTER_DAYS} days")
    newly = [r for r in change.vanished if db.alert_transition(ALERT_PREFIX + r.name, True, r.reason or "")]
    if newly:
        alerts.append("drive_missing")
        plots = sum(r.plots for r in newly)
        names = ", ".join(f"{r.name} ({r.mountpoint}, {r.plots} plots)" for r in newly)
        log.warning("plot drive(s) missing: %s", names)
        notifier.send(Notification(
            event=EVENT,
            subject=f"{hostname}: {len(newly)} plot drive(s) missing, {plots} plots not farmed",
            short_text=f"{hostname}: plot drive(s) missing: {names}",
            context={"hostname": hostname, "state": "missing", "drives": _rows(newly), "plots": plots},
            template="drive_missing",
        ))
    back = []
    for record, drive in change.returned:
        db.alert_transition(ALERT_PREFIX + record.name, False)
        back.append(replace(record, name=drive.name, mountpoint=drive.mountpoint, plots=drive.plot_count,
                            reason=f"back after {(now - (record.missing_since or now)) / 60:.0f} min"
                            + (f" (was {record.name})" if drive.name != record.name else "")))
    if back:
        alerts.append("drive_returned")
        names = ", ".join(f"{r.name} ({r.mountpoint}, {r.plots} plots)" for r in back)
        log.info("plot drive(s) back: %s", names)
        notifier.send(Notification(
            event=EVENT,
            subject=f"{hostname}: {len(back)} missing plot drive(s) back",
            short_text=f"{hostname}: plot drive(s) back: {names}",
            context={"hostname": hostname, "state": "back", "drives": _rows(back), "plots": sum(r.plots for r in back)},
            template="drive_missing",
        ))
    return alerts


def forget_drive(db: StateDB, wanted: str) -> DriveRecord | None:
    """Drop a missing drive by name or mountpoint (the farmer knows it is not coming back)."""
    cleaned = wanted.rstrip("/") or wanted
    record = next((r for r in load_records(db).values()
                   if r.missing and cleaned in (r.name, r.mountpoint.rstrip("/"))), None)
    if record is not None:
        with db.transaction() as cur:
            cur.execute("DELETE FROM drive_presence WHERE name = ?", (record.name,))
        db.alert_transition(ALERT_PREFIX + record.name, False)
    return record
