"""A source read that stops answering on cue: a stalled disk, as a local move's copy sees it."""

from __future__ import annotations

import threading

from utilities.transfer.copy_worker import pread_into


class GatedReader:
    """``pread`` that reads normally until ``hold_after`` bytes, then blocks until ``gate`` is
    set: from the copy's point of view, a disk that stopped answering. ``holding`` is set once
    a read is held. Tests set the gate when they finish, so the abandoned worker can end."""

    def __init__(self, hold_after: int = 256 * 1024) -> None:
        self.hold_after = hold_after
        self.gate = threading.Event()
        self.holding = threading.Event()

    def __call__(self, fd: int, buffer: memoryview, offset: int) -> int:
        if offset >= self.hold_after:
            self.holding.set()
            self.gate.wait()
        return pread_into(fd, buffer, offset)
