"""SMART history: every SMART read of the minute pass, one row per drive, kept about a month.

Why keep it: a disk rarely fails at once. Pending and reallocated sectors creep up for days
first, and a single read cannot tell a drive that has had 8 reallocated sectors for years from
one that gained 8 since yesterday. So each read the minute pass already makes (every
``harvester.alerts.temperature_check_minutes``) is stored, a drive in standby as its state
alone (it was not read, and never is: see ``smart.py``), and the trend (now against about 24
hours and 7 days ago) is what ``-ct``, the daily report and the held-back rule
(``drive_health.py``) look at.

Readings are compared only with readings of the same disk (serial): a drive name (``drive6``)
that gets a new disk starts a new history instead of showing the old disk's counts as a drop.

Layers: ``Reading`` and the trend functions are pure and work on any list of readings that
holds the ones they pick (a test passes a whole recorded history; the pass loads only the few
readings each time needs, ``load_anchors``); ``record_readings`` and the loaders do the SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from utilities.harvester.smart import SmartInfo
from utilities.state import StateDB

DAY = 24 * 3600.0
WEEK = 7 * DAY
DEFAULT_KEEP_DAYS = 30
#: The counters whose growth means a disk is losing sectors (or its cable is bad: CRC).
COUNTERS = ("reallocated", "pending", "offline_uncorrectable", "crc_errors")
COUNTER_LABELS = {
    "reallocated": "reallocated sectors",
    "pending": "pending sectors",
    "offline_uncorrectable": "uncorrectable sectors",
    "crc_errors": "CRC errors",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS smart_history (
    drive TEXT NOT NULL,
    serial TEXT,
    read_at REAL NOT NULL,
    state TEXT NOT NULL,
    temperature_c INTEGER,
    reallocated INTEGER,
    pending INTEGER,
    offline_uncorrectable INTEGER,
    crc_errors INTEGER,
    power_on_hours INTEGER,
    health TEXT
);
CREATE INDEX IF NOT EXISTS smart_history_by_disk ON smart_history(drive, serial, read_at);
CREATE INDEX IF NOT EXISTS smart_history_by_time ON smart_history(read_at)
"""
_COLUMNS = (
    "drive, serial, read_at, state, temperature_c, reallocated, pending, offline_uncorrectable, "
    "crc_errors, power_on_hours, health"
)


@dataclass(frozen=True)
class Reading:
    """One SMART read of one drive, as stored. Only ``active`` readings carry values."""

    drive: str
    read_at: float
    state: str  # "active", "standby" or "unavailable"
    serial: str | None = None
    temperature_c: int | None = None
    reallocated: int | None = None
    pending: int | None = None
    offline_uncorrectable: int | None = None
    crc_errors: int | None = None
    power_on_hours: int | None = None
    health: str | None = None

    @property
    def active(self) -> bool:
        return self.state == "active"

    def counter(self, name: str) -> int | None:
        return getattr(self, name)


def reading_from_smart(drive: str, info: SmartInfo, read_at: float) -> Reading:
    """Pure: the row of one read; a standby or unreadable disk is its state alone."""
    if info.state != "active":
        return Reading(drive, read_at, info.state)
    return Reading(
        drive, read_at, "active", serial=info.serial, temperature_c=info.temperature_c,
        reallocated=info.reallocated_sectors, pending=info.pending_sectors,
        offline_uncorrectable=info.offline_uncorrectable, crc_errors=info.crc_errors,
        power_on_hours=info.power_on_hours, health=info.health,
    )


# --------------------------------------------------------------------------- pure trend


def latest_active(readings: Iterable[Reading]) -> Reading | None:
    """Pure: the newest reading that has values."""
    return max((r for r in readings if r.active), key=lambda r: r.read_at, default=None)


def reading_at_or_before(readings: Iterable[Reading], at: float, serial: str | None) -> Reading | None:
    """Pure: the newest active reading of disk ``serial`` taken at or before ``at``."""
    return max(
        (r for r in readings if r.active and r.serial == serial and r.read_at <= at),
        key=lambda r: r.read_at, default=None,
    )


def baseline(readings: Iterable[Reading], since: float, latest: Reading) -> Reading | None:
    """Pure: the reading growth is measured from: the newest of ``latest``'s disk at or before
    ``since``, else (a history younger than that) its oldest; never ``latest`` itself."""
    same_disk = [r for r in readings if r.active and r.serial == latest.serial and r.read_at < latest.read_at]
    before = reading_at_or_before(same_disk, since, latest.serial)
    if before is not None:
        return before
    return min(same_disk, key=lambda r: r.read_at, default=None)


def growth(now: Reading, then: Reading | None) -> dict[str, tuple[int, int]]:
    """Pure: the counters that went up from ``then`` to ``now``: name -> (then, now)."""
    if then is None:
        return {}
    grown = {}
    for name in COUNTERS:
        before, after = then.counter(name), now.counter(name)
        if before is not None and after is not None and after > before:
            grown[name] = (before, after)
    return grown


def growth_text(grown: Mapping[str, tuple[int, int]]) -> str:
    """"pending sectors 0 -> 3, reallocated sectors 0 -> 8"."""
    return ", ".join(f"{COUNTER_LABELS[name]} {a} -> {b}" for name, (a, b) in grown.items())


