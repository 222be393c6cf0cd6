"""Move one finished plot onto a plot drive of this machine, as safely as a network transfer.

The guarantees are the receiver's (receive_plot.py), because a lost plot is hours of compute:

* chia never sees half a plot: bytes go to the hidden ``DIR/.NAME.part``, which holds an
  ``flock`` while it is written (so receivers and later runs know it is alive), and which is
  removed on every failure; only SIGKILL or a power cut can leave it, and the next run (or
  any receiver on that directory) removes part files that no living process holds.
* the copy is proven identical before the source goes: the bytes are hashed (xxh3-128) as they
  are read from the source; after ``fsync`` the copy is dropped from the page cache and read
  back from the disk, and its hash must match. (Hashing the buffer we just wrote would prove
  nothing: it is the same memory the source hash saw.)
* rename into place without ever replacing a file (``link`` + ``unlink``), fsync the directory,
  and only then delete the source, and only if its size, mtime and inode are unchanged.
* room is checked and reserved (``fallocate``) under the directory's ``flock`` (the same lock
  receivers take), so a receiver and a local move sharing a drive never both take the last
  slot, and replace mode deletes at most one old OG plot per incoming pool plot.
* the bytes move on a worker thread, and the caller watches the copy's own progress: a read or
  write that never returns (a dying disk, a hung USB bridge) is a stall after
  ``stall_seconds`` without a byte, which aborts the move instead of hanging every later
  cron run. A stalled worker keeps its file descriptors until its system call returns, so a
  reused descriptor number can never receive its late write.

The part-file rules (naming, liveness, stale clean-up, reservation, the final link) are
``utilities/transfer/part_files.py``'s, the very code receive_plot.py runs, so the two cannot drift apart.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import xxhash

from utilities.durable import fsync_directory
from utilities.errors import PlotManagerError
from utilities.plots import KIND_POOL
from utilities.replace import make_room_for
from utilities.transfer import part_files
from utilities.transfer.integrity import DEFAULT_CHUNK, SourceIdentity, hash_file
from utilities.transfer.part_files import SPACE_MARGIN, free_bytes, has_room, part_name

log = logging.getLogger(__name__)

# Write back and drop the written pages in windows of this size: the final fsync stays short
# (no stall alarm while it runs) and a 100 GiB copy does not push the plotter's working set out
# of memory. With sync_file_range at most two windows are dirty or in flight at once (the one
# being written and the one the disk is writing), so the dirty memory stays under 2 windows.
SYNC_EVERY = 64 * 1024 * 1024

# sync_file_range(2) flags (linux/fs.h)
SYNC_FILE_RANGE_WAIT_BEFORE = 1
SYNC_FILE_RANGE_WRITE = 2
SYNC_FILE_RANGE_WAIT_AFTER = 4

# Moves end in one of these; only FAILED counts against the plot (and may hold it back):
# no room and a missing drive are the drive's state, not the plot's fault.
MOVED = "moved"
FAILED = "failed"
NO_ROOM = "no room"
DRIVE_GONE = "drive gone"

Reader = Callable[[int, memoryview, int], int]
"""Reads into the buffer from the fd at the offset, returns the count (``pread``)."""
Progress = Callable[[str, int, int], None]
"""Called with (phase, bytes done, bytes in the phase); phase is "copy" or "verify"."""


def pread_into(fd: int, buffer: memoryview, offset: int) -> int:
    return os.preadv(fd, [buffer], offset)


@dataclass(frozen=True)
class MoveResult:
    """What happened to one plot. ``status`` is MOVED, FAILED, NO_ROOM or DRIVE_GONE."""

    status: str
    name: str
    destination: Path | None = None
    size: int = 0
    seconds: float = 0.0
    hexdigest: str = ""
    reason: str = ""
    stalled: bool = False
    source_deleted: bool = False
    replaced: Path | None = None

    @property
    def ok(self) -> bool:
        return self.status == MOVED

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / 1e6 if self.ok and self.seconds > 0 else 0.0


class _Stop(Exception):
    """Ends a move early with a result (raised inside move_plot only)."""

    def __init__(self, status: str, reason: str, stalled: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.stalled = stalled


# -- stale part files --------------------------------------------------------------------------


def remove_stale_part(dir_fd: int, entry: str) -> bool:
    """Remove part file ``entry`` unless a living writer holds its flock; True when it is gone.

    The rule receive_plot.py applies too (utilities/transfer/part_files.py), so either side cleans up
    after the other.
    """
    check = part_files.remove_if_stale(dir_fd, entry)
    if check.unreadable:
        log.warning("cannot open %s to check it: %s", entry, check.unreadable)
    if check.removed:
        log.info("removed stale %s left by a copy that died", entry)
    return check.gone


def remove_stale_part_path(path: Path) -> bool:
    """``remove_stale_part`` by full path (parts recorded by an earlier run); True when gone."""
    try:
        dir_fd = part_files.open_directory(path.parent)
    except FileNotFoundError:
        return True  # the directory (or the drive) is gone, and the part with it
    except OSError:
        return False
    try:
        return remove_stale_part(dir_fd, path.name)
    finally:
        os.close(dir_fd)


def clean_stale_parts(dir_fd: int) -> None:
    try:
        entries = part_files.stale_part_candidates(dir_fd)
    except OSError as exc:
        raise _Stop(DRIVE_GONE, f"cannot list the destination: {exc.strerror}") from None
    for entry in entries:
        remove_stale_part(dir_fd, entry)


# -- write-back --------------------------------------------------------------------------------

SyncRange = Callable[[int, int, int, int], None]
"""``sync_file_range(fd, offset, nbytes, flags)``; raises OSError when the call fails."""


def load_sync_file_range() -> SyncRange | None:
    """libc's sync_file_range through ctypes, or None where the C library has none (not Linux).

    ctypes releases the GIL for the call, so the watcher thread keeps running while the worker
    waits on the disk."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int

    def sync_range(fd: int, offset: int, nbytes: int, flags: int) -> None:
        if function(fd, offset, nbytes, flags) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return sync_range


