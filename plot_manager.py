#!/usr/bin/env python3
"""plot_manager.py: the plotter's script.

Without flags (cron, every few minutes) it sends every finished plot to the harvester with the
most room, verifies each copy end to end and only then deletes the source. --send moves one plot
by hand (with a progress bar), --dry-run shows the plan, --history the last 24 hours.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utilities.cli import add_common_arguments, run_role  # noqa: E402
from utilities.plotter_cli import run_plot_manager  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plot_manager.py",
        description="Plotter: move finished plots to the harvester with the most room, verified "
        "end to end (xxh3-128 on both sides), deleting a source only after the harvester confirmed it.",
    )
    add_common_arguments(parser)
    parser.add_argument("--send", metavar="PLOT", help="send this one plot now (progress bar on a terminal)")
    parser.add_argument("--to", metavar="HARVESTER", help="with --send: this harvester, not the one with the most room")
    parser.add_argument("--dry-run", action="store_true", help="show which plot would go where, send nothing")
    parser.add_argument("--history", action="store_true", help="transfers of the last 24 hours: count, data, MB/s")
    parser.add_argument("--json", action="store_true", help="with --history: JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_role("plot_manager", build_parser(), run_plot_manager, argv)


if __name__ == "__main__":
    sys.exit(main())
