"""One coin_monitor.py cron run: read chia's new log lines, record each event once, notify.

The pipeline, each step its own function:

1. ``follow`` (utilities/farmer/log_follower.py) hands out the new complete lines in batches.
2. ``derive_events`` (pure) turns a batch into new events with the harvester's running state
   (last check, plot count) carried from batch to batch and run to run.
3. ``record_batch`` stores the events (``INSERT OR IGNORE`` on kind + key: a coin id, a block
   hash ... so an event is recorded once whatever happens to the log) and the log position
   in ONE transaction: a run killed anywhere neither loses nor repeats an event.
4. ``notify_pending`` sends what is still pending, then marks it notified. Coins and blocks
   are sent one notification each; conditions that come and go (pool errors, slow lookups,
   plot count drops, service errors, a silent harvester) go through a back-off so a
   flapping drive or pool does not flood the farmer: one notification, then the next only
   after ``backoff_minutes``, doubling while it keeps recurring, and that one counts what
   happened in between. A notification whose every channel failed stays pending and is
   retried by the next runs (up to ``MAX_ATTEMPTS``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from utilities.config import expand_path
from utilities.farmer.chia_log import HarvesterCheck
from utilities.farmer.events import (
    BlockFarmed,
    CoinReceived,
    PoolError,
    ServiceError,
    SlowPlotLookup,
    candidate_lines,
    parse_event,
)
from utilities.farmer.log_follower import SCHEMA as FOLLOW_SCHEMA
from utilities.farmer.log_follower import Batch, FollowReport, follow, load_state, log_chain, save_state
from utilities.notify import Notification, Notifier
from utilities.settings.farmer import MOJOS_PER_XCH, FarmerSettings
from utilities.state import StateDB

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS farm_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    happened_at REAL NOT NULL,
    stamp TEXT NOT NULL,
    amount_mojos INTEGER,
    detail TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    notified_at REAL,
    UNIQUE(kind, key)
);
CREATE INDEX IF NOT EXISTS farm_events_by_status ON farm_events(status, kind);
CREATE TABLE IF NOT EXISTS farm_backoff (
    kind TEXT PRIMARY KEY,
    last_sent REAL NOT NULL,
    level INTEGER NOT NULL
)
"""

#: Events sent one notification each, never held back.
SINGLE_EVENTS = ("coin_received", "block_farmed")
#: Conditions that come and go: summarised and sent through the back-off.
CONDITION_EVENTS = ("pool_error", "slow_lookup", "plot_count_dropped", "chia_health", "harvester_silent")
#: Deliveries tried per notification before it is given up (status 'failed').
MAX_ATTEMPTS = 5
HARVESTER_KEY = "coin_monitor.harvester"
LOG_LEVEL_WARNED_KEY = "coin_monitor.log_level_warned_at"
LOG_LEVEL_CHECKED_KEY = "coin_monitor.chia_config_checked"
LOG_LEVEL_REPEAT_SECONDS = 24 * 3600


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewEvent:
    """One row for ``farm_events``: what happened, when (log time) and whether to tell."""

    kind: str
    key: str
    happened_at: float
    stamp: str
    detail: str
    amount_mojos: int | None = None
    status: str = "pending"  # or "filtered": a coin below farmer.min_coin_xch


@dataclass(frozen=True)
class HarvesterState:
    """What the harvester's lines told us so far (kept in the kv table between runs)."""

    last_check_at: float | None = None
    last_stamp: str | None = None
    total_plots: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"last_check_at": self.last_check_at, "last_stamp": self.last_stamp, "total_plots": self.total_plots}


def epoch(moment: datetime) -> float:
    """Seconds since the epoch; chia logs naive local time, which ``timestamp()`` reads as local."""
    return moment.timestamp()


