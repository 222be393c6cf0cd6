"""Hidden part files: how a plot is written onto a plot drive without chia ever seeing half of it.

Two programs write plots into the same drive directories of a harvester: receive_plot.py (a
plot arriving from the network) and move_local_plots.py (a plot made on this machine). Each
cleans up after the other, and both take the drive's free space, so they must follow exactly
the same rules; this module is those rules, and ``landing.py`` is the one sequence both
writers follow through them:

* naming: the bytes go to ``DIR/.NAME.part`` (hidden from chia, which only farms ``*.plot``);
* liveness: a writer holds an ``flock`` on its part file for as long as it lives, so a part
  file that nobody holds was left by a SIGKILL or a power cut and may be removed (by the next
  writer into that directory, and by the harvester's minute pass: utilities/harvester/stale_parts.py);
* turns: checking for room and taking it (stale clean-up, free-space check, creating and
  preallocating the part) happens under the directory's ``flock``, so a receiver and a local
  move never both pass the free-space check for the drive's last slot;
* reservation with fallocate(2) itself, so a full disk fails in a second, not after 90 GiB;
* the final name is given with ``link`` (never replaces a file); the caller then fsyncs the
  directory (``open_directory`` gives the fd every step works relative to).

Errors come back as OSError (or the exceptions below) and each caller words them its own way
(the receiver as protocol ERROR kinds, the local move as move results). Only the standard
library and plot-name validation are imported: receive_plot.py starts in under 0.1 s.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from utilities.errors import PlotFileError
from utilities.plots import validate_plot_name
from utilities.transfer.journal import (
    DEFAULT_KEEP_SECONDS,
    JOURNAL_SUFFIX,
    JOURNAL_TEMP_SUFFIX,
    keeps_for_resume,
    remove_journal,
)

PART_PREFIX = "."
PART_SUFFIX = ".part"
# Room asked for on top of the plot itself in the free-space check (file system metadata);
# fallocate afterwards is the real test.
SPACE_MARGIN = 1024 * 1024
# fallocate errors meaning "this file system cannot preallocate" (ntfs-3g, some FUSE, exFAT):
# the free-space check is all there is.
NO_FALLOCATE_ERRNOS = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
# link errors meaning "no hard links here" (exFAT, FAT): check, then rename instead.
NO_HARD_LINK_ERRNOS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK)


class LostRace(Exception):
    """Another writer took our brand-new part file for a stale one (a microsecond window)."""


# -- names ----------------------------------------------------------------------------------------


def part_name(name: str) -> str:
    """The hidden name plot ``name`` is written under until it is verified."""
    return f"{PART_PREFIX}{name}{PART_SUFFIX}"


def plot_of_part(entry: str) -> str:
    """``.NAME.part`` -> ``NAME`` (pure; the entry must be a part name)."""
    return entry[len(PART_PREFIX) : -len(PART_SUFFIX)]


def is_part_name(entry: str) -> bool:
    """True for ``.NAME.part`` with a valid plot name inside (never an unrelated dot file)."""
    if not (entry.startswith(PART_PREFIX) and entry.endswith(PART_SUFFIX)):
        return False
    try:
        validate_plot_name(entry[len(PART_PREFIX) : -len(PART_SUFFIX)])
    except PlotFileError:
        return False
    return True


# -- the directory --------------------------------------------------------------------------------


@contextlib.contextmanager
def directory_turn(dir_fd: int) -> Iterator[None]:
    """Hold the directory's flock: every writer into this directory waits for its turn here,
    so a free-space check and the reservation that follows it are one step."""
    fcntl.flock(dir_fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(dir_fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def try_directory_turn(dir_fd: int) -> Iterator[bool]:
    """Take the directory's turn only if it is free now: True inside when we hold it.

    For the harvester's minute pass, which must not wait behind a writer (a replace-mode
    receiver may be deleting an old plot in its turn) and need not: a writer in its turn cleans
    the directory's stale parts itself, and the next pass comes back anyway.
    """
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        yield False
        return
    try:
        yield True
    finally:
        fcntl.flock(dir_fd, fcntl.LOCK_UN)


def free_bytes(fd: int) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``fd``."""
    info = os.fstatvfs(fd)
    return info.f_bavail * info.f_frsize


def has_room(free: int, size: int) -> bool:
    """Pure: a file system with ``free`` bytes takes a ``size``-byte plot plus the margin."""
    return free >= size + SPACE_MARGIN


