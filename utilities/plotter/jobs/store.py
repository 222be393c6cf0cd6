"""The plot jobs' own tables in the state database: what was started or adopted, and how it ended.

Kept next to the feature (``db.ensure_tables``) rather than in state.py. Every state change of a
job is one conditional UPDATE (``WHERE state = 'running'`` ...) so two overlapping runs (cron and
``--loop``, or a manual ``--stop``) can never both act on the same transition: only the one whose
UPDATE changed a row sends the notification or deletes the old plot.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from utilities.state import StateDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS plot_jobs (
    job_id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    create_time REAL NOT NULL,
    started_at REAL NOT NULL,
    program TEXT NOT NULL,
    argv TEXT NOT NULL,
    temp_dir TEXT,
    temp2_dir TEXT,
    dest_dir TEXT,
    log_path TEXT,
    adopted INTEGER NOT NULL DEFAULT 0,
    replot INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'running',
    plot_id TEXT,
    plot_name TEXT,
    ended_at REAL,
    total_seconds REAL,
    replot_claimed_at REAL,
    replot_result TEXT,
    files_cleaned_at REAL
);
CREATE INDEX IF NOT EXISTS plot_jobs_by_state ON plot_jobs(state);
CREATE TABLE IF NOT EXISTS plot_job_files (
    job_id TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (job_id, path)
)
"""

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"  # ended without a finished plot (crashed, killed, aborted)
STOPPED = "stopped"  # ended by --stop
ENDED_STATES = (COMPLETED, FAILED, STOPPED)

_COLUMNS = ("job_id, pid, create_time, started_at, program, argv, temp_dir, temp2_dir, dest_dir, log_path, "
            "adopted, replot, state, plot_id, plot_name, ended_at, total_seconds, replot_claimed_at, "
            "replot_result, files_cleaned_at")


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    pid: int
    create_time: float
    started_at: float
    program: str
    argv: tuple[str, ...]
    temp_dir: Path | None
    temp2_dir: Path | None
    dest_dir: Path | None
    log_path: Path | None
    adopted: bool = False
    replot: bool = False
    state: str = RUNNING
    plot_id: str | None = None
    plot_name: str | None = None
    ended_at: float | None = None
    total_seconds: float | None = None
    replot_claimed_at: float | None = None
    replot_result: str | None = None
    files_cleaned_at: float | None = None

    @classmethod
    def from_row(cls, row: tuple) -> JobRecord:
        (job_id, pid, create_time, started_at, program, argv, temp, temp2, dest, log_path, adopted, replot,
         state, plot_id, plot_name, ended_at, total, claimed, result, cleaned) = row
        return cls(job_id, pid, create_time, started_at, program, tuple(json.loads(argv)), _path(temp),
                   _path(temp2), _path(dest), _path(log_path), bool(adopted), bool(replot), state, plot_id,
                   plot_name, ended_at, total, claimed, result, cleaned)


