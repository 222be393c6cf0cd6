"""One plot job scheduling pass on this machine: find the jobs, replot, start what fits, tell.

A pass (cron, ``--start-jobs`` or each turn of ``--loop``) learns which jobs run from the process
list (``tracking.reconcile``), makes room for the plot of a replot job entering its final
phase, starts jobs while the limits allow, alerts when no destination has room, and sends the
periodic summary. Jobs are started detached: their own session (so a Ctrl-C, a dying cron run
or a killed ``--loop`` never takes them along), stdin from /dev/null, stdout and stderr into the
job's own log file.

Every decision is made elsewhere (``scheduler.next_start``; which files a job owns in
``files.py``); this module gathers the facts and carries decisions out.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from utilities.config import Settings, expand_path
from utilities.errors import PlotManagerError
from utilities.notify import Notification, Notifier
from utilities.plots import expected_plot_size
from utilities.plotter.jobs import files as job_files
from utilities.plotter.jobs.commands import JobPlacement, build_command
from utilities.plotter.jobs.processes import keep_child
from utilities.plotter.jobs.progress import is_final_phase
from utilities.plotter.jobs.progress_model import JobProgress
from utilities.plotter.jobs.report import JobSummary, summarise
from utilities.plotter.jobs.scheduler import ActiveJob, Refusal, StartDecision, next_start, pick_destination
from utilities.plotter.jobs.store import JobRecord, JobStore
from utilities.plotter.jobs.tracking import Clock, JobStatus, job_progress, reconcile
from utilities.settings.plot_jobs import PlotJobSettings
from utilities.state import StateDB

log = logging.getLogger(__name__)

NO_DESTINATION_ALERT = "plot_jobs.no_destination"
CANNOT_START_ALERT = "plot_jobs.cannot_start"
SUMMARY_KEY = "plot_jobs.summary_at"


@dataclass
class PassOutcome:
    statuses: list[JobStatus] = field(default_factory=list)
    started: list[JobRecord] = field(default_factory=list)
    ended: list[tuple[JobRecord, str]] = field(default_factory=list)
    refusal: Refusal | None = None


# -- starting -----------------------------------------------------------------------------------


def log_directory(settings: Settings) -> Path:
    configured = settings.plotter.jobs.log_directory
    return expand_path(configured) if configured else settings.state_path / "plot_jobs"


def start_job(settings: Settings, store: JobStore, decision: StartDecision, now: float) -> JobRecord:
    """Start one plot job detached from us; record it; return its record."""
    jobs = settings.plotter.jobs
    placement = JobPlacement(temp=decision.temp_dir, dest=decision.dest_dir, temp2=decision.temp2_dir)
    argv = build_command(jobs, placement)
    job_id = uuid.uuid4().hex[:8]
    logs = log_directory(settings)
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    log_path = logs / f"{stamp}_{job_id}_{jobs.program}.log"
    with open(log_path, "ab") as out:
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv list, never a shell
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, cwd=str(decision.temp_dir),
            )
        except OSError as exc:
            raise PlotManagerError(
                f"plotter.jobs: cannot run {argv[0]!r} ({jobs.program}): {exc.strerror or exc}; "
                "set plotter.jobs.executable to the plotter's path"
            ) from None
    keep_child(proc)
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:  # ended already (bad arguments): still recorded, ends next pass
        # Note: our clock where psutil's create_time is meant; the two can differ by a second
        # or more (psutil counts from the boot time). The process is gone; left as it was.
        create_time = now
    record = JobRecord(
        job_id=job_id, pid=proc.pid, create_time=create_time, started_at=now, program=jobs.program,
        argv=tuple(argv), temp_dir=decision.temp_dir, temp2_dir=decision.temp2_dir, dest_dir=decision.dest_dir,
        log_path=log_path, replot=jobs.replot.enabled and decision.dest_dir in jobs.replot.directories,
    )
    store.add(record)
    log.info("started plot job %s (pid %d): %s", job_id, proc.pid, " ".join(argv))
    return record


# -- replot -------------------------------------------------------------------------------------


def replot_if_due(settings: Settings, store: JobStore, job: JobRecord, progress: JobProgress, db: StateDB,
                  running: Sequence[tuple[JobRecord, JobProgress]] = ()) -> Path | None:
    """When a replot job enters its final phase, make room for its plot, once per job, ever.

    Other running jobs to the same drive whose room was already made (their final phase began,
    their plot is not written yet) have that room promised: it is not free for this one.
    """
    if not job.replot or job.dest_dir is None or job.replot_claimed_at is not None:
        return None
    if not is_final_phase(progress):
        return None
    from utilities.plotter.jobs.replot import make_room_for_job

    if not store.claim_replot(job.job_id):
        return None  # another run got there first
    jobs = settings.plotter.jobs
    plot_bytes = expected_plot_size(jobs.k, jobs.compression)
    promised = sum(1 for other, other_progress in running
                   if other.job_id != job.job_id and other.dest_dir == job.dest_dir
                   and (store.get(other.job_id) or other).replot_claimed_at is not None
                   and other_progress.state not in ("completed", "aborted"))
    try:
        deleted = make_room_for_job(job.dest_dir, plot_bytes, db, pending_bytes=promised * plot_bytes,
                                    job_id=job.job_id, plot_id=progress.plot_id or job.plot_id)
    except (PlotManagerError, OSError) as exc:
        store.set_replot_result(job.job_id, f"error: {exc}")
        log.warning("replot for job %s: %s", job.job_id, exc)
        return None
    store.set_replot_result(job.job_id, str(deleted) if deleted else "no deletion needed")
    return deleted


# -- the scheduling pass ------------------------------------------------------------------------


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _replaceable_bytes(directory: Path) -> int:
    from utilities.replace import og_plots

    try:
        return sum(p.size for p in og_plots(directory))
    except PlotManagerError:
        return 0


def replaceable_room(jobs: PlotJobSettings) -> dict[Path, int]:
    """Bytes of OG plots per destination that replotting may free (none when replot is off).

    Reading every plot header on every destination is the costly part of a pass, and nothing
    deletes a plot while the pass starts jobs, so the pass reads them once, not per start.
    """
    if not jobs.replot.enabled:
        return {}
    return {dest: _replaceable_bytes(dest) for dest in jobs.destinations if dest.is_dir()}


def gather_space(jobs: PlotJobSettings, replaceable: Mapping[Path, int]) -> tuple[dict[Path, int], dict[Path, int]]:
    """Free bytes per available temp directory, and room per available destination."""
    temps = {}
    for temp in jobs.temp_directories:
        free = _free_bytes(temp.path) if temp.path.is_dir() else None
        if free is not None:
            temps[temp.path] = free
    outputs = {}
    for dest in jobs.destinations:
        free = _free_bytes(dest) if dest.is_dir() else None
        if free is None:
            continue
        outputs[dest] = free + replaceable.get(dest, 0)
    return temps, outputs


def active_jobs(store: JobStore, running: list[tuple[JobRecord, JobProgress]]) -> list[ActiveJob]:
    actives = []
    for job, progress in running:
        if job.temp_dir is None:
            continue
        owned = job_files.owned_files([job.temp_dir], progress.plot_id or job.plot_id,
                                      store.remembered_files(job.job_id))
        actives.append(ActiveJob(temp_dir=job.temp_dir, dest_dir=job.dest_dir, phase=progress.phase,
                                 started_at=job.started_at, plot_written=progress.state == "completed",
                                 temp_bytes=job_files.bytes_used(owned)))
    return actives


def run_jobs_pass(settings: Settings, db: StateDB, notifier: Notifier, *, start: bool = True,
                  clock: Clock = time.time) -> PassOutcome:
    """One pass: find jobs, replot when due, start what the limits allow, alert, summarise."""
    jobs = settings.plotter.jobs
    store = JobStore(db)
    outcome = PassOutcome()
    now = clock()
    running, outcome.ended = reconcile(settings, store, notifier, now)
    with_progress = [(job, job_progress(job)) for job in running]
    for job, progress in with_progress:
        replot_if_due(settings, store, job, progress, db, with_progress)
    if start and jobs.enabled:
        outcome.started, outcome.refusal = _start_what_fits(settings, store, notifier, with_progress, clock)
    maybe_send_summary(settings, db, store, notifier, clock())
    return outcome


def _start_what_fits(settings: Settings, store: JobStore, notifier: Notifier,
                     running: list[tuple[JobRecord, JobProgress]], clock: Clock) -> tuple[list[JobRecord], Refusal | None]:
    jobs = settings.plotter.jobs
    plot_bytes = expected_plot_size(jobs.k, jobs.compression)
    actives = active_jobs(store, running)
    last_starts = store.last_starts()
    replaceable = replaceable_room(jobs)
    started: list[JobRecord] = []
    while True:
        now = clock()
        temps, outputs = gather_space(jobs, replaceable)
        decision = next_start(now, actives, temps, outputs, jobs, last_starts, plot_bytes)
        if isinstance(decision, Refusal):
            break
        try:
            record = start_job(settings, store, decision, now)
        except PlotManagerError as exc:
            if store.db.alert_transition(CANNOT_START_ALERT, True, str(exc)):
                notifier.send(Notification(event="plot_job_failed", subject=f"{settings.hostname}: cannot start plot jobs",
                                           short_text=f"{settings.hostname}: {exc}",
                                           context={"hostname": settings.hostname, "problem": str(exc)}))
            raise
        store.db.alert_transition(CANNOT_START_ALERT, False)
        started.append(record)
        _notify_started(settings, notifier, record)
        actives.append(ActiveJob(temp_dir=decision.temp_dir, dest_dir=decision.dest_dir, phase=None, started_at=now))
        last_starts[decision.temp_dir] = now
    log.debug("no further plot job now: %s", decision.reason)
    if decision.kind == "no_destination":
        if store.db.alert_transition(NO_DESTINATION_ALERT, True, decision.reason):
            log.warning("no plot destination: %s", decision.reason)
            notifier.send(Notification(
                event="no_plot_destination", subject=f"{settings.hostname}: no room for new plots",
                short_text=f"{settings.hostname}: no plot job started: {decision.reason}",
                context={"hostname": settings.hostname, "reason": decision.reason},
            ))
    # ``outputs`` is still current: the refusal that ended the loop started nothing.
    elif started or pick_destination(outputs, actives, plot_bytes) is not None:
        store.db.alert_transition(NO_DESTINATION_ALERT, False)
    return started, decision


def _notify_started(settings: Settings, notifier: Notifier, job: JobRecord) -> None:
    notifier.send(Notification(
        event="plot_job_started", subject=f"{settings.hostname}: plot job {job.job_id} started",
        short_text=f"{settings.hostname}: plot job {job.job_id} ({job.program}) started: temp {job.temp_dir}, "
                   f"destination {job.dest_dir}",
        context={"hostname": settings.hostname, "job": job.job_id, "program": job.program, "pid": job.pid,
                 "temp_dir": str(job.temp_dir), "dest_dir": str(job.dest_dir), "log": str(job.log_path)},
    ))


# -- summary ------------------------------------------------------------------------------------


def maybe_send_summary(settings: Settings, db: StateDB, store: JobStore, notifier: Notifier, now: float) -> JobSummary | None:
    hours = settings.plotter.jobs.summary_hours
    if hours <= 0:
        return None
    last = db.get(SUMMARY_KEY)
    if last is None:
        db.set(SUMMARY_KEY, now)  # the first period starts now
        return None
    if now - float(last) < hours * 3600:
        return None
    summary = summarise(store.completed_between(float(last), now), (now - float(last)) / 3600)
    db.set(SUMMARY_KEY, now)
    average = f"{summary.average_plot_seconds / 60:.1f} min" if summary.average_plot_seconds else "n/a"
    notifier.send(Notification(
        event="plot_job_summary", subject=f"{settings.hostname}: plot jobs in the last {summary.hours:.0f} h",
        short_text=f"{settings.hostname}: {summary.jobs_done} plots done in {summary.hours:.1f} h, average {average}, "
                   f"{summary.plots_per_day} plots/day",
        context={"hostname": settings.hostname, "jobs_done": summary.jobs_done, "average_plot_time": average,
                 "plots_per_day": summary.plots_per_day, "hours": round(summary.hours, 1)},
    ))
    return summary

