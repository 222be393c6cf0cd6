"""What every role script does before and around its own work.

Parse the common flags, load and validate the config, set up logging and optional Sentry, run
the role's function, and turn every expected failure into one ``error: ...`` line on stderr and
the failure's exit status. A role script is then only its argument parser and a dispatch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from system_logging import setup_console_logging, setup_logging
from utilities import __version__
from utilities.config import CONFIG_ENV, Settings, config_permission_warning, effective_settings_yaml, load_settings
from utilities.errors import LockBusy, PlotManagerError
from utilities.sentry import init_sentry

RoleMain = Callable[[argparse.Namespace, Settings, Path], int]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PATH",
        help=f"YAML config file (default: ${CONFIG_ENV} or ~/.config/plot_manager/plot_manager.yaml)",
    )
    parser.add_argument("--check-config", action="store_true", help="validate the config, print the effective settings and exit")
    parser.add_argument("-v", "--version", action="version", version=f"%(prog)s {__version__}")


def run_role(role: str, parser: argparse.ArgumentParser, main: RoleMain, argv: Sequence[str] | None = None) -> int:
    args = parser.parse_args(argv)
    setup_console_logging()
    try:
        settings, config_path = load_settings(args.config)
        if args.check_config:
            print(f"# {config_path}: valid\n" + effective_settings_yaml(settings), end="")
            return 0
        setup_logging(
            role, settings.log_dir, settings.log.level, settings.log.max_bytes, settings.log.backup_count
        )
        warning = config_permission_warning(config_path)
        if warning:
            logging.getLogger(role).warning(warning)
        init_sentry(settings.sentry, role)
        return main(args, settings, config_path)
    except LockBusy as busy:
        logging.getLogger(role).info("%s; nothing to do", busy)
        return busy.exit_code
    except PlotManagerError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}" if not line.startswith("config error") else line, file=sys.stderr)
        logging.getLogger(role).debug("failed: %s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