class JobStore:
    """Typed access to the plot job tables."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        db.ensure_tables(SCHEMA)

    def add(self, job: JobRecord) -> None:
        with self.db.transaction() as cur:
            cur.execute(f"INSERT INTO plot_jobs({_COLUMNS}) VALUES ({', '.join('?' * 20)})", _row(job))

    def adopt(self, job: JobRecord) -> bool:
        """Record an adopted job unless its process is recorded already, in any state (two runs
        may find the same stranger at once, and a job being stopped is no stranger; the check and
        the insert are one transaction)."""
        with self.db.transaction() as cur:
            taken = cur.execute("SELECT 1 FROM plot_jobs WHERE pid = ? AND ABS(create_time - ?) <= 1",
                                (job.pid, job.create_time)).fetchone()
            if taken:
                return False
            cur.execute(f"INSERT INTO plot_jobs({_COLUMNS}) VALUES ({', '.join('?' * 20)})", _row(job))
            return True

    def jobs(self, states: Iterable[str] | None = None) -> list[JobRecord]:
        if states is None:
            rows = self.db.query(f"SELECT {_COLUMNS} FROM plot_jobs ORDER BY started_at, job_id")
        else:
            wanted = list(states)
            marks = ", ".join("?" * len(wanted))
            rows = self.db.query(
                f"SELECT {_COLUMNS} FROM plot_jobs WHERE state IN ({marks}) ORDER BY started_at, job_id", wanted)
        return [JobRecord.from_row(r) for r in rows]

    def get(self, job_id: str) -> JobRecord | None:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM plot_jobs WHERE job_id = ?", (job_id,))
        return JobRecord.from_row(rows[0]) if rows else None

    def find(self, wanted: str) -> JobRecord | None:
        """A job by its id, or by its pid (the newest job with that pid)."""
        job = self.get(wanted)
        if job is None and wanted.isdigit():
            rows = self.db.query(
                f"SELECT {_COLUMNS} FROM plot_jobs WHERE pid = ? ORDER BY started_at DESC LIMIT 1", (int(wanted),))
            job = JobRecord.from_row(rows[0]) if rows else None
        return job

    def set_plot(self, job_id: str, plot_id: str | None, plot_name: str | None) -> None:
        with self.db.transaction() as cur:
            cur.execute("UPDATE plot_jobs SET plot_id = COALESCE(?, plot_id), plot_name = COALESCE(?, plot_name) "
                        "WHERE job_id = ?", (plot_id, plot_name, job_id))

    def end(self, job_id: str, state: str, total_seconds: float | None, now: float | None = None) -> bool:
        """Mark a running job ended; True only for the one caller that made the change."""
        with self.db.transaction() as cur:
            cur.execute("UPDATE plot_jobs SET state = ?, ended_at = ?, total_seconds = ? "
                        "WHERE job_id = ? AND state = ?",
                        (state, now or time.time(), total_seconds, job_id, RUNNING))
            return cur.rowcount == 1

    def claim_replot(self, job_id: str, now: float | None = None) -> bool:
        """Claim the job's one replot deletion; True only the first time, ever."""
        with self.db.transaction() as cur:
            cur.execute("UPDATE plot_jobs SET replot_claimed_at = ? WHERE job_id = ? AND replot = 1 "
                        "AND replot_claimed_at IS NULL", (now or time.time(), job_id))
            return cur.rowcount == 1

    def set_replot_result(self, job_id: str, result: str) -> None:
        with self.db.transaction() as cur:
            cur.execute("UPDATE plot_jobs SET replot_result = ? WHERE job_id = ?", (result, job_id))

    def files_cleaned(self, job_id: str, now: float | None = None) -> None:
        with self.db.transaction() as cur:
            cur.execute("UPDATE plot_jobs SET files_cleaned_at = ? WHERE job_id = ?", (now or time.time(), job_id))

    def remember_files(self, job_id: str, paths: Iterable[str]) -> None:
        """Files a job was seen to have open: its temp files even when their names carry no id."""
        with self.db.transaction() as cur:
            cur.executemany("INSERT OR IGNORE INTO plot_job_files(job_id, path) VALUES (?, ?)",
                            ((job_id, p) for p in paths))

    def remembered_files(self, job_id: str) -> list[Path]:
        return [Path(r[0]) for r in self.db.query("SELECT path FROM plot_job_files WHERE job_id = ?", (job_id,))]

    def last_starts(self) -> dict[Path, float]:
        """When a job last started in each temp directory (adopted jobs included)."""
        rows = self.db.query("SELECT temp_dir, MAX(started_at) FROM plot_jobs WHERE temp_dir IS NOT NULL "
                             "GROUP BY temp_dir")
        return {Path(t): float(s) for t, s in rows}

    def completed_between(self, since: float, until: float) -> list[JobRecord]:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM plot_jobs WHERE state = ? AND ended_at > ? AND ended_at <= ?",
                             (COMPLETED, since, until))
        return [JobRecord.from_row(r) for r in rows]


def _row(job: JobRecord) -> tuple:
    return (job.job_id, job.pid, job.create_time, job.started_at, job.program, json.dumps(list(job.argv)),
            _text(job.temp_dir), _text(job.temp2_dir), _text(job.dest_dir), _text(job.log_path),
            int(job.adopted), int(job.replot), job.state, job.plot_id, job.plot_name, job.ended_at,
            job.total_seconds, job.replot_claimed_at, job.replot_result, job.files_cleaned_at)


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)
