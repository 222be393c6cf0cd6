"""Stop a plot job and delete the temporary files it owns, or those of jobs that ended badly.

A job is marked stopped before it is signalled, so a cron run looking at the same moment sees a
stopped job, not a failed one. Only the files the job owns are deleted (``files.py`` decides
which): several jobs share a temp directory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from utilities.config import Settings
from utilities.errors import PlotManagerError
from utilities.notify import Notifier
from utilities.plotter.jobs import files as job_files
from utilities.plotter.jobs.processes import live_process, reap_children, terminate_job
from utilities.plotter.jobs.store import FAILED, RUNNING, STOPPED, JobRecord, JobStore
from utilities.plotter.jobs.tracking import Clock, job_progress, job_status, reconcile, unshared_temp_dirs
from utilities.state import StateDB

log = logging.getLogger(__name__)


@dataclass
class StopResult:
    job: JobRecord
    was_running: bool
    killed: list[int]
    deleted: list[Path]
    problems: list[str]


def clean_files(store: JobStore, job: JobRecord) -> tuple[list[Path], list[str]]:
    """Delete the temp files this job (and only this job) owns."""
    progress = job_progress(job)
    plot_id = progress.plot_id or job.plot_id
    owned = job_files.owned_files([job.temp_dir, job.temp2_dir, job.dest_dir], plot_id,
                                  store.remembered_files(job.job_id), unshared_temp_dirs(store, job))
    deleted, problems = job_files.delete_files(owned)
    if not problems:
        store.files_cleaned(job.job_id)
    return deleted, problems


def stop_job(settings: Settings, db: StateDB, notifier: Notifier, wanted: str, clock: Clock = time.time) -> StopResult:
    """End a job (by job id or pid) and delete its temporary files."""
    store = JobStore(db)
    reconcile(settings, store, notifier, clock())
    job = store.find(wanted)
    if job is None:
        raise PlotManagerError(f"--stop: no plot job {wanted!r} (see --jobs for ids)")
    proc = live_process(job.pid, job.create_time) if job.state == RUNNING else None
    killed: list[int] = []
    if proc is not None:
        job_status(job, store, clock())  # remember the files it has open before it goes
    if job.state == RUNNING:
        # Marked stopped *before* the signal: a cron run looking at the same moment then sees a
        # stopped job, not a failed one (no false plot_job_failed alert).
        progress = job_progress(job)
        store.end(job.job_id, STOPPED, clock() - job.started_at)
        store.set_plot(job.job_id, progress.plot_id, progress.plot_name)
    if proc is not None:
        killed = terminate_job(proc, settings.plotter.jobs.stop_grace_seconds)
        reap_children()
    job = store.get(job.job_id) or job
    deleted, problems = clean_files(store, job)
    log.info("stopped plot job %s (pid %d); deleted %d file(s)", job.job_id, job.pid, len(deleted))
    return StopResult(job, proc is not None, killed, deleted, problems)


def remove_aborted(settings: Settings, db: StateDB, notifier: Notifier, clock: Clock = time.time) -> list[tuple[JobRecord, list[Path], list[str]]]:
    """Delete the temp files of every job that ended without a plot (failed or stopped)."""
    store = JobStore(db)
    reconcile(settings, store, notifier, clock())
    results = []
    for job in store.jobs([FAILED, STOPPED]):
        if job.files_cleaned_at is not None:
            continue
        deleted, problems = clean_files(store, job)
        results.append((job, deleted, problems))
    return results
