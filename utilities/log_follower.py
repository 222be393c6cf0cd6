"""Follow a log file across cron runs: every complete line once, never a line twice or lost.

Each run reads only the bytes written since the last one. What we remember (in the state
database, table ``log_follow``): the file's device and inode, the offset after the last
complete line we handed out, a fingerprint (hash) of the file's first bytes, and the timestamp
of the last line (a watermark, only used when we lost track of the file altogether).

Why each piece:

* offset + inode: the common case, a file that only grew. One ``stat``, one ``seek``, and
  reading the new bytes: the cost of a run is the new bytes, not the file size (bench/).
* size-based rotation (chia's ConcurrentRotatingFileHandler, default 50 MiB and 7 backups):
  ``debug.log`` is renamed to a temporary ``debug.log.rotate.N``, optionally gzipped, the
  backups are shifted (``.1`` -> ``.2`` ...) and the temporary file becomes ``debug.log.1``
  (or ``.1.gz``). We find our old file again by inode, or by the fingerprint when gzip made a
  new file of it, read what was added to it before the rotation, then every newer backup,
  then the new ``debug.log``.
* copytruncate (logrotate): the inode stays, but the file is now short (or regrown with other
  content: the fingerprint differs). Our old content lives on in the copy, found by its
  fingerprint; after it we read the truncated file from its start.
* a last line without its newline is being written right now: it is left for the next run,
  which reads it whole. In a rotated (closed) file such a line is final and is handed out.

Lines are handed out in batches together with the position after them; the caller stores
that position in the same transaction as what it derived from the lines, so a run killed at
any point neither loses nor repeats a line.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import sqlite3
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from utilities.state import StateDB

log = logging.getLogger(__name__)

HEAD_BYTES = 1024
"""Bytes of a file's start that identify it: chia's first lines carry millisecond timestamps,
so two different log files never share them."""

CHUNK_BYTES = 4 * 1024 * 1024
"""Lines are handed out (and the position saved) per chunk, bounding memory and the work a
killed run repeats."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS log_follow (
    log_path TEXT PRIMARY KEY,
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    head_length INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    last_stamp TEXT,
    updated_at REAL NOT NULL
)
"""

_BACKUP = re.compile(r"^\.(?P<n>\d+)(?P<gz>\.gz)?$")
_TEMP = re.compile(r"^\.rotate\.\d+(?P<gz>\.gz)?$")


@dataclass(frozen=True)
class FollowState:
    """Where we are in the log: which file (device, inode, head) and how far."""

    device: int
    inode: int
    offset: int
    head_length: int
    head_hash: str
    last_stamp: str | None = None


@dataclass(frozen=True)
class LogFile:
    """One file of the log's chain: the live log or a rotated backup."""

    path: Path
    device: int
    inode: int
    size: int  # on disk; for .gz the compressed size
    compressed: bool
    live: bool  # the file chia writes to (a partial last line is still being written)


@dataclass(frozen=True)
class Batch:
    """Complete lines, and the position to save once they are processed."""

    lines: list[str]
    state: FollowState
    source: Path


@dataclass
class FollowReport:
    """What a follow pass did, for the run summary and the tests."""

    files_read: int = 0
    bytes_read: int = 0
    lines: int = 0
    rotations: int = 0
    truncated: bool = False
    lost_track: bool = False
    started_fresh: bool = False


# -- state -------------------------------------------------------------------------------------


def load_state(db: StateDB, log_path: Path) -> FollowState | None:
    db.ensure_tables(SCHEMA)
    rows = db.query(
        "SELECT device, inode, offset, head_length, head_hash, last_stamp FROM log_follow WHERE log_path = ?",
        (str(log_path),),
    )
    return FollowState(*rows[0]) if rows else None


def save_state(cur: sqlite3.Cursor, log_path: Path, state: FollowState) -> None:
    """Store the position; call inside the transaction that records the batch's results."""
    cur.execute(
        "INSERT INTO log_follow(log_path, device, inode, offset, head_length, head_hash, last_stamp, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(log_path) DO UPDATE SET device = excluded.device, "
        "inode = excluded.inode, offset = excluded.offset, head_length = excluded.head_length, "
        "head_hash = excluded.head_hash, last_stamp = COALESCE(excluded.last_stamp, log_follow.last_stamp), "
        "updated_at = excluded.updated_at",
        (str(log_path), state.device, state.inode, state.offset, state.head_length, state.head_hash,
         state.last_stamp, time.time()),
    )


