"""One coin_monitor.py cron run: read chia's new log lines, record each event once, notify.

The pipeline, each step its own function:

1. ``follow`` (utilities/farmer/log_follower.py) hands out the new complete lines in batches.
2. ``derive_events`` (utilities/farmer/new_events.py, pure) turns a batch into new events with
   the harvester's running state (last check, plot count) carried from batch to batch and run
   to run.
3. ``record_batch`` (here) stores the events (``INSERT OR IGNORE`` on kind + key: a coin id, a
   block hash ... so an event is recorded once whatever happens to the log) and the log
   position in ONE transaction: a run killed anywhere neither loses nor repeats an event.
4. ``notify_pending`` (utilities/farmer/notifications.py) sends what is still pending, then
   marks it notified; conditions that come and go go through a back-off.

Before all that, ``warn_about_log_level`` (utilities/farmer/chia_log_level.py) checks that chia
writes the INFO lines this reads.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from utilities.config import expand_path
from utilities.farmer.chia_log_level import warn_about_log_level
from utilities.farmer.log_follower import SCHEMA as FOLLOW_SCHEMA
from utilities.farmer.log_follower import Batch, FollowReport, follow, load_state, save_state
from utilities.farmer.log_position import log_chain
from utilities.farmer.new_events import HarvesterState, NewEvent, derive_events, silence_event
from utilities.farmer.notifications import CONDITION_EVENTS, notify_pending
from utilities.notify import Notifier
from utilities.settings.farmer import FarmerSettings
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

HARVESTER_KEY = "coin_monitor.harvester"


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
