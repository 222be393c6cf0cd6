"""The resume journal: what a kept part file durably holds, so a dropped transfer goes on from there.

A plot stream that ends early (link down, plotter gone, idle timeout, SIGTERM, SIGKILL) would
otherwise cost the whole plot again: 100 GiB for a k32.  A resumable receive keeps, beside its
``.NAME.part``, the journal ``.NAME.part.journal``: the plot's name and size, the protocol, the
source identity the plotter named, the chunk size, and the xxh3-128 of every chunk that is
written AND synced (the part's data is fdatasync'ed before a chunk is recorded, the journal is
written to a temporary name, fsynced, renamed and the directory fsynced).  So a journal never
names a byte the drive may not hold.

A journal that is missing, torn (its own check does not match), of another protocol or
inconsistent with the part (another name, size or source) makes the part garbage: it is removed,
never resumed.  A journaled part nobody holds is kept for resuming until its journal is older
than the keep time (``DEFAULT_KEEP_SECONDS``), then swept like any stale part.

The whole-plot proof of a resumable transfer is ``chunked_digest``: xxh3-128 over the chunk
digests in order, which both ends compute the same way (the receiver from its journal and the
bytes it receives, the plotter from its source), so it covers every byte of the final file.

Pure functions (build, parse, the digest) and the few I/O helpers; only the standard library and
xxhash: the receiver starts fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import xxhash

JOURNAL_SUFFIX = ".journal"
JOURNAL_VERSION = 1
# The protocol whose resumes a journal belongs to: a part of any other is never resumed.
RESUME_PROTOCOL = 3
DEFAULT_CHUNK = 1024 * 1024 * 1024  # 1 GiB: ~100 syncs + journal writes for a k32
DEFAULT_KEEP_SECONDS = 24 * 3600.0
MAX_CHUNKS = 1 << 20
_HEX_DIGITS = set("0123456789abcdef")
JOURNAL_TEMP_SUFFIX = ".tmp"


def journal_name(part: str) -> str:
    """``.NAME.part`` -> ``.NAME.part.journal`` (not a part name: sweeps never take it for one)."""
    return part + JOURNAL_SUFFIX


def is_hex128(text: object) -> bool:
    return isinstance(text, str) and len(text) == 32 and set(text) <= _HEX_DIGITS


def valid_source(text: object) -> bool:
    """A source identity token as the plotter sends it: 1..64 of ``[0-9a-z-]``."""
    return isinstance(text, str) and 0 < len(text) <= 64 and all(c.isdigit() or "a" <= c <= "z" or c == "-" for c in text)


def source_token(size: int, mtime_ns: int, inode: int, device: int) -> str:
    """The plotter's source identity as one protocol word: the same file unchanged gives the
    same token, a rewritten or replaced one another."""
    return xxhash.xxh3_64(f"{size}:{mtime_ns}:{inode}:{device}".encode()).hexdigest()


def chunked_digest(chunk_digests: Sequence[str]) -> str:
    """The whole plot's proof: xxh3-128 over its chunk digests (16 bytes each, in order)."""
    return xxhash.xxh3_128(b"".join(bytes.fromhex(h) for h in chunk_digests)).hexdigest()


def chunk_count(size: int, chunk: int) -> int:
    return (size + chunk - 1) // chunk


@dataclass
class Journal:
    """What a kept part holds: ``chunks`` are the digests of its first len(chunks) chunks."""

    name: str
    size: int
    source: str
    chunk: int
    chunks: list[str] = field(default_factory=list)
    protocol: int = RESUME_PROTOCOL

    @property
    def held(self) -> int:
        """Bytes of the plot the part durably holds."""
        return min(self.size, len(self.chunks) * self.chunk)

    def matches(self, name: str, size: int, source: str) -> bool:
        return (self.name, self.size, self.source, self.protocol) == (name, size, source, RESUME_PROTOCOL)

    def body(self) -> dict[str, object]:
        return {
            "journal": JOURNAL_VERSION, "protocol": self.protocol, "name": self.name, "size": self.size,
            "source": self.source, "chunk": self.chunk, "chunks": list(self.chunks),
        }  # fmt: skip


def _check(body: dict[str, object]) -> str:
    return xxhash.xxh3_64(json.dumps(body, sort_keys=True).encode()).hexdigest()


def format_journal(journal: Journal) -> bytes:
    """The journal file's bytes: its body and a check over it (a torn write fails the check)."""
    body = journal.body()
    return (json.dumps({**body, "check": _check(body)}, sort_keys=True) + "\n").encode()


