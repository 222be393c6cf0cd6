"""Follow a log file across cron runs: every complete line once, never a line twice or lost.

Each run reads only the bytes written since the last one. What we remember (in the state
database, table ``log_follow``): the file's device and inode, the offset after the last
complete line we handed out, a fingerprint (hash) of the file's first bytes, and the timestamp
of the last line (a watermark, for when the file cannot be told apart by its own bytes).

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
any point neither loses nor repeats a line. Finding the file of our position again after a
rotation or truncation is ``utilities/farmer/log_position.py``'s part; this module reads.
"""

from __future__ import annotations

import gzip
import logging
import os
import sqlite3
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from utilities.farmer.log_position import (
    HEAD_BYTES,
    LINE_KEEP,
    FollowState,
    LogFile,
    files_after_watermark,
    find_position,
    fingerprint,
    line_timestamp,
    log_chain,
    open_log_file,
    read_head,
)
from utilities.state import StateDB

log = logging.getLogger(__name__)

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
    last_line TEXT,
    updated_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Batch:
    """Complete lines, and the position to save once they are processed."""

    lines: list[str]
    state: FollowState


@dataclass
class FollowReport:
    """What a follow pass did, for the run summary and the tests."""

    files_read: int = 0
    bytes_read: int = 0
    lines: int = 0
    rotations: int = 0
    lost_track: bool = False


# -- state -------------------------------------------------------------------------------------


def load_state(db: StateDB, log_path: Path) -> FollowState | None:
    db.ensure_tables(SCHEMA)
    rows = db.query(
        "SELECT device, inode, offset, head_length, head_hash, last_line FROM log_follow WHERE log_path = ?",
        (str(log_path),),
    )
    return FollowState(*rows[0]) if rows else None


def save_state(cur: sqlite3.Cursor, log_path: Path, state: FollowState) -> None:
    """Store the position; call inside the transaction that records the batch's results."""
    cur.execute(
        "INSERT INTO log_follow(log_path, device, inode, offset, head_length, head_hash, last_line, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(log_path) DO UPDATE SET device = excluded.device, "
        "inode = excluded.inode, offset = excluded.offset, head_length = excluded.head_length, "
        "head_hash = excluded.head_hash, last_line = COALESCE(excluded.last_line, log_follow.last_line), "
        "updated_at = excluded.updated_at",
        (str(log_path), state.device, state.inode, state.offset, state.head_length, state.head_hash,
         state.last_line, time.time()),
    )


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
        live = chain[-1] if chain and chain[-1].live else None
        if live is None:
            return
        if start_at == "end":
            offset = _end_of_complete_lines(live)
            yield Batch([], _state_for(live, offset, None, live.size))
            return
        plan.append((live, 0))
    else:
        index = find_position(state, chain)
        if index is not None:
            entry = chain[index]
            plan.append((entry, state.offset))
            plan += [(newer, 0) for newer in chain[index + 1:]]
            report.rotations = len(chain) - 1 - index
        elif not chain:
            return  # no log at all (chia stopped, or a wrong farmer.chia_log): nothing to read
        else:
            report.lost_track = True
            plan += files_after_watermark(chain, state.last_line)
            log.warning(
                "lost track of %s (rotated more often than the backups kept, or truncated without a copy); "
                "continuing with what is left, some lines may have been missed", log_path,
            )
    watermark = [state.last_line if state is not None else None]
    for entry, start in plan:
        yield from _read(entry, start, report, chunk_bytes, watermark)


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


def _state_for(entry: LogFile, offset: int, last_line: str | None, seen: int) -> FollowState:
    """The position ``offset`` in ``entry``, identified by the first bytes seen in it.

    The fingerprint covers the bytes that were in the file when we read it (``seen``), not
    only the consumed ones: a partial last line is already fixed content, and without it a
    file we read nothing of yet (offset 0) could not be told from its copytruncate copy.
    """
    length = min(HEAD_BYTES, seen)
    head = read_head(entry, length) if length else b""
    if head is None:  # shrank under us: identify by what we consumed only
        length = min(HEAD_BYTES, offset)
        head = read_head(entry, length) if length else b""
    return FollowState(entry.device, entry.inode, offset, length, fingerprint(head or b""), last_line)


def _read(
    entry: LogFile, start: int, report: FollowReport, chunk_bytes: int, watermark: list[str | None]
) -> Iterator[Batch]:
    """Yield the complete lines of one file from ``start``, a batch per chunk.

    ``watermark`` holds the timestamp of the last line handed out, carried from file to file.
    """
    try:
        handle = open_log_file(entry)
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
                head_state = _next_state(entry, consumed, lines, head_state, position, watermark)
                report.lines += len(lines)
                yield Batch(lines, head_state)
            if carry and not entry.live:
                lines = _decode(carry)  # a closed file's last line: it will never be finished
                head_state = _next_state(entry, position, lines, head_state, position, watermark)
                report.lines += len(lines)
                yield Batch(lines, head_state)
            elif head_state is None:
                # Nothing new: still move the position onto this file (a rotation happened).
                consumed = position - len(carry)
                yield Batch([], _next_state(entry, consumed, [], None, position, watermark))
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


def _next_state(
    entry: LogFile, offset: int, lines: list[str], previous: FollowState | None, seen: int,
    watermark: list[str | None],
) -> FollowState:
    stamp = _last_line(lines) or watermark[0]
    watermark[0] = stamp
    if previous is not None and previous.head_length == HEAD_BYTES:
        return FollowState(entry.device, entry.inode, offset, HEAD_BYTES, previous.head_hash, stamp)
    return _state_for(entry, offset, stamp, seen)


def _last_line(lines: list[str]) -> str | None:
    """The last line that starts with a timestamp (kept to LINE_KEEP characters)."""
    for line in reversed(lines):
        if line_timestamp(line) is not None:
            return line[:LINE_KEEP]
    return None

