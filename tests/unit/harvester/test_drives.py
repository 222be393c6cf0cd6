"""Finding plot drives (mount patterns, bind mounts, names, the user's drive argument) and
counting what is on them, with unchanged directories counted from the cache."""

from __future__ import annotations

import pytest

from utilities.errors import DriveError
from utilities.harvester.drives import (
    DriveLocation,
    DriveState,
    Mount,
    assign_names,
    discover_drives,
    find_drive,
    mount_of,
    select_plot_mounts,
)
from utilities.settings.harvester import DriveDiscoverySettings

GB = 10**9
PLOT = 100 * GB


def _drive(name: str, free_plots: float, mounted: bool = True) -> DriveState:
    loc = DriveLocation(name, f"/mnt/e0/front/column0/{name}", f"/dev/{name}", "xfs", (f"/mnt/e0/front/column0/{name}",))
    return DriveState(loc, total_bytes=10 * PLOT, used_bytes=0, free_bytes=int(free_plots * PLOT), mounted=mounted)


def test_default_patterns_pick_enclosure_drives_only_in_natural_order() -> None:
    mounts = [
        Mount("/dev/sda1", "/", "ext4"),
        Mount("/dev/sdc1", "/mnt/enclosure0/front/column1/drive10", "xfs"),
        Mount("/dev/sdb1", "/mnt/enclosure0/front/column0/drive2", "xfs"),
        Mount("tmpfs", "/mnt/enclosure0/front/column0/drive3", "tmpfs"),
        Mount("/dev/sdd1", "/mnt/backup/drive1", "ext4"),
        Mount("/dev/nvme0n1p1", "/mnt/enclosure1/rear/column0/drive9", "xfs"),
    ]
    picked = select_plot_mounts(mounts, DriveDiscoverySettings())
    assert [m.mountpoint for m in picked] == [
        "/mnt/enclosure0/front/column0/drive2",
        "/mnt/enclosure0/front/column1/drive10",
        "/mnt/enclosure1/rear/column0/drive9",
    ]


def test_custom_layout_keeps_mounts_sharing_a_device_name() -> None:
    """Every tmpfs is called "tmpfs": the device name cannot tell filesystems apart."""
    discovery = DriveDiscoverySettings(device_patterns=("/dev/mapper/*", "tmpfs"), mountpoint_patterns=("/srv/chia/*",))
    mounts = [
        Mount("/dev/mapper/mpathb", "/srv/chia/b", "ext4"),
        Mount("tmpfs", "/srv/chia/t2", "tmpfs"),
        Mount("tmpfs", "/srv/chia/t1", "tmpfs"),
    ]
    picked = [m.mountpoint for m in select_plot_mounts(mounts, discovery)]
    assert picked == ["/srv/chia/b", "/srv/chia/t1", "/srv/chia/t2"]


