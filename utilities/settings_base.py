"""The base of every config section, kept apart so feature modules can define their own sections
without importing ``utilities.config`` (which imports them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Every section rejects unknown keys: a typo must be an error, not a silently ignored line."""

    model_config = ConfigDict(extra="forbid", frozen=True)
