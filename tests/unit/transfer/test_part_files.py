"""The part-file rules receive_plot.py and local moves share, on real files in a temp directory."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from utilities.transfer import part_files
from utilities.transfer.part_files import is_part_name, part_name

NAME = "plot-k32-2021-05-01-00-00-" + "c" * 64 + ".plot"


@pytest.fixture
def dir_fd(drive: Path) -> Iterator[int]:
    fd = part_files.open_directory(drive)
    try:
        yield fd
    finally:
        os.close(fd)


def test_part_names() -> None:
    assert part_name(NAME) == f".{NAME}.part" and is_part_name(part_name(NAME))
    assert not is_part_name(NAME) and not is_part_name(".x.part") and not is_part_name(f".{NAME}.partial")


def test_room_needs_the_margin() -> None:
    assert part_files.has_room(100 + part_files.SPACE_MARGIN, 100)
    assert not part_files.has_room(99 + part_files.SPACE_MARGIN, 100)


def test_stale_part_goes_a_held_one_stays(drive: Path, dir_fd: int) -> None:
    stale, live = drive / part_name(NAME), drive / part_name(NAME.replace("c", "d"))
    stale.write_bytes(b"half a plot")
    live.write_bytes(b"being written")
    (drive / ".unrelated.part").write_bytes(b"not a plot's")
    with open(live, "r+b") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # as a living writer holds its part
        assert sorted(part_files.stale_part_candidates(dir_fd)) == sorted([stale.name, live.name])
        assert part_files.remove_if_stale(dir_fd, stale.name) == part_files.StaleCheck(gone=True, removed=True)
        assert part_files.remove_if_stale(dir_fd, live.name) == part_files.StaleCheck(gone=False)
    assert part_files.remove_if_stale(dir_fd, stale.name) == part_files.StaleCheck(gone=True)
    assert not stale.exists() and live.exists() and (drive / ".unrelated.part").exists()


def test_own_part_is_created_once_preallocated_and_linked_without_replacing(drive: Path, dir_fd: int) -> None:
    part = part_name(NAME)
    fd, inode = part_files.create_part(dir_fd, part)
    try:
        with pytest.raises(FileExistsError):
            part_files.create_part(dir_fd, part)  # a second writer of the same plot
        assert part_files.remove_if_stale(dir_fd, part) == part_files.StaleCheck(gone=False)  # we hold it
        reserved = part_files.preallocate(fd, 1 << 20)
        assert not reserved or os.fstat(fd).st_blocks * 512 >= 1 << 20  # False: no fallocate on this fs
        (drive / NAME).write_bytes(b"someone else's plot")
        with pytest.raises(FileExistsError):
            part_files.link_into_place(dir_fd, part, NAME)
        assert (drive / NAME).read_bytes() == b"someone else's plot"
        (drive / NAME).unlink()
        assert part_files.link_into_place(dir_fd, part, NAME) is True  # linked: the part name stays
        assert (drive / NAME).stat().st_ino == inode
        part_files.remove_own_part(dir_fd, part, inode)
        assert sorted(p.name for p in drive.iterdir()) == [NAME]
    finally:
        os.close(fd)


def test_a_replaced_part_is_not_ours_to_remove(drive: Path, dir_fd: int) -> None:
    part = part_name(NAME)
    fd, inode = part_files.create_part(dir_fd, part)
    os.close(fd)
    (drive / "fresh").write_bytes(b"another writer's part")
    os.rename(drive / "fresh", drive / part)  # a new inode under our part's name
    assert not part_files.is_ours(dir_fd, part, inode)
    part_files.remove_own_part(dir_fd, part, inode)
    assert (drive / part).read_bytes() == b"another writer's part"
