"""chia's plotter (chiapos) 1.x and 2.x logs, read into a job's progress."""

from __future__ import annotations

import pytest

from tests.unit.plotter.jobs.recorded_logs import CHIA_1X_ID, CHIA_2X_ID, cut_after, lines_of, where
from utilities.plotter.jobs.progress import is_final_phase, parse_progress, with_process_state


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