# -- the chain of files ------------------------------------------------------------------------


def log_chain(log_path: Path) -> list[LogFile]:
    """The log's files, oldest first: ``.N`` ... ``.1`` (gzipped or not), the temporary name
    of a rotation in progress, then the live file (if it exists)."""
    numbered: list[tuple[int, LogFile]] = []
    temps: list[tuple[float, LogFile]] = []
    prefix = log_path.name
    try:
        names = os.listdir(log_path.parent)
    except OSError:
        names = []
    for name in names:
        if not name.startswith(prefix) or name == prefix:
            continue
        suffix = name[len(prefix):]
        backup, temp = _BACKUP.match(suffix), _TEMP.match(suffix)
        if not backup and not temp:
            continue
        entry = _stat(log_path.parent / name, compressed=name.endswith(".gz"), live=False)
        if entry is None:
            continue
        if backup:
            numbered.append((int(backup["n"]), entry))
        else:
            temps.append((os.stat(entry.path).st_mtime, entry))
    chain = [entry for _, entry in sorted(numbered, key=lambda item: -item[0])]
    chain += [entry for _, entry in sorted(temps, key=lambda item: item[0])]
    live = _stat(log_path, compressed=False, live=True)
    if live is not None:
        chain.append(live)
    return chain


def _stat(path: Path, compressed: bool, live: bool) -> LogFile | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return LogFile(path, st.st_dev, st.st_ino, st.st_size, compressed, live)


def _open(entry: LogFile) -> BinaryIO:
    return gzip.open(entry.path, "rb") if entry.compressed else open(entry.path, "rb")  # noqa: SIM115


def _head(entry: LogFile, length: int) -> bytes | None:
    """The first ``length`` bytes (decompressed), or None if the file has fewer or is unreadable."""
    try:
        with _open(entry) as handle:
            data = handle.read(length)
    except (OSError, EOFError, zlib.error):
        return None
    return data if len(data) == length else None


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _first_stamp(entry: LogFile) -> str | None:
    head = _head_prefix(entry, 64)
    if not head or not head[:1].isdigit():
        return None
    return head.split(b" ", 1)[0].decode("ascii", "replace")


def _head_prefix(entry: LogFile, length: int) -> bytes:
    try:
        with _open(entry) as handle:
            return handle.read(length)
    except (OSError, EOFError, zlib.error):
        return b""


def find_position(state: FollowState, chain: list[LogFile]) -> int | None:
    """Index in ``chain`` of the file we were reading, or None if it is gone.

    The same inode with the same first bytes wins; failing that, the newest file whose first
    bytes match (a gzipped backup, or the copy logrotate's copytruncate left). A file shorter
    than our offset cannot be it (truncated in place).
    """
    by_content: int | None = None
    for index in range(len(chain) - 1, -1, -1):
        entry = chain[index]
        same_inode = not entry.compressed and (entry.device, entry.inode) == (state.device, state.inode)
        if not entry.compressed and entry.size < state.offset:
            continue
        if state.head_length == 0:
            if same_inode:
                return index
            continue
        head = _head(entry, state.head_length)
        if head is None or _hash(head) != state.head_hash:
            continue
        if same_inode:
            return index
        if by_content is None:
            by_content = index
    return by_content


# -- following ---------------------------------------------------------------------------------


