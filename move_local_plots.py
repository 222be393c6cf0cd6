#!/usr/bin/env python3
"""move_local_plots.py: for a harvester that also plots (cron, every few minutes).

Moves finished plots from this machine's plot output directories onto the plot drive that
drive_manager.py reserves for local plots (never the drive receiving from the network while
another has room), with the guarantees of a network transfer: hashed, written to a hidden
part file, fsynced, read back and compared, renamed, and only then is the source deleted.
Also alerts when a plotting temp or output directory fills up. See --help.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utilities.cli import RoleParser, add_common_arguments, run_role  # noqa: E402
from utilities.harvester.local_moves import run_move_local_plots  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = RoleParser(
        prog="move_local_plots.py",
        description="Move finished local plots (harvester.local_moves.plot_directories) onto the plot drive "
        "drive_manager.py reserved for them, and alert on full temp/output directories.",
    )
    add_common_arguments(parser)
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--dry-run", action="store_true",
                         help="show what would be moved where, and directory usage; change nothing")
    actions.add_argument("--clear-error", metavar="PLOT|all",
                         help="try a plot held back after repeated failures again (its name or path, or all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_role("move_local_plots", build_parser(), run_move_local_plots, argv)


if __name__ == "__main__":
    sys.exit(main())
