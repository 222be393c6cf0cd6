"""Decide whether a new plot job may start now, where, and to which destination.

Pure: everything it needs (the clock, the running jobs, free space, the last starts) comes in
as arguments, so every limit is tested directly with an injected clock, and the I/O layer
(runner.py) only gathers facts and carries out the decision.

The rules, in the order they are checked (the first that says no is the reason given):
1. jobs at once, over all temp directories (``max_jobs``);
2. jobs in phase 1 at once (``max_phase1_jobs``);
3. minutes since the last start anywhere (``min_minutes_between_starts``);
4. per temp directory: its own max jobs, max phase-1 jobs, minutes since its last start, and
   free space for one more job after what its running jobs will still grow by;
5. a destination: the output directory with the most room that can hold one more plot,
   counting plots that running jobs will still write there.
"Start early": a job past ``start_early_phase`` no longer counts in 1, 2 and 4. The destination
is checked last so "no destination" is only reported when a job would otherwise start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from utilities.plots import expected_plot_size
from utilities.settings.plot_jobs import PlotJobSettings


@dataclass(frozen=True)
class ActiveJob:
    """What the scheduler needs to know of one job that has not finished."""

    temp_dir: Path
    dest_dir: Path | None
    phase: int | None  # None: not yet in phase 1 (starting), counts as phase 1
    started_at: float
    # True once its plot is complete in the destination (it no longer needs room there).
    plot_written: bool = False
    # Bytes its temp files take now (it grows to the per-job need until phase 2 ends).
    temp_bytes: int = 0


@dataclass(frozen=True)
class StartDecision:
    temp_dir: Path
    dest_dir: Path
    temp2_dir: Path | None


@dataclass(frozen=True)
class Refusal:
    reason: str
    # "limit", "stagger", "temp", "no_destination", "unconfigured"
    kind: str


def counts_against_limits(job: ActiveJob, start_early_phase: int) -> bool:
    """A job past the start-early phase makes room for the next one (0: all jobs count)."""
    if start_early_phase <= 0 or job.phase is None:
        return True
    return job.phase <= start_early_phase


def in_phase1(job: ActiveJob) -> bool:
    return job.phase is None or job.phase <= 1


def temp_still_needed(job: ActiveJob, need: int) -> int:
    """Temp space a job will still take: it grows until its peak (phases 1-2), then shrinks."""
    if job.phase is not None and job.phase >= 3:
        return 0
    return max(0, need - job.temp_bytes)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def pick_destination(
    outputs_room: Mapping[Path, int], jobs: Sequence[ActiveJob], plot_bytes: int
) -> Path | None:
    """The destination with the most room left after the running jobs' plots; None if none fits.

    ``outputs_room`` is bytes the directory can take (free space; for replot drives also what
    one-by-one replacement can free). Ties go to the first configured.
    """
    best: tuple[int, Path] | None = None
    for path, room in outputs_room.items():
        pending = sum(1 for j in jobs if j.dest_dir == path and not j.plot_written)
        left = room - pending * plot_bytes
        if left >= plot_bytes and (best is None or left > best[0]):
            best = (left, path)
    return best[1] if best else None


def next_start(
    now: float,
    jobs: Sequence[ActiveJob],
    temp_dirs_free: Mapping[Path, int],
    outputs_free: Mapping[Path, int],
    settings: PlotJobSettings,
    last_starts: Mapping[Path, float],
    plot_bytes: int | None = None,
) -> StartDecision | Refusal:
    """Start a job now (and where), or the one reason why not.

    ``temp_dirs_free``: free bytes per configured temp directory (a missing or unmounted one is
    left out); ``last_starts``: when a job last started in each temp directory; ``plot_bytes``:
    the size of one finished plot (default: from the settings' k and compression).
    """
    if plot_bytes is None:
        plot_bytes = expected_plot_size(settings.k, settings.compression)
    if not settings.temp_directories:
        return Refusal("no temp_directories configured", "unconfigured")
    counting = [j for j in jobs if counts_against_limits(j, settings.start_early_phase)]
    if len(counting) >= settings.max_jobs:
        return Refusal(f"max_jobs reached ({len(counting)} of {settings.max_jobs})", "limit")
    phase1 = [j for j in counting if in_phase1(j)]
    if len(phase1) >= settings.phase1_limit:
        return Refusal(f"max_phase1_jobs reached ({len(phase1)} in phase 1, limit {settings.phase1_limit})", "limit")
    stagger = settings.min_minutes_between_starts * 60
    if last_starts and stagger > 0:
        since = now - max(last_starts.values())
        if since < stagger:
            return Refusal(f"min_minutes_between_starts: last start {_minutes(since)} ago, "
                           f"next in {_minutes(stagger - since)}", "stagger")

    need = settings.temp_bytes_per_job()
    why_not: list[str] = []
    candidates: list[tuple[int, float, int, Path]] = []
    for order, temp in enumerate(settings.temp_directories):
        here = [j for j in counting if j.temp_dir == temp.path]
        if temp.path not in temp_dirs_free:
            why_not.append(f"{temp.path}: not available")
            continue
        if len(here) >= temp.max_jobs:
            why_not.append(f"{temp.path}: max_jobs {temp.max_jobs} reached")
            continue
        if sum(1 for j in here if in_phase1(j)) >= temp.phase1_limit:
            why_not.append(f"{temp.path}: max_phase1_jobs {temp.phase1_limit} reached")
            continue
        last = last_starts.get(temp.path)
        own_stagger = temp.min_minutes_between_starts * 60
        if last is not None and own_stagger > 0 and now - last < own_stagger:
            why_not.append(f"{temp.path}: min_minutes_between_starts, next in {_minutes(own_stagger - (now - last))}")
            continue
        promised = sum(temp_still_needed(j, need) for j in jobs if j.temp_dir == temp.path)
        if temp_dirs_free[temp.path] - promised < need:
            why_not.append(f"{temp.path}: {temp_dirs_free[temp.path]} bytes free, {promised} promised to its "
                           f"running jobs, a new job needs {need}")
            continue
        # Fewest jobs first, then the one idle longest, then configuration order.
        candidates.append((len(here), last if last is not None else float("-inf"), order, temp.path))
    if not candidates:
        kinds = "stagger" if why_not and all("min_minutes" in w for w in why_not) else "temp"
        return Refusal("no temp directory can take a job: " + "; ".join(why_not), kinds)
    temp_dir = min(candidates)[3]

    dest = pick_destination(outputs_free, jobs, plot_bytes)
    if dest is None:
        shown = ", ".join(f"{p} ({room} bytes)" for p, room in outputs_free.items()) or "none available"
        return Refusal(f"no output directory has room for a {plot_bytes}-byte plot: {shown}", "no_destination")
    return StartDecision(temp_dir=temp_dir, dest_dir=dest, temp2_dir=settings.temp2_directory)
