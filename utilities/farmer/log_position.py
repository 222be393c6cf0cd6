"""Find our place again in a log that was rotated, gzipped or truncated since the last run.

The log is a chain of files (``log_chain``): the rotated backups, oldest first, then the live
file. Our position (``FollowState``) names a file by its device and inode and by a fingerprint
of its first bytes, because neither alone survives everything: gzip makes a new file (new
inode, same content), copytruncate keeps the inode but not the content, and a file just
started shares its first bytes with every file of the hour. ``find_position`` says which file
of the chain ours is now; when it is gone, ``files_after_watermark`` says what is left to read,
dated by the timestamp of the last line we read. Reading the lines is
``utilities/farmer/log_follower.py``'s job.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

HEAD_BYTES = 1024
"""Bytes of a file's start that identify it: chia's first lines carry millisecond timestamps,
so two different log files never share them."""

STRONG_HEAD_BYTES = 64
"""A fingerprint of fewer bytes than this may not even cover the first line's full timestamp."""

LINE_KEEP = 200
"""Characters of the last line read that are kept to recognise it (timestamp and more)."""

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


# -- a file's identity -------------------------------------------------------------------------


def open_log_file(entry: LogFile) -> BinaryIO:
    return gzip.open(entry.path, "rb") if entry.compressed else open(entry.path, "rb")  # noqa: SIM115


def read_head(entry: LogFile, length: int) -> bytes | None:
    """The first ``length`` bytes (decompressed), or None if the file has fewer or is unreadable."""
    data = _head_prefix(entry, length)
    return data if len(data) == length else None


def fingerprint(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _first_stamp(entry: LogFile) -> str | None:
    """The timestamp of the file's first line, if that line has a complete one."""
    return line_timestamp(_head_prefix(entry, 64).decode("ascii", "replace"))


def _head_prefix(entry: LogFile, length: int) -> bytes:
    """Up to ``length`` first bytes (decompressed); empty if the file is unreadable."""
    try:
        with open_log_file(entry) as handle:
            return handle.read(length)
    except (OSError, EOFError, zlib.error):
        return b""


def line_timestamp(line: str | None) -> str | None:
    """The timestamp a chia log line starts with, or None."""
    if not line or not line[:1].isdigit() or " " not in line:
        return None
    stamp = line.split(" ", 1)[0]
    return stamp if len(stamp) >= 19 and stamp[10:11] == "T" else None


# -- finding our file again --------------------------------------------------------------------


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
    head = read_head(entry, state.head_length) if state.head_length else b""
    return head is not None and fingerprint(head) == state.head_hash


def files_after_watermark(chain: list[LogFile], last_line: str | None) -> list[tuple[LogFile, int]]:
    """Files that start after the last line we read, and always the live file."""
    done = _last_file_read(chain, last_line) if last_line is not None else len(chain)
    return [(entry, 0) for index, entry in enumerate(chain) if entry.live or index > done]


def _last_file_read(chain: list[LogFile], last_line: str | None) -> int:
    """Index of the newest file that starts before the last line we read or holds it; -1 if none.

    Files are dated by their first line's timestamp. A file starting in the very millisecond
    of our last line is ours only if that line is in it: chia writes bursts of lines within one
    millisecond, also across a rotation.
    """
    watermark = line_timestamp(last_line)
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


def _holds_line(entry: LogFile, last_line: str | None) -> bool:
    """Whether ``last_line`` is among the file's leading lines of the same millisecond.

    Tells a file we already read (it holds the last line we read) from a newer one that only
    starts in the same millisecond; chia writes bursts of lines within one millisecond.
    """
    stamp = line_timestamp(last_line)
    if stamp is None:
        return False
    try:
        with open_log_file(entry) as handle:
            for _ in range(10_000):
                raw = handle.readline(64 * 1024)
                if not raw:
                    return False
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                line_stamp = line_timestamp(line)
                if line_stamp is not None and line_stamp != stamp:
                    return False
                if line[:LINE_KEEP] == last_line:
                    return True
    except (OSError, EOFError, zlib.error):
        return False
    return False
