"""Replotting for plot jobs: one old OG plot makes room for one new plot, never a pool plot.

On a real loop-mounted ext4 drive holding real chiapos OG and pool plots (and files that only
look like plots), filled so the incoming plot does not fit, the action must delete exactly the
oldest OG plot, record it, and count the room still pending for another job.  The decision
itself is ``replace.make_room_for``'s (tests/integration/harvester/test_replace.py); once per job is the
job store's claim (test_plot_job_replot_summary.py: never twice, not even from a stale record).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.loopdrives import LoopDrives, requires_root_and_loop
from tests.support.plotmaker import cached_plot, copy_plot, plot_name
from utilities.errors import DriveError
from utilities.plots import KIND_OG, read_plot_header
from utilities.plotter.jobs.replot import make_room_for_job
from utilities.state import StateDB


def _stage(drive: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """OG plots (oldest first), pool plots older than all of them, and decoys older still."""
    ogs = [copy_plot("og", drive) for _ in range(3)]
    for age, path in enumerate(ogs):
        os.utime(path, (2_000_000 + age, 2_000_000 + age))
    pools = [copy_plot("pool", drive) for _ in range(2)]
    for age, path in enumerate(pools):
        os.utime(path, (1_500_000 + age, 1_500_000 + age))
    # A plot-named file with a broken header and an OG plot under a non-plot name: neither may go.
    broken = drive / plot_name(18, b"\x01" * 32)
    broken.write_bytes(b"not a plot header" * 100)
    hidden_og = drive / "backup-of-og.bin"
    hidden_og.write_bytes(cached_plot("og").read_bytes())
    decoys = [broken, hidden_og]
    for path in decoys:
        os.utime(path, (1_000_000, 1_000_000))
    return ogs, pools, decoys


def _replaced(db: StateDB) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in db.query("SELECT path, reason FROM replaced_plots ORDER BY deleted_at")]


@pytest.mark.root
@requires_root_and_loop
def test_one_oldest_og_plot_per_job_never_pool_and_pending_room_counted(tmp_path: Path) -> None:
    plot_size = max(cached_plot("og").stat().st_size, cached_plot("pool").stat().st_size)
    with LoopDrives(tmp_path / "mnt", ["replot0"], size_mb=48) as drives, StateDB(tmp_path / "state.db") as db:
        drive = drives.drives[0]
        d0 = drive.mountpoint
        ogs, pools, decoys = _stage(d0)
        assert all(read_plot_header(p).kind == KIND_OG for p in ogs)

        # Room for exactly one plot: nothing is deleted.
        drives.fill_for_plots(drive, 1, plot_size)
        assert make_room_for_job(d0, plot_size, db, job_id="job-fits") is None
        assert all(p.exists() for p in ogs + pools + decoys)

        # No room: the oldest OG plot goes (not the older pool plots, not the decoys), recorded.
        drives.unfill(drive)
        drives.fill_for_plots(drive, 0, plot_size)
        assert make_room_for_job(d0, plot_size, db, job_id="job-a") == ogs[0]
        assert not ogs[0].exists()
        assert all(p.exists() for p in ogs[1:] + pools + decoys)
        assert _replaced(db) == [(str(ogs[0]), f"replot: room for a {plot_size}-byte plot for job job-a")]

        # A second job while the first one's room is still pending: the next oldest goes.
        drives.unfill(drive)
        drives.fill_for_plots(drive, 1, plot_size)  # room for job-a's plot only
        assert make_room_for_job(d0, plot_size, db, pending_bytes=plot_size, job_id="job-b") == ogs[1]
        assert ogs[2].exists() and all(p.exists() for p in pools + decoys)
        assert [path for path, _ in _replaced(db)] == [str(ogs[0]), str(ogs[1])]


@pytest.mark.root
@requires_root_and_loop
def test_impossible_room_deletes_nothing_and_says_why(tmp_path: Path) -> None:
    plot_size = max(cached_plot("og").stat().st_size, cached_plot("pool").stat().st_size)
    with LoopDrives(tmp_path / "mnt", ["replot1"], size_mb=32) as drives, StateDB(tmp_path / "state.db") as db:
        drive = drives.drives[0]
        d0 = drive.mountpoint
        pools = [copy_plot("pool", d0) for _ in range(2)]
        drives.fill_for_plots(drive, 0, plot_size)
        with pytest.raises(DriveError, match="no old OG plot"):
            make_room_for_job(d0, plot_size, db, job_id="job-pool-only")
        assert all(p.exists() for p in pools)

        # One OG plot cannot make room for three plots' worth: it stays.
        drives.unfill(drive)
        only_og = copy_plot("og", d0)
        drives.fill_for_plots(drive, 0, plot_size)
        with pytest.raises(DriveError, match="would still not make room"):
            make_room_for_job(d0, plot_size, db, pending_bytes=2 * plot_size, job_id="job-too-big")
        assert only_og.exists() and all(p.exists() for p in pools)
        assert _replaced(db) == []
        # Once one OG plot is enough, that one goes.
        assert make_room_for_job(d0, plot_size, db, job_id="job-too-big") == only_og


@pytest.mark.root
@requires_root_and_loop
def test_the_jobs_own_partial_file_on_the_drive_counts_as_room_already_taken(tmp_path: Path) -> None:
    """bladebit writes <name>.plot.tmp into the destination itself: only the rest is needed."""
    plot_size = max(cached_plot("og").stat().st_size, cached_plot("pool").stat().st_size)
    with LoopDrives(tmp_path / "mnt", ["replot2"], size_mb=32) as drives, StateDB(tmp_path / "state.db") as db:
        drive = drives.drives[0]
        d0 = drive.mountpoint
        old = copy_plot("og", d0)
        plot_id = "ab" * 32
        partial = d0 / (plot_name(18, bytes.fromhex(plot_id)) + ".tmp")
        partial.write_bytes(os.urandom(plot_size * 3 // 4))
        drives.fill(drive, plot_size // 2)  # the last quarter fits, a whole plot would not
        assert make_room_for_job(d0, plot_size, db, job_id="bb-1", plot_id=plot_id) is None
        assert old.exists()
        # Without knowing its own file the same job would have deleted an OG plot for nothing.
        assert make_room_for_job(d0, plot_size, db, job_id="bb-2") == old