def stamp_of(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def xch(mojos: int | None) -> str:
    """Mojos as an XCH amount without float rounding, e.g. ``1.75``."""
    if mojos is None:
        return "n/a"
    text = format(Decimal(mojos) / MOJOS_PER_XCH, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _digest(*parts: str) -> str:
    return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()


def derive_events(
    lines: Iterable[str], harvester: HarvesterState, settings: FarmerSettings
) -> tuple[list[NewEvent], HarvesterState]:
    """Pure: the events on ``lines`` and the harvester state after them."""
    events: list[NewEvent] = []
    for line in candidate_lines(list(lines)):
        event = parse_event(line)
        if event is None:
            continue
        if isinstance(event, HarvesterCheck):
            new, harvester = _harvester_events(event, harvester, settings)
            events += new
        elif isinstance(event, CoinReceived):
            status = "pending" if event.amount_mojos >= settings.min_coin_mojos else "filtered"
            where = f" at height {event.height}" if event.height is not None else ""
            events.append(NewEvent(
                "coin_received", event.key, epoch(event.timestamp), stamp_of(event.timestamp),
                f"{xch(event.amount_mojos)} XCH{where}", event.amount_mojos, status,
            ))
        elif isinstance(event, BlockFarmed):
            sp = f" (signage point {event.signage_point})" if event.signage_point is not None else ""
            events.append(NewEvent(
                "block_farmed", event.key, epoch(event.timestamp), stamp_of(event.timestamp),
                f"block {event.block_hash}{sp}",
            ))
        elif isinstance(event, PoolError):
            stamp = stamp_of(event.timestamp)
            events.append(NewEvent("pool_error", f"{stamp}|{_digest(event.message)}", epoch(event.timestamp), stamp, event.message))
        elif isinstance(event, SlowPlotLookup):
            stamp = stamp_of(event.timestamp)
            events.append(NewEvent(
                "slow_lookup", f"{stamp}|{_digest(event.plot)}", epoch(event.timestamp), stamp,
                f"{event.seconds:.2f} s looking up {event.plot}",
            ))
        elif isinstance(event, ServiceError):
            text = f"{event.logger} {event.message}"
            if any(ignored and ignored in text for ignored in settings.health_ignore):
                continue
            stamp = stamp_of(event.timestamp)
            events.append(NewEvent(
                "chia_health", f"{stamp}|{_digest(event.service, event.message)}", epoch(event.timestamp), stamp,
                f"{event.service} {event.level}: {event.message[:300]}",
            ))
    return events, harvester


def _harvester_events(
    check: HarvesterCheck, harvester: HarvesterState, settings: FarmerSettings
) -> tuple[list[NewEvent], HarvesterState]:
    events: list[NewEvent] = []
    stamp = stamp_of(check.timestamp)
    at = epoch(check.timestamp)
    if check.seconds > settings.slow_lookup_seconds:
        events.append(NewEvent(
            "slow_lookup", f"{stamp}|{check.challenge or ''}", at, stamp,
            f"{check.seconds:.2f} s for {check.eligible} eligible plots of {check.total_plots}",
        ))
    previous = harvester.total_plots
    if previous is not None and previous - check.total_plots >= settings.plot_drop_min:
        events.append(NewEvent(
            "plot_count_dropped", stamp, at, stamp,
            f"plot count dropped from {previous} to {check.total_plots} ({previous - check.total_plots} fewer)",
        ))
    return events, HarvesterState(at, stamp, check.total_plots)


def silence_event(harvester: HarvesterState, now: float, minutes: int) -> NewEvent | None:
    """Pure: a harvester_silent event if the last farming line is older than ``minutes``.

    It happens when the silence is noticed (``now``), not at the last line: nothing logged it.
    """
    if minutes <= 0 or harvester.last_check_at is None:
        return None
    silent_for = now - harvester.last_check_at
    if silent_for < minutes * 60:
        return None
    return NewEvent(
        "harvester_silent", f"since {harvester.last_stamp}", now, harvester.last_stamp or "",
        f"no harvester farming line for {int(silent_for // 60)} minutes (last at {harvester.last_stamp})",
    )


# -- back-off (pure) ---------------------------------------------------------------------------


def backoff_interval(level: int, base_minutes: int, max_minutes: int) -> float:
    """Seconds to wait after a notification sent at back-off ``level``."""
    return float(min(base_minutes * (2 ** min(level, 30)), max(max_minutes, base_minutes)) * 60)


def backoff_decision(
    now: float, last_sent: float | None, level: int, base_minutes: int, max_minutes: int
) -> tuple[bool, int]:
    """(send now?, back-off level to store if sent).

    The first notification always goes. A later one waits the current interval; if it comes
    while the condition is still recurring (within twice the interval) the interval doubles,
    after a quiet spell it starts over.
    """
    if last_sent is None:
        return True, 0
    interval = backoff_interval(level, base_minutes, max_minutes)
    elapsed = now - last_sent
    if elapsed < interval:
        return False, level
    return True, (level + 1 if elapsed < 2 * interval else 0)


# -- the run -----------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    report: FollowReport = field(default_factory=FollowReport)
    new_events: dict[str, int] = field(default_factory=dict)
    notified: dict[str, int] = field(default_factory=dict)
    log_level_warning: str | None = None


def ensure_schema(db: StateDB) -> None:
    db.ensure_tables(FOLLOW_SCHEMA)
    db.ensure_tables(SCHEMA)


def load_harvester(db: StateDB) -> HarvesterState:
    data = db.get(HARVESTER_KEY) or {}
    return HarvesterState(data.get("last_check_at"), data.get("last_stamp"), data.get("total_plots"))


def insert_event(cur: sqlite3.Cursor, event: NewEvent) -> bool:
    """Record ``event`` unless its kind + key is already there; True if it is new."""
    cur.execute(
        "INSERT OR IGNORE INTO farm_events(kind, key, happened_at, stamp, amount_mojos, detail, status) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (event.kind, event.key, event.happened_at, event.stamp, event.amount_mojos, event.detail, event.status),
    )
    return cur.rowcount == 1


def record_batch(
    db: StateDB, log_path: Path, batch: Batch, events: list[NewEvent], harvester: HarvesterState
) -> dict[str, int]:
    """Store the batch's events and the log position after it in one transaction."""
    added: dict[str, int] = {}
    with db.transaction() as cur:
        for event in events:
            if insert_event(cur, event):
                added[event.kind] = added.get(event.kind, 0) + 1
        save_state(cur, log_path, batch.state)
        db.set(HARVESTER_KEY, harvester.as_dict(), cur)
    return added


def run_monitor(
    settings: FarmerSettings,
    db: StateDB,
    notifier: Notifier,
    hostname: str,
    now: Callable[[], float] = time.time,
) -> RunOutcome:
    """Follow the log, record, notify. The caller holds the run lock."""
    ensure_schema(db)
    outcome = RunOutcome()
    log_path = expand_path(settings.chia_log)
    outcome.log_level_warning = warn_about_log_level(settings, db, now())
    harvester = load_harvester(db)
    state = load_state(db, log_path)
    missing = not log_chain(log_path)  # the live file or any backup (.N, .N.gz) will do
    if db.alert_transition("coin_monitor.no_chia_log", missing, str(log_path)):
        log.warning("chia's log %s does not exist (farmer.chia_log): nothing to follow until it does", log_path)
    for batch in follow(log_path, state, settings.start_at, outcome.report):
        events, harvester = derive_events(batch.lines, harvester, settings)
        for kind, count in record_batch(db, log_path, batch, events, harvester).items():
            outcome.new_events[kind] = outcome.new_events.get(kind, 0) + count
    silent = silence_event(harvester, now(), settings.harvester_silent_minutes)
    if db.alert_transition("coin_monitor.harvester_silent", silent is not None, silent.detail if silent else "") and silent:
        with db.transaction() as cur:
            insert_event(cur, silent)
        outcome.new_events["harvester_silent"] = 1
    outcome.notified = notify_pending(db, notifier, settings, hostname, now())
    prune_conditions(db, now())
    report = outcome.report
    log.info(
        "coin monitor: read %d bytes (%d lines) from %d file(s)%s; new events %s; notified %s",
        report.bytes_read, report.lines, report.files_read,
        f", {report.rotations} rotation(s)" if report.rotations else "",
        outcome.new_events or "none", outcome.notified or "none",
    )
    return outcome


CONDITION_KEEP_SECONDS = 90 * 24 * 3600


def prune_conditions(db: StateDB, now: float) -> None:
    """Forget condition events older than 90 days (coins and blocks are kept for ever).

    A busy farm logs pool errors every few minutes; their rows only matter for the back-off
    and --summary, and a line that old is never read again, so its key is not needed either.
    """
    marks = ",".join("?" for _ in CONDITION_EVENTS)
    with db.transaction() as cur:
        cur.execute(
            f"DELETE FROM farm_events WHERE kind IN ({marks}) AND status != 'pending' AND happened_at < ?",
            (*CONDITION_EVENTS, now - CONDITION_KEEP_SECONDS),
        )


# -- notifications -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingRow:
    id: int
    kind: str
    key: str
    happened_at: float
    stamp: str
    amount_mojos: int | None
    detail: str
    attempts: int


def _pending(db: StateDB, kind: str) -> list[PendingRow]:
    rows = db.query(
        "SELECT id, kind, key, happened_at, stamp, amount_mojos, detail, attempts FROM farm_events "
        "WHERE status = 'pending' AND kind = ? ORDER BY happened_at, id",
        (kind,),
    )
    return [PendingRow(*row) for row in rows]


def coin_totals(db: StateDB) -> tuple[int, int]:
    """(number of coins, total mojos) of every coin counted (not filtered as dust)."""
    row = db.query(
        "SELECT COUNT(*), COALESCE(SUM(amount_mojos), 0) FROM farm_events WHERE kind = 'coin_received' AND status != 'filtered'"
    )[0]
    return int(row[0]), int(row[1])


def notify_pending(
    db: StateDB, notifier: Notifier, settings: FarmerSettings, hostname: str, now: float
) -> dict[str, int]:
    sent: dict[str, int] = {}
    for kind in SINGLE_EVENTS:
        for row in _pending(db, kind):
            notification = _single_notification(db, row, hostname)
            if _deliver(db, notifier, notification, [row.id], now):
                sent[kind] = sent.get(kind, 0) + 1
    for kind in CONDITION_EVENTS:
        rows = _pending(db, kind)
        if not rows:
            continue
        backoff = db.query("SELECT last_sent, level FROM farm_backoff WHERE kind = ?", (kind,))
        last_sent, level = (backoff[0][0], backoff[0][1]) if backoff else (None, 0)
        allowed, new_level = backoff_decision(now, last_sent, level, settings.backoff_minutes, settings.backoff_max_minutes)
        if not allowed:
            log.info("%s: %d event(s) held back until the back-off ends", kind, len(rows))
            continue
        notification = _condition_notification(kind, rows, hostname, last_sent)
        if _deliver(db, notifier, notification, [row.id for row in rows], now):
            sent[kind] = len(rows)
            with db.transaction() as cur:
                cur.execute(
                    "INSERT INTO farm_backoff(kind, last_sent, level) VALUES (?, ?, ?) ON CONFLICT(kind) "
                    "DO UPDATE SET last_sent = excluded.last_sent, level = excluded.level",
                    (kind, now, new_level),
                )
    return sent


def _deliver(db: StateDB, notifier: Notifier, notification: Notification, ids: list[int], now: float) -> bool:
    """Send; mark the rows 'notified' if any channel delivered, 'quiet' if none is switched on.

    If every channel failed the rows stay pending for the next run, up to MAX_ATTEMPTS.
    """
    results = notifier.send(notification)
    delivered = not results or any(results.values())
    status = "notified" if results else "quiet"
    marks = ",".join("?" for _ in ids)
    with db.transaction() as cur:
        if delivered:
            cur.execute(
                f"UPDATE farm_events SET status = ?, notified_at = ? WHERE id IN ({marks})", (status, now, *ids)
            )
        else:
            cur.execute(f"UPDATE farm_events SET attempts = attempts + 1 WHERE id IN ({marks})", ids)
            cur.execute(
                f"UPDATE farm_events SET status = 'failed' WHERE id IN ({marks}) AND attempts >= ?", (*ids, MAX_ATTEMPTS)
            )
    return delivered


def _single_notification(db: StateDB, row: PendingRow, hostname: str) -> Notification:
    count, total = coin_totals(db)
    if row.kind == "coin_received":
        amount = xch(row.amount_mojos)
        return Notification(
            event="coin_received",
            subject=f"{hostname}: received {amount} XCH",
            short_text=f"{hostname}: received {amount} XCH at {row.stamp}; {count} coins, {xch(total)} XCH in total",
            context={
                "hostname": hostname, "amount_xch": amount, "amount_mojos": row.amount_mojos, "time": row.stamp,
                "coin": row.key if "|" not in row.key else None, "detail": row.detail,
                "coin_count": count, "total_xch": xch(total),
            },
            template="coin_received",
        )
    return Notification(
        event="block_farmed",
        subject=f"{hostname}: farmed a block",
        short_text=f"{hostname}: farmed block {row.key[:16]}... at {row.stamp}",
        context={
            "hostname": hostname, "block_hash": row.key, "time": row.stamp, "detail": row.detail,
            "coin_count": count, "total_xch": xch(total),
        },
        template="block_farmed",
    )


_CONDITION_TITLES = {
    "pool_error": "pool errors",
    "slow_lookup": "slow harvester lookups",
    "plot_count_dropped": "plot count dropped",
    "chia_health": "chia service errors",
    "harvester_silent": "harvester silent",
}


def _condition_notification(kind: str, rows: list[PendingRow], hostname: str, last_sent: float | None) -> Notification:
    title = _CONDITION_TITLES[kind]
    first, last = rows[0], rows[-1]
    count = len(rows)
    summary = last.detail if count == 1 else f"{count} times from {first.stamp} to {last.stamp}; last: {last.detail}"
    return Notification(
        event=kind,
        subject=f"{hostname}: {title}" + (f" ({count}x)" if count > 1 else ""),
        short_text=f"{hostname}: {title}: {summary}",
        context={
            "hostname": hostname, "title": title, "count": count, "first_time": first.stamp, "last_time": last.stamp,
            "events": [{"time": row.stamp, "detail": row.detail} for row in rows[-20:]],
            "more": max(0, count - 20),
            "previous_notification": datetime.fromtimestamp(last_sent).strftime("%Y-%m-%d %H:%M:%S") if last_sent else None,
        },
        template="farm_condition",
    )


# -- chia's log level --------------------------------------------------------------------------


def chia_log_levels(config: Any) -> dict[str, str]:
    """Pure: ``where -> level`` from chia's parsed config.yaml (top level and per service)."""
    levels: dict[str, str] = {}
    if not isinstance(config, dict):
        return levels
    top = config.get("logging")
    if isinstance(top, dict) and isinstance(top.get("log_level"), str):
        levels["logging.log_level"] = top["log_level"].upper()
    for service in ("farmer", "harvester", "full_node", "wallet"):
        section = config.get(service)
        if isinstance(section, dict) and isinstance(section.get("logging"), dict):
            level = section["logging"].get("log_level")
            if isinstance(level, str):
                levels[f"{service}.logging.log_level"] = level.upper()
    return levels


def log_level_problem(levels: dict[str, str], config_path: Path) -> str | None:
    """Pure: the warning to give when chia would not write the INFO lines we read."""
    quiet = {where: level for where, level in levels.items() if level not in ("INFO", "DEBUG", "NOTSET")}
    if not quiet:
        return None
    where, level = next(iter(quiet.items()))
    return (
        f"chia logs at {level} ({config_path}: {where}), so the INFO lines coin_monitor.py reads "
        f"(coins received, blocks farmed, harvester checks) are never written. Fix: set "
        f"'log_level: INFO' under 'logging:' in {config_path} (or run: chia configure --set-log-level INFO), "
        f"then restart chia (chia start -r farmer)."
    )


def check_chia_log_level(config_path: Path) -> str | None:
    """The warning for chia's config.yaml at ``config_path``, or None when it logs at INFO."""
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return (
            f"chia's config {config_path} was not found (farmer.chia_config), so its log level cannot be "
            f"checked; coin_monitor.py needs chia to log at INFO."
        )
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return f"chia's config {config_path} cannot be read ({type(exc).__name__}), so its log level cannot be checked."
    levels = chia_log_levels(data)
    if not levels:
        # chia's default when nothing is set is WARNING.
        levels = {"logging.log_level (not set: chia's default)": "WARNING"}
    return log_level_problem(levels, config_path)


def _config_signature(path: Path) -> list[Any] | None:
    """What tells whether chia's config changed since it was last read (None: cannot stat it).

    ctime too: a chmod that makes an unreadable config readable changes only that.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def cached_log_level_problem(config_path: Path, db: StateDB) -> str | None:
    """``check_chia_log_level``, parsed again only when chia's config.yaml changed.

    chia's config is ~28 KB of YAML: parsing it costs tens of milliseconds, more than the rest
    of a cron run with nothing new, every minute; a stat tells whether the answer can change.
    """
    signature = _config_signature(config_path)
    cached = db.get(LOG_LEVEL_CHECKED_KEY)
    if signature is not None and isinstance(cached, dict) and cached.get("signature") == signature:
        return cached.get("problem")
    problem = check_chia_log_level(config_path)
    if signature is not None:
        db.set(LOG_LEVEL_CHECKED_KEY, {"signature": signature, "problem": problem})
    return problem


def warn_about_log_level(settings: FarmerSettings, db: StateDB, now: float, force: bool = False) -> str | None:
    """Warn (stderr and log) about chia's log level: always on a terminal, from cron once a day."""
    problem = cached_log_level_problem(expand_path(settings.chia_config), db)
    if problem is None:
        if db.get(LOG_LEVEL_WARNED_KEY) is not None:
            db.set(LOG_LEVEL_WARNED_KEY, None)
        return None
    last = db.get(LOG_LEVEL_WARNED_KEY)
    if force or sys.stderr.isatty() or last is None or now - float(last) >= LOG_LEVEL_REPEAT_SECONDS:
        log.warning("%s", problem)
        db.set(LOG_LEVEL_WARNED_KEY, now)
    return problem
