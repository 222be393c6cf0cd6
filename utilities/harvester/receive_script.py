"""Write ``receive_plot.sh``, the script a plotter starts over SSH to receive plots.

drive_manager.py rewrites it each time the receive set changes. The rewrite is atomic and
durable (a half-written script must never run, nor an old one come back after a power cut), and
it no longer waits for running receives: a receiver read its set from the script when it
started and keeps it, and the drive claims (utilities/transfer/claims.py), not the script, keep
two receivers off one drive. So a full drive leaves the set at once, even on a busy harvester.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from utilities.durable import atomic_write
from utilities.harvester.drives import DriveLocation
from utilities.install_paths import RECEIVER, TEMPLATES_DIR


@dataclass(frozen=True)
class SetDrive:
    """A drive of the receive set as the script names it: where plots land, and whether a
    receiver may replace one old OG plot there."""

    location: DriveLocation
    replace: bool = False


def _comment(value: object) -> str:
    """A value safe inside a ``#`` comment line: no line break or other control character
    (a mountpoint may hold anything but NUL and '/' separators)."""
    return "".join(c if c.isprintable() else "?" for c in str(value))


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # a shell script: quoting is done by shell_quote, explicitly
    )
    env.filters["shell_quote"] = lambda value: shlex.quote(str(value))
    env.filters["comment"] = _comment
    return env


def drives_argument(drives: Sequence[SetDrive]) -> str:
    """Pure: the receiver's ``--drives`` value, the set in order as one line of JSON."""
    return json.dumps(
        [{"name": d.location.name, "dir": d.location.receive_dir, "replace": d.replace} for d in drives],
        separators=(",", ":"),
    )


def render_receive_script(
    drives: Sequence[SetDrive] | DriveLocation | None,
    hostname: str,
    config_file: Path,
    claims_dir: Path,
    generated_at: float,
    python: str = sys.executable,
    replace: bool = False,
    idle_timeout: float = 120,
    per_drive: int = 1,
    resume_keep_hours: float | None = None,
    resume_chunk: int | None = None,
) -> str:
    """Pure: the script text for the receive set ``drives`` (the refusing script when empty).

    A single ``DriveLocation`` is a set of one (``replace`` says whether it may replace), None
    the empty set: the shape callers with one drive had before receive sets.
    ``resume_keep_hours`` (harvester.resume_keep_hours) and ``resume_chunk`` (harvester.resume_chunk_mib,
    in bytes) reach the receiver's resume options when given.
    """
    if isinstance(drives, DriveLocation):
        drives = [SetDrive(drives, replace)]
    drives = list(drives or [])
    return _environment().get_template("receive_plot.sh.j2").render(
        drives=drives,
        drives_json=drives_argument(drives),
        claims_dir=claims_dir,
        per_drive=per_drive,
        idle_timeout=f"{idle_timeout:g}",
        resume_keep_hours=f"{resume_keep_hours:g}" if resume_keep_hours is not None else None,
        resume_chunk=resume_chunk,
        hostname=hostname,
        config_file=config_file,
        python=python,
        receiver=RECEIVER,
        generated_at=datetime.fromtimestamp(generated_at).isoformat(timespec="seconds"),
    )


def _body(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("# receive_plot.sh: written by")]


def same_script(path: Path, text: str) -> bool:
    """True when the script on disk is ``text`` but for its time stamp line."""
    try:
        return _body(path.read_text(encoding="utf-8")) == _body(text)
    except OSError:
        return False


def install_receive_script(path: Path, text: str) -> None:
    """Atomically and durably replace the script (receivers running from the old one go on)."""
    atomic_write(path, text, mode=0o755, make_parents=True)
