"""bladebit logs (RAM, disk and CUDA plotters) read into a job's progress."""

from __future__ import annotations

import pytest

from tests.unit.plotter.jobs.recorded_logs import CUDA_ID, RAMPLOT_ID, cut_after, lines_of, where
from utilities.plotter.jobs.progress import is_final_phase, parse_progress


def test_bladebit_ramplot_completed() -> None:
    p = parse_progress("bladebit", lines_of("bladebit_ramplot.log"))
    name = f"plot-k32-2026-11-20-13-30-{RAMPLOT_ID}.plot"
    assert where(p) == (4, "", "completed")
    assert p.plot_id == RAMPLOT_ID
    assert p.plot_name == name
    assert p.final_path == f"/mnt/dst/07/{name}"
    assert p.phase_seconds == (338.52, 47.93, 205.77, 1.37)
    assert p.total_seconds == 614.63
    assert p.temp_dirs == ()


@pytest.mark.parametrize(
    "marker, expected",
    [
        ("Allocating buffers", (None, "", "starting")),
        ("Running Phase 1", (1, "1.0", "running")),
        ("Forward propagating to table 5", (1, "1.5", "running")),
        ("Finished Phase 1", (2, "2.0", "running")),
        ("Prunning table 4", (2, "2.3", "running")),
        ("Compressing tables 2 and 3", (3, "3.2", "running")),
        ("Running Phase 4", (4, "4.0", "running")),
        ("Writing C2 table", (4, "4.3", "running")),
        ("Writing final plot tables", (4, "4.5", "running")),
    ],
)
def test_bladebit_ramplot_while_running(marker: str, expected: tuple[int | None, str, str]) -> None:
    p = parse_progress("bladebit", cut_after(lines_of("bladebit_ramplot.log"), marker))
    assert where(p) == expected


def test_bladebit_cudaplot_completed() -> None:
    p = parse_progress("bladebit_cuda", lines_of("bladebit_cudaplot.log"))
    assert where(p) == (4, "", "completed")
    assert p.plot_id == CUDA_ID
    # The CUDA plotter has three phases; writing the plot is mapped onto phase 4.
    assert p.phase_seconds == (42.88, 6.04, 31.55)
    assert p.total_seconds == 105.07


@pytest.mark.parametrize(
    "marker, expected",
    [
        ("Generating plot 1 / 1", (None, "", "starting")),
        ("Generating F1", (1, "1.1", "running")),
        ("Table 4 completed", (1, "1.4", "running")),
        ("Completed Phase 1", (2, "2.0", "running")),
        ("Completed Phase 3", (4, "4.0", "running")),
        ("Completed Plot 1", (4, "4.5", "running")),
    ],
)
def test_bladebit_cudaplot_while_running(marker: str, expected: tuple[int | None, str, str]) -> None:
    p = parse_progress("bladebit", cut_after(lines_of("bladebit_cudaplot.log"), marker))
    assert where(p) == expected
    assert is_final_phase(p) == (expected[0] == 4)


def test_bladebit_error_line_is_aborted() -> None:
    lines = cut_after(lines_of("bladebit_cudaplot.log"), "Table 3 completed")
    lines.append("Error: Failed to allocate pinned host buffer.")
    assert parse_progress("bladebit", lines).state == "aborted"


def test_bladebit_diskplot_phases_and_temp_dirs() -> None:
    lines = [
        "[Bladebit Disk Plotter]",
        " Temp1 path     : /mnt/t1",
        " Temp2 path     : /mnt/t2/",
        "Generating plot 1 / 1: " + "7" * 64,
        "Running Phase 1",
        "Generating f1...",
        "Table 2",
        "Completed table 2 in 52.96 seconds with 4294924903 entries.",
        "Table 2 I/O wait time: 0.01 seconds.",
        "Table 3",
        "Finished Phase 1 in 526.48 seconds ( 8.8 minutes ).",
        "Running Phase 2",
        "Finished marking table 6 in 3.37 seconds.",
        "Finished marking table 5 in 24.28 seconds.",
    ]
    p = parse_progress("bladebit", lines)
    assert where(p) == (2, "2.2", "running")
    assert p.temp_dirs == ("/mnt/t1", "/mnt/t2")
    assert p.phase_seconds == (526.48,)
    assert where(parse_progress("bladebit", lines[:10])) == (1, "1.3", "running")


# ---------------------------------------------------------------------------------------------
