"""One error class per kind of failure, each with its exit status.

Role scripts catch ``PlotManagerError`` once at the top and print ``error: <message>`` on one
line, so a farmer reading cron mail sees what went wrong and which key, file or flag to fix.
"""

from __future__ import annotations


class PlotManagerError(Exception):
    """Base of every expected failure; ``exit_code`` is what the script exits with."""

    exit_code = 1


class ConfigError(PlotManagerError):
    """The YAML config is missing, unreadable or invalid (names the key)."""

    exit_code = 2


class UsageError(PlotManagerError):
    """A command-line flag or argument is wrong (names the flag)."""

    exit_code = 2


class DriveError(PlotManagerError):
    """A drive named by the user is unknown, unmounted or in the wrong state."""

    exit_code = 3


class PlotFileError(PlotManagerError):
    """A file is not a plot we can use (bad header, bad name, wrong size)."""

    exit_code = 4


class LockBusy(PlotManagerError):
    """Another run holds the lock; the caller usually exits quietly with 0."""

    exit_code = 0
