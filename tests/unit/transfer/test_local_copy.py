"""One local move on real files: intact copy, stall, existing destinations, changed sources.

The write-back windows of the copy are tests/unit/transfer/test_copy_worker.py's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gated_reader import GatedReader
from tests.support.hashing import xxh3
from tests.support.plotmaker import copy_plot
from tests.support.waiting import DEADLINE
from utilities.transfer.copy_worker import pread_into
from utilities.transfer.local_copy import FAILED, MOVED, MoveOptions, move_plot
from utilities.transfer.part_files import part_name

#: stall_seconds where no test makes a stall: a busy machine may pause a healthy copy for seconds.
NO_STALL = DEADLINE


@pytest.fixture
def gated() -> Iterator[GatedReader]:
    reader = GatedReader(hold_after=64 * 1024)
    try:
        yield reader
    finally:
        reader.gate.set()  # let the abandoned worker thread finish


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir())


def test_plot_is_moved_intact(dirs: tuple[Path, Path]) -> None:
    source_dir, dest = dirs
    plot = copy_plot("pool", source_dir)
    digest, size = xxh3(plot), plot.stat().st_size
    seen: list[tuple[str, int, int]] = []
    result = move_plot(plot, dest, MoveOptions(stall_seconds=NO_STALL), kind="pool", progress_cb=lambda *a: seen.append(a))
    assert result.status == MOVED and result.source_deleted, result.reason
    assert result.destination == dest / plot.name and result.size == size
    assert xxh3(dest / plot.name) == digest == result.hexdigest
    assert not plot.exists()
    assert _leftovers(dest) == [plot.name]
    assert seen[-1] == ("verify", size, size)  # the copy was read back before the source went


def test_stalled_copy_is_aborted_and_cleaned(dirs: tuple[Path, Path], gated: GatedReader) -> None:
    source_dir, dest = dirs
    plot = copy_plot("og", source_dir)
    digest = xxh3(plot)
    parts: list[Path | None] = []
    result = move_plot(plot, dest, MoveOptions(stall_seconds=0.4, chunk=64 * 1024), read=gated, on_part=parts.append)
    assert gated.holding.is_set()
    assert result.status == FAILED and result.stalled
    assert "stalled: no byte copied for 0.4 s (at byte 65536 of" in result.reason
    assert _leftovers(dest) == []  # the part file is gone although the worker still holds it
    assert parts == [dest / part_name(plot.name), None]
    assert xxh3(plot) == digest


def test_identical_plot_already_there_only_deletes_the_source(dirs: tuple[Path, Path]) -> None:
    source_dir, dest = dirs
    plot = copy_plot("pool", source_dir)
    (dest / plot.name).write_bytes(plot.read_bytes())  # a run killed after its rename
    result = move_plot(plot, dest, MoveOptions(stall_seconds=NO_STALL))
    assert result.status == MOVED and result.source_deleted and "already on the drive" in result.reason
    assert not plot.exists()


def test_different_file_under_the_same_name_is_never_overwritten(dirs: tuple[Path, Path]) -> None:
    source_dir, dest = dirs
    plot = copy_plot("pool", source_dir)
    other = bytearray(plot.read_bytes())
    other[-1] ^= 0xFF
    (dest / plot.name).write_bytes(bytes(other))
    result = move_plot(plot, dest, MoveOptions(stall_seconds=NO_STALL))
    assert result.status == FAILED and "different content" in result.reason
    assert plot.exists() and (dest / plot.name).read_bytes() == bytes(other)


def test_source_rewritten_during_the_copy_is_kept(dirs: tuple[Path, Path]) -> None:
    source_dir, dest = dirs
    plot = copy_plot("pool", source_dir)
    # Written long ago (as a finished plot is): the rewrite below gets another mtime even on a
    # filesystem whose timestamps move only every few milliseconds.
    os.utime(plot, (1_600_000_000, 1_600_000_000))

    def rewriting_reader(fd: int, buffer: memoryview, offset: int) -> int:
        if offset == 0:
            with open(plot, "r+b") as handle:  # a plotter still writing to it
                handle.seek(1000)
                handle.write(b"changed")
        return pread_into(fd, buffer, offset)

    result = move_plot(plot, dest, MoveOptions(stall_seconds=NO_STALL), read=rewriting_reader)
    assert result.status == FAILED and "changed while it was being copied" in result.reason
    assert plot.exists() and _leftovers(dest) == []


def test_stale_part_of_a_killed_copy_is_removed_and_a_live_one_kept(dirs: tuple[Path, Path]) -> None:
    import fcntl

    source_dir, dest = dirs
    plot = copy_plot("pool", source_dir)
    stale = dest / part_name("plot-k18-2026-01-01-00-00-" + "a" * 64 + ".plot")
    stale.write_bytes(b"half a plot")
    live = dest / part_name("plot-k18-2026-01-01-00-00-" + "b" * 64 + ".plot")
    live.write_bytes(b"being received")
    with open(live, "r+b") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # as a living receiver holds its part
        result = move_plot(plot, dest, MoveOptions(stall_seconds=NO_STALL))
    assert result.ok
    assert _leftovers(dest) == sorted([plot.name, live.name])


def test_unwritable_destination_fails_without_touching_the_source(dirs: tuple[Path, Path]) -> None:
    source_dir, dest = dirs
    plot = copy_plot("pool", source_dir)
    result = move_plot(plot, dest / "missing", MoveOptions(stall_seconds=NO_STALL))
    assert result.status == "drive gone" and "cannot open" in result.reason
    assert plot.exists() and os.listdir(dest) == []
