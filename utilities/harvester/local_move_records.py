"""move_local_plots.py's records: the drive reserved for it, and its moves, failures and part files.

drive_manager.py records the reservation; each run of move_local_plots.py reads it back and
checks it against the mounts of the moment (pure), and keeps in the state database what must
outlive the run: every move, the failures that hold a plot back until ``--clear-error``, and
the part file of the copy in progress, so the run after a SIGKILL can remove it wherever it is.
``local_moves.py`` runs the moves on these records.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utilities.harvester.drives import Mount, mount_of
from utilities.plot_finder import FinishedPlot
from utilities.state import StateDB
from utilities.transfer.local_copy import MoveResult, remove_stale_part_path

SCHEMA = """
CREATE TABLE IF NOT EXISTS local_moves (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plot TEXT NOT NULL,
    source TEXT NOT NULL,
    destination TEXT,
    bytes INTEGER NOT NULL,
    started_at REAL NOT NULL,
    seconds REAL NOT NULL,
    status TEXT NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS local_move_failures (
    plot TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    failures INTEGER NOT NULL,
    held INTEGER NOT NULL,
    last_reason TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS local_move_parts (
    part TEXT PRIMARY KEY,
    plot TEXT NOT NULL,
    started_at REAL NOT NULL
)
"""


# -- pure decisions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalDrive:
    """The drive drive_manager.py reserved for local plots, as it recorded it."""

    name: str
    mountpoint: str
    device: str
    receive_dir: Path
    replace: bool
    decided_at: float


def parse_reservation(record: Any) -> LocalDrive | None:
    """The recorded reservation, or None when there is none (or it is not one we can use)."""
    if not isinstance(record, dict) or not record.get("name") or not record.get("receive_dir"):
        return None
    try:
        return LocalDrive(
            name=str(record["name"]), mountpoint=str(record["mountpoint"]), device=str(record.get("device", "")),
            receive_dir=Path(record["receive_dir"]), replace=bool(record.get("replace")),
            decided_at=float(record.get("decided_at", 0)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def reservation_problem(drive: LocalDrive, offline: Sequence[str], mounts: Sequence[Mount]) -> str | None:
    """Why the reserved drive must not be written now (None: it may). Pure over the facts:
    the drive was taken offline since, or its directory is no longer on that mounted device."""
    if drive.name in offline:
        return f"the local plot drive {drive.name} ({drive.mountpoint}) was taken offline"
    mount = mount_of(str(drive.receive_dir), mounts)
    if mount is None or mount.mountpoint.rstrip("/") != drive.mountpoint.rstrip("/"):
        return f"the local plot drive {drive.name} is not mounted at {drive.mountpoint}"
    if drive.device and mount.device != drive.device:
        return f"{drive.mountpoint} now holds {mount.device}, not the reserved {drive.device}"
    return None


def after_failure(failures: int, held: bool, threshold: int) -> tuple[int, bool, bool]:
    """One more failure: (failures now, held now, alert now). The alert fires once, when the
    plot becomes held; a held plot is not tried again, so it cannot alert twice."""
    failures += 1
    now_held = held or failures >= threshold
    return failures, now_held, now_held and not held


# -- records in the state database ---------------------------------------------------------------


@dataclass(frozen=True)
class HeldPlot:
    """A plot held back after ``failures_before_alert`` failed moves, until ``--clear-error``."""

    plot: str
    source: str
    failures: int
    last_reason: str


def held_plots(db: StateDB) -> dict[str, HeldPlot]:
    """The held plots, by plot name."""
    rows = db.query("SELECT plot, source, failures, last_reason FROM local_move_failures WHERE held = 1 ORDER BY plot")
    return {r[0]: HeldPlot(r[0], r[1], int(r[2]), r[3] or "") for r in rows}


def record_failure(db: StateDB, plot: FinishedPlot, reason: str, threshold: int) -> tuple[int, bool]:
    """Count a failed move; returns (failures, whether the plot just became held)."""
    with db.transaction() as cur:
        row = cur.execute("SELECT failures, held FROM local_move_failures WHERE plot = ?", (plot.name,)).fetchone()
        failures, held, alert = after_failure(int(row[0]) if row else 0, bool(row[1]) if row else False, threshold)
        cur.execute(
            "INSERT INTO local_move_failures(plot, source, failures, held, last_reason, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(plot) DO UPDATE SET source = excluded.source, failures = excluded.failures, "
            "held = excluded.held, last_reason = excluded.last_reason, updated_at = excluded.updated_at",
            (plot.name, str(plot.path), failures, int(held), reason, time.time()),
        )
    return failures, alert


def clear_errors(db: StateDB, which: str) -> list[str]:
    """Forget the failures of one plot (name or path) or of ``all``; the plots cleared."""
    db.ensure_tables(SCHEMA)
    if which == "all":
        names = [r[0] for r in db.query("SELECT plot FROM local_move_failures ORDER BY plot")]
    else:
        name = os.path.basename(which.rstrip("/"))
        names = [r[0] for r in db.query("SELECT plot FROM local_move_failures WHERE plot = ?", (name,))]
    with db.transaction() as cur:
        cur.executemany("DELETE FROM local_move_failures WHERE plot = ?", ((n,) for n in names))
    return names


def record_move(db: StateDB, plot: FinishedPlot, result: MoveResult, started: float) -> None:
    """One line of the move history; a plot that moved also loses its recorded failures."""
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO local_moves(plot, source, destination, bytes, started_at, seconds, status, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (plot.name, str(plot.path), str(result.destination) if result.destination else None,
             result.size if result.ok else 0, started, result.seconds, result.status, result.reason or None),
        )
        if result.ok:
            cur.execute("DELETE FROM local_move_failures WHERE plot = ?", (plot.name,))


def part_recorder(db: StateDB, plot: FinishedPlot) -> Callable[[Path | None], None]:
    """Remember the part file while it exists, so a run after a SIGKILL can remove it even
    when the reserved drive has changed since."""
    current: list[Path] = []

    def record(part: Path | None) -> None:
        with db.transaction() as cur:
            if part is not None:
                cur.execute("INSERT OR REPLACE INTO local_move_parts(part, plot, started_at) VALUES (?, ?, ?)",
                            (str(part), plot.name, time.time()))
                current.append(part)
            else:
                cur.executemany("DELETE FROM local_move_parts WHERE part = ?", ((str(p),) for p in current))
                current.clear()

    return record


def clean_recorded_parts(db: StateDB) -> tuple[list[str], dict[str, Path]]:
    """Remove part files recorded by runs that died (those still held by a living run stay).

    Returns the parts removed, and plot name -> directory for copies a killed run had already
    renamed into place: those plots are finished there (after a hash comparison) rather than
    copied a second time to whichever drive is reserved now.
    """
    removed: list[str] = []
    committed: dict[str, Path] = {}
    for part, plot in db.query("SELECT part, plot FROM local_move_parts"):
        existed = os.path.lexists(part)
        if remove_stale_part_path(Path(part)):
            with db.transaction() as cur:
                cur.execute("DELETE FROM local_move_parts WHERE part = ?", (part,))
            if existed:
                removed.append(part)
            if os.path.exists(os.path.join(os.path.dirname(part), plot)):
                committed[plot] = Path(os.path.dirname(part))
    return removed, committed
