"""Plot job progress from the plotters' own lines: chia 1.x/2.x, madMAx, bladebit RAM and CUDA.

The logs in tests/unit/plotter/jobs/data/plot_progress/ were written line shape by line shape from the
programs' sources and published runs (values, ids and paths are our own).  Cutting a complete
log at a chosen line gives the job as a reader sees it while the plotter is still working,
including a last line cut off mid-way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from utilities.plotter.jobs.progress import (
    JobProgress,
    detect_program,
    is_final_phase,
    normalize_program,
    parse_progress,
    with_process_state,
)

DATA = Path(__file__).parent / "data" / "plot_progress"

CHIA_1X_ID = "5f0e9c21d7a4b3e8f61c2a9d0b7e4f3a8c1d6e2b9f0a7c4e3d8b1a6f5c2e9d04"
CHIA_2X_ID = "a7c3e1f9b5d2084c6e1a3f7b9d5c2e0a4f8b6d1c3e9a7f5b2d0c8e6a4f1b3d7c"
MADMAX_ID = "c4e8a2f6b0d3917e5a3c8f1b6d4e2a0c7f9b5d3e1a8c6f4b2d0e9a7c5f3b1d8e"
RAMPLOT_ID = "0b9d7f5e3c1a8f6d4b2e0c9a7f5d3b1e8c6a4f2d0b9e7c5a3f1d8b6e4c2a0f9d"
CUDA_ID = "e6f4d2b0a9c7e5f3d1b8a6c4e2f0d9b7a5c3e1f8d6b4a2c0e9f7d5b3a1c8e6f4"


def lines_of(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines()


def cut_after(lines: list[str], marker: str, partial: str = "") -> list[str]:
    """The log up to and including the first line containing ``marker`` (+ a half line)."""
    for index, line in enumerate(lines):
        if marker in line:
            return lines[: index + 1] + ([partial] if partial else [])
    raise AssertionError(f"marker {marker!r} not in log")


def where(p: JobProgress) -> tuple[int | None, str, str]:
    return p.phase, p.subphase, p.state


# ---------------------------------------------------------------------------------------------
# chia
# ---------------------------------------------------------------------------------------------


def test_chia_1x_completed_with_copy_to_another_drive() -> None:
    p = parse_progress("chia", lines_of("chia_1x_copied.log"))
    name = f"plot-k32-2026-11-16-21-04-{CHIA_1X_ID}.plot"
    assert where(p) == (4, "", "completed")
    assert p.plot_id == CHIA_1X_ID
    assert p.plot_name == name
    assert p.final_path == f"/mnt/farm/hdd07/{name}"
    assert p.temp_dirs == ("/mnt/nvme0/chia-tmp", "/mnt/ssd2/chia-tmp2")
    assert p.phase_seconds == (16211.904, 6704.512, 7045.23, 480.119)
    assert p.total_seconds == 30441.765
    assert is_final_phase(p)


@pytest.mark.parametrize(
    "marker, expected",
    [
        ("Starting plot 1/1", (None, "", "starting")),
        ("Process ID is:", (None, "", "starting")),
        ("Starting phase 1/4", (1, "1.0", "running")),
        ("Computing table 4", (1, "1.4", "running")),
        ("Time for phase 1", (1, "1.7", "running")),
        ("Backpropagating on table 7", (2, "2.1", "running")),
        ("Backpropagating on table 2", (2, "2.6", "running")),
        ("Compressing tables 3 and 4", (3, "3.3", "running")),
        ("Starting phase 4/4", (4, "4.0", "running")),
        ("Writing C2 table", (4, "4.2", "running")),
        ("Total time =", (4, "", "copying")),
        ("Copied final file", (4, "", "copying")),
        ("Removed temp2 file", (4, "", "copying")),
    ],
)
def test_chia_1x_while_running(marker: str, expected: tuple[int | None, str, str]) -> None:
    p = parse_progress("chia", cut_after(lines_of("chia_1x_copied.log"), marker))
    assert where(p) == expected
    assert p.final_path is None
    assert is_final_phase(p) == (expected[0] == 4)


def test_chia_1x_phase_times_accumulate_as_phases_finish() -> None:
    p = parse_progress("chia", cut_after(lines_of("chia_1x_copied.log"), "Time for phase 2"))
    assert p.phase_seconds == (16211.904, 6704.512)
    assert p.total_seconds is None


def test_chia_2x_cut_mid_line_in_phase_3() -> None:
    lines = lines_of("chia_2x_phase3_cut.log")
    assert lines[-1].endswith("pass ti")  # the fixture really ends mid-line
    p = parse_progress("chia", lines)
    assert where(p) == (3, "3.4", "running")
    assert p.plot_id == CHIA_2X_ID
    # Named from the phase-3 line, before the plot exists.
    assert p.plot_name == f"plot-k32-2026-11-18-09-12-{CHIA_2X_ID}.plot"
    # Same temp dir given twice ("-t X -2 X", one with a trailing slash) is one directory.
    assert p.temp_dirs == ("/srv/plots/tmp",)
    assert p.phase_seconds == (18845.002, 7311.76)
    assert not is_final_phase(p)


def test_chia_same_drive_rename_completes() -> None:
    lines = cut_after(lines_of("chia_1x_copied.log"), "Total time =")
    lines.append('Renamed final file from "/mnt/ssd2/chia-tmp2/x.plot.2.tmp" to "/mnt/ssd2/out/x.plot"')
    p = parse_progress("chia", lines)
    assert where(p) == (4, "", "completed")
    assert p.final_path == "/mnt/ssd2/out/x.plot"
    assert p.plot_name == "x.plot"


def test_chia_traceback_is_aborted_and_stays_aborted() -> None:
    lines = cut_after(lines_of("chia_1x_copied.log"), "Compressing tables 2 and 3")
    lines += [
        "Traceback (most recent call last):",
        '  File "chia/plotting/create_plots.py", line 262',
        "RuntimeError: std::exception",
    ]
    p = parse_progress("chia", lines)
    assert where(p)[:1] == (3,)
    assert p.state == "aborted"
    assert not is_final_phase(p)
    assert with_process_state(p, alive=False).state == "aborted"


def test_timestamp_prefixes_from_ts_and_loggers_are_ignored() -> None:
    lines = cut_after(lines_of("chia_1x_copied.log"), "Computing table 3")
    stamped = [f"Nov 16 21:04:{i % 60:02d} {line}" for i, line in enumerate(lines)]
    iso = [f"2026-11-16T21:04:11.{i:03d}+00:00 {line}" for i, line in enumerate(lines)]
    assert where(parse_progress("chia", stamped)) == (1, "1.3", "running")
    assert where(parse_progress("chia", iso)) == (1, "1.3", "running")
    assert parse_progress("chia", stamped).plot_id == CHIA_1X_ID


# ---------------------------------------------------------------------------------------------
# madMAx
# ---------------------------------------------------------------------------------------------


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
# ---------------------------------------------------------------------------------------------


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
# Detection, garbage, the process's own state
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture, program",
    [
        ("chia_1x_copied.log", "chia"),
        ("chia_2x_phase3_cut.log", "chia"),
        ("madmax_copied.log", "madmax"),
        ("bladebit_ramplot.log", "bladebit"),
        ("bladebit_cudaplot.log", "bladebit"),
    ],
)
def test_detect_program(fixture: str, program: str) -> None:
    assert detect_program(lines_of(fixture)) == program
    # Even from the first few lines only (a job that just started).
    assert detect_program(lines_of(fixture)[:20]) == program


def test_garbage_and_empty_logs_read_as_not_started() -> None:
    garbage = [
        bytes(range(256)).decode("latin-1"),
        "\x00\x00\x00",
        "Phase ten took forever",
        "[P9] nonsense",
        "ID: nothex",
    ]
    assert detect_program(garbage) is None
    assert detect_program([]) is None
    for program in ("chia", "madmax", "bladebit"):
        for lines in (garbage, []):
            p = parse_progress(program, lines)
            assert where(p) == (None, "", "starting")
            assert p.plot_id is None and p.plot_name is None and p.final_path is None
            assert p.phase_seconds == () and p.total_seconds is None
            assert not is_final_phase(p)


def test_a_log_from_another_program_does_not_fake_progress() -> None:
    p = parse_progress("chia", lines_of("madmax_copied.log"))
    assert p.state != "completed" and p.phase is None


def test_unknown_program_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown plotter program 'gigahorse'"):
        parse_progress("gigahorse", [])
    assert normalize_program("BladeBit_CUDA") == "bladebit"


def test_dead_process_without_completion_is_aborted() -> None:
    running = parse_progress("madmax", cut_after(lines_of("madmax_copied.log"), "Phase 2 took"))
    assert with_process_state(running, alive=True) == running
    dead = with_process_state(running, alive=False)
    assert dead.state == "aborted" and dead.phase == running.phase and not is_final_phase(dead)
    done = parse_progress("madmax", lines_of("madmax_copied.log"))
    assert with_process_state(done, alive=False) == done