def test_one_filesystem_at_two_mountpoints_is_one_drive(tmp_path) -> None:
    """Two directories on one filesystem (a bind mount's view) are taken once, by st_dev."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    discovery = DriveDiscoverySettings(device_patterns=("/dev/x",), mountpoint_patterns=(str(tmp_path / "*"),))
    mounts = [Mount("/dev/x", str(tmp_path / "b"), "ext4"), Mount("/dev/x", str(tmp_path / "a"), "ext4")]
    drives = discover_drives(discovery, mounts)
    assert [(d.mountpoint, d.plot_dirs) for d in drives] == [(str(tmp_path / "a"), (str(tmp_path / "a"),))]


def test_mount_of_takes_longest_prefix() -> None:
    mounts = [Mount("/dev/vda", "/", "ext4"), Mount("/dev/sdb1", "/srv/d1", "xfs"), Mount("/dev/sdc1", "/srv/d10", "xfs")]
    assert mount_of("/srv/d10/plots", mounts).device == "/dev/sdc1"
    assert mount_of("/srv/d1", mounts).device == "/dev/sdb1"
    assert mount_of("/home/x", mounts).device == "/dev/vda"


def test_names_are_basenames_unless_ambiguous() -> None:
    names = assign_names(["/mnt/a/drive1", "/mnt/b/drive1", "/mnt/a/drive2"])
    assert names == {"/mnt/a/drive1": "/mnt/a/drive1", "/mnt/b/drive1": "/mnt/b/drive1", "/mnt/a/drive2": "drive2"}


def test_find_drive_by_name_or_mountpoint() -> None:
    locs = [_drive("drive0", 1).location, _drive("drive1", 1).location]
    assert find_drive(locs, "drive1").name == "drive1"
    assert find_drive(locs, "/mnt/e0/front/column0/drive0/").name == "drive0"
    with pytest.raises(DriveError, match="drive7"):
        find_drive(locs, "drive7")


def test_unchanged_directory_is_counted_from_the_cache_and_changes_are_seen(tmp_path) -> None:
    import os
    import time

    from tests.support.plotmaker import copy_plot
    from utilities.harvester.drives import scan_drives

    old = time.time() - 3600
    plots = [copy_plot("og", tmp_path), copy_plot("pool", tmp_path)]
    for p in plots:
        os.utime(p, (old, old))
    # The directory too: the new file below then changes its mtime even on a filesystem whose
    # timestamps move only every few milliseconds.
    os.utime(tmp_path, (old, old))
    location = DriveLocation("d", str(tmp_path), "/dev/x", "ext4", (str(tmp_path),))
    first = scan_drives([location], {})
    assert first.headers_read == 2 and first.dir_mtimes == {str(tmp_path): os.stat(tmp_path).st_mtime_ns}
    cache = dict(first.header_upserts)

    # Unchanged directory: not even stat-ed. Prove it by changing a file behind the scan's back
    # (in place, keeping the directory's mtime): the cached size is what gets counted.
    dir_times = os.stat(tmp_path)
    os.truncate(plots[0], 1000)
    os.utime(plots[0], (old, old))
    os.utime(tmp_path, ns=(dir_times.st_atime_ns, dir_times.st_mtime_ns))
    second = scan_drives([location], cache, known_dir_mtimes=first.dir_mtimes)
    assert second.headers_read == 0
    assert second.drives[0].plot_bytes == sum(h.size for h in cache.values())
    assert (second.drives[0].plots_og, second.drives[0].plots_pool) == (1, 1)

    # A new file changes the directory's mtime: listed again, the new plot is counted.
    copy_plot("pool", tmp_path)
    third = scan_drives([location], cache, known_dir_mtimes=second.dir_mtimes)
    assert third.drives[0].plots_pool == 2 and third.headers_read >= 1


PLOT2_HEADER = b"pos2" + bytes([1]) + bytes([0x11]) * 32 + bytes([28, 2]) + bytes(112)  # pos2-chip draft 1


def test_plot2_files_and_plot_groups_are_counted(tmp_path) -> None:
    """A .plot2 is a (pool) plot; a .gplot counts as one plot, of unknown kind unless its header
    layout is known, and its unknown header does not make the directory be listed every pass."""
    import os
    import time

    from utilities.harvester.drives import scan_drives

    old = time.time() - 3600
    stem = "plot-k28-2026-01-01-00-00-"
    plot2 = tmp_path / (stem + "1" * 64 + ".plot2")
    plot2.write_bytes(PLOT2_HEADER + bytes(1000))
    group = tmp_path / (stem + "2" * 64 + ".gplot")
    group.write_bytes(b"GRP?" + bytes(2000))  # a group layout nobody has seen yet
    (tmp_path / ("." + stem + "3" * 64 + ".gplot.part")).write_bytes(b"x")  # never counted
    for path in (plot2, group):
        os.utime(path, (old, old))
    os.utime(tmp_path, (old, old))
    location = DriveLocation("d", str(tmp_path), "/dev/x", "ext4", (str(tmp_path),))
    first = scan_drives([location], {})
    drive = first.drives[0]
    assert (drive.plots_og, drive.plots_pool, drive.plots_unknown) == (0, 1, 1)
    assert drive.plot_bytes == plot2.stat().st_size + group.stat().st_size
    assert first.header_upserts[str(group)].format == "gplot"

    # Unchanged directory: counted from the cache although the group's kind is unknown. Shown by
    # changing the plot2 in place behind the scan's back: its cached size is what is counted.
    cache = dict(first.header_upserts)
    dir_times = os.stat(tmp_path)
    os.truncate(plot2, 10)
    os.utime(plot2, (old, old))
    os.utime(tmp_path, ns=(dir_times.st_atime_ns, dir_times.st_mtime_ns))
    second = scan_drives([location], cache, known_dir_mtimes=first.dir_mtimes)
    assert second.drives[0].plot_bytes == drive.plot_bytes
    assert (second.drives[0].plots_pool, second.drives[0].plots_unknown) == (1, 1)

    # A group whose header layout is known is counted by its header: a pool plot.
    plot2.write_bytes(PLOT2_HEADER)
    group.write_bytes(b"PoS2" + bytes([2]) + bytes(32) + bytes([28, 2]) + bytes(11) + bytes([112]) + bytes(112))
    third = scan_drives([location], {})
    assert (third.drives[0].plots_pool, third.drives[0].plots_unknown) == (2, 0)
