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
from typing import Any, NoReturn

from system_logging import setup_console_logging, setup_logging
from utilities import __version__
from utilities.config import CONFIG_ENV, Settings, config_permission_warning, effective_settings_yaml, load_settings
from utilities.errors import LockBusy, PlotManagerError
from utilities.sentry import init_sentry

RoleMain = Callable[[argparse.Namespace, Settings, Path], int]


def nonblank(value: str) -> str:
    """Every flag's text value: an empty or blank one is an error, never "no flag".

    ``--send ''`` used to read as no --send at all and ran the whole cron pass; a value that
    names nothing is a mistake in the command line, so argparse reports it naming the flag.
    """
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


class RoleParser(argparse.ArgumentParser):
    """The role scripts' parser: one-line errors and no empty flag values.

    argparse prints the whole usage before an error; in cron mail the line that matters
    then drowns, and the README promises one ``error: ...`` line as for every other mistake.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The registry is shared with argument groups, so every text-valued flag (no type of
        # its own) goes through nonblank, whichever group it was added to.
        self.register("type", None, nonblank)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PATH",
        help=f"YAML config file (default: ${CONFIG_ENV} or ~/.config/plot_manager/plot_manager.yaml)",
    )
    parser.add_argument("--check-config", action="store_true", help="validate the config, print the effective settings and exit")
    parser.add_argument("-v", "--version", action="version", version=f"%(prog)s {__version__}")


def warn_if_readable_by_others(role: str, config_path: Path) -> None:
    """A config others can read may leak its secrets; say so on every run, --check-config too
    (the command a farmer runs right after editing it)."""
    warning = config_permission_warning(config_path)
    if warning:
        logging.getLogger(role).warning("%s", warning)


def run_role(role: str, parser: argparse.ArgumentParser, main: RoleMain, argv: Sequence[str] | None = None) -> int:
    args = parser.parse_args(argv)
    setup_console_logging()
    try:
        settings, config_path = load_settings(args.config)
        if args.check_config:  # writes nothing, not even a log file: the warning goes to stderr
            warn_if_readable_by_others(role, config_path)
            print(f"# {config_path}: valid\n" + effective_settings_yaml(settings), end="")
            return 0
        setup_logging(
            role, settings.log_dir, settings.log.level, settings.log.max_bytes, settings.log.backup_count
        )
        warn_if_readable_by_others(role, config_path)
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
