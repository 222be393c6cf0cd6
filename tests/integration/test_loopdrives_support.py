"""Self-tests of the real-drive test helpers (loop devices and tmpfs).

Every drive-discovery test trusts these helpers to (a) produce what the kernel and psutil
really report for a JBOD of mounted drives and (b) leave nothing mounted or attached on a
shared machine, even when a test fails half way.  Both promises are checked here against
/proc/self/mounts and the kernel's loop device list, never against the helpers' own
bookkeeping.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.loopdrives import (
    FILLER_NAME,
    LoopDrive,
    LoopDrives,
    block_size,
    mounts,
    requires_root_and_loop,
    requires_xfs,
)
from tests.support.tmpfs_drives import (
    TmpfsDrives,
    make_sparse_file,
    requires_root_and_tmpfs,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.root]

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

ENCLOSURE = [
    "enclosure0/front/column0/drive0",
    "enclosure0/front/column1/drive0",
    "enclosure0/rear/column0/drive0",
]


# --- independent observers ---------------------------------------------------------------


def loop_backing_files() -> dict[str, str]:
    """Map every attached loop device to its backing file, as the kernel reports it now."""
    out = subprocess.run(
        ["losetup", "--list", "--json", "-O", "NAME,BACK-FILE"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if not out.strip():
        return {}
    return {d["name"]: (d.get("back-file") or "").removesuffix(" (deleted)") for d in json.loads(out)["loopdevices"]}


def mounted_paths() -> set[str]:
    """Every mountpoint in /proc/self/mounts right now."""
    return {mp for _, mp, _ in mounts()}


def assert_released(drives: list[LoopDrive], root: Path) -> None:
    """Nothing under ``root`` is mounted and none of our (device, image) pairs is attached.

    Checked by pair, not by device name alone: after we detach /dev/loopN another process on
    this machine may legitimately attach it to its own file.
    """
    leftover = [mp for mp in mounted_paths() if mp == str(root) or mp.startswith(f"{root}/")]
    assert leftover == []
    attached = loop_backing_files()
    for d in drives:
        assert attached.get(d.device) != str(d.image), f"{d.device} still attached to our image"
        assert not d.image.exists()


def partitions_by_mountpoint(all_: bool = False) -> dict[str, Any]:
    """psutil's view of the mount table, keyed by mountpoint."""
    return {p.mountpoint: p for p in psutil.disk_partitions(all=all_)}


def dumpe2fs_uuid(device: str) -> str:
    """UUID as e2fsprogs reads it from the superblock (independent of blkid)."""
    out = subprocess.run(["dumpe2fs", "-h", device], capture_output=True, text=True, check=True).stdout
    match = re.search(r"^Filesystem UUID:\s+(\S+)$", out, re.MULTILINE)
    assert match, out
    return match.group(1)


# --- loop drives -------------------------------------------------------------------------


@requires_root_and_loop
def test_three_ext4_drives_are_real_mounts_seen_by_psutil(tmp_path: Path) -> None:
    with LoopDrives(tmp_path, ENCLOSURE) as ld:
        drives = ld.drives
        assert [d.mountpoint for d in drives] == [tmp_path.resolve() / m for m in ENCLOSURE]
        parts = partitions_by_mountpoint()
        attached = loop_backing_files()
        for d in drives:
            assert re.fullmatch(r"/dev/loop\d+", d.device)
            assert d.fstype == "ext4"
            assert attached[d.device] == str(d.image)
            assert not d.image.is_relative_to(tmp_path.resolve())
            part = parts[str(d.mountpoint)]
            assert (part.device, part.fstype) == (d.device, "ext4")
            assert UUID_RE.match(d.uuid)
            assert dumpe2fs_uuid(d.device) == d.uuid
            usage = psutil.disk_usage(str(d.mountpoint))
            assert 50 * 2**20 < usage.free <= usage.total < 64 * 2**20
        assert len({d.uuid for d in drives}) == 3
        assert len({d.device for d in drives}) == 3
    assert_released(drives, tmp_path.resolve())
    # Only the directories the helper made are gone; tmp_path itself stays.
    assert tmp_path.is_dir()
    assert not (tmp_path / "enclosure0").exists()


@requires_root_and_loop
def test_fill_leaves_requested_free_space_within_one_block(tmp_path: Path) -> None:
    with LoopDrives(tmp_path, ["enclosure0/drive0"]) as ld:
        (d,) = ld.drives
        bs = block_size(d.mountpoint)
        # Down, up (shrinks the same filler), odd sizes, and completely full.
        for leave in (40_000_000, 10_000_000, 25_000_001, 12_345, 0, 1):
            got = ld.fill(d, leave)
            free = psutil.disk_usage(str(d.mountpoint)).free
            assert got == free
            assert leave <= free < leave + bs, (leave, free, bs)
        assert (d.mountpoint / FILLER_NAME).is_file()
        ld.unfill(d)
        assert psutil.disk_usage(str(d.mountpoint)).free > 50 * 2**20
        with pytest.raises(ValueError, match="cannot leave"):
            ld.fill(d, 10 * 2**30)
    assert_released([d], tmp_path.resolve())


