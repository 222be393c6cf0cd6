#!/usr/bin/env python3
"""coin_monitor.py: the farmer's script.

Without flags (cron, every minute) it reads what chia wrote to its debug.log since the last
run, records every coin received, block farmed and farm problem once, and notifies the farmer.
``--summary`` shows the coins won and the last events; ``--farm-log`` the recent log lines of
one kind. See --help.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utilities.cli import RoleParser, add_common_arguments, run_role  # noqa: E402
from utilities.farmer.cli import run_coin_monitor  # noqa: E402
from utilities.farmer.farm_log import KINDS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = RoleParser(
        prog="coin_monitor.py",
        description="Farmer coin and farm monitor. With no action flag: the cron pass (read chia's new "
        "log lines, record coins, blocks and farm problems once, notify).",
    )
    add_common_arguments(parser)
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--summary", action="store_true", help="print the coins received, their total and the last events")
    actions.add_argument(
        "--farm-log", nargs="?", const="error", choices=KINDS, metavar="{error,warning,eligible}",
        help="print chia's recent log lines of one kind (default: error)",
    )
    parser.add_argument("--last", type=int, default=10, metavar="N", help="with --summary: how many events to list (default 10)")
    parser.add_argument("--json", action="store_true", help="with --summary: print JSON instead of text")
    parser.add_argument("--lines", type=int, metavar="N", help="with --farm-log: how many records (default 50)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_role("coin_monitor", build_parser(), run_coin_monitor, argv)


if __name__ == "__main__":
    sys.exit(main())
