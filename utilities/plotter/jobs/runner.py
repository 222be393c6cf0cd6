"""Start, find, watch and stop plot jobs on this machine.

Jobs are started detached: their own session (so a Ctrl-C, a dying cron run or a killed
``--loop`` never takes them along), stdin from /dev/null, stdout and stderr into the job's own
log file. Which jobs run is then learnt again on every pass from the process list, matched to
our records by pid *and* create_time; plotters nobody recorded (started by hand, or by an
older manager) working in one of our temp directories (in any, when none is configured) are
adopted, with their log found
through ``/proc/PID/fd/1`` when their output goes to a file.

Every decision is made elsewhere (``scheduler.next_start``; which files a job owns in
``files.py``); this module gathers the facts and carries decisions out.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from utilities.config import Settings, expand_path
from utilities.errors import PlotManagerError
from utilities.notify import Notification, Notifier
from utilities.plots import expected_plot_size, is_finished_plot_name
from utilities.plotter.jobs import files as job_files
from utilities.plotter.jobs.commands import JobPlacement, build_command
from utilities.plotter.jobs.processes import (
    PlotterProcess,
    live_process,
    plotter_processes,
    process_stats,
    stdout_log,
    terminate_job,
)
from utilities.plotter.jobs.progress import JobProgress, is_final_phase, parse_progress
from utilities.plotter.jobs.report import JobSummary, summarise
from utilities.plotter.jobs.scheduler import ActiveJob, Refusal, StartDecision, next_start, pick_destination
from utilities.plotter.jobs.store import COMPLETED, FAILED, RUNNING, STOPPED, JobRecord, JobStore
from utilities.settings.plot_jobs import PlotJobSettings
from utilities.state import StateDB

log = logging.getLogger(__name__)

#: Plotter logs are small (a k32 chia log is ~2,000 lines); a cap keeps a runaway one harmless.
LOG_READ_LIMIT = 8 * 1024 * 1024
NO_DESTINATION_ALERT = "plot_jobs.no_destination"
CANNOT_START_ALERT = "plot_jobs.cannot_start"
SUMMARY_KEY = "plot_jobs.summary_at"

Clock = Callable[[], float]

# Children this process started and has not reaped yet (``--loop`` runs for days).
_children: dict[int, subprocess.Popen[bytes]] = {}


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


@dataclass
class PassOutcome:
    statuses: list[JobStatus] = field(default_factory=list)
    started: list[JobRecord] = field(default_factory=list)
    ended: list[tuple[JobRecord, str]] = field(default_factory=list)
    refusal: Refusal | None = None


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
    _children[proc.pid] = proc
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:  # ended already (bad arguments): still recorded, ends next pass
        create_time = now
    record = JobRecord(
        job_id=job_id, pid=proc.pid, create_time=create_time, started_at=now, program=jobs.program,
        argv=tuple(argv), temp_dir=decision.temp_dir, temp2_dir=decision.temp2_dir, dest_dir=decision.dest_dir,
        log_path=log_path, replot=jobs.replot.enabled and decision.dest_dir in jobs.replot.directories,
    )
    store.add(record)
    log.info("started plot job %s (pid %d): %s", job_id, proc.pid, " ".join(argv))
    return record


def reap_children() -> None:
    """Collect exit statuses of jobs this process started, so none lingers as a zombie."""
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            _children.pop(pid, None)


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
                    and not is_finished_plot_name(os.path.basename(p))]
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


# -- stopping and cleaning ----------------------------------------------------------------------


@dataclass
class StopResult:
    job: JobRecord
    was_running: bool
    killed: list[int]
    deleted: list[Path]
    problems: list[str]


def unshared_temp_dirs(store: JobStore, job: JobRecord) -> list[Path]:
    """bladebit names its temp files without the plot id (``table_l_2.tmp``, ``y0.tmp``): in a
    temp directory no other running bladebit job uses, such ``*.tmp`` files are this job's."""
    if job.program != "bladebit":
        return []
    others = [j for j in store.jobs([RUNNING]) if j.job_id != job.job_id and j.program == "bladebit"]
    used = {os.path.normpath(d) for j in others for d in (j.temp_dir, j.temp2_dir) if d is not None}
    return [d for d in (job.temp_dir, job.temp2_dir) if d is not None and os.path.normpath(d) not in used]


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
