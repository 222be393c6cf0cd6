"""coin_monitor.py's actions: the cron run, ``--summary`` and ``--farm-log``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from utilities.config import Settings, expand_path
from utilities.errors import UsageError
from utilities.farmer.chia_log_level import warn_about_log_level
from utilities.farmer.farm_log import recent_records
from utilities.farmer.log_follower import load_state
from utilities.farmer.monitor import ensure_schema, load_harvester, run_monitor
from utilities.farmer.new_events import xch
from utilities.farmer.notifications import coin_totals
from utilities.locking import exclusive_lock
from utilities.notify import Notifier
from utilities.state import StateDB
from utilities.text import leader


def run_coin_monitor(args: argparse.Namespace, settings: Settings, config_path: Path) -> int:
    if args.json and not args.summary:
        raise UsageError("--json goes with --summary")
    if args.lines is not None and args.farm_log is None:
        raise UsageError("--lines goes with --farm-log")
    if args.farm_log is not None:
        return farm_log(args, settings)
    with StateDB(settings.database_path) as db:
        if args.summary:
            return summary(args, settings, db)
        with exclusive_lock(settings.state_path / "coin_monitor.lock", "coin_monitor.py cron run"):
            run_monitor(settings.farmer, db, Notifier(settings.notifications), settings.hostname)
    return 0


def farm_log(args: argparse.Namespace, settings: Settings) -> int:
    limit = args.lines if args.lines is not None else 50
    if limit < 1:
        raise UsageError("--lines must be 1 or more")
    log_path = expand_path(settings.farmer.chia_log)
    if not log_path.exists():
        raise UsageError(f"chia's log {log_path} does not exist (farmer.chia_log)")
    records = recent_records(log_path, args.farm_log, limit)
    if not records:
        print(f"no {args.farm_log} lines at the end of {log_path}")
    for record in records:
        print("\n".join(record))
    return 0


def summary_data(settings: Settings, db: StateDB, last: int) -> dict[str, Any]:
    """Everything ``--summary`` shows, from the state database only (no log reading)."""
    ensure_schema(db)
    count, total = coin_totals(db)
    filtered = db.query("SELECT COUNT(*) FROM farm_events WHERE kind = 'coin_received' AND status = 'filtered'")[0][0]
    blocks = db.query("SELECT COUNT(*) FROM farm_events WHERE kind = 'block_farmed'")[0][0]
    rows = db.query(
        "SELECT stamp, kind, detail, status FROM farm_events ORDER BY happened_at DESC, id DESC LIMIT ?", (last,)
    )
    log_path = expand_path(settings.farmer.chia_log)
    state = load_state(db, log_path)
    harvester = load_harvester(db)
    return {
        "hostname": settings.hostname,
        "coins": count,
        "total_xch": xch(total),
        "total_mojos": total,
        "small_coins_ignored": filtered,
        "min_coin_xch": str(settings.farmer.min_coin_xch),
        "blocks_farmed": blocks,
        "log": str(log_path),
        "log_offset": state.offset if state else None,
        "last_log_line": state.last_line.split(" ", 1)[0] if state and state.last_line else None,
        "harvester_last_check": harvester.last_stamp,
        "harvester_plots": harvester.total_plots,
        "last_events": [
            {"time": stamp, "event": kind, "detail": detail, "status": status} for stamp, kind, detail, status in reversed(rows)
        ],
    }


def summary_text(data: dict[str, Any]) -> str:
    lines = [
        f"Coin monitor on {data['hostname']}",
        leader("Coins received", f"{data['coins']} ({data['total_xch']} XCH)"),
        leader(f"Small coins ignored (< {data['min_coin_xch']} XCH)", data["small_coins_ignored"]),
        leader("Blocks farmed", data["blocks_farmed"]),
        leader("Following", f"{data['log']} (byte {data['log_offset']})" if data["log_offset"] is not None else None),
        leader("Last log line read", data["last_log_line"]),
        leader("Last harvester check", data["harvester_last_check"]),
        leader("Plots farmed", data["harvester_plots"]),
        "",
        f"Last {len(data['last_events'])} events" if data["last_events"] else "No events recorded yet",
    ]
    for event in data["last_events"]:
        lines.append(f"{event['time']:<24} {event['event']:<19} {event['status']:<9} {event['detail']}")
    return "\n".join(lines)


def summary(args: argparse.Namespace, settings: Settings, db: StateDB) -> int:
    if args.last < 0:
        raise UsageError("--last must be 0 or more")
    warn_about_log_level(settings.farmer, db, time.time(), force=True)
    data = summary_data(settings, db, args.last)
    print(json.dumps(data, indent=2) if args.json else summary_text(data))
    return 0
