"""Tell the farmer what coin_monitor.py recorded: every pending event, once, without flooding.

Coins and blocks are sent one notification each. Conditions that come and go (pool errors,
slow lookups, plot count drops, service errors, a silent harvester) go through a back-off so a
flapping drive or pool does not flood the farmer: one notification, then the next only after
``backoff_minutes``, doubling while it keeps recurring, and that one counts what happened in
between. A notification whose every channel failed stays pending and is retried by the next
runs (up to ``MAX_ATTEMPTS``). The back-off decision itself is pure, apart from the sending.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from utilities.farmer.new_events import xch
from utilities.notify import Notification, Notifier
from utilities.settings.farmer import FarmerSettings
from utilities.state import StateDB

log = logging.getLogger(__name__)

#: Events sent one notification each, never held back.
SINGLE_EVENTS = ("coin_received", "block_farmed")
#: Conditions that come and go: summarised and sent through the back-off.
CONDITION_EVENTS = ("pool_error", "slow_lookup", "plot_count_dropped", "chia_health", "harvester_silent")
#: Deliveries tried per notification before it is given up (status 'failed').
MAX_ATTEMPTS = 5


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
