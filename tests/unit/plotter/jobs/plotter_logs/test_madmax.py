"""madMAx logs read into a job's progress: phases, the copy, several plots in one log."""

from __future__ import annotations

import pytest

from tests.unit.plotter.jobs.recorded_logs import MADMAX_ID, cut_after, lines_of, where
from utilities.plotter.jobs.progress import parse_progress


def test_madmax_completed_after_copy() -> None:
    p = parse_progress("madmax", lines_of("madmax_copied.log"))
    stem = f"plot-k32-2026-11-19-02-47-{MADMAX_ID}"
    assert where(p) == (4, "", "completed")
    assert p.plot_id == MADMAX_ID
    assert p.plot_name == stem + ".plot"
    assert p.final_path == f"/mnt/hdd12/plots/{stem}.plot"
    assert p.temp_dirs == ("/mnt/nvme1/mm", "/mnt/ram")
    assert p.phase_seconds == (565.127, 241.336, 402.915, 41.0027)
    assert p.total_seconds == 1250.4


@pytest.mark.parametrize(
    "marker, expected",
    [
        ("Working Directory 2", (None, "", "starting")),
        ("Plot Name:", (1, "1.1", "running")),
        ("[P1] Table 3 took", (1, "1.4", "running")),
        ("Phase 1 took", (2, "2.0", "running")),
        ("[P2] Table 5 rewrite", (2, "2.3", "running")),
        ("Phase 2 took", (3, "3.0", "running")),
        ("[P3-2] Table 4", (3, "3.3", "running")),
        ("Phase 3 took", (4, "4.0", "running")),
        ("[P4] Writing C2 table", (4, "4.2", "running")),
        ("Total plot creation time", (4, "", "copying")),
        ("Started copy to", (4, "", "copying")),
    ],
)
def test_madmax_while_running(marker: str, expected: tuple[int | None, str, str]) -> None:
    p = parse_progress("chia_plot", cut_after(lines_of("madmax_copied.log"), marker))
    assert p.program == "madmax"
    assert where(p) == expected


def test_madmax_renamed_on_the_same_drive() -> None:
    lines = cut_after(lines_of("madmax_copied.log"), "Started copy to")
    lines.append("Renamed final plot to /mnt/nvme1/out/plot-k32-2026-11-19-02-47-x.plot")
    p = parse_progress("madmax", lines)
    assert p.state == "completed"
    assert p.final_path == "/mnt/nvme1/out/plot-k32-2026-11-19-02-47-x.plot"


def test_madmax_several_plots_in_one_log_report_the_latest() -> None:
    first = lines_of("madmax_copied.log")
    second = cut_after(first, "[P2] Table 6 scan")
    second = [line.replace(MADMAX_ID, "d" * 64) for line in second[5:]]  # from "Crafting plot"
    second[0] = "Crafting plot 2 out of 2"
    p = parse_progress("madmax", first + second)
    assert where(p) == (2, "2.2", "running")
    assert p.plot_id == "d" * 64
    assert p.final_path is None and p.total_seconds is None
    assert p.phase_seconds == (565.127,)
    assert p.temp_dirs == ("/mnt/nvme1/mm", "/mnt/ram")


# ---------------------------------------------------------------------------------------------
# bladebit