@dataclass(frozen=True)
class DriveTrend:
    """A drive's last state and its latest values against about 24 hours and 7 days ago."""

    drive: str
    state: str  # of the last read: a drive in standby shows its last active values as "now"
    now: Reading | None
    day_ago: Reading | None
    week_ago: Reading | None
    # What 24-hour growth is measured from: ``day_ago``, or with a younger history its first read.
    day_base: Reading | None = None

    @property
    def grown_24h(self) -> dict[str, tuple[int, int]]:
        return growth(self.now, self.day_base) if self.now else {}

    def to_dict(self) -> dict[str, object]:
        """The trend as ``-ct --json`` shows it: per value now, 24 h and 7 d ago (null: unknown)."""
        fields = ("temperature_c", *COUNTERS, "power_on_hours")

        def values(reading: Reading | None) -> dict[str, object]:
            if reading is None:
                return {"read_at": None, **dict.fromkeys(fields)}
            return {"read_at": reading.read_at, **{f: getattr(reading, f) for f in fields}}

        return {
            "now": values(self.now),
            "24h": values(self.day_ago),
            "7d": values(self.week_ago),
            "grown_24h": {name: {"from": a, "to": b} for name, (a, b) in self.grown_24h.items()},
        }


def drive_trend(drive: str, readings: Sequence[Reading], now: float, state: str | None = None) -> DriveTrend:
    """Pure: the trend of one drive from its readings (any order). ``state`` is the state of a
    read made now and not (yet) in ``readings``, as ``-ct`` reads live."""
    latest = latest_active(readings)
    last = max(readings, key=lambda r: r.read_at, default=None)
    serial = latest.serial if latest else None
    return DriveTrend(
        drive=drive,
        state=state or (last.state if last else "unavailable"),
        now=latest,
        day_ago=reading_at_or_before(readings, now - DAY, serial) if latest else None,
        week_ago=reading_at_or_before(readings, now - WEEK, serial) if latest else None,
        day_base=baseline(readings, now - DAY, latest) if latest else None,
    )


def grown_drives(trends: Iterable[DriveTrend]) -> list[dict[str, object]]:
    """Pure: the drives whose counters grew in the last 24 hours, for the daily report."""
    rows = []
    for trend in trends:
        grown = trend.grown_24h
        if grown:
            rows.append({"drive": trend.drive, "serial": trend.now.serial if trend.now else None,
                         "grown": growth_text(grown),
                         "counts": {name: {"from": a, "to": b} for name, (a, b) in grown.items()}})
    return rows


# --------------------------------------------------------------------------- SQL


def ensure_schema(db: StateDB) -> None:
    db.ensure_tables(SCHEMA)


def record_readings(db: StateDB, readings: Sequence[Reading], *, keep_days: float = DEFAULT_KEEP_DAYS) -> None:
    """Store one pass's readings and drop those older than ``keep_days``, in one transaction."""
    if not readings:
        return
    ensure_schema(db)
    newest = max(r.read_at for r in readings)
    with db.transaction() as cur:
        cur.executemany(
            f"INSERT INTO smart_history({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(r.drive, r.serial, r.read_at, r.state, r.temperature_c, r.reallocated, r.pending,
              r.offline_uncorrectable, r.crc_errors, r.power_on_hours, r.health) for r in readings],
        )
        cur.execute("DELETE FROM smart_history WHERE read_at < ?", (newest - keep_days * DAY,))


def _reading(row: Sequence[Any]) -> Reading:
    drive, serial, read_at, state, temperature, reallocated, pending, uncorrectable, crc, hours, health = row
    return Reading(drive, read_at, state, serial, temperature, reallocated, pending, uncorrectable, crc, hours, health)


def _one(db: StateDB, where: str, args: tuple[object, ...], order: str) -> Reading | None:
    rows = db.query(f"SELECT {_COLUMNS} FROM smart_history WHERE {where} ORDER BY read_at {order} LIMIT 1", args)
    return _reading(rows[0]) if rows else None


def load_anchors(
    db: StateDB, drive: str, times: Iterable[float], *, latest: Reading | None = None, oldest_after: float | None = None
) -> list[Reading]:
    """The readings of one drive the trend and the held-back rule pick: its latest active one
    (unless given: the pass has just read it), and of the same disk the newest at or before each
    of ``times`` and, with ``oldest_after``, the oldest after it. A few indexed look-ups instead
    of a month of rows (bench/bench_harvester_pass.py)."""
    ensure_schema(db)
    if latest is None:
        latest = _one(db, "drive = ? AND state = 'active'", (drive,), "DESC")
    if latest is None:
        return []
    found = {latest}
    disk = "drive = ? AND serial IS ? AND state = 'active'"
    for at in times:
        hit = _one(db, f"{disk} AND read_at <= ?", (drive, latest.serial, at), "DESC")
        if hit is not None:
            found.add(hit)
    if oldest_after is not None:
        hit = _one(db, f"{disk} AND read_at > ?", (drive, latest.serial, oldest_after), "ASC")
        if hit is not None:
            found.add(hit)
    return sorted(found, key=lambda r: r.read_at)


def load_trends(
    db: StateDB, drives: Iterable[str], now: float, live: Mapping[str, Reading] | None = None
) -> dict[str, DriveTrend]:
    """Each drive's trend from the stored history; ``live``: reads made now and not stored
    (``-ct`` reads for itself), which are "now" for a drive that was read, and give its state."""
    live = live or {}
    trends = {}
    for drive in drives:
        current = live.get(drive)
        latest = current if current is not None and current.active else None
        readings = load_anchors(db, drive, (now - DAY, now - WEEK), latest=latest, oldest_after=now - DAY)
        trends[drive] = drive_trend(drive, readings, now, current.state if current else None)
    return trends


def history(db: StateDB, drive: str) -> list[Reading]:
    """Every stored reading of one drive, oldest first (tests and debugging)."""
    ensure_schema(db)
    rows = db.query(f"SELECT {_COLUMNS} FROM smart_history WHERE drive = ? ORDER BY read_at", (drive,))
    return [_reading(row) for row in rows]
