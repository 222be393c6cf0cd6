"""Pure: the rows coin_monitor.py records from a batch of chia log lines, and a silent harvester.

``derive_events`` turns the lines ``events.parse_event`` understands into ``NewEvent`` rows for
the ``farm_events`` table, each with the key that makes it unique (a coin id, a block hash, the
line's time and a digest of its text ...), so recording the same line twice records it once.
The harvester's running state (last check, plot count) is carried from batch to batch and run
to run: a plot count drop is only seen by comparing with the check before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from utilities.chia_log import HarvesterCheck
from utilities.farmer.events import (
    BlockFarmed,
    CoinReceived,
    PoolError,
    ServiceError,
    SlowPlotLookup,
    candidate_lines,
    parse_event,
)
from utilities.settings.farmer import MOJOS_PER_XCH, FarmerSettings


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