def follow(
    log_path: Path,
    state: FollowState | None,
    start_at: str = "end",
    report: FollowReport | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[Batch]:
    """Yield the new complete lines of ``log_path`` since ``state`` in batches, oldest first.

    ``state`` None means the first run: ``start_at="end"`` only records the end of the live
    file (one empty batch), ``"beginning"`` reads the live file from its start.
    """
    report = report if report is not None else FollowReport()
    chain = log_chain(log_path)
    plan: list[tuple[LogFile, int]] = []  # (file, start offset), oldest first
    if state is None:
        report.started_fresh = True
        live = chain[-1] if chain and chain[-1].live else None
        if live is None:
            return
        if start_at == "end":
            offset = _end_of_complete_lines(live)
            yield Batch([], _state_for(live, offset, None), live.path)
            return
        plan.append((live, 0))
    else:
        index = find_position(state, chain)
        if index is not None:
            entry = chain[index]
            plan.append((entry, state.offset))
            plan += [(newer, 0) for newer in chain[index + 1:]]
            report.rotations = len(chain) - 1 - index
            if (entry.device, entry.inode) == (state.device, state.inode) or entry.compressed:
                pass
            else:
                report.truncated = any(f.live and (f.device, f.inode) == (state.device, state.inode) for f in chain)
        else:
            report.lost_track = True
            plan += _after_watermark(chain, state.last_stamp)
            log.warning(
                "lost track of %s (rotated more often than the backups kept, or truncated without a copy); "
                "continuing with what is left, some lines may have been missed", log_path,
            )
    for entry, start in plan:
        yield from _read(entry, start, report, chunk_bytes)


def _after_watermark(chain: list[LogFile], watermark: str | None) -> list[tuple[LogFile, int]]:
    """Files that start after the last line we saw (by timestamp), and always the live file."""
    plan = []
    for entry in chain:
        if entry.live:
            plan.append((entry, 0))
            continue
        stamp = _first_stamp(entry)
        if watermark is not None and stamp is not None and stamp > watermark:
            plan.append((entry, 0))
    return plan


def _end_of_complete_lines(entry: LogFile) -> int:
    """Offset just after the live file's last newline (a partial line is still being written)."""
    with open(entry.path, "rb") as handle:
        end = os.fstat(handle.fileno()).st_size
        position = end
        while position > 0:
            size = min(64 * 1024, position)
            position -= size
            handle.seek(position)
            block = handle.read(size)
            newline = block.rfind(b"\n")
            if newline >= 0:
                return position + newline + 1
    return 0


def _state_for(entry: LogFile, offset: int, last_stamp: str | None) -> FollowState:
    length = min(HEAD_BYTES, offset)
    head = _head(entry, length) if length else b""
    return FollowState(entry.device, entry.inode, offset, length, _hash(head or b""), last_stamp)


def _read(entry: LogFile, start: int, report: FollowReport, chunk_bytes: int) -> Iterator[Batch]:
    """Yield the complete lines of one file from ``start``, a batch per chunk."""
    try:
        handle = _open(entry)
    except OSError as exc:
        log.warning("cannot read %s: %s", entry.path, exc)
        return
    with handle:
        try:
            if entry.compressed:
                _skip(handle, start)
            else:
                handle.seek(start)
                st = os.fstat(handle.fileno())
                if (st.st_dev, st.st_ino) != (entry.device, entry.inode):
                    return  # replaced since we listed it: the next run sees the new layout
            end = None if entry.compressed else st.st_size
            report.files_read += 1
            position = start
            carry = b""
            head_state: FollowState | None = None
            while True:
                want = chunk_bytes if end is None else min(chunk_bytes, end - position)
                data = handle.read(want) if want > 0 else b""
                if not data:
                    break
                position += len(data)
                report.bytes_read += len(data)
                data = carry + data
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = data
                    continue
                carry = data[cut + 1:]
                lines = _decode(data[:cut])
                consumed = position - len(carry)
                head_state = _next_state(entry, consumed, lines, head_state)
                report.lines += len(lines)
                yield Batch(lines, head_state, entry.path)
            if carry and not entry.live:
                lines = _decode(carry)  # a closed file's last line: it will never be finished
                head_state = _next_state(entry, position, lines, head_state)
                report.lines += len(lines)
                yield Batch(lines, head_state, entry.path)
            elif head_state is None:
                # Nothing new: still move the position onto this file (a rotation happened).
                consumed = position - len(carry)
                yield Batch([], _next_state(entry, consumed, [], None), entry.path)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            log.warning("%s is damaged, reading stopped there: %s", entry.path, exc)


def _skip(handle: BinaryIO, count: int) -> None:
    while count > 0:
        data = handle.read(min(count, CHUNK_BYTES))
        if not data:
            return
        count -= len(data)


def _decode(data: bytes) -> list[str]:
    return [line.rstrip("\r") for line in data.decode("utf-8", errors="replace").split("\n")]


def _next_state(entry: LogFile, offset: int, lines: list[str], previous: FollowState | None) -> FollowState:
    stamp = _last_stamp(lines) or (previous.last_stamp if previous else None)
    if previous is not None and previous.head_length == HEAD_BYTES:
        return FollowState(entry.device, entry.inode, offset, HEAD_BYTES, previous.head_hash, stamp)
    return _state_for(entry, offset, stamp)


def _last_stamp(lines: list[str]) -> str | None:
    for line in reversed(lines):
        if line[:1].isdigit():
            stamp = line.split(" ", 1)[0]
            if "T" in stamp:
                return stamp
    return None
