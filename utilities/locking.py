"""Kernel-released file locks (``flock``), so a run killed at any line leaves no stale lock.

The original used a "checkfile" that a crashed run left behind, blocking every later run until a
human deleted it. An ``flock`` dies with its process. The holder's pid is written into the file
only to make the "busy" message useful; the lock itself never depends on that text.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from utilities.errors import LockBusy


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def exclusive_lock(path: Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``path``; raise ``LockBusy`` at once if another process has it.

    ``what`` names the job in the busy message ("drive_manager.py cron run").
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockBusy(f"{what} is already running (pid {_read_holder(fd)}, lock {path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

