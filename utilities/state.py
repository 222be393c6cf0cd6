"""The program's own memory: one SQLite database in the state directory.

Why SQLite and not the YAML file: overlapping cron runs (a slow minute run and the next one, or a
report started by hand) must neither corrupt state nor both act on it. SQLite gives atomic
transactions, WAL lets readers proceed while one run writes, and ``busy_timeout`` makes a second
writer wait its turn instead of failing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS offline_drives (
    name TEXT PRIMARY KEY,
    mountpoint TEXT NOT NULL,
    since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    key TEXT PRIMARY KEY,
    active INTEGER NOT NULL,
    changed_at REAL NOT NULL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS plot_headers (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    format TEXT,
    k INTEGER,
    kind TEXT NOT NULL,
    compression INTEGER NOT NULL,
    plot_id TEXT
);
CREATE TABLE IF NOT EXISTS transfers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plot TEXT NOT NULL,
    harvester TEXT NOT NULL,
    destination TEXT,
    bytes INTEGER NOT NULL,
    started_at REAL NOT NULL,
    seconds REAL NOT NULL,
    ok INTEGER NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS transfers_by_plot ON transfers(plot, ok);
CREATE INDEX IF NOT EXISTS transfers_by_time ON transfers(started_at);
CREATE TABLE IF NOT EXISTS replaced_plots (
    path TEXT NOT NULL,
    deleted_at REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS daily_stats (
    day TEXT PRIMARY KEY,
    recorded_at REAL NOT NULL,
    total_plots INTEGER NOT NULL,
    og_plots INTEGER NOT NULL,
    pool_plots INTEGER NOT NULL,
    new_plots INTEGER NOT NULL
);
"""


class CachedHeader(NamedTuple):
    """What we remember of a plot file's header, valid while size and mtime are unchanged.

    A NamedTuple, not a dataclass: 30,000 of them are loaded every minute (bench/).
    """

    size: int
    mtime_ns: int
    format: str | None
    k: int | None
    kind: str  # "og", "pool" or "unknown" (unreadable header)
    compression: int
    plot_id: str | None


@dataclass(frozen=True)
class TransferRecord:
    plot: str
    harvester: str
    destination: str | None
    bytes: int
    started_at: float
    seconds: float
    ok: bool
    reason: str | None = None
    saved: int = 0  # bytes a resume did not send again (issue 13)

    @property
    def mb_per_second(self) -> float:
        return (self.bytes - self.saved) / 1e6 / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class DailyStats:
    day: str
    recorded_at: float
    total_plots: int
    og_plots: int
    pool_plots: int
    new_plots: int


