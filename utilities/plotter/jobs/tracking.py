"""Which plot jobs run on this machine now, and what each one is doing.

Jobs are started detached (``runner.start_job``), so which jobs run is learnt again on every
pass from the process list, matched to our records by pid *and* create_time; plotters nobody
recorded (started by hand, or by an older manager) working in one of our temp directories (in
any, when none is configured) are adopted, with their log found through ``/proc/PID/fd/1``
when their output goes to a file. A record whose process is gone is closed as completed or
failed, from its log or else from the files it left. ``job_status`` is one row of ``--jobs``:
the record plus what the log, the process and the temp directories say now.

Every decision is made elsewhere (which files a job owns in ``files.py``, where a job is in
``progress.py``); this module gathers the facts and records them.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from utilities.config import Settings
from utilities.notify import Notification, Notifier
from utilities.plots import is_counted_plot_name
from utilities.plotter.jobs import files as job_files
from utilities.plotter.jobs.processes import (
    PlotterProcess,
    live_process,
    plotter_processes,
    process_stats,
    reap_children,
    stdout_log,
)
from utilities.plotter.jobs.progress import parse_progress
from utilities.plotter.jobs.progress_model import JobProgress
from utilities.plotter.jobs.store import COMPLETED, FAILED, RUNNING, JobRecord, JobStore
from utilities.state import StateDB

log = logging.getLogger(__name__)

#: Plotter logs are small (a k32 chia log is ~2,000 lines); a cap keeps a runaway one harmless.
LOG_READ_LIMIT = 8 * 1024 * 1024

Clock = Callable[[], float]


@dataclass
class JobStatus:
    """One row of ``--jobs``: the record plus what the log and the process say now."""

    job_id: str
    pid: int
    program: str
    state: str  # running, completed, failed, stopped
    phase: int | None
    subphase: str
    progress_state: str  # from the log: starting, running, copying, completed, aborted
    temp_dir: str | None
    dest_dir: str | None
    started_at: float
    elapsed_seconds: float
    temp_bytes: int
    cpu_percent: float | None
    rss_bytes: int | None
    log_path: str | None
    adopted: bool
    plot_id: str | None
    plot_name: str | None
    host: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# -- reading a job's log ------------------------------------------------------------------------


def read_log_lines(path: Path | None) -> list[str]:
    if path is None:
        return []
    try:
        with open(path, "rb") as handle:
            data = handle.read(LOG_READ_LIMIT)
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()


def job_progress(job: JobRecord) -> JobProgress:
    return parse_progress(job.program, read_log_lines(job.log_path))


# -- finding jobs again -------------------------------------------------------------------------


def _same_dir(a: Path | None, b: Path) -> bool:
    return a is not None and os.path.normpath(a) == os.path.normpath(b)


def adopt(store: JobStore, found: PlotterProcess) -> JobRecord | None:
    """Record a plotter we did not start, so it is shown, counted and can be stopped.

    None when another run recorded it a moment ago (it is then found on the next pass).
    """
    command = found.command
    record = JobRecord(
        job_id="a" + uuid.uuid4().hex[:7], pid=found.pid, create_time=found.create_time,
        started_at=found.create_time, program=command.program, argv=found.cmdline, temp_dir=command.temp_dir,
        temp2_dir=command.temp2_dir, dest_dir=command.dest_dir, log_path=stdout_log(found.pid), adopted=True,
    )
    if not store.adopt(record):
        return None
    log.info("adopted plot job %s: pid %d (%s), temp %s, log %s", record.job_id, found.pid, command.program,
             command.temp_dir, record.log_path or "unknown")
    return record


def reconcile(settings: Settings, store: JobStore, notifier: Notifier, now: float) -> tuple[list[JobRecord], list[tuple[JobRecord, str]]]:
    """Match records to the process list: adopt strangers, close records of ended jobs.

    Returns (running jobs, jobs that ended since the last pass with their new state).
    """
    reap_children()
    jobs_settings = settings.plotter.jobs
    processes = plotter_processes()
    known = store.jobs([RUNNING])
    running: list[JobRecord] = []
    ended: list[tuple[JobRecord, str]] = []
    seen: set[str] = set()
    temps = [t.path for t in jobs_settings.temp_directories]
    for found in processes:
        job = _match(known, found)
        if job is None:
            if temps and not any(_same_dir(found.command.temp_dir, t) for t in temps):
                continue  # a plotter working elsewhere is not ours to count or stop
            job = adopt(store, found)
            if job is None:
                continue
        seen.add(job.job_id)
        running.append(job)
    for job in store.jobs([RUNNING]):
        if job.job_id in seen:
            continue
        if live_process(job.pid, job.create_time) is not None:
            running.append(job)  # alive but not recognisable as a plotter any more (argv rewritten)
            continue
        progress = job_progress(job)
        state = _ended_state(store, job, progress)
        total = progress.total_seconds or (now - job.started_at)
        if store.end(job.job_id, state, total, now):
            store.set_plot(job.job_id, progress.plot_id, progress.plot_name)
            ended.append((job, state))
            if state == FAILED:
                _notify_failed(settings, notifier, job, progress)
    return running, ended


def _match(known: list[JobRecord], found: PlotterProcess) -> JobRecord | None:
    """Our record of this process: same pid and same start (a reused pid is another process)."""
    for job in known:
        if job.pid == found.pid and abs(job.create_time - found.create_time) <= 1:
            return job
    return None


def _ended_state(store: JobStore, job: JobRecord, progress: JobProgress) -> str:
    """How a job whose process is gone ended: its log (``progress``) says, or else its files do.

    An adopted job whose output we never saw (not a file) ended well if it left no temporary
    file behind; a leftover temp file always means it did not.
    """
    if progress.state == "completed":
        return COMPLETED
    name = progress.plot_name or job.plot_name
    if name and job.dest_dir is not None and (job.dest_dir / name).is_file():
        return COMPLETED
    if job.log_path is None:
        leftovers = job_files.owned_files([job.temp_dir, job.temp2_dir, job.dest_dir], job.plot_id,
                                          store.remembered_files(job.job_id))
        return FAILED if leftovers else COMPLETED
    return FAILED


def _notify_failed(settings: Settings, notifier: Notifier, job: JobRecord, progress: JobProgress) -> None:
    where = f"phase {progress.phase}" if progress.phase else "before phase 1"
    log.warning("plot job %s (pid %d) ended without a plot, in %s; log %s", job.job_id, job.pid, where, job.log_path)
    notifier.send(Notification(
        event="plot_job_failed",
        subject=f"{settings.hostname}: plot job {job.job_id} failed",
        short_text=f"{settings.hostname}: plot job {job.job_id} ({job.program}, temp {job.temp_dir}) ended "
                   f"without a plot in {where}",
        context={"hostname": settings.hostname, "job": job.job_id, "program": job.program, "pid": job.pid,
                 "temp_dir": str(job.temp_dir), "dest_dir": str(job.dest_dir), "phase": progress.phase,
                 "log": str(job.log_path)},
    ))


# -- status -------------------------------------------------------------------------------------


def job_status(job: JobRecord, store: JobStore, now: float) -> JobStatus:
    """What the log, the process and the temp directories say about a job now."""
    progress = job_progress(job)
    if (progress.plot_id or progress.plot_name) and \
            (progress.plot_id != job.plot_id or progress.plot_name != job.plot_name):
        store.set_plot(job.job_id, progress.plot_id, progress.plot_name)
    plot_id = progress.plot_id or job.plot_id
    cpu = rss = None
    open_files: tuple[str, ...] = ()
    proc = live_process(job.pid, job.create_time) if job.state == RUNNING else None
    if proc is not None:
        try:
            stats = process_stats(proc)
            cpu, rss, open_files = stats.cpu_percent, stats.rss_bytes, stats.open_files
            dirs = [d for d in (job.temp_dir, job.temp2_dir, job.dest_dir) if d is not None]
            mine = [p for p in stats.open_files if any(os.path.dirname(p) == os.path.normpath(d) for d in dirs)
                    and not is_counted_plot_name(os.path.basename(p))]
            if mine:
                store.remember_files(job.job_id, mine)
        except psutil.Error:
            pass
    if plot_id is None:  # no log to read: chia and madMAx name their temp files after the plot id
        plot_id = job_files.plot_id_in_names(open_files)
        if plot_id:
            store.set_plot(job.job_id, plot_id, None)
    owned = job_files.owned_files([job.temp_dir, job.temp2_dir], plot_id, store.remembered_files(job.job_id),
                                  unshared_temp_dirs(store, job))
    end = job.ended_at if job.ended_at is not None else now
    return JobStatus(
        job_id=job.job_id, pid=job.pid, program=job.program, state=job.state, phase=progress.phase,
        subphase=progress.subphase, progress_state=progress.state,
        temp_dir=str(job.temp_dir) if job.temp_dir else None, dest_dir=str(job.dest_dir) if job.dest_dir else None,
        started_at=job.started_at, elapsed_seconds=round(end - job.started_at, 1),
        temp_bytes=job_files.bytes_used(owned) if job.files_cleaned_at is None else 0,
        cpu_percent=cpu, rss_bytes=rss, log_path=str(job.log_path) if job.log_path else None,
        adopted=job.adopted, plot_id=plot_id, plot_name=progress.plot_name or job.plot_name,
    )


def list_jobs(settings: Settings, db: StateDB, notifier: Notifier, clock: Clock = time.time,
              include_ended_hours: float = 24) -> list[JobStatus]:
    """Every running job, and those that ended in the last ``include_ended_hours``."""
    store = JobStore(db)
    now = clock()
    reconcile(settings, store, notifier, now)
    shown = [j for j in store.jobs() if j.state == RUNNING or (j.ended_at or now) >= now - include_ended_hours * 3600]
    return [job_status(j, store, now) for j in shown]


def unshared_temp_dirs(store: JobStore, job: JobRecord) -> list[Path]:
    """bladebit names its temp files without the plot id (``table_l_2.tmp``, ``y0.tmp``): in a
    temp directory no other running bladebit job uses, such ``*.tmp`` files are this job's."""
    if job.program != "bladebit":
        return []
    others = [j for j in store.jobs([RUNNING]) if j.job_id != job.job_id and j.program == "bladebit"]
    used = {os.path.normpath(d) for j in others for d in (j.temp_dir, j.temp2_dir) if d is not None}
    return [d for d in (job.temp_dir, job.temp2_dir) if d is not None and os.path.normpath(d) not in used]
