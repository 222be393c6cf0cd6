"""The base of every config section, kept apart so feature modules can define their own sections
without importing ``utilities.config`` (which imports them)."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

#: What a name that reaches file names, log lines and remote command lines may contain.
PLAIN_NAME_CHARACTERS = "-_."


class Section(BaseModel):
    """Every section rejects unknown keys: a typo must be an error, not a silently ignored line."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_plain_name(value: str) -> str:
    """A validator body for names (hosts, harvesters, plotters): letters, digits, '-', '_', '.'."""
    if not all(c.isalnum() or c in PLAIN_NAME_CHARACTERS for c in value):
        raise ValueError(f"only letters, digits, '-', '_' and '.' are allowed, got {value!r}")
    return value


def repeated(values: Iterable[str]) -> list[str]:
    """The values listed more than once, sorted (for "must be unique" errors)."""
    seen: set[str] = set()
    twice: set[str] = set()
    for value in values:
        (twice if value in seen else seen).add(value)
    return sorted(twice)
