#!/usr/bin/env python3
"""drive_manager.py: the harvester's script.

Without flags (cron, every minute) it finds the plot drives, picks the drive that receives the
next plot, rewrites receive_plot.sh when that changes, writes the export the plotters read and
sends alerts. With a flag it prints a report or changes a drive's state; see --help.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utilities.cli import RoleParser, add_common_arguments, run_role  # noqa: E402
from utilities.harvester.cli import run_drive_manager  # noqa: E402


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse type: a number above zero, or a one-line error naming the flag."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = RoleParser(
        prog="drive_manager.py",
        description="Harvester plot drive manager. With no action flag: the cron pass (discover "
        "drives, choose the receive drive, rewrite receive_plot.sh, write the export, alert).",
    )
    add_common_arguments(parser)
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("-pr", "--plot_report", action="store_true", help="print the plot report and exit")
    actions.add_argument("-ct", "--check_temps", action="store_true", help="print every plot drive's temperature and exit")
    actions.add_argument("-dr", "--daily_report", action="store_true", help="send the daily report (daily_report notification) and print it")
    actions.add_argument("-ud", "--update_daily", action="store_true", help="record today's plot counts for the daily statistics (cron, once a day)")
    actions.add_argument("-rp", "--replace_plot", action="store_true", help="replace mode: delete one old OG plot on the receive drive if it has no room for another plot")
    actions.add_argument("-fr", "--farm_report", action="store_true", help="this harvester and every harvester in farm.harvesters: totals and one section each")
    actions.add_argument("-uuid", "--check_uuid", metavar="UUID", help="find the harvester and mountpoint of a drive by its filesystem UUID")
    actions.add_argument("--prepare-drive", metavar="DEVICE", help="partition, format, mount and fstab a NEW empty disk (see harvester.drive_prep)")
    actions.add_argument("-off", "--offline_hdd", metavar="DRIVE", help="take a drive offline: no more plots go to it (name like drive6, or its mountpoint)")
    actions.add_argument("-on", "--online_hdd", metavar="DRIVE", help="put an offline drive back in service, or forget a missing drive that will not come back")
    actions.add_argument("--check-plots", nargs="?", const="all", metavar="DRIVE", help="check plots with chiapos' prover, like chia plots check, at idle I/O priority within a time budget (DRIVE: a name, a mountpoint or all, the default)")
    parser.add_argument("--challenges", type=_positive(int), metavar="N", help="with --check-plots: challenges per plot (default harvester.plot_checks.challenges, 30)")
    parser.add_argument("--budget-minutes", type=_positive(float), metavar="M", help="with --check-plots: start no plot after M minutes (default harvester.plot_checks.budget_minutes)")
    parser.add_argument("--json", action="store_true", help="with -pr, -ct, -fr or --check-plots: print JSON instead of text")
    parser.add_argument("--yes", action="store_true", help="with --prepare-drive: do not ask for confirmation")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_role("drive_manager", build_parser(), run_drive_manager, argv)


if __name__ == "__main__":
    sys.exit(main())
