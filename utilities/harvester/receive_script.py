"""Write ``receive_plot.sh``, the script a plotter starts over SSH to receive one plot.

drive_manager.py rewrites it each time the receive drive changes. The rewrite is atomic and
durable (a half-written script must never run, nor an old one come back after a power cut) and
happens only while no transfer is being received: every receiver holds a shared ``flock`` on the
receive lock for its whole run, and the rewrite needs the exclusive lock, so a busy harvester
simply keeps the old script until the next minute.
"""

from __future__ import annotations

import shlex
import sys
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from utilities.durable import atomic_write
from utilities.errors import LockBusy
from utilities.harvester.drives import DriveLocation
from utilities.install_paths import RECEIVER, TEMPLATES_DIR
from utilities.locking import exclusive_lock


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # a shell script: quoting is done by shell_quote, explicitly
    )
    env.filters["shell_quote"] = lambda value: shlex.quote(str(value))
    return env


def render_receive_script(
    drive: DriveLocation | None,
    hostname: str,
    config_file: Path,
    lock_file: Path,
    generated_at: float,
    python: str = sys.executable,
    replace: bool = False,
    idle_timeout: float = 120,
) -> str:
    """Pure: the script text for ``drive`` (or the refusing script when there is none)."""
    return _environment().get_template("receive_plot.sh.j2").render(
        drive=drive,
        replace=replace,
        idle_timeout=f"{idle_timeout:g}",
        hostname=hostname,
        config_file=config_file,
        lock_file=lock_file,
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


def install_receive_script(path: Path, text: str, lock_file: Path) -> bool:
    """Atomically replace the script unless a transfer is being received; True when written."""
    try:
        with exclusive_lock(lock_file, "a plot transfer into this harvester"):
            atomic_write(path, text, mode=0o755, make_parents=True)
            return True
    except LockBusy:
        return False