_SYNC_FILE_RANGE = load_sync_file_range()


class _WriteBack:
    """Gets the copy's written windows onto the disk and out of the page cache, for both files.

    With sync_file_range, the disk writes window N while the worker reads window N+1: after
    writing window N we only *start* its write-back, then wait for window N-1 (started one
    window earlier, so usually done) and drop it. Without it (another OS, a seccomp filter,
    an odd file) every window is fdatasynced before the next is read, as before.

    sync_file_range flushes no metadata and no drive cache, so a window it wrote is not yet
    durable: the final ``fsync`` (``finish``) makes the whole copy durable before anything
    trusts it. Its writes are complete though (the pages are clean), so DONTNEED really drops
    them and the read-back verify reads from the drive. Errors of the waiting calls are raised,
    never taken for "unsupported": the kernel reports a write-back error only once per file.
    """

    def __init__(self, src_fd: int, part_fd: int, sync_range: SyncRange | None) -> None:
        self.src_fd = src_fd
        self.part_fd = part_fd
        self.sync_range = sync_range
        if sync_range is not None:
            try:  # flags 0: checks that the call exists and takes this file, writes nothing
                sync_range(part_fd, 0, 0, 0)
            except OSError as exc:
                log.debug("sync_file_range unavailable (%s); fdatasync per window instead", exc.strerror)
                self.sync_range = None
        self.in_flight: tuple[int, int] | None = None  # started, not yet waited for
        self.dropped = 0  # bytes before this are written and dropped from the cache

    def window_written(self, start: int, end: int) -> None:
        """Bytes ``start..end`` of the part file were written (the next window follows)."""
        if self.sync_range is None:
            os.fdatasync(self.part_fd)
            self._drop(end)
            return
        self.sync_range(self.part_fd, start, end - start, SYNC_FILE_RANGE_WRITE)
        if self.in_flight is not None:
            before_start, before_end = self.in_flight
            self.sync_range(self.part_fd, before_start, before_end - before_start,
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER)
            self._drop(before_end)
        self.in_flight = (start, end)

    def finish(self) -> None:
        """Make everything durable (data and metadata), then drop what is still cached."""
        os.fsync(self.part_fd)
        self.in_flight = None
        self._drop(0)

    def _drop(self, end: int) -> None:
        """DONTNEED ``dropped..end`` (0: to the end of the file) on both files."""
        length = end - self.dropped if end else 0
        os.posix_fadvise(self.part_fd, self.dropped, length, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(self.src_fd, self.dropped, length, os.POSIX_FADV_DONTNEED)
        if end:
            self.dropped = end


# -- the byte loop ------------------------------------------------------------------------------


class _Copier:
    """Copies and hashes on a worker thread; ``progress`` is the only thing the watcher reads.

    Ownership of the two descriptors: the caller's while the worker runs normally; if the
    caller abandons a stalled copy, whichever of the two finishes last closes them (so a late
    write can never land in a descriptor number reused for another file).
    """

    def __init__(
        self, src_fd: int, part_fd: int, size: int, *, chunk: int, read: Reader, verify: bool,
        bytes_per_second: float,
    ) -> None:
        self.src_fd = src_fd
        self.part_fd = part_fd
        self.size = size
        self.read = read
        self.verify = verify
        self.bytes_per_second = bytes_per_second
        if bytes_per_second > 0:  # several progress ticks per second even when throttled
            chunk = max(64 * 1024, min(chunk, int(bytes_per_second / 4)))
        self.chunk = max(4096, min(chunk, max(size, 1)))
        self.progress = 0  # bytes copied, then bytes read back
        self.phase = "copy"
        self.hexdigest = ""
        self.verified_hexdigest = ""
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self._abort = threading.Event()
        self._lock = threading.Lock()
        self._done = False
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="local-move-copy", daemon=True)

    def start(self) -> _Copier:
        self._thread.start()
        return self

    def abandon(self) -> None:
        """Stop caring: the worker stops at its next chance and closes the descriptors."""
        self._abort.set()
        with self._lock:
            self._abandoned = True
            if self._done:
                self._close()

    def _close(self) -> None:
        for fd in (self.src_fd, self.part_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        try:
            self.hexdigest = self._copy()
            if self.verify and not self._abort.is_set():
                self.phase = "verify"
                self.progress = 0
                self.verified_hexdigest = self._read_back()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self.error = exc
        finally:
            with self._lock:
                self._done = True
                if self._abandoned:
                    self._close()
            self.finished.set()

    def _copy(self) -> str:
        buffer = bytearray(self.chunk)
        view = memoryview(buffer)
        digest = xxhash.xxh3_128()
        write_back = _WriteBack(self.src_fd, self.part_fd, _SYNC_FILE_RANGE)
        offset = window_start = 0
        started = time.monotonic()
        while offset < self.size:
            want = min(self.chunk, self.size - offset)
            got = self.read(self.src_fd, view[:want], offset)
            if self._abort.is_set():
                raise InterruptedError("copy abandoned")
            if got == 0:
                raise _Stop(FAILED, f"the source ended at byte {offset} of {self.size}: it shrank while being copied")
            digest.update(view[:got])
            data = view[:got]
            while data:
                data = data[os.pwrite(self.part_fd, data, offset + got - len(data)) :]
            offset += got
            if offset - window_start >= SYNC_EVERY:
                write_back.window_written(window_start, offset)
                window_start = offset
            self.progress = offset
            if self.bytes_per_second > 0:
                ahead = offset / self.bytes_per_second - (time.monotonic() - started)
                if ahead > 0 and self._abort.wait(ahead):  # throttle; an abort ends the wait
                    raise InterruptedError("copy abandoned")
        write_back.finish()
        return digest.hexdigest()

    def _read_back(self) -> str:
        """Hash the copy as the disk holds it: its cached pages are dropped first (they were
        fsynced, so DONTNEED discards them), so these reads come from the drive."""
        os.posix_fadvise(self.part_fd, 0, 0, os.POSIX_FADV_DONTNEED)
        buffer = bytearray(self.chunk)
        view = memoryview(buffer)
        digest = xxhash.xxh3_128()
        offset = 0
        while offset < self.size:
            got = os.preadv(self.part_fd, [view[: min(self.chunk, self.size - offset)]], offset)
            if self._abort.is_set():
                raise InterruptedError("verify abandoned")
            if got == 0:
                raise _Stop(FAILED, f"the copy reads back only {offset} of {self.size} bytes")
            digest.update(view[:got])
            offset += got
            self.progress = offset
        os.posix_fadvise(self.part_fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return digest.hexdigest()


def watch(copier: _Copier, stall_seconds: float, progress_cb: Progress | None) -> bool:
    """Wait for the copy; False when it moved no byte for ``stall_seconds`` (a stall)."""
    poll = min(1.0, stall_seconds / 4)
    seen = (copier.phase, -1)
    last_change = time.monotonic()
    while not copier.finished.wait(poll):
        now = time.monotonic()
        current = (copier.phase, copier.progress)
        if current != seen:
            seen, last_change = current, now
            if progress_cb is not None:
                progress_cb(current[0], current[1], copier.size)
        elif now - last_change >= stall_seconds:
            return False
    if progress_cb is not None and copier.error is None:
        progress_cb(copier.phase, copier.progress, copier.size)
    return True


# -- one move -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MoveOptions:
    stall_seconds: float
    verify: bool = True
    bytes_per_second: float = 0.0
    may_replace_og: bool = False  # replace mode on the destination (pool plots only)
    chunk: int = DEFAULT_CHUNK


class _PartFile:
    """The destination's part file: created exclusively, flocked, removed unless committed."""

    def __init__(self, dir_fd: int, name: str) -> None:
        self.dir_fd = dir_fd
        self.name = part_name(name)
        self.fd: int | None = None
        self.inode: int | None = None

    def create(self) -> int:
        try:
            self.fd, self.inode = part_files.create_part(self.dir_fd, self.name)
        except FileExistsError:
            raise _Stop(FAILED, f"{self.name} is being written by another process") from None
        except part_files.LostRace:
            raise _Stop(FAILED, f"lost a race for {self.name}; trying again next run") from None
        except OSError as exc:
            raise _Stop(DRIVE_GONE, f"cannot create {self.name}: {exc.strerror}") from None
        return self.fd

    def remove(self) -> None:
        """Remove our part file (only if the name is still ours)."""
        with contextlib.suppress(OSError):
            part_files.remove_own_part(self.dir_fd, self.name, self.inode)
        self.inode = None


def _reserve(dir_fd: int, dest_dir: Path, part: _PartFile, size: int, replace_og: bool) -> Path | None:
    """Clean stale parts, make room (replace mode), check space, create and preallocate the
    part: one step under the directory's flock, as receivers do. Returns a deleted OG plot."""
    with part_files.directory_turn(dir_fd):
        clean_stale_parts(dir_fd)
        replaced = None
        if replace_og and not has_room(free_bytes(dir_fd), size):
            try:
                replaced = make_room_for(dest_dir, size + SPACE_MARGIN)
            except (PlotManagerError, OSError) as exc:
                raise _Stop(NO_ROOM, f"replace mode: {exc}") from None
        free = free_bytes(dir_fd)
        if not has_room(free, size):
            raise _Stop(NO_ROOM, f"{dest_dir} has {free} bytes free, the plot needs {size + SPACE_MARGIN}")
        fd = part.create()
        try:
            part_files.preallocate(fd, size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise _Stop(NO_ROOM, f"cannot reserve {size} bytes in {dest_dir}: {exc.strerror}") from None
            raise _Stop(FAILED, f"cannot reserve space in {dest_dir}: {exc.strerror}") from None
        return replaced


def _commit(dir_fd: int, part: _PartFile, name: str, dest_dir: Path) -> None:
    """Give the verified part its final name, never over an existing file; fsync the dir."""
    assert part.fd is not None
    try:
        ours = part_files.is_ours(dir_fd, part.name, part.inode)
    except OSError as exc:
        raise _Stop(FAILED, f"{part.name} vanished before it could be renamed: {exc.strerror}") from None
    if not ours:
        raise _Stop(FAILED, f"{part.name} was replaced while copying")
    try:
        linked = part_files.link_into_place(dir_fd, part.name, name)
    except FileExistsError:
        raise _Stop(FAILED, f"{name} appeared in {dest_dir} while copying") from None
    except OSError as exc:
        raise _Stop(FAILED, f"cannot rename {part.name} to {name}: {exc.strerror}") from None
    if linked:
        os.unlink(part.name, dir_fd=dir_fd)
    part.inode = None  # committed: nothing to remove any more
    os.fsync(dir_fd)


def delete_source(source: Path, identity: SourceIdentity) -> str:
    """Delete the source if it is still the file we copied; '' or the reason it was kept."""
    try:
        now = SourceIdentity.of(source)
    except OSError as exc:
        return f"cannot check the source again: {exc.strerror or exc}"
    if now != identity:
        return f"the source changed after it was copied ({identity} -> {now})"
    os.unlink(source)
    with contextlib.suppress(OSError):
        fsync_directory(source.parent)
    return ""


def _already_there(dir_fd: int, dest_dir: Path, source: Path, identity: SourceIdentity) -> tuple[bool, str]:
    """The final name exists: (True, digest) when it holds exactly the source's bytes (a run
    stopped after its rename, before deleting the source); raises _Stop for anything else."""
    name = source.name
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False, ""
    except OSError as exc:
        raise _Stop(DRIVE_GONE, f"cannot check {dest_dir / name}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size != identity.size:
        raise _Stop(FAILED, f"{dest_dir / name} already exists and is a different file")
    try:
        theirs = hash_file(dest_dir / name)
        ours = hash_file(source)
    except OSError as exc:
        raise _Stop(FAILED, f"cannot compare with {dest_dir / name}: {exc.strerror}") from None
    if theirs != ours:
        raise _Stop(FAILED, f"{dest_dir / name} already exists with different content")
    return True, ours[1]


def move_plot(
    source: Path,
    dest_dir: Path,
    options: MoveOptions,
    *,
    kind: str | None = None,
    progress_cb: Progress | None = None,
    on_part: Callable[[Path | None], None] | None = None,
    read: Reader = pread_into,
) -> MoveResult:
    """Move ``source`` into ``dest_dir`` (see the module notes). Never raises for a move
    problem: the result says what happened. ``kind`` is the plot's header kind (replace mode
    only makes room for pool plots); ``on_part`` is told the part path when it exists and None
    when it is gone, so a caller can record it for cleanup after a SIGKILL; ``read`` replaces
    ``pread`` (tests use a reader they can hold still)."""
    name = source.name
    started = time.monotonic()

    def result(status: str, reason: str = "", **extra: object) -> MoveResult:
        return MoveResult(status, name, seconds=time.monotonic() - started, reason=reason, **extra)  # type: ignore[arg-type]

    try:
        identity = SourceIdentity.of(source)
    except OSError as exc:
        return result(FAILED, f"cannot read {source}: {exc.strerror or exc}")
    try:
        dir_fd = part_files.open_directory(dest_dir)
    except OSError as exc:
        return result(DRIVE_GONE, f"cannot open {dest_dir}: {exc.strerror}")
    part = _PartFile(dir_fd, name)
    copier: _Copier | None = None
    replaced: Path | None = None
    registered = False
    try:
        present, digest = _already_there(dir_fd, dest_dir, source, identity)
        if present:
            kept = delete_source(source, identity)
            return result(MOVED, kept or "already on the drive, identical (an earlier run stopped before deleting the source)",
                          destination=dest_dir / name, size=identity.size, hexdigest=digest, source_deleted=not kept)
        replaced = _reserve(dir_fd, dest_dir, part, identity.size, options.may_replace_og and kind == KIND_POOL)
        if on_part is not None:
            on_part(dest_dir / part.name)
            registered = True
        try:
            src_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _Stop(FAILED, f"cannot open {source}: {exc.strerror}") from None
        assert part.fd is not None
        copier = _Copier(src_fd, part.fd, identity.size, chunk=options.chunk, read=read, verify=options.verify,
                         bytes_per_second=options.bytes_per_second).start()
        if not watch(copier, options.stall_seconds, progress_cb):
            # Said before the clean-up: removing the part file may itself wait for a hung disk.
            log.info("%s: stalled at byte %d of %d (%s phase); aborting and removing %s", name, copier.progress,
                     identity.size, copier.phase, part.name)
            raise _Stop(FAILED, f"stalled: no byte {'copied' if copier.phase == 'copy' else 'read back'} for "
                                f"{options.stall_seconds:g} s (at byte {copier.progress} of {identity.size})",
                        stalled=True)
        if copier.error is not None:
            error = copier.error
            if isinstance(error, _Stop):
                raise error
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _Stop(NO_ROOM, f"{dest_dir} ran out of space while copying")
            raise _Stop(FAILED, f"copy failed: {getattr(error, 'strerror', None) or error}")
        if SourceIdentity.of(source) != identity:
            raise _Stop(FAILED, f"{source} changed while it was being copied")
        if options.verify and copier.verified_hexdigest != copier.hexdigest:
            raise _Stop(FAILED, f"the copy on the drive differs from the source (read back {copier.verified_hexdigest}, "
                                f"source {copier.hexdigest})")
        _commit(dir_fd, part, name, dest_dir)
        kept = delete_source(source, identity)
        if kept:
            log.warning("moved %s to %s but kept the source: %s", name, dest_dir, kept)
        return result(MOVED, kept, destination=dest_dir / name, size=identity.size, hexdigest=copier.hexdigest,
                      source_deleted=not kept, replaced=replaced)
    except _Stop as stop:
        return result(stop.status, stop.reason, stalled=stop.stalled, replaced=replaced)
    except OSError as exc:
        return result(FAILED, f"{exc.strerror or exc}", replaced=replaced)
    finally:
        if copier is not None:
            copier.abandon()  # closes the descriptors now, or when a stuck read or write returns
        elif part.fd is not None:
            os.close(part.fd)
        part.remove()
        if registered and on_part is not None:
            on_part(None)
        os.close(dir_fd)
