"""One logging set-up for every role script, from config/logging.yaml.

Rotating files keep a cron job that runs every minute from filling the disk; the level comes from
the farmer's config (``log.level``), the file layout from ``config/logging.yaml``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

LOGGING_YAML = Path(__file__).resolve().parent / "config" / "logging.yaml"


def _fill(value: Any, replacements: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, text in replacements.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, replacements) for v in value]
    return value


def setup_logging(role: str, log_dir: Path, level: str = "INFO", max_bytes: int = 10 * 1024 * 1024,
                  backup_count: int = 5, console_level: str | None = None) -> None:
    """Configure the root logger: a rotating file per role, and warnings on stderr."""
    import logging.config  # with logging.handlers about 12 ms; --version and bad configs skip it

    log_dir.mkdir(parents=True, exist_ok=True)
    spec = _fill(yaml.safe_load(LOGGING_YAML.read_text(encoding="utf-8")), {"log_dir": str(log_dir), "role": role})
    file_handler = spec["handlers"].get("file")
    if file_handler and file_handler.get("class", "").endswith("RotatingFileHandler"):
        file_handler.setdefault("maxBytes", max_bytes)
        file_handler.setdefault("backupCount", backup_count)
    spec["root"]["level"] = level
    if console_level and "console" in spec["handlers"]:
        spec["handlers"]["console"]["level"] = console_level
    logging.config.dictConfig(spec)


def setup_console_logging(level: str = "WARNING") -> None:
    """Before the config is known (or when it is invalid): stderr only."""
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
