"""Write-back in windows: the drive writes a plot while the rest of it is still coming.

Left to itself the kernel keeps a freshly written plot in the page cache until its dirty limits
are reached or the final ``fsync``: meanwhile the drive sits idle, the memory fills, and the
fsync then takes as long as writing the whole plot (seconds to minutes on an HDD, with the
plotter waiting for OK).  ``sync_file_range`` fixes that without slowing the stream: when a
window of the file is complete its write-back is *started* (``WRITE``, which returns at once),
and the window before it is waited for (usually long done) and dropped from the page cache.
So the drive always has one window to write, at most two windows per writer are dirty or in
flight, and the final fsync covers only the last one or two.

Both writers use it: a local copy (``copy_worker.py``, which falls back to fdatasync per window)
and a network receive (``StreamWriter`` on ``WriteBehind`` here, which falls back to doing
nothing: a receive must never stall its stream on a file system that cannot write back in
ranges).  Only the standard library (ctypes) is imported: the receiver starts fast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

# sync_file_range(2) flags (linux/fs.h)
SYNC_FILE_RANGE_WAIT_BEFORE = 1
SYNC_FILE_RANGE_WRITE = 2
SYNC_FILE_RANGE_WAIT_AFTER = 4
WAIT_AND_WRITE = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER

# A receiver's window: small enough that eight receivers at once keep well under 1 GiB dirty,
# big enough that the calls cost nothing next to the bytes (about 30 windows a second at 1 GB/s).
RECEIVE_WINDOW = 32 * 1024 * 1024

SyncRange = Callable[[int, int, int, int], None]
"""``sync_file_range(fd, offset, nbytes, flags)``; raises OSError when the call fails."""


def load_sync_file_range() -> SyncRange | None:
    """libc's sync_file_range through ctypes, or None where the C library has none (not Linux).

    ctypes releases the GIL for the call, so another thread keeps running while this one waits
    on the disk."""
    import ctypes  # loaded by the first writer that needs it, not by every importer's start-up

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


def usable(sync_range: SyncRange | None, fd: int) -> SyncRange | None:
    """``sync_range`` if it works on ``fd`` (flags 0: checks the call exists and takes this
    file, writes nothing), else None (a seccomp filter, a file system without it)."""
    if sync_range is None:
        return None
    try:
        sync_range(fd, 0, 0, 0)
    except OSError:
        return None
    return sync_range


class WriteBehind:
    """A file written front to back (a receive): each finished window's write-back is started,
    the one before it waited for and dropped from the page cache.

    Errors of the calls are raised as OSError (the caller words them as write failures): the
    kernel reports a write-back error to a file only once, so one swallowed here would never
    reach the final fsync.  Without a usable sync_file_range every call here does nothing.
    """

    def __init__(self, fd: int, sync_range: SyncRange | None) -> None:
        self.fd = fd
        self.sync_range = usable(sync_range, fd)
        self.in_flight: tuple[int, int] | None = None  # started, not yet waited for
        self.dropped = 0  # bytes before this are written and dropped from the cache

    def window(self, start: int, end: int) -> None:
        """Bytes ``start..end`` are written: start their write-back, finish the previous window's."""
        sync_range = self.sync_range
        if sync_range is None:
            return
        sync_range(self.fd, start, end - start, SYNC_FILE_RANGE_WRITE)
        if self.in_flight is not None:
            before_start, before_end = self.in_flight
            sync_range(self.fd, before_start, before_end - before_start, WAIT_AND_WRITE)
            os.posix_fadvise(self.fd, self.dropped, before_end - self.dropped, os.POSIX_FADV_DONTNEED)
            self.dropped = before_end
        self.in_flight = (start, end)

    def drop_all(self) -> None:
        """After the final fsync: drop what is still cached (nothing is dirty any more)."""
        self.in_flight = None
        with contextlib.suppress(OSError):  # only a hint: a plot in the cache is still a plot
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)


class StreamWriter:
    """A stream's bytes into a file, front to back, written back a window behind (``WriteBehind``),
    with ``progress(bytes so far, first window?)`` told once per window.

    ``write`` is the receive loop's callback (``Intake.receive``): one write and one comparison
    per piece unless a window just ended.  A failed write or write-back raises what
    ``fail(error, offset)`` builds (the writer words it).
    """

    def __init__(
        self,
        fd: int,
        sync_range: SyncRange | None,
        fail: Callable[[OSError, int], BaseException],
        progress: Callable[[int, bool], None],
        window: int = RECEIVE_WINDOW,
    ) -> None:
        self.fd = fd
        self.behind = WriteBehind(fd, sync_range)
        self.fail = fail
        self.progress = progress
        self.window = window
        self.window_start = 0
        self.window_end = window

    def write(self, data: memoryview, offset: int) -> None:
        """Write ``data``, which starts at byte ``offset`` of the file."""
        end = offset + len(data)
        fd = self.fd
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError as exc:
            raise self.fail(exc, offset) from None
        if end >= self.window_end:
            self._window_done(end)

    def _window_done(self, end: int) -> None:
        start = self.window_start
        try:
            self.behind.window(start, end)
        except OSError as exc:
            raise self.fail(exc, start) from None
        self.window_start, self.window_end = end, end + self.window
        self.progress(end, start == 0)