def _write_until_full(directory: Path, size: int) -> int:
    """Write ``size``-byte files (really written, like a plot copy) until ENOSPC."""
    chunk = b"\xa5" * 65536
    n = 0
    while True:
        path = directory / f"plot-{n}.plot"
        try:
            with open(path, "wb") as f:
                remaining = size
                while remaining:
                    remaining -= f.write(chunk[: min(remaining, len(chunk))])
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            assert exc.errno == 28, exc
            path.unlink()
            return n
        n += 1


@requires_root_and_loop
@pytest.mark.parametrize("count", [0, 1, 4])
def test_fill_for_plots_gives_room_for_exactly_n_plots(tmp_path: Path, count: int) -> None:
    plot_size = 3 * 2**20 + 517  # deliberately not block aligned
    with LoopDrives(tmp_path, ["enclosure0/drive0"]) as ld:
        (d,) = ld.drives
        ld.fill_for_plots(d, count, plot_size)
        assert _write_until_full(d.mountpoint, plot_size) == count


@requires_root_and_loop
def test_unmount_and_remount_mid_run(tmp_path: Path) -> None:
    with LoopDrives(tmp_path, ENCLOSURE[:2]) as ld:
        gone, stays = ld.drives
        (gone.mountpoint / "plot-a.plot").write_bytes(b"plot")
        ld.unmount(gone)
        assert not ld.is_mounted(gone)
        parts = partitions_by_mountpoint()
        assert str(gone.mountpoint) not in parts
        assert parts[str(stays.mountpoint)].device == stays.device
        assert gone.mountpoint.is_dir()
        assert list(gone.mountpoint.iterdir()) == []
        assert loop_backing_files()[gone.device] == str(gone.image)

        ld.remount(gone)
        assert ld.is_mounted(gone)
        assert partitions_by_mountpoint()[str(gone.mountpoint)].device == gone.device
        assert (gone.mountpoint / "plot-a.plot").read_bytes() == b"plot"
        assert dumpe2fs_uuid(gone.device) == gone.uuid
        with pytest.raises(RuntimeError, match="still mounted"):
            ld.remount(gone)

        # Left unmounted at exit: cleanup must still detach it.
        ld.unmount(gone)
    assert_released([gone, stays], tmp_path.resolve())


@requires_root_and_loop
def test_cleanup_when_body_raises(tmp_path: Path) -> None:
    seen: list[LoopDrive] = []
    with pytest.raises(RuntimeError, match="boom"), LoopDrives(tmp_path, ENCLOSURE) as ld:
        seen.extend(ld.drives)
        (seen[0].mountpoint / "half-copied.plot").write_bytes(b"x" * 4096)
        raise RuntimeError("boom")
    assert len(seen) == 3
    assert_released(seen, tmp_path.resolve())


@requires_root_and_loop
def test_busy_drive_falls_back_to_lazy_unmount_and_is_released_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Code under test that leaks an open file keeps a real unmount busy.  The mount must
    # still disappear from the tree at exit (lazily, with a warning), and the loop device
    # must go away once the file is finally closed (the kernel's autoclear).
    with LoopDrives(tmp_path, ["enc0/drive0"]) as ld:
        (d,) = ld.drives
        leaked = open(d.mountpoint / "held-open.plot", "wb")  # noqa: SIM115
    try:
        assert "lazy unmount" in caplog.text
        assert [mp for mp in mounted_paths() if mp.startswith(f"{tmp_path.resolve()}/")] == []
    finally:
        leaked.close()
    wait_until("the loop device to be autocleared", lambda: loop_backing_files().get(d.device) != str(d.image))
    assert_released([d], tmp_path.resolve())


@requires_root_and_loop
def test_cleanup_when_setup_fails_half_way(tmp_path: Path) -> None:
    # The second mountpoint cannot be created (its parent is a file): by then the first
    # drive is mounted and the second image is attached and formatted.
    root = tmp_path / "farm"
    root.mkdir()
    (root / "blocked").write_text("not a directory")
    images = tmp_path / "images"
    images.mkdir()
    ld = LoopDrives(root, ["ok/drive0", "blocked/drive1"], image_dir=images)
    with pytest.raises(OSError), ld:
        pytest.fail("body must not run")
    assert [mp for mp in mounted_paths() if mp.startswith(f"{root.resolve()}/")] == []
    attached = loop_backing_files().values()
    assert not any(back.startswith(f"{images.resolve()}/") for back in attached)
    assert list(images.iterdir()) == []
    assert not (root / "ok").exists()
    assert (root / "blocked").read_text() == "not a directory"


