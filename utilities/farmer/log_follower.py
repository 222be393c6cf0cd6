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

STRONG_HEAD_BYTES = 64
"""A fingerprint of fewer bytes than this may not even cover the first line's full timestamp."""

LINE_KEEP = 200
"""Characters of the last line read that are kept to recognise it (timestamp and more)."""

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
    last_line: str | None = None


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


# -- the chain of files ------------------------------------------------------------------------


def log_chain(log_path: Path) -> list[LogFile]:
    """The log's files, oldest first: the backups (``.N`` ... ``.1``, gzipped or not, and the
    temporary name of a rotation in progress), then the live file (if it exists).

    Backups are ordered by modification time, which is when their last line was written (a
    rename keeps it, gzip and copytruncate's copy are made right after the last line), then by
    number. The number alone is not enough: after ``log_use_gzip`` is switched on, the plain
    ``.1`` of before and the new ``.1.gz`` are both there and ``.2.gz`` is newer than ``.1``.
    """
    backups: list[tuple[int, int, LogFile]] = []  # (mtime_ns, -number, entry)
    prefix = log_path.name
    try:
        names = os.listdir(log_path.parent)
    except OSError:
        names = []
    present = set(names)
    for name in names:
        if not name.startswith(prefix) or name == prefix:
            continue
        suffix = name[len(prefix):]
        backup, temp = _BACKUP.match(suffix), _TEMP.match(suffix)
        if not backup and not temp:
            continue
        if temp and name.endswith(".gz") and name[:-3] in present:
            continue  # being gzipped right now: the plain file is the whole truth until it goes
        path = log_path.parent / name
        try:
            st = os.stat(path)
        except OSError:
            continue
        entry = LogFile(path, st.st_dev, st.st_ino, st.st_size, compressed=name.endswith(".gz"), live=False)
        backups.append((st.st_mtime_ns, -int(backup["n"]) if backup else 0, entry))
    chain = [entry for _, _, entry in sorted(backups, key=lambda item: (item[0], item[1]))]
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
    data = _head_prefix(entry, length)
    return data if len(data) == length else None


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _first_stamp(entry: LogFile) -> str | None:
    """The timestamp of the file's first line, if that line has a complete one."""
    return _stamp(_head_prefix(entry, 64).decode("ascii", "replace"))


def _head_prefix(entry: LogFile, length: int) -> bytes:
    """Up to ``length`` first bytes (decompressed); empty if the file is unreadable."""
    try:
        with _open(entry) as handle:
            return handle.read(length)
    except (OSError, EOFError, zlib.error):
        return b""


def find_position(state: FollowState, chain: list[LogFile]) -> int | None:
    """Index in ``chain`` of the file we were reading, or None if it is gone.

    Candidates are the files that start with the bytes we fingerprinted and are not shorter
    than our offset (shorter: truncated in place, its old content lives on in a copy).

    With a strong fingerprint (a full first line or more: a millisecond timestamp no other
    file shares) the same inode wins, else the newest candidate (a gzipped backup, or the copy
    copytruncate left). With a weak one (we saw less than a line: the file had just been
    started) inodes prove nothing, since gzip frees the old inode and the next live file may
    get it, and the first bytes are shared by every file of the hour. Then we take the oldest
    candidate newer than the last file we know we read (by the timestamp and text of the last
    line we read).

    The strong case looks from the newest file back and stops at the inode: in the usual run
    (nothing rotated) that is the live file, and the backups' heads are not read at all.
    """
    if state.head_length >= STRONG_HEAD_BYTES:
        newest = None
        for index in range(len(chain) - 1, -1, -1):
            entry = chain[index]
            if not _is_candidate(entry, state):
                continue
            if not entry.compressed and (entry.device, entry.inode) == (state.device, state.inode):
                return index
            newest = index if newest is None else newest
        return newest
    candidates = [index for index, entry in enumerate(chain) if _is_candidate(entry, state)]
    done = _last_file_read(chain, state.last_line) if candidates else -1
    first_allowed = done if state.offset > 0 else done + 1
    for index in candidates:
        if index < first_allowed:
            continue
        if chain[index].live or _first_stamp(chain[index]) is not None:
            return index  # (an empty backup holds nothing to resume)
    return None


def _is_candidate(entry: LogFile, state: FollowState) -> bool:
    """Whether ``entry`` starts with the fingerprinted bytes and is not shorter than our offset."""
    if not entry.compressed and entry.size < state.offset:
        return False
    head = _head(entry, state.head_length) if state.head_length else b""
    return head is not None and _hash(head) == state.head_hash


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
            plan += _after_watermark(chain, state.last_line)
            log.warning(
                "lost track of %s (rotated more often than the backups kept, or truncated without a copy); "
                "continuing with what is left, some lines may have been missed", log_path,
            )
    watermark = [state.last_line if state is not None else None]
    for entry, start in plan:
        yield from _read(entry, start, report, chunk_bytes, watermark)


def _after_watermark(chain: list[LogFile], last_line: str | None) -> list[tuple[LogFile, int]]:
    """Files that start after the last line we read, and always the live file."""
    done = _last_file_read(chain, last_line) if last_line is not None else len(chain)
    return [(entry, 0) for index, entry in enumerate(chain) if entry.live or index > done]


def _last_file_read(chain: list[LogFile], last_line: str | None) -> int:
    """Index of the newest file that starts before the last line we read or holds it; -1 if none.

    Files are dated by their first line's timestamp. A file starting in the very millisecond
    of our last line is ours only if that line is in it: chia writes bursts of lines within one
    millisecond, also across a rotation.
    """
    watermark = _stamp(last_line)
    done = -1
    if watermark is None:
        return done
    for index, entry in enumerate(chain):
        stamp = _first_stamp(entry)
        if stamp is None:
            continue
        if stamp < watermark or (stamp == watermark and _holds_line(entry, last_line)):
            done = index
    return done


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
    head = _head(entry, length) if length else b""
    if head is None:  # shrank under us: identify by what we consumed only
        length = min(HEAD_BYTES, offset)
        head = _head(entry, length) if length else b""
    return FollowState(entry.device, entry.inode, offset, length, _hash(head or b""), last_line)


def _read(
    entry: LogFile, start: int, report: FollowReport, chunk_bytes: int, watermark: list[str | None]
) -> Iterator[Batch]:
    """Yield the complete lines of one file from ``start``, a batch per chunk.

    ``watermark`` holds the timestamp of the last line handed out, carried from file to file.
    """
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
        if _stamp(line) is not None:
            return line[:LINE_KEEP]
    return None


def _stamp(line: str | None) -> str | None:
    """The timestamp a chia log line starts with, or None."""
    if not line or not line[:1].isdigit() or " " not in line:
        return None
    stamp = line.split(" ", 1)[0]
    return stamp if len(stamp) >= 19 and stamp[10:11] == "T" else None


def _holds_line(entry: LogFile, last_line: str | None) -> bool:
    """Whether ``last_line`` is among the file's leading lines of the same millisecond.

    Tells a file we already read (it holds the last line we read) from a newer one that only
    starts in the same millisecond; chia writes bursts of lines within one millisecond.
    """
    stamp = _stamp(last_line)
    if stamp is None:
        return False
    try:
        with _open(entry) as handle:
            for _ in range(10_000):
                raw = handle.readline(64 * 1024)
                if not raw:
                    return False
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                line_stamp = _stamp(line)
                if line_stamp is not None and line_stamp != stamp:
                    return False
                if line[:LINE_KEEP] == last_line:
                    return True
    except (OSError, EOFError, zlib.error):
        return False
    return False

