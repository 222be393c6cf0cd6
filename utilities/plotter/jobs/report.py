"""``plot_manager.py --jobs``: the jobs table (and the JSON other plotters' managers read).

Pure: rows in, text out. Remote plotters answer with the same JSON (``--jobs --json``), so the
local and the combined table are rendered from the very same fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from utilities.plotter.jobs.store import JobRecord
from utilities.text import binary_size

HEADERS = ("job", "host", "pid", "program", "phase", "temp", "dest", "elapsed", "temp used", "cpu %", "memory")


def phase_text(row: Mapping[str, Any]) -> str:
    """running jobs: the sub-phase from the log ("1.3", "4"), "starting" or "copying"; ended
    jobs: how they ended."""
    if row.get("state") != "running":
        return str(row.get("state"))
    progress = row.get("progress_state")
    if progress in ("copying", "completed", "aborted"):
        return str(progress)
    if row.get("phase") is None:
        return "starting"
    return str(row.get("subphase") or row.get("phase"))


def human_bytes(value: Any) -> str:
    if value is None:
        return "-"
    return binary_size(float(value))


def human_duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def table_rows(rows: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    return [
        [row.get("job_id"), row.get("host") or "local", row.get("pid"), row.get("program"), phase_text(row),
         row.get("temp_dir") or "-", row.get("dest_dir") or "-", human_duration(row.get("elapsed_seconds")),
         human_bytes(row.get("temp_bytes")),
         "-" if row.get("cpu_percent") is None else f"{row['cpu_percent']:.0f}",
         human_bytes(row.get("rss_bytes"))]
        for row in rows
    ]


def jobs_table(rows: Iterable[Mapping[str, Any]], problems: Mapping[str, str] | None = None) -> str:
    body = table_rows(rows)
    lines = [tabulate(body, headers=HEADERS, tablefmt="simple") if body else "no plot jobs"]
    lines += [f"{host}: {problem}" for host, problem in (problems or {}).items()]
    return "\n".join(lines)


def jobs_json(rows: Iterable[Mapping[str, Any]]) -> str:
    return json.dumps(list(rows), indent=2, sort_keys=True)


@dataclass(frozen=True)
class JobSummary:
    hours: float
    jobs_done: int
    average_plot_seconds: float | None
    plots_per_day: float


def summarise(completed: Sequence[JobRecord], hours: float) -> JobSummary:
    """Pure: jobs done, their average time and the plots-per-day rate over ``hours``."""
    times = [j.total_seconds for j in completed if j.total_seconds]
    average = sum(times) / len(times) if times else None
    per_day = len(completed) * 24 / hours if hours > 0 else 0.0
    return JobSummary(hours, len(completed), round(average, 1) if average else None, round(per_day, 2))