def parse_journal(data: bytes) -> Journal | None:
    """The journal in ``data``, or None when it is torn, of another version or inconsistent (pure)."""
    try:
        raw = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(raw, dict) or set(raw) != {"journal", "protocol", "name", "size", "source", "chunk", "chunks", "check"}:
        return None
    body = {k: v for k, v in raw.items() if k != "check"}
    if raw["check"] != _check(body) or raw["journal"] != JOURNAL_VERSION:
        return None
    name, size, source, chunk, chunks, protocol = (
        raw["name"], raw["size"], raw["source"], raw["chunk"], raw["chunks"], raw["protocol"],
    )  # fmt: skip
    ints = (size, chunk, protocol)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in ints):
        return None
    if not isinstance(name, str) or not valid_source(source) or not isinstance(chunks, list):
        return None
    if len(chunks) > min(MAX_CHUNKS, chunk_count(size, chunk)) or not all(is_hex128(h) for h in chunks):
        return None
    return Journal(name, size, source, chunk, list(chunks), protocol)


def write_journal(dir_fd: int, part: str, journal: Journal) -> None:
    """Write the journal durably: a temporary name, fsync, rename over, fsync the directory."""
    name = journal_name(part)
    temp = name + JOURNAL_TEMP_SUFFIX
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    try:
        data = memoryview(format_journal(journal))
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


def read_journal(dir_fd: int, part: str) -> tuple[Journal | None, float]:
    """The part's journal (None when missing, unreadable or torn) and its age in seconds."""
    try:
        fd = os.open(journal_name(part), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None, 0.0
    try:
        age = time.time() - os.fstat(fd).st_mtime
        data = os.read(fd, 1 << 26)
    except OSError:
        return None, 0.0
    finally:
        os.close(fd)
    return parse_journal(data), age


def remove_journal(dir_fd: int, part: str) -> None:
    """Remove the part's journal (and a temporary one left by a crash); missing is fine."""
    for name in (journal_name(part), journal_name(part) + JOURNAL_TEMP_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)


def keeps_for_resume(dir_fd: int, part: str, part_size: int, keep_seconds: float) -> bool:
    """True when the part (nobody holds it) waits for a resume: its journal is whole, holds at
    least one chunk, fits the part's size, and is younger than ``keep_seconds``."""
    journal, age = read_journal(dir_fd, part)
    if journal is None or not journal.chunks or journal.protocol != RESUME_PROTOCOL:
        return False
    return part_size == journal.size and age < keep_seconds


class ChunkHasher:
    """xxh3-128 per chunk of a stream fed front to back from ``start`` (a chunk boundary);
    ``on_chunk(index, hex)`` is called as each whole chunk completes."""

    def __init__(self, chunk: int, size: int, start: int = 0) -> None:
        assert start % chunk == 0 or start == size
        self.chunk = chunk
        self.size = size
        self.offset = start
        self.digest = xxhash.xxh3_128()
        self.digests: list[str] = []

    def update(self, data: memoryview) -> list[tuple[int, str]]:
        """Feed the next bytes; the chunks they complete as (index, hex)."""
        done: list[tuple[int, str]] = []
        while data:
            boundary = min(self.size, (self.offset // self.chunk + 1) * self.chunk)
            take = min(len(data), boundary - self.offset)
            if take == 0:
                break
            self.digest.update(data[:take])
            self.offset += take
            data = data[take:]
            if self.offset == boundary:
                hexdigest = self.digest.hexdigest()
                self.digests.append(hexdigest)
                done.append(((self.offset - 1) // self.chunk, hexdigest))
                self.digest = xxhash.xxh3_128()
        return done


def hash_chunks(fd: int, chunk: int, count: int, expected: Sequence[str] | None = None, piece: int = 1 << 20) -> list[str]:
    """The digests of the first ``count`` chunks of an open file; with ``expected``, stops at
    the first chunk that differs (so the list is the matching prefix)."""
    size = os.fstat(fd).st_size
    hasher = ChunkHasher(chunk, size)
    buffer = bytearray(piece)
    view = memoryview(buffer)
    end = min(size, count * chunk)
    offset = 0
    while offset < end:
        got = os.preadv(fd, [view[: min(piece, end - offset)]], offset)
        if got == 0:
            break
        for index, hexdigest in hasher.update(view[:got]):
            if expected is not None and (index >= len(expected) or expected[index] != hexdigest):
                return hasher.digests[:index]
        offset += got
    return hasher.digests[:count]
