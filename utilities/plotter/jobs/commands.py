"""Build a plot job's command line from the settings and the chosen directories.

The result is always an argv list, handed to ``subprocess`` without a shell: a directory name
with a space or a ``;`` stays one harmless argument. Only when a command must cross SSH is it
joined, with ``shlex.join``, so the remote shell sees the very same words.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from utilities.settings.plot_jobs import PlotJobSettings, TemplateWord, template_fields


@dataclass(frozen=True)
class JobPlacement:
    """Where one job works: its temp directory, optional temp2, and its destination."""

    temp: Path
    dest: Path
    temp2: Path | None = None


def template_values(settings: PlotJobSettings, placement: JobPlacement) -> dict[str, str]:
    """Every placeholder's value as text; unset values are empty strings."""
    def text(value: object) -> str:
        return "" if value is None else str(value)

    return {
        "executable": settings.executable_path,
        "k": str(settings.k),
        "compression": str(settings.compression),
        "threads": str(settings.threads),
        "buffer": str(settings.buffer),
        "buckets": str(settings.buckets),
        "temp": str(placement.temp),
        "temp2": text(placement.temp2),
        "dest": str(placement.dest),
        "farmer_public_key": text(settings.farmer_public_key),
        "pool_public_key": text(settings.pool_public_key),
        "pool_contract_address": text(settings.pool_contract_address),
        "override_k": "--override-k" if settings.k < 32 else "",
    }


def render_template(words: tuple[TemplateWord, ...], values: dict[str, str]) -> list[str]:
    """Pure: fill the placeholders; a group (a list) is dropped whole if a value it uses is empty.

    A plain word whose value is empty is an error rather than an empty argument, which would
    shift every later flag of the plotter's command line.
    """
    argv: list[str] = []
    for word in words:
        group = [word] if isinstance(word, str) else list(word)
        used = [name for part in group for name in template_fields(part)]
        if any(not values[name] for name in used):
            if isinstance(word, str):
                missing = ", ".join(name for name in used if not values[name])
                raise ValueError(f"command template word {word!r} needs {missing}, which is not set")
            continue
        argv += [part.format_map(values) for part in group]
    return argv


def build_command(settings: PlotJobSettings, placement: JobPlacement) -> list[str]:
    """The argv of one plot job with the configured program."""
    return render_template(settings.template(), template_values(settings, placement))


def remote_command(argv: list[str]) -> str:
    """One shell-safe string for running ``argv`` on another machine over SSH."""
    return shlex.join(argv)
