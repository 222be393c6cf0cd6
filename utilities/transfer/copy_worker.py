"""The bytes of a local copy: copied and hashed on a worker thread, written back in windows,
read back from the disk, and watched for stalls.

``local_copy.move_plot`` lands the plot (``landing.py``) and hands the copy itself to a
``Copier``; this module is what a local copy does that a network receive does not:

* the read is hashed (xxh3-128) as it happens; after the final ``fsync`` the copy is dropped
  from the page cache and read back from the disk, and that hash must match (hashing the buffer
  just written would prove nothing: it is the same memory the source hash saw);
* write-back in windows (``sync_file_range``): the disk writes window N while the worker reads
  window N+1, and both files' pages leave the cache behind it;
* ``watch``: the caller follows the copy's own progress, so a read or write that never returns
  (a dying disk, a hung USB bridge) is a stall after ``stall_seconds`` without a byte, which
  aborts the move instead of hanging every later cron run. A stalled worker keeps its file
  descriptors until its system call returns, so a reused descriptor number can never receive
  its late write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable

import xxhash

from utilities.transfer.writeback import (  # noqa: F401 - the flags are also read from here (tests, bench)
    SYNC_FILE_RANGE_WAIT_AFTER,
    SYNC_FILE_RANGE_WAIT_BEFORE,
    SYNC_FILE_RANGE_WRITE,
    WAIT_AND_WRITE,
    SyncRange,
    load_sync_file_range,
)

log = logging.getLogger(__name__)

# Write back and drop the written pages in windows of this size: the final fsync stays short
# (no stall alarm while it runs) and a 100 GiB copy does not push the plotter's working set out
# of memory. With sync_file_range at most two windows are dirty or in flight at once (the one
# being written and the one the disk is writing), so the dirty memory stays under 2 windows.
SYNC_EVERY = 64 * 1024 * 1024

Reader = Callable[[int, memoryview, int], int]
"""Reads into the buffer from the fd at the offset, returns the count (``pread``)."""
Progress = Callable[[str, int, int], None]
"""Called with (phase, bytes done, bytes in the phase); phase is "copy" or "verify"."""


def pread_into(fd: int, buffer: memoryview, offset: int) -> int:
    return os.preadv(fd, [buffer], offset)


class CopyFailed(Exception):
    """The copy cannot be trusted (the source shrank, the copy reads back short); the reason."""


# -- write-back (sync_file_range as writeback.py loads it, shared with the receiver) -------------

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
            self.sync_range(self.part_fd, before_start, before_end - before_start, WAIT_AND_WRITE)
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


class Copier:
    """Copies and hashes on a worker thread; ``progress`` is the only thing the watcher reads.

    Ownership of the two descriptors: the caller's while the worker runs normally; if the
    caller abandons a stalled copy, whichever of the two finishes last closes them (so a late
    write can never land in a descriptor number reused for another file).
    """

    def __init__(
        self,
        src_fd: int,
        part_fd: int,
        size: int,
        *,
        chunk: int,
        read: Reader,
        verify: bool,
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

    def start(self) -> Copier:
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
                raise CopyFailed(f"the source ended at byte {offset} of {self.size}: it shrank while being copied")
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
                raise CopyFailed(f"the copy reads back only {offset} of {self.size} bytes")
            digest.update(view[:got])
            offset += got
            self.progress = offset
        os.posix_fadvise(self.part_fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return digest.hexdigest()


def watch(copier: Copier, stall_seconds: float, progress_cb: Progress | None) -> bool:
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
