#!/usr/bin/env python3
"""farm_dashboard.py: a read-only web page of the whole farm.

A long-running server (``install.sh ROLE --dashboard`` makes it a systemd service): the -fr
farm totals, every harvester's drives, transfers, coins and alerts, refreshed every
``dashboard.refresh_seconds``. It listens on 127.0.0.1 unless the config names another address
and a secret. See --help.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utilities.cli import RoleParser, add_common_arguments, run_role  # noqa: E402
from utilities.dashboard.cli import run_dashboard  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = RoleParser(
        prog="farm_dashboard.py",
        description="Read-only web dashboard of the farm: serves the page until stopped.",
    )
    add_common_arguments(parser)
    parser.add_argument("--bind", metavar="ADDRESS", help="listen on this address (default: dashboard.bind, 127.0.0.1)")
    parser.add_argument("--port", type=int, metavar="PORT", help="listen on this port (default: dashboard.port, 8744)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_role("farm_dashboard", build_parser(), run_dashboard, argv)


if __name__ == "__main__":
    sys.exit(main())
