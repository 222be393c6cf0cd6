"""A receive's write-back a window behind the stream, on a real file with the real
sync_file_range (recorded on the way through): the calls, the errors, the silent fallback."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from utilities.transfer.writeback import (
    SYNC_FILE_RANGE_WRITE,
    WAIT_AND_WRITE,
    StreamWriter,
    SyncRange,
    WriteBehind,
    load_sync_file_range,
)

WINDOW = 64 * 1024


@pytest.fixture
def part(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "part", os.O_RDWR | os.O_CREAT, 0o644)
    yield fd
    os.close(fd)


def recording(calls: list[tuple[int, int, int]], fail_on: int = 0) -> SyncRange:
    real = load_sync_file_range()
    assert real is not None, "sync_file_range missing from the C library of this Linux"

    def sync_range(fd: int, offset: int, nbytes: int, flags: int) -> None:
        calls.append((offset, nbytes, flags))
        if flags & fail_on:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd, offset, nbytes, flags)

    return sync_range


def write_windows(fd: int, behind: WriteBehind, windows: int) -> None:
    for n in range(windows):
        os.write(fd, os.urandom(WINDOW))
        behind.window(n * WINDOW, (n + 1) * WINDOW)


def test_each_window_is_started_and_the_one_before_waited_for(part: int) -> None:
    calls: list[tuple[int, int, int]] = []
    behind = WriteBehind(part, recording(calls))
    write_windows(part, behind, 3)
    behind.drop_all()
    assert calls == [
        (0, 0, 0),  # the probe: flags 0 writes nothing
        (0, WINDOW, SYNC_FILE_RANGE_WRITE),
        (WINDOW, WINDOW, SYNC_FILE_RANGE_WRITE),
        (0, WINDOW, WAIT_AND_WRITE),
        (2 * WINDOW, WINDOW, SYNC_FILE_RANGE_WRITE),
        (WINDOW, WINDOW, WAIT_AND_WRITE),
    ]
    assert behind.dropped == 2 * WINDOW and behind.in_flight is None


def test_a_write_back_error_is_raised_not_taken_for_unsupported(part: int) -> None:
    calls: list[tuple[int, int, int]] = []
    behind = WriteBehind(part, recording(calls, fail_on=WAIT_AND_WRITE & ~SYNC_FILE_RANGE_WRITE))
    os.write(part, os.urandom(2 * WINDOW))
    behind.window(0, WINDOW)
    with pytest.raises(OSError) as failed:
        behind.window(WINDOW, 2 * WINDOW)
    assert failed.value.errno == errno.EIO


def _refusing(fd: int, offset: int, nbytes: int, flags: int) -> None:
    raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))  # as under a seccomp filter


@pytest.mark.parametrize("sync_range", [None, _refusing], ids=["not in libc", "refused by the kernel"])
def test_without_sync_file_range_nothing_happens_and_nothing_fails(part: int, sync_range: SyncRange | None) -> None:
    behind = WriteBehind(part, sync_range)
    assert behind.sync_range is None
    write_windows(part, behind, 3)
    behind.drop_all()
    assert os.fstat(part).st_size == 3 * WINDOW


def test_a_stream_is_written_whole_with_progress_once_per_window(part: int) -> None:
    calls: list[tuple[int, int, int]] = []
    told: list[tuple[int, bool]] = []
    writer = StreamWriter(part, recording(calls), lambda exc, offset: exc, lambda n, first: told.append((n, first)),
                          window=WINDOW)
    data = os.urandom(3 * WINDOW + 100)
    piece = WINDOW // 3 + 7  # pieces that straddle the window edges, as a socket hands them over
    for offset in range(0, len(data), piece):
        writer.write(memoryview(data)[offset : offset + piece], offset)
    assert os.pread(part, len(data) + 1, 0) == data
    assert [first for _, first in told] == [True, False, False]
    assert all((i + 1) * WINDOW <= n < (i + 1) * WINDOW + piece for i, (n, _) in enumerate(told))
    assert [flags for _, _, flags in calls].count(SYNC_FILE_RANGE_WRITE) == 3


def test_a_failed_write_is_worded_by_the_writer(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "read-only", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        writer = StreamWriter(fd, None, lambda exc, offset: ValueError(f"{exc.errno} at {offset}"),
                              lambda n, first: None)
        with pytest.raises(ValueError, match=f"{errno.EBADF} at 5"):
            writer.write(memoryview(b"abc"), 5)
    finally:
        os.close(fd)
