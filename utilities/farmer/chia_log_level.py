"""Check that chia logs at INFO, the level whose lines coin_monitor.py reads, and warn if not.

chia's default level is WARNING, at which coins received, blocks farmed and harvester checks
are never written: the monitor would then run happily and report nothing. So every run looks
at chia's ``config.yaml`` (parsed again only when it changed: it is ~28 KB of YAML) and warns
on a terminal always, from cron once a day.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from utilities.config import expand_path
from utilities.settings.farmer import FarmerSettings
from utilities.state import StateDB

log = logging.getLogger(__name__)

LOG_LEVEL_WARNED_KEY = "coin_monitor.log_level_warned_at"
LOG_LEVEL_CHECKED_KEY = "coin_monitor.chia_config_checked"
LOG_LEVEL_REPEAT_SECONDS = 24 * 3600


def chia_log_levels(config: Any) -> dict[str, str]:
    """Pure: ``where -> level`` from chia's parsed config.yaml (top level and per service)."""
    levels: dict[str, str] = {}
    if not isinstance(config, dict):
        return levels
    top = config.get("logging")
    if isinstance(top, dict) and isinstance(top.get("log_level"), str):
        levels["logging.log_level"] = top["log_level"].upper()
    for service in ("farmer", "harvester", "full_node", "wallet"):
        section = config.get(service)
        if isinstance(section, dict) and isinstance(section.get("logging"), dict):
            level = section["logging"].get("log_level")
            if isinstance(level, str):
                levels[f"{service}.logging.log_level"] = level.upper()
    return levels


def log_level_problem(levels: dict[str, str], config_path: Path) -> str | None:
    """Pure: the warning to give when chia would not write the INFO lines we read."""
    quiet = {where: level for where, level in levels.items() if level not in ("INFO", "DEBUG", "NOTSET")}
    if not quiet:
        return None
    where, level = next(iter(quiet.items()))
    return (
        f"chia logs at {level} ({config_path}: {where}), so the INFO lines coin_monitor.py reads "
        f"(coins received, blocks farmed, harvester checks) are never written. Fix: set "
        f"'log_level: INFO' under 'logging:' in {config_path} (or run: chia configure --set-log-level INFO), "
        f"then restart chia (chia start -r farmer)."
    )


def check_chia_log_level(config_path: Path) -> str | None:
    """The warning for chia's config.yaml at ``config_path``, or None when it logs at INFO."""
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return (
            f"chia's config {config_path} was not found (farmer.chia_config), so its log level cannot be "
            f"checked; coin_monitor.py needs chia to log at INFO."
        )
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return f"chia's config {config_path} cannot be read ({type(exc).__name__}), so its log level cannot be checked."
    levels = chia_log_levels(data)
    if not levels:
        # chia's default when nothing is set is WARNING.
        levels = {"logging.log_level (not set: chia's default)": "WARNING"}
    return log_level_problem(levels, config_path)


def _config_signature(path: Path) -> list[Any] | None:
    """What tells whether chia's config changed since it was last read (None: cannot stat it).

    ctime too: a chmod that makes an unreadable config readable changes only that.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def cached_log_level_problem(config_path: Path, db: StateDB) -> str | None:
    """``check_chia_log_level``, parsed again only when chia's config.yaml changed.

    chia's config is ~28 KB of YAML: parsing it costs tens of milliseconds, more than the rest
    of a cron run with nothing new, every minute; a stat tells whether the answer can change.
    """
    signature = _config_signature(config_path)
    cached = db.get(LOG_LEVEL_CHECKED_KEY)
    if signature is not None and isinstance(cached, dict) and cached.get("signature") == signature:
        return cached.get("problem")
    problem = check_chia_log_level(config_path)
    if signature is not None:
        db.set(LOG_LEVEL_CHECKED_KEY, {"signature": signature, "problem": problem})
    return problem


def warn_about_log_level(settings: FarmerSettings, db: StateDB, now: float, force: bool = False) -> str | None:
    """Warn (stderr and log) about chia's log level: always on a terminal, from cron once a day."""
    problem = cached_log_level_problem(expand_path(settings.chia_config), db)
    if problem is None:
        if db.get(LOG_LEVEL_WARNED_KEY) is not None:
            db.set(LOG_LEVEL_WARNED_KEY, None)
        return None
    last = db.get(LOG_LEVEL_WARNED_KEY)
    if force or sys.stderr.isatty() or last is None or now - float(last) >= LOG_LEVEL_REPEAT_SECONDS:
        log.warning("%s", problem)
        db.set(LOG_LEVEL_WARNED_KEY, now)
    return problem
