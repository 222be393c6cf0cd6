"""One logging set-up for every role script, from config/logging.yaml.

Rotating files keep a cron job that runs every minute from filling the disk; the level comes from
the farmer's config (``log.level``), the file layout from ``config/logging.yaml``. Every handler
escapes control characters in the message, so a file name with a newline in it cannot forge a
second log line.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml

from utilities.install_paths import LOGGING_YAML

# C0 and C1 control characters (newline, carriage return, escape, ...) and the Unicode line and
# paragraph separators: anything a terminal or a line-based log reader would act on.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` with every control character written as Python writes it in a literal (\\n,
    \\x1b, \\u2028). Backslashes are left alone, so escaping twice changes nothing."""
    return _CONTROL_RE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class EscapeControlCharacters(logging.Filter):
    """One log record, one line: the rendered message, whatever its arguments held (a file
    name, a remote's answer, an exception's text), has its control characters escaped.

    Attached to every handler rather than to loggers, because records propagated from a
    child logger skip the root logger's filters but never its handlers' ones. A traceback
    (``exc_info``) is rendered by the formatter afterwards and keeps its own lines.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = escape_controls(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


def escape_on_every_handler(logger: logging.Logger | None = None) -> None:
    """Add the escaping filter to each handler of ``logger`` (default: root) that lacks it."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, EscapeControlCharacters) for f in handler.filters):
            handler.addFilter(EscapeControlCharacters())


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
    escape_on_every_handler()  # here, not in logging.yaml: editing that file cannot lose it


def setup_console_logging(level: str = "WARNING") -> None:
    """Before the config is known (or when it is invalid): stderr only."""
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    escape_on_every_handler()
