from __future__ import annotations

import time
from pathlib import Path

from utilities.harvester_export import DriveSummary, HarvesterSnapshot
from utilities.plot_finder import FinishedPlot
from utilities.plots import PlotHeader
from utilities.plotter.delivery import destination_name, port_slice
from utilities.plotter.sending import plan_transfers


def _plot(i: int) -> FinishedPlot:
    header = PlotHeader("v1", 18, f"{i:064x}", 112, "pool", 0)
    return FinishedPlot(Path(f"/plots/plot-{i}.plot"), 100, float(i), header)


def _snap(name: str, receive_slots: int, other_slots: int = 0) -> HarvesterSnapshot:
    drives = (
        DriveSummary("d0", "/mnt/d0", "/dev/sda", None, "xfs", 10, 5, 0, 0, 0, 0, receive_slots, False, True),
        DriveSummary("d1", "/mnt/d1", "/dev/sdb", None, "xfs", 10, 5, 0, 0, 0, 0, other_slots, False, True),
    )
    return HarvesterSnapshot(name, time.time(), 100, drives, receive_drive="d0")


def test_plots_spread_by_room_and_capped_by_the_receive_drive() -> None:
    snaps = {"a": _snap("a", 2, 10), "b": _snap("b", 5)}
    planned, unplaced = plan_transfers([_plot(i) for i in range(8)], snaps, "fill", max_concurrent=1)
    targets = [p.harvester for p in planned]
    # a has more room overall (12 vs 5) but only 2 slots on the drive receiving today.
    assert targets.count("a") == 2 and targets.count("b") == 5
    assert targets[0] == "a"
    assert unplaced == ["plot-7.plot"]


def test_only_harvester_and_slots_rotate() -> None:
    snaps = {"a": _snap("a", 3), "b": _snap("b", 9)}
    planned, unplaced = plan_transfers([_plot(i) for i in range(3)], snaps, "fill", max_concurrent=2, only="a")
    assert [p.harvester for p in planned] == ["a", "a", "a"]
    assert [p.slot for p in planned] == [0, 1, 0]
    assert unplaced == []


def test_port_slices_are_disjoint() -> None:
    slices = [port_slice(4040, 100, 4, s) for s in range(4)]
    ranges = [set(range(first, first + n)) for first, n in slices]
    assert all(len(r) == 25 for r in ranges)
    assert set.union(*ranges) == set(range(4040, 4140))


def test_portable_prefix_only_for_pool_plots_by_header() -> None:

    pool = _plot(1)
    og = FinishedPlot(Path("/plots/plot-2.plot"), 100, 2.0, PlotHeader("v1", 18, "0" * 64, 128, "og", 0))
    assert destination_name(pool, True) == "portable.plot-1.plot"
    assert destination_name(og, True) == "plot-2.plot"
    assert destination_name(pool, False) == "plot-1.plot"
    already = FinishedPlot(Path("/plots/portable.plot-3.plot"), 100, 3.0, pool.header)
    assert destination_name(already, True) == "portable.plot-3.plot"