class StateDB:
    """Thin typed access to the state database; every write is one transaction."""

    def __init__(self, path: Path, timeout_seconds: float = 30.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(str(path), timeout=timeout_seconds, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA busy_timeout = {int(timeout_seconds * 1000)}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self.transaction() as cur:
            version = cur.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"state database {path} was written by a newer version (schema {version})"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)  # executescript would COMMIT our transaction early
            # Added with resumable transfers; older code names its columns, so it still works.
            columns = {row[1] for row in cur.execute("PRAGMA table_info(transfers)")}
            if "saved" not in columns:
                cur.execute("ALTER TABLE transfers ADD COLUMN saved INTEGER NOT NULL DEFAULT 0")
            cur.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE: take the write lock up front so two runs serialise, never deadlock."""
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")

    # -- feature tables ------------------------------------------------------------------------
    def ensure_tables(self, schema: str) -> None:
        """Create a feature's own tables (``CREATE ... IF NOT EXISTS``; idempotent).

        Each role module owns its schema next to its code (coin_monitor, local moves, plot jobs)
        instead of growing this file; they all share the one database and its locking.
        """
        with self.transaction() as cur:
            for statement in schema.split(";"):
                if statement.strip():
                    cur.execute(statement)

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Read rows outside a write transaction (WAL: never blocks the writer)."""
        return self._conn.execute(sql, tuple(args)).fetchall()

    # -- key/value -----------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set(self, key: str, value: Any, cur: sqlite3.Cursor | None = None) -> None:
        sql = "INSERT INTO kv(key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
        args = (key, json.dumps(value), time.time())
        if cur is not None:
            cur.execute(sql, args)
        else:
            with self.transaction() as c:
                c.execute(sql, args)

    # -- offline drives ------------------------------------------------------------------------
    def offline_drives(self) -> dict[str, str]:
        """name -> mountpoint of every drive the farmer took offline."""
        return dict(self._conn.execute("SELECT name, mountpoint FROM offline_drives ORDER BY name"))

    def set_offline(self, name: str, mountpoint: str) -> bool:
        """Returns False when the drive was already offline (nothing changed)."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO offline_drives(name, mountpoint, since) VALUES (?, ?, ?)",
                (name, mountpoint, time.time()),
            )
            return cur.rowcount == 1

    def set_online(self, name: str) -> bool:
        """Returns False when the drive was not offline."""
        with self.transaction() as cur:
            cur.execute("DELETE FROM offline_drives WHERE name = ?", (name,))
            return cur.rowcount == 1

    # -- latching alerts -----------------------------------------------------------------------
    def alert_transition(self, key: str, active: bool, detail: str = "") -> bool:
        """Record an alert condition; True only when it just became active (notify then, once).

        A condition that stays active returns False on later runs; once it clears, the next
        crossing alerts again. The read and the write happen in one transaction, so two
        overlapping runs cannot both see the edge and both notify.
        """
        with self.transaction() as cur:
            row = cur.execute("SELECT active FROM alerts WHERE key = ?", (key,)).fetchone()
            was_active = bool(row[0]) if row else False
            if row is None or was_active != active:
                cur.execute(
                    "INSERT INTO alerts(key, active, changed_at, detail) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET active = excluded.active, "
                    "changed_at = excluded.changed_at, detail = excluded.detail",
                    (key, int(active), time.time(), detail),
                )
            return active and not was_active

    # -- plot header cache ---------------------------------------------------------------------
    def load_headers(self) -> dict[str, CachedHeader]:
        rows = self._conn.execute(
            "SELECT path, size, mtime_ns, format, k, kind, compression, plot_id FROM plot_headers"
        )
        make = CachedHeader._make
        return {row[0]: make(row[1:]) for row in rows}

    def update_headers(
        self, upserts: dict[str, CachedHeader], deletes: Iterable[str]
    ) -> None:
        with self.transaction() as cur:
            cur.executemany("DELETE FROM plot_headers WHERE path = ?", ((p,) for p in deletes))
            cur.executemany(
                "INSERT OR REPLACE INTO plot_headers(path, size, mtime_ns, format, k, kind, compression, plot_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (p, h.size, h.mtime_ns, h.format, h.k, h.kind, h.compression, h.plot_id)
                    for p, h in upserts.items()
                ),
            )

    # -- transfer history ----------------------------------------------------------------------
    def record_transfer(self, record: TransferRecord) -> None:
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO transfers(plot, harvester, destination, bytes, started_at, seconds, ok, reason, saved) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.plot, record.harvester, record.destination, record.bytes, record.started_at,
                 record.seconds, int(record.ok), record.reason, record.saved),
            )

    def failures_since_success(self, plot: str) -> int:
        """Failed attempts at ``plot`` since it last went through (or ever)."""
        row = self._conn.execute(
            "SELECT COUNT(*) FROM transfers WHERE plot = ? AND ok = 0 AND id > "
            "COALESCE((SELECT MAX(id) FROM transfers WHERE plot = ? AND ok = 1), 0)",
            (plot, plot),
        ).fetchone()
        return int(row[0])

    def last_failed_harvester(self, plot: str) -> str | None:
        """The harvester of ``plot``'s last attempt if that attempt failed (its part may wait
        there for a resume), else None."""
        row = self._conn.execute(
            "SELECT harvester, ok FROM transfers WHERE plot = ? ORDER BY id DESC LIMIT 1", (plot,)
        ).fetchone()
        return str(row[0]) if row is not None and not row[1] else None

    def abandoned_attempts(self, since: float) -> list[tuple[str, str, str]]:
        """(plot, harvester, name there) of each plot whose last attempt, made since ``since``,
        failed: its part may wait on that harvester for a resume."""
        rows = self._conn.execute(
            "SELECT plot, harvester, COALESCE(destination, plot) FROM transfers t WHERE ok = 0 AND started_at >= ? "
            "AND id = (SELECT MAX(id) FROM transfers WHERE plot = t.plot) ORDER BY id",
            (since,),
        )
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def transfers_since(self, since: float) -> list[TransferRecord]:
        rows = self._conn.execute(
            "SELECT plot, harvester, destination, bytes, started_at, seconds, ok, reason, saved FROM transfers "
            "WHERE started_at >= ? ORDER BY started_at",
            (since,),
        )
        return [TransferRecord(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8]) for r in rows]

    # -- old plots replaced ---------------------------------------------------------------------
    def record_replaced(self, path: str, reason: str) -> None:
        with self.transaction() as cur:
            cur.execute("INSERT INTO replaced_plots(path, deleted_at, reason) VALUES (?, ?, ?)", (path, time.time(), reason))

    # -- daily statistics ----------------------------------------------------------------------
    def record_daily(self, stats: DailyStats) -> None:
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO daily_stats(day, recorded_at, total_plots, og_plots, pool_plots, new_plots) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (stats.day, stats.recorded_at, stats.total_plots, stats.og_plots, stats.pool_plots, stats.new_plots),
            )

    def daily_history(self, limit: int = 30) -> list[DailyStats]:
        rows = self._conn.execute(
            "SELECT day, recorded_at, total_plots, og_plots, pool_plots, new_plots FROM daily_stats "
            "ORDER BY day DESC LIMIT ?",
            (limit,),
        )
        return [DailyStats(*row) for row in rows]