def open_directory(path: str | os.PathLike[str]) -> int:
    """Open a directory once; every later step is relative to this fd, so it stays the same
    directory even if the path is remounted or replaced meanwhile. OSError as os.open."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


# -- stale part files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StaleCheck:
    """What ``remove_if_stale`` found: ``gone`` (the name is free now), ``removed`` (this call
    removed a stale part), ``unreadable`` (why it could not be checked; then it is kept)."""

    gone: bool
    removed: bool = False
    unreadable: str = ""
    resumable: bool = False  # nobody holds it, but its journal keeps it for a resume


def stale_part_candidates(dir_fd: int) -> list[str]:
    """The part files in the directory (alive or not); OSError when it cannot be listed."""
    return [entry.name for entry in os.scandir(dir_fd) if is_part_name(entry.name)]


def journal_part(entry: str) -> str | None:
    """The part a journal file (``.NAME.part.journal`` or its temporary ``.tmp``) belongs to,
    or None when ``entry`` is no journal of a valid part name (pure)."""
    for suffix in (JOURNAL_SUFFIX, JOURNAL_SUFFIX + JOURNAL_TEMP_SUFFIX):
        if entry.endswith(suffix) and is_part_name(entry[: -len(suffix)]):
            return entry[: -len(suffix)]
    return None


def orphan_journal_candidates(entries: list[str]) -> list[str]:
    """The journals among a directory's ``entries`` whose part is not there (pure).  A receiver
    killed between landing its plot and removing the journal, or while writing a journal's
    temporary file, leaves one; nothing ever reads it again, so the sweep removes it."""
    present = set(entries)
    return [e for e in entries if (part := journal_part(e)) is not None and part not in present]


def remove_orphan_journal(dir_fd: int, entry: str) -> bool:
    """Remove journal ``entry`` if its part is (still) absent; True when removed.  Called under
    the directory's turn, so no writer is creating that part meanwhile."""
    part = journal_part(entry)
    if part is None:
        return False
    try:
        os.stat(part, dir_fd=dir_fd, follow_symlinks=False)
        return False
    except FileNotFoundError:
        pass
    try:
        os.unlink(entry, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def remove_if_stale(dir_fd: int, entry: str, keep_seconds: float = DEFAULT_KEEP_SECONDS) -> StaleCheck:
    """Remove part file ``entry`` unless a living writer holds its flock.

    Each preallocated part left by a dead writer is a wasted plot slot. Kept: a part held by a
    living receiver or local move, anything that is not a regular file, and a part replaced
    by someone else's fresh one between our open and our check.
    """
    return reclaim_if_stale(dir_fd, entry, keep_seconds)[0]


def reclaim_if_stale(
    dir_fd: int, entry: str, keep_seconds: float = DEFAULT_KEEP_SECONDS, *, forgotten: bool = False
) -> tuple[StaleCheck, int]:
    """``remove_if_stale``, and the bytes the removed part held on disk (0 unless removed):
    what the harvester reports as freed. Its allocation, not its length, because that is what
    the drive gets back (a preallocated part is all allocated; a sparse one is not).

    A part waiting for a resume (``journal.keeps_for_resume``: a whole journal younger than
    ``keep_seconds``) is kept; once expired, or with a missing or torn journal, it goes with its
    journal.  A ``forgotten`` part (its plotter said the source is gone) goes at once."""
    try:
        fd = os.open(entry, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return StaleCheck(gone=True), 0
    except OSError as exc:
        return StaleCheck(gone=False, unreadable=exc.strerror or str(exc)), 0
    try:
        held = os.fstat(fd)
        if not stat.S_ISREG(held.st_mode):
            return StaleCheck(gone=False), 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return StaleCheck(gone=False), 0  # a living writer holds it
        try:
            current = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return StaleCheck(gone=True), 0
        if current.st_ino != held.st_ino:
            return StaleCheck(gone=False), 0  # replaced meanwhile by someone else's fresh part
        if not forgotten and keeps_for_resume(dir_fd, entry, held.st_size, keep_seconds):
            return StaleCheck(gone=False, resumable=True), 0
        allocated = os.fstat(fd).st_blocks * 512
        os.unlink(entry, dir_fd=dir_fd)
        remove_journal(dir_fd, entry)
        return StaleCheck(gone=True, removed=True), allocated
    finally:
        os.close(fd)


# -- our own part file ----------------------------------------------------------------------------


def create_part(dir_fd: int, part: str) -> tuple[int, int]:
    """Create part file ``part`` exclusively and flock it: (fd, inode).

    Raises FileExistsError when another writer has it, LostRace when another writer removed
    our new file as stale before we held its lock, OSError when it cannot be created.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(part, flags, 0o644, dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        current = os.stat(part, dir_fd=dir_fd, follow_symlinks=False)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        raise LostRace(part) from None
    if current.st_ino != os.fstat(fd).st_ino:
        os.close(fd)
        raise LostRace(part)
    return fd, current.st_ino


def preallocate(fd: int, size: int) -> bool:
    """Reserve ``size`` bytes with fallocate(2) itself; False when the file system cannot
    (the free-space check is then all there is). Other failures (ENOSPC...) raise OSError.

    Not ``os.posix_fallocate``: where the file system has no fallocate (ntfs-3g, some FUSE)
    glibc falls back to writing one byte per block, which for a 100 GiB plot takes hours.
    """
    import ctypes  # only a writer needs it; kept out of the importers' start-up

    libc = ctypes.CDLL(None, use_errno=True)
    function = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    try:
        if function is None:
            os.posix_fallocate(fd, 0, size)
            return True
        function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        function.restype = ctypes.c_int
        if function(fd, 0, 0, size) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    except OSError as exc:
        if exc.errno in NO_FALLOCATE_ERRNOS:
            return False
        raise
    return True


def is_ours(dir_fd: int, part: str, inode: int | None) -> bool:
    """True while ``part`` still names the file we created (not a replacement)."""
    return inode is not None and os.stat(part, dir_fd=dir_fd, follow_symlinks=False).st_ino == inode


def remove_own_part(dir_fd: int, part: str, inode: int | None) -> None:
    """Remove our part file, only if the name is still ours; OSError (other than a part that is
    already gone) for the caller to report."""
    with contextlib.suppress(FileNotFoundError):
        if is_ours(dir_fd, part, inode):
            os.unlink(part, dir_fd=dir_fd)


def link_into_place(dir_fd: int, part: str, name: str) -> bool:
    """Give the verified part file its final ``name`` without ever replacing a file.

    With hard links: link(2), which fails rather than replace (True: the caller then unlinks the
    part name). Without them (exFAT, FAT): check the name is free, then rename (False: a tiny
    race between the two that rename(2) cannot close). FileExistsError when ``name`` is
    taken; OSError for anything else.
    """
    try:
        os.link(part, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in NO_HARD_LINK_ERRNOS:
            raise
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), name)
    os.rename(part, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    return False
