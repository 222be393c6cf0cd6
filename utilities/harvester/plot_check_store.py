"""Plot check results in the state database (table ``plot_checks``, owned here): the last check
of each plot file, which the next run plans from and ``-pr`` reports failing plots from.

One row per path, replaced at each check: what matters is a plot's current state, and a farm of
30,000 plots must not grow a row per plot per month. A row remembers the size and mtime of the
file it checked, so a plot replaced under the same name counts as never checked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from utilities.harvester.plot_check import FAILING, CheckOutcome, CheckRecord, PlotFile
from utilities.state import StateDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS plot_checks (
    path TEXT PRIMARY KEY,
    plot TEXT NOT NULL,
    drive TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    result TEXT NOT NULL,
    proofs INTEGER NOT NULL,
    challenges INTEGER NOT NULL,
    seconds REAL NOT NULL,
    checked_at REAL NOT NULL,
    error TEXT,
    read_bytes INTEGER
);
CREATE INDEX IF NOT EXISTS plot_checks_by_result ON plot_checks(result)
"""

_COLUMNS = "path, plot, drive, size, mtime_ns, result, proofs, challenges, seconds, checked_at, error, read_bytes"


def load_records(db: StateDB) -> dict[str, CheckRecord]:
    db.ensure_tables(SCHEMA)
    return {row[0]: CheckRecord(*row) for row in db.query(f"SELECT {_COLUMNS} FROM plot_checks")}


def save_result(db: StateDB, plot: PlotFile, outcome: CheckOutcome, checked_at: float) -> CheckRecord:
    record = CheckRecord(
        plot.path, plot.name, plot.drive, plot.size, plot.mtime_ns, outcome.result, outcome.proofs,
        outcome.challenges, outcome.seconds, checked_at, outcome.error, outcome.read_bytes,
    )
    with db.transaction() as cur:
        cur.execute(
            f"INSERT OR REPLACE INTO plot_checks({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.path, record.plot, record.drive, record.size, record.mtime_ns, record.result, record.proofs,
             record.challenges, record.seconds, record.checked_at, record.error, record.read_bytes),
        )
    return record


def forget(db: StateDB, paths: Iterable[str]) -> None:
    """Drop the rows of plots that are gone (deleted or moved away) from directories just listed."""
    gone = [(p,) for p in paths]
    if gone:
        with db.transaction() as cur:
            cur.executemany("DELETE FROM plot_checks WHERE path = ?", gone)


def failing_plots(db: StateDB) -> list[CheckRecord]:
    """Plots whose last check failed and that are still there (for -pr), by path.

    The file must still exist with the size and mtime checked: a bad plot the farmer deleted,
    or replaced with a good copy, is no longer reported. (A plot on a drive that went away is
    not listed either: the missing drive is, by the drive presence check.)
    """
    db.ensure_tables(SCHEMA)
    marks = ", ".join("?" for _ in FAILING)
    rows = db.query(f"SELECT {_COLUMNS} FROM plot_checks WHERE result IN ({marks}) ORDER BY path", sorted(FAILING))
    records = [CheckRecord(*row) for row in rows]
    return [r for r in records if _still_there(r)]


def _still_there(record: CheckRecord) -> bool:
    try:
        st = os.stat(record.path)
    except FileNotFoundError:
        return False
    except OSError:  # an unreadable file (I/O error) is still a failing plot
        return True
    return st.st_size == record.size and st.st_mtime_ns == record.mtime_ns
