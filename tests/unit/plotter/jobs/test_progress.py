"""Plot job progress from any plotter's lines: timestamp prefixes, telling the program apart,
garbage, unknown programs and what the process's own state adds.

Each program's own lines are tested in plotter_logs/ (chia 1.x/2.x, madMAx, bladebit RAM and CUDA).
"""

from __future__ import annotations

import pytest

from tests.unit.plotter.jobs.recorded_logs import CHIA_1X_ID, cut_after, lines_of, where
from utilities.plotter.jobs.progress import (
    detect_program,
    is_final_phase,
    normalize_program,
    parse_progress,
    with_process_state,
)


def test_timestamp_prefixes_from_ts_and_loggers_are_ignored() -> None:
    lines = cut_after(lines_of("chia_1x_copied.log"), "Computing table 3")
    stamped = [f"Nov 16 21:04:{i % 60:02d} {line}" for i, line in enumerate(lines)]
    iso = [f"2026-11-16T21:04:11.{i:03d}+00:00 {line}" for i, line in enumerate(lines)]
    assert where(parse_progress("chia", stamped)) == (1, "1.3", "running")
    assert where(parse_progress("chia", iso)) == (1, "1.3", "running")
    assert parse_progress("chia", stamped).plot_id == CHIA_1X_ID


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
