"""Recognising plotter processes by their command lines, owned temp files, the jobs table."""

from __future__ import annotations

from pathlib import Path

import pytest

from utilities.plotter.jobs.files import owned_files, plot_id_in_names
from utilities.plotter.jobs.processes import PlotterCommand, identify_plotter
from utilities.plotter.jobs.report import jobs_table, phase_text, summarise
from utilities.plotter.jobs.store import JobRecord

PLOT_ID = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["/opt/chia/venv/bin/python3.11", "/opt/chia/venv/bin/chia", "plots", "create", "-k", "32", "-t", "/mnt/t1",
          "-2", "/mnt/t2", "-d", "/mnt/out", "-x"],
         PlotterCommand("chia", Path("/mnt/t1"), Path("/mnt/t2"), Path("/mnt/out"), 32)),
        (["chia", "plots", "create", "--size=33", "--tmp_dir", "/mnt/t1/", "--final_dir=/mnt/out"],
         PlotterCommand("chia", Path("/mnt/t1"), None, Path("/mnt/out"), 33)),
        (["/usr/local/bin/chia_plot", "-n", "1", "-r", "8", "-t", "/mnt/t1/", "-2", "/mnt/ram/", "-d", "/mnt/out/"],
         PlotterCommand("madmax", Path("/mnt/t1"), Path("/mnt/ram"), Path("/mnt/out"), None)),
        (["bladebit_cuda", "-n", "1", "-t", "4", "--compress", "7", "-f", "ab", "-c", "xch1q", "cudaplot",
          "--disk-128", "-t1", "/mnt/t1", "/mnt/out"],
         PlotterCommand("bladebit", Path("/mnt/t1"), None, Path("/mnt/out"), 32)),
        (["chia", "plotters", "bladebit", "diskplot", "-d", "/mnt/out", "-t", "/mnt/t1"],
         PlotterCommand("bladebit", Path("/mnt/t1"), None, Path("/mnt/out"), 32)),
    ],
)
def test_plotter_command_lines_are_recognised(cmdline: list[str], expected: PlotterCommand) -> None:
    assert identify_plotter(cmdline) == expected


@pytest.mark.parametrize(
    "cmdline",
    [
        ["/opt/chia/venv/bin/python", "/opt/chia/venv/bin/chia", "start", "harvester"],
        ["chia", "plots", "check"],
        ["python3", "-u", "plot_manager.py", "--jobs"],
        ["vim", "chia_plot.txt"],
        [],
    ],
)
def test_other_processes_are_not_plotters(cmdline: list[str]) -> None:
    assert identify_plotter(cmdline) is None


def test_owned_files_by_plot_id_and_remembered_never_finished_plots(tmp_path: Path) -> None:
    temp, dest, elsewhere = tmp_path / "t", tmp_path / "d", tmp_path / "x"
    for d in (temp, dest, elsewhere):
        d.mkdir()
    other_id = "f" * 64
    mine = [temp / f"plot-k32-2024-01-01-00-00-{PLOT_ID}.plot.p1.t1.sort_bucket_000.tmp",
            dest / f"plot-k32-2024-01-01-00-00-{PLOT_ID}.plot.2.tmp"]
    remembered = temp / "y0_0.tmp"  # bladebit: no id in the name
    not_mine = [temp / f"plot-k32-2024-01-01-00-00-{other_id}.plot.p1.t1.sort_bucket_000.tmp",
                dest / f"plot-k32-2024-01-01-00-00-{PLOT_ID}.plot",  # finished: never a temp file
                dest / f"plot-k28-2024-01-01-00-00-{PLOT_ID}.plot2",  # a finished v2 plot
                dest / f"plot-k28-2024-01-01-00-00-{PLOT_ID}.gplot",  # a plot group: counted, never deleted
                elsewhere / f"{PLOT_ID}.tmp", temp / "notes.txt"]
    for path in [*mine, remembered, *not_mine]:
        path.write_bytes(b"x")
    link = temp / f"{PLOT_ID}.link.tmp"
    link.symlink_to(elsewhere / f"{PLOT_ID}.tmp")
    found = owned_files([temp, None, dest], PLOT_ID, [remembered, elsewhere / f"{PLOT_ID}.tmp"])
    assert found == sorted([*mine, remembered])
    assert owned_files([temp], PLOT_ID[:8], []) == []  # a fragment of an id never matches


def test_bladebit_temp_names_only_in_directories_it_has_alone(tmp_path: Path) -> None:
    alone, shared = tmp_path / "alone", tmp_path / "shared"
    for d in (alone, shared):
        d.mkdir()
        (d / "table_l_2.tmp").write_bytes(b"x")
        (d / "y0.tmp").write_bytes(b"x")
        (d / f"plot-k32-2024-01-01-00-00-{'e' * 64}.plot.table1.tmp").write_bytes(b"x")  # a chia job's
        (d / "keep.log").write_bytes(b"x")
    found = owned_files([alone, shared], None, [], anonymous_dirs=[alone])
    assert found == [alone / "table_l_2.tmp", alone / "y0.tmp"]


def test_plot_id_from_open_file_names() -> None:
    names = [f"/t/plot-k32-2024-01-01-00-00-{PLOT_ID}.plot.p1.t1.sort_bucket_003.tmp", "/t/other.log"]
    assert plot_id_in_names(names) == PLOT_ID
    assert plot_id_in_names([*names, f"/t/{'e' * 64}.tmp"]) is None  # two ids: not sure, none
    assert plot_id_in_names(["/t/y0_0.tmp"]) is None


def test_phase_text() -> None:
    assert phase_text({"state": "running", "phase": None, "progress_state": "starting"}) == "starting"
    assert phase_text({"state": "running", "phase": 3, "subphase": "3.4", "progress_state": "running"}) == "3.4"
    assert phase_text({"state": "running", "phase": 4, "subphase": "", "progress_state": "copying"}) == "copying"
    assert phase_text({"state": "failed", "phase": 2}) == "failed"


def test_jobs_table_lists_every_job_and_problems() -> None:
    rows = [{"job_id": "ab12cd34", "pid": 42, "program": "chia", "state": "running", "phase": 2, "subphase": "2.3",
             "progress_state": "running", "temp_dir": "/mnt/t1", "dest_dir": "/mnt/o", "elapsed_seconds": 3725,
             "temp_bytes": 5 * 2**30, "cpu_percent": 180.0, "rss_bytes": 3 * 2**30}]
    text = jobs_table(rows, {"plotter2": "unreachable"})
    assert "ab12cd34" in text and "2.3" in text and "1:02:05" in text and "5.0 GiB" in text
    assert text.splitlines()[-1] == "plotter2: unreachable"
    assert jobs_table([]) == "no plot jobs"


def _done(seconds: float) -> JobRecord:
    return JobRecord("j", 1, 0.0, 0.0, "chia", (), None, None, None, None, state="completed", total_seconds=seconds)


def test_summary_figures() -> None:
    summary = summarise([_done(3600), _done(1800), _done(2700)], hours=6)
    assert summary.jobs_done == 3 and summary.average_plot_seconds == 2700 and summary.plots_per_day == 12
    assert summarise([], 24).average_plot_seconds is None