@requires_root_and_loop
def test_atexit_backstop_releases_unclosed_drives_only_in_owner(tmp_path: Path) -> None:
    # The child process forks: the grandchild's exit must not tear down the drives its
    # parent still uses; the child's own exit (never closing the drives) must.
    script = textwrap.dedent(
        f"""
        import os, sys, json
        from pathlib import Path
        from tests.support.loopdrives import LoopDrives, mounted_at
        ld = LoopDrives(Path({str(tmp_path)!r}), ["enc0/drive0"]).__enter__()
        (d,) = ld.drives
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # runs atexit handlers in the grandchild
        os.waitpid(pid, 0)
        print(json.dumps({{"device": d.device, "image": str(d.image),
                          "still_mounted": bool(mounted_at(d.mountpoint))}}))
        sys.exit(0)  # no close(): only the atexit backstop cleans up
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["still_mounted"] is True
    assert "never closed" in proc.stderr
    drive = LoopDrive(
        device=info["device"],
        mountpoint=tmp_path.resolve() / "enc0/drive0",
        uuid="",
        fstype="ext4",
        image=Path(info["image"]),
    )
    assert_released([drive], tmp_path.resolve())


@requires_xfs
def test_xfs_drive(tmp_path: Path) -> None:
    with LoopDrives(tmp_path, ["enclosure1/drive0"], fstype="xfs") as ld:
        (d,) = ld.drives
        part = partitions_by_mountpoint()[str(d.mountpoint)]
        assert (part.device, part.fstype) == (d.device, "xfs")
        assert UUID_RE.match(d.uuid)
        assert psutil.disk_usage(str(d.mountpoint)).total > 200 * 2**20
        bs = block_size(d.mountpoint)
        for leave in (100_000_000, 7_654_321):
            ld.fill(d, leave)
            free = psutil.disk_usage(str(d.mountpoint)).free
            assert leave <= free < leave + bs
        ld.unmount(d)
        ld.remount(d)
        assert (d.mountpoint / FILLER_NAME).is_file()
    assert_released([d], tmp_path.resolve())


def test_sizes_below_filesystem_minimum_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="300 MiB"):
        LoopDrives(tmp_path, ["d0"], size_mb=64, fstype="xfs")
    with pytest.raises(ValueError, match="relative"):
        LoopDrives(tmp_path, ["../escape"])
    assert LoopDrives(tmp_path, ["d0"], fstype="xfs").size_mb == 300
    assert LoopDrives(tmp_path, ["d0"]).size_mb == 64


# --- tmpfs drives ------------------------------------------------------------------------


def df_used_bytes(path: Path) -> int:
    """Used bytes as ``df`` prints them."""
    out = subprocess.run(["df", "-B1", "--output=used", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1])


@requires_root_and_tmpfs
def test_tmpfs_drives_hold_sparse_plots_for_free(tmp_path: Path) -> None:
    names = [f"jbod0/slot{i}" for i in range(5)]
    plot_size = 100 * 10**9
    with TmpfsDrives(tmp_path, names, size="20T") as td:
        drives = td.drives
        assert len(drives) == 5
        hidden = partitions_by_mountpoint(all_=False)
        shown = partitions_by_mountpoint(all_=True)
        for d in drives:
            assert str(d.mountpoint) not in hidden  # tmpfs is "nodev": all=False hides it
            part = shown[str(d.mountpoint)]
            assert (part.device, part.fstype) == ("tmpfs", "tmpfs")
            assert psutil.disk_usage(str(d.mountpoint)).total == 20 * 2**40
            for n in range(20):
                make_sparse_file(d.mountpoint / f"plot-{n}.plot", plot_size, b"Proof of Space Plot")
            assert (d.mountpoint / "plot-0.plot").stat().st_size == plot_size
            # 2 TB of apparent plots, at most a page each actually used.
            assert df_used_bytes(d.mountpoint) <= 20 * 4096
            assert psutil.disk_usage(str(d.mountpoint)).used <= 20 * 4096
        td.unmount(drives[0])
        assert str(drives[0].mountpoint) not in partitions_by_mountpoint(all_=True)
        td.remount(drives[0])
        assert list(drives[0].mountpoint.iterdir()) == []
    root = str(tmp_path.resolve())
    assert [mp for mp in mounted_paths() if mp.startswith(f"{root}/")] == []
    assert not (tmp_path / "jbod0").exists()


@requires_root_and_tmpfs
def test_tmpfs_cleanup_when_body_raises(tmp_path: Path) -> None:
    with pytest.raises(KeyError), TmpfsDrives(tmp_path, ["a/d0", "a/d1"], size="1T") as td:
        assert len(td.drives) == 2
        raise KeyError("boom")
    root = str(tmp_path.resolve())
    assert [mp for mp in mounted_paths() if mp.startswith(f"{root}/")] == []
    assert not (tmp_path / "a").exists()
