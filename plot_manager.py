#!/usr/bin/env python3
"""plot_manager.py: the plotter's script.

Without flags (cron, every few minutes) it starts the plot jobs the limits allow (when
plotter.jobs.enabled) and sends every finished plot to the harvester with the most room, verifies
each copy end to end and only then deletes the source. --send moves one plot by hand (with a
progress bar), --dry-run shows the plan, --history the last 24 hours. --jobs, --start-jobs,
--loop, --stop and --remove-aborted manage plot jobs, here or (--host) on other plotters.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utilities.cli import RoleParser, add_common_arguments, run_role  # noqa: E402
from utilities.plotter.cli import run_plot_manager  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = RoleParser(
        prog="plot_manager.py",
        description="Plotter: move finished plots to the harvester with the most room, verified "
        "end to end (xxh3-128 on both sides), deleting a source only after the harvester confirmed it.",
    )
    add_common_arguments(parser)
    parser.add_argument("--send", metavar="PLOT", help="send this one plot now (progress bar on a terminal)")
    parser.add_argument("--to", metavar="HARVESTER", help="with --send: this harvester, not the one with the most room")
    parser.add_argument("--dry-run", action="store_true", help="show which plot would go where, send nothing")
    parser.add_argument("--no-resume", action="store_true",
                        help="a dropped transfer starts again from byte 0 (as plotter.transfer.resume: false)")
    parser.add_argument("--history", action="store_true", help="transfers of the last 24 hours: count, data, MB/s")
    parser.add_argument("--json", action="store_true", help="with --history or --jobs: JSON")
    jobs = parser.add_argument_group("plot jobs (plotter.jobs)")
    actions = jobs.add_mutually_exclusive_group()
    actions.add_argument("--jobs", action="store_true", help="table of plot jobs: phase, elapsed, temp used, CPU, memory")
    actions.add_argument("--start-jobs", action="store_true",
                         help="start the plot jobs the limits allow now (no plot transfers)")
    actions.add_argument("--loop", nargs="?", type=float, const=0.0, default=None, metavar="SECONDS",
                         help="keep starting jobs every SECONDS (default plotter.jobs.loop_seconds) until stopped")
    actions.add_argument("--stop", metavar="JOB", help="end a job (id or pid) and delete its temporary files")
    actions.add_argument("--remove-aborted", action="store_true",
                         help="delete the temporary files of every job that ended without a plot")
    jobs.add_argument("--host", metavar="NAME",
                      help="with --jobs, --stop or --remove-aborted: a plotter of plotter.jobs.remote_plotters "
                           "(--jobs: 'all' for every plotter and this one)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_role("plot_manager", build_parser(), run_plot_manager, argv)


if __name__ == "__main__":
    sys.exit(main())
