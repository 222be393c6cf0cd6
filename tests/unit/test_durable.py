"""The one atomic write: content, mode and owner, nothing left behind, and the directory fsync."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from utilities import durable
from utilities.durable import atomic_write


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each ``os.fsync`` was called on, by path (read from /proc/self/fd)."""
    calls: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return calls


def test_text_and_bytes_land_with_the_mode_asked(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)
    try:
        atomic_write(tmp_path / "a.txt", "grüße\n")
        atomic_write(tmp_path / "b.sh", b"#!/bin/sh\n", mode=0o755)
    finally:
        os.umask(old_umask)
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "grüße\n"
    assert _mode(tmp_path / "a.txt") == 0o644  # a new file without a mode: 0644, whatever the umask
    assert (tmp_path / "b.sh").read_bytes() == b"#!/bin/sh\n"
    assert _mode(tmp_path / "b.sh") == 0o755
    assert _leftovers(tmp_path) == []


def test_replacing_keeps_the_mode_unless_one_is_given(tmp_path: Path) -> None:
    target = tmp_path / "fstab"
    target.write_text("old\n")
    target.chmod(0o640)
    atomic_write(target, "new\n")
    assert target.read_text() == "new\n" and _mode(target) == 0o640
    atomic_write(target, "newer\n", mode=0o644)
    assert target.read_text() == "newer\n" and _mode(target) == 0o644


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_replacing_keeps_the_owner(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("old\n")
    os.chown(target, 1234, 4321)
    atomic_write(target, "new\n")
    assert (target.stat().st_uid, target.stat().st_gid) == (1234, 4321)
    atomic_write(target, "newer\n", mode=0o600)  # a mode given: written as the writer's file
    assert target.stat().st_uid == os.geteuid()


def test_the_file_then_its_directory_are_fsynced(tmp_path: Path, fsynced: list[str]) -> None:
    target = tmp_path / "export.json"
    target.write_text("{}\n")
    atomic_write(target, '{"a": 1}\n')
    assert len(fsynced) == 2
    temp, directory = (Path(p) for p in fsynced)
    # The temporary file (since renamed) in the same directory, then the directory itself.
    assert temp.parent == tmp_path and temp.name.startswith(".export.json.") and temp.name.endswith(".tmp")
    assert directory == tmp_path


def test_make_parents(tmp_path: Path, fsynced: list[str]) -> None:
    target = tmp_path / "textfile" / "collector" / "m.prom"
    with pytest.raises(FileNotFoundError):
        atomic_write(target, "x 1\n")
    atomic_write(target, "x 1\n", make_parents=True)
    assert target.read_text() == "x 1\n"
    assert Path(fsynced[-1]) == target.parent


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "receive_plot.sh"
    target.write_text("old\n")

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        atomic_write(target, "new\n")
    assert target.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_a_failed_rename_leaves_no_temporary(tmp_path: Path) -> None:
    directory = tmp_path / "out"
    (directory / "m.prom").mkdir(parents=True)  # a rename onto a directory fails
    with pytest.raises(OSError):
        atomic_write(directory / "m.prom", "x 1\n")
    assert sorted(p.name for p in directory.iterdir()) == ["m.prom"]


def test_a_directory_fsync_the_filesystem_cannot_do_is_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "harvester.json"
    failure = [errno.EINVAL]

    def refusing(path: str | os.PathLike[str]) -> None:
        raise OSError(failure[0], os.strerror(failure[0]))

    monkeypatch.setattr(durable, "fsync_directory", refusing)
    atomic_write(target, "1\n")  # EINVAL: this filesystem does not fsync directories
    assert target.read_text() == "1\n"
    failure[0] = errno.EIO  # a real error is raised (the new file is in place by then)
    with pytest.raises(OSError, match=os.strerror(errno.EIO)):
        atomic_write(target, "2\n")
    assert target.read_text() == "2\n"
    assert _leftovers(tmp_path) == []


def test_a_symlink_at_the_path_is_replaced_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_text("real\n")
    link = tmp_path / "link"
    link.symlink_to(real)
    atomic_write(link, "new\n")
    assert not link.is_symlink() and link.read_text() == "new\n"
    assert real.read_text() == "real\n"
