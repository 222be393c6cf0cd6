"""Recorded plotter logs for the progress tests, and how to cut them.

The logs in tests/unit/plotter/jobs/data/plot_progress/ were written line shape by line shape from the
programs' sources and published runs (values, ids and paths are our own).  Cutting a complete
log at a chosen line gives the job as a reader sees it while the plotter is still working,
including a last line cut off mid-way.
"""

from __future__ import annotations

from pathlib import Path

from utilities.plotter.jobs.progress_model import JobProgress

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
