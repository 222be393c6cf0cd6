"""The ``log:`` config section: how much every role script logs, and where its files rotate."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from utilities.settings.base import Section


class LogSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    directory: Path | None = None  # default: <state_dir>/logs
    max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    backup_count: int = Field(default=5, ge=0)
