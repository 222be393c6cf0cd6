"""Old-plot replacement on a real loop drive: one OG plot at a time, never a pool plot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.harvester_env import Harvester, harvester_config
from tests.support.loopdrives import LoopDrives, requires_root_and_loop
from tests.support.plotmaker import cached_plot, copy_plot
from utilities.replace import make_room_for

pytestmark = [pytest.mark.root, requires_root_and_loop]


def test_replace_mode_receive_script_and_rp_delete_one_og_plot_at_a_time(tmp_path: Path) -> None:
    plot_size = max(cached_plot("og").stat().st_size, cached_plot("pool").stat().st_size)
    root = tmp_path / "farm"
    root.mkdir()
    with LoopDrives(root / "mnt", ["enclosure0/front/column0/drive0", "enclosure0/front/column0/drive1"], size_mb=32) as drives:
        d0, d1 = (d.mountpoint for d in drives.drives)
        olds = [copy_plot("og", d0) for _ in range(3)]
        for age, path in enumerate(olds):  # olds[0] is the oldest
            os.utime(path, (1_000_000 + age, 1_000_000 + age))
        pools = [copy_plot("pool", d0) for _ in range(2)]
        drives.fill_for_plots(drives.drives[0], 0, plot_size)
        harvester = Harvester(root)
        config = harvester_config(root, [str(root / "mnt" / "enclosure*/*/column*/drive*")], plot_size,
                                  replace_non_pool_plots=True, fill_empty_drives_first=True,
                                  empty_drives_low_water_mark=1000)
        harvester.write_config(config)
        harvester.run()
        # Free slots (on drive1) are below the low-water mark: replacing starts, on drive0.
        assert harvester.receive_dir() == str(d0)
        # drive0 may replace (it has OG plots), drive1 is filled without replacing.
        assert f'[{{"name":"drive0","dir":"{d0}","replace":true}},{{"name":"drive1","dir":"{d1}","replace":false}}]' \
            in harvester.receive_script.read_text()
        export = harvester.export()
        assert export["extra"]["receive_replaces_old_plots"] is True
        out = harvester.run("-rp").stdout
        assert f"deleted old OG plot {olds[0]}" in out
        assert not olds[0].exists() and all(p.exists() for p in olds[1:] + pools)
        # Room for a plot now: a second -rp deletes nothing.
        assert "no plot deleted" in harvester.run("-rp").stdout
        assert all(p.exists() for p in olds[1:] + pools)


def test_make_room_never_deletes_pool_plots_or_more_than_one(tmp_path: Path) -> None:
    with LoopDrives(tmp_path / "mnt", ["drive0"], size_mb=32) as drives:
        d0 = drives.drives[0].mountpoint
        pools = [copy_plot("pool", d0) for _ in range(3)]
        og = copy_plot("og", d0)
        size = og.stat().st_size
        drives.fill_for_plots(drives.drives[0], 0, size)
        assert make_room_for(d0, size) == og
        drives.fill_for_plots(drives.drives[0], 0, size)
        with pytest.raises(Exception, match="no old OG plot"):
            make_room_for(d0, size)
        assert all(p.exists() for p in pools)
        # One OG plot is not enough for a plot twice its size: nothing is deleted.
        drives.unfill(drives.drives[0])
        second = copy_plot("og", d0)
        drives.fill_for_plots(drives.drives[0], 0, size)
        with pytest.raises(Exception, match="more than one"):
            make_room_for(d0, size * 3)
        assert second.exists()


def test_make_room_never_deletes_a_plot2_or_a_plot_group(tmp_path: Path) -> None:
    """New proof-of-space files are never "old OG plots": not a .plot2 whose memo is OG-sized,
    not a .gplot, even when they are the oldest files on a full drive."""
    stem = "plot-k28-2020-01-01-00-00-"
    with LoopDrives(tmp_path / "mnt", ["drive0"], size_mb=32) as drives:
        d0 = drives.drives[0].mountpoint
        plot2 = d0 / (stem + "1" * 64 + ".plot2")
        plot2.write_bytes(b"pos2" + bytes([2]) + bytes(32) + bytes([28, 2]) + bytes(3) + bytes([128]) + bytes(128))
        group = d0 / (stem + "2" * 64 + ".gplot")
        group.write_bytes(cached_plot("og").read_bytes())  # an OG plot's bytes under a group name
        for path in (plot2, group):
            os.utime(path, (1_000_000, 1_000_000))
        size = cached_plot("og").stat().st_size
        drives.fill_for_plots(drives.drives[0], 0, size)
        with pytest.raises(Exception, match="no old OG plot"):
            make_room_for(d0, size)
        assert plot2.exists() and group.read_bytes() == cached_plot("og").read_bytes()
        drives.unfill(drives.drives[0])
        og = copy_plot("og", d0)  # newer than both, and still the only one that goes
        drives.fill_for_plots(drives.drives[0], 0, size)
        assert make_room_for(d0, size) == og
        assert plot2.exists() and group.exists()
