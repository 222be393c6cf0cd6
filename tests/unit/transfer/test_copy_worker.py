"""The copy's write-back in windows (sync_file_range a window behind, fdatasync without it) and
its errors, seen through whole local moves on real files."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.hashing import xxh3
from tests.support.plotmaker import copy_plot
from tests.support.waiting import DEADLINE
from utilities.transfer import copy_worker
from utilities.transfer.copy_worker import pread_into
from utilities.transfer.local_copy import FAILED, MOVED, MoveOptions, move_plot
from utilities.transfer.part_files import part_name

#: stall_seconds where no test makes a stall: a busy machine may pause a healthy copy for seconds.
NO_STALL = DEADLINE
WINDOW = 256 * 1024  # write-back window in the tests below: a k=18 plot spans about 15
CHUNK = 64 * 1024
WAIT_AND_WRITE = (copy_worker.SYNC_FILE_RANGE_WAIT_BEFORE | copy_worker.SYNC_FILE_RANGE_WRITE
                  | copy_worker.SYNC_FILE_RANGE_WAIT_AFTER)


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir())


# -- write-back of the copy in windows -----------------------------------------------------------


@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copy_worker, "SYNC_EVERY", WINDOW)


def _cached_bytes(path: Path) -> int:
    """How much of ``path`` is in the page cache (util-linux fincore, i.e. mincore(2))."""
    if shutil.which("fincore") is None:
        pytest.skip("fincore (util-linux) is not installed")
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True, timeout=DEADLINE).stdout
    return int(out.strip())


def test_copy_is_written_back_a_window_behind_and_leaves_nothing_cached(
    dirs: tuple[Path, Path], small_windows: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = copy_worker.load_sync_file_range()
    assert real is not None, "sync_file_range missing from the C library of this Linux"
    calls: list[tuple[int, int, int]] = []

    def recording(fd: int, offset: int, nbytes: int, flags: int) -> None:
        calls.append((offset, nbytes, flags))
        real(fd, offset, nbytes, flags)

    monkeypatch.setattr(copy_worker, "_SYNC_FILE_RANGE", recording)
    source_dir, dest = dirs
    plot = copy_plot("pool", source_dir)
    digest, size = xxh3(plot), plot.stat().st_size
    part = dest / part_name(plot.name)
    cached_while_copying: list[int] = []

    def sampling_reader(fd: int, buffer: memoryview, offset: int) -> int:
        if offset and offset % (4 * WINDOW) == 0:
            cached_while_copying.append(_cached_bytes(part))
        return pread_into(fd, buffer, offset)

    result = move_plot(plot, dest, MoveOptions(stall_seconds=NO_STALL, verify=False, chunk=CHUNK), read=sampling_reader)
    assert result.status == MOVED, result.reason
    assert _cached_bytes(dest / plot.name) == 0  # dropped after the final fsync, even unverified
    assert xxh3(dest / plot.name) == digest == result.hexdigest
    # window N's write-back is started, then window N-1 is waited for (and dropped)
    expected = [(0, 0, 0)]  # the probe: flags 0 writes nothing
    for n in range(size // WINDOW):
        expected.append((n * WINDOW, WINDOW, copy_worker.SYNC_FILE_RANGE_WRITE))
        if n:
            expected.append(((n - 1) * WINDOW, WINDOW, WAIT_AND_WRITE))
    assert calls == expected
    assert len(cached_while_copying) >= 2 and max(cached_while_copying) <= 2 * WINDOW


def _refusing(fd: int, offset: int, nbytes: int, flags: int) -> None:
    raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))  # as under a seccomp filter


@pytest.mark.parametrize("sync_range", [None, _refusing], ids=["not in libc", "refused by the kernel"])
def test_without_sync_file_range_every_window_is_fdatasynced(
    dirs: tuple[Path, Path], small_windows: None, monkeypatch: pytest.MonkeyPatch, sync_range: object,
) -> None:
    monkeypatch.setattr(copy_worker, "_SYNC_FILE_RANGE", sync_range)
    real_fdatasync = os.fdatasync
    synced: list[int] = []

    def counting_fdatasync(fd: int) -> None:
        synced.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(copy_worker.os, "fdatasync", counting_fdatasync)
    source_dir, dest = dirs
    plot = copy_plot("og", source_dir)
    digest, size = xxh3(plot), plot.stat().st_size
    result = move_plot(plot, dest, MoveOptions(stall_seconds=NO_STALL, chunk=CHUNK))
    assert result.status == MOVED, result.reason
    assert len(synced) == size // WINDOW
    assert _cached_bytes(dest / plot.name) == 0
    assert xxh3(dest / plot.name) == digest == result.hexdigest
    assert _leftovers(dest) == [plot.name]


def test_write_back_error_fails_the_move_and_is_not_taken_for_unsupported(
    dirs: tuple[Path, Path], small_windows: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = copy_worker.load_sync_file_range()
    assert real is not None

    def failing_wait(fd: int, offset: int, nbytes: int, flags: int) -> None:
        if flags & copy_worker.SYNC_FILE_RANGE_WAIT_AFTER:  # the disk rejected a window
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd, offset, nbytes, flags)

    monkeypatch.setattr(copy_worker, "_SYNC_FILE_RANGE", failing_wait)
    source_dir, dest = dirs
    plot = copy_plot("pool", source_dir)
    digest = xxh3(plot)
    result = move_plot(plot, dest, MoveOptions(stall_seconds=NO_STALL, chunk=CHUNK))
    assert result.status == FAILED and result.reason == f"copy failed: {os.strerror(errno.EIO)}"
    assert _leftovers(dest) == []
    assert xxh3(plot) == digest
