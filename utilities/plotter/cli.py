"""plot_manager.py's actions: the cron pass, --send, --dry-run, --history and the plot job flags."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from utilities.config import Settings
from utilities.errors import LockBusy, PlotManagerError, UsageError
from utilities.locking import exclusive_lock
from utilities.notify import Notifier
from utilities.progress import ByteProgress, TerminalBar, quarter_marks
from utilities.state import StateDB
from utilities.transfer_summary import last_day_summary

if TYPE_CHECKING:
    from utilities.plot_finder import FinishedPlot
    from utilities.plotter.jobs.runner import PassOutcome
    from utilities.plotter.sending import PlotterOutcome

log = logging.getLogger(__name__)


def terminal_progress(plot: FinishedPlot, harvester: str) -> ByteProgress:
    """A tqdm bar on the terminal for a manual --send (cron runs log instead)."""
    return TerminalBar(plot.size, f"{plot.name[:40]} -> {harvester}")


def logged_progress(plot: FinishedPlot, harvester: str) -> ByteProgress:
    """For cron runs: a log line at every quarter of the plot, so a stall shows in the log."""
    return quarter_marks(lambda percent, done, total: log.info(
        "%s -> %s: %d%% (%d of %d bytes)", plot.name, harvester, percent, done, total))


def describe(outcome: PlotterOutcome, dry_run: bool) -> list[str]:
    lines = [f"harvester {name} skipped: {reason}" for name, reason in outcome.unreachable.items()]
    for planned in outcome.planned:
        if dry_run:
            lines.append(f"would send {planned.plot.path} ({planned.plot.header.kind}, {planned.plot.size} bytes) to {planned.harvester}")
    for planned, result in outcome.results:
        if result.ok:
            lines.append(f"sent {result.name} to {planned.harvester}: {result.size} bytes in {result.seconds:.1f} s ({result.mb_per_s:.0f} MB/s)")
        else:
            lines.append(f"FAILED {planned.plot.name} to {planned.harvester}: {result.reason}")
    lines += [f"no harvester has room for {name}" for name in outcome.unplaced]
    lines += [f"{name} waits for the next run: {why}" for name, why in outcome.waiting.items()]
    return lines


def history(args: argparse.Namespace, db: StateDB) -> int:
    now = time.time()
    records = db.transfers_since(now - 24 * 3600)
    summed = last_day_summary(records, now)
    summary = {
        "plots_moved_24h": summed.plots_moved,
        "failed_attempts_24h": summed.failed_attempts,
        "bytes_moved_24h": summed.bytes_moved,
        "bytes_saved_by_resume_24h": summed.bytes_saved_by_resume,
        "average_mb_per_second": summed.average_mb_per_second,
        "transfers": [r.__dict__ | {"mb_per_second": round(r.mb_per_second, 1)} for r in records],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"Plots moved in the last 24 hours:   {summary['plots_moved_24h']}")
    print(f"Failed attempts in the last 24 h:   {summary['failed_attempts_24h']}")
    print(f"Data moved in the last 24 hours:    {summed.bytes_moved / 1e9:.1f} GB")
    print(f"Saved by resumed transfers:         {summary['bytes_saved_by_resume_24h'] / 1e9:.1f} GB")
    print(f"Average speed:                      {summary['average_mb_per_second'] or 'n/a'} MB/s")
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at))
        status = f"{r.mb_per_second:.0f} MB/s" if r.ok else f"FAILED: {r.reason}"
        if r.ok and r.saved:
            status += f" (resumed: {r.saved / 1e9:.1f} GB not sent again)"
        print(f"  {when}  {r.plot}  -> {r.harvester}  {status}")
    return 0


def _job_action(args: argparse.Namespace) -> bool:
    return bool(args.jobs or args.start_jobs or args.loop is not None or args.stop or args.remove_aborted)


def check_flags(args: argparse.Namespace) -> None:
    """Flag combinations argparse cannot express; each error names the flag."""
    if args.to and not args.send:
        raise UsageError("--to goes with --send PLOT")
    if args.json and not (args.history or args.jobs):
        raise UsageError("--json goes with --history or --jobs")
    if args.host and not (args.jobs or args.stop or args.remove_aborted):
        raise UsageError("--host goes with --jobs, --stop JOB or --remove-aborted")
    if _job_action(args) and (args.send or args.history or args.dry_run):
        raise UsageError("--jobs, --start-jobs, --loop, --stop and --remove-aborted go without --send, --history and --dry-run")
    if args.loop is not None and args.loop < 0:
        raise UsageError("--loop SECONDS must not be negative")


def without_resume(settings: Settings) -> Settings:
    """``--no-resume``: this run's transfers start from byte 0 after a drop (as the config key)."""
    transfer = settings.plotter.transfer.model_copy(update={"resume": False})
    return settings.model_copy(update={"plotter": settings.plotter.model_copy(update={"transfer": transfer})})


def run_plot_manager(args: argparse.Namespace, settings: Settings, config_path: Path) -> int:
    check_flags(args)
    if getattr(args, "no_resume", False):
        settings = without_resume(settings)
    if _job_action(args):
        return run_job_action(args, settings)
    with StateDB(settings.database_path) as db:
        if args.history:
            return history(args, db)
        notifier = Notifier(settings.notifications)
        if settings.plotter.jobs.enabled and not args.send and not args.dry_run:
            jobs_pass_locked(settings, db, notifier)
            # A plotter that only plots (its plots leave some other way) is a valid config,
            # also while another run holds the scheduling lock.
            if not settings.farm.harvesters:
                log.info("farm.harvesters is empty: plot jobs only, no transfers")
                return 0
        # Imported here: the transfer machinery (paramiko, netcat streams) is not needed by the
        # plot job flags, which --loop and remote --jobs calls run often.
        from utilities.metrics import plotter_metrics, write_textfile
        from utilities.plotter.sending import run_plotter_pass

        progress = terminal_progress if args.send and sys.stderr.isatty() else logged_progress
        if args.send:
            outcome = run_plotter_pass(settings, db, notifier, only_path=Path(args.send), only_harvester=args.to,
                                       dry_run=args.dry_run, progress=progress)
        else:
            with exclusive_lock(settings.state_path / "plot_manager.lock", "plot_manager.py run"):
                outcome = run_plotter_pass(settings, db, notifier, dry_run=args.dry_run, progress=progress)
        if settings.plotter.metrics_dir is not None and not args.dry_run:
            write_textfile(settings.plotter.metrics_dir, "plot_manager_plotter",
                           plotter_metrics(settings.hostname, db.transfers_since(0), time.time()))
    for line in describe(outcome, args.dry_run):
        print(line)
    return 1 if outcome.failures or (args.send and (outcome.unplaced or outcome.waiting)) else 0


# -- plot jobs ----------------------------------------------------------------------------------


def jobs_pass_locked(settings: Settings, db: StateDB, notifier: Notifier) -> PassOutcome | None:
    """One scheduling pass, unless another run (cron or --loop) is in the middle of one."""
    from utilities.plotter.jobs.runner import run_jobs_pass

    try:
        with exclusive_lock(settings.state_path / "plot_jobs.lock", "plot job scheduling"):
            outcome = run_jobs_pass(settings, db, notifier)
    except LockBusy as busy:
        log.info("%s; skipping this scheduling pass", busy)
        return None
    for job in outcome.started:
        log.info("started plot job %s: temp %s, destination %s", job.job_id, job.temp_dir, job.dest_dir)
    return outcome


def run_job_action(args: argparse.Namespace, settings: Settings) -> int:
    if args.host:
        return remote_job_action(args, settings)
    from utilities.plotter.jobs import stopping, tracking
    from utilities.plotter.jobs.report import jobs_json, jobs_table

    with StateDB(settings.database_path) as db:
        notifier = Notifier(settings.notifications)
        if args.jobs:
            rows = [s.as_dict() for s in tracking.list_jobs(settings, db, notifier)]
            print(jobs_json(rows) if args.json else jobs_table(rows))
            return 0
        if args.stop:
            result = stopping.stop_job(settings, db, notifier, args.stop)
            what = "stopped" if result.was_running else "was not running"
            print(f"job {result.job.job_id} (pid {result.job.pid}) {what}; deleted {len(result.deleted)} temporary file(s)")
            for problem in result.problems:
                print(f"could not delete {problem}", file=sys.stderr)
            return 1 if result.problems else 0
        if args.remove_aborted:
            results = stopping.remove_aborted(settings, db, notifier)
            problems = 0
            for job, deleted, trouble in results:
                print(f"job {job.job_id} ({job.state}): deleted {len(deleted)} temporary file(s)")
                for problem in trouble:
                    print(f"could not delete {problem}", file=sys.stderr)
                problems += len(trouble)
            if not results:
                print("no ended job has temporary files left")
            return 1 if problems else 0
        if not settings.plotter.jobs.enabled:
            raise UsageError("--start-jobs/--loop: plotter.jobs.enabled is false in the config")
        if args.start_jobs:
            outcome = jobs_pass_locked(settings, db, notifier)
            if outcome is None:
                return 0
            for job in outcome.started:
                print(f"started job {job.job_id} (pid {job.pid}): temp {job.temp_dir}, destination {job.dest_dir}")
            if outcome.refusal is not None and not outcome.started:
                print(f"no job started: {outcome.refusal.reason}")
            return 0
        interval = args.loop or settings.plotter.jobs.loop_seconds
        log.info("scheduling plot jobs every %.0f s", interval)
        while True:
            jobs_pass_locked(settings, db, notifier)
            time.sleep(interval)


def remote_job_action(args: argparse.Namespace, settings: Settings) -> int:
    """--host: the same command on other plotters over SSH."""
    from utilities.plotter.jobs import remote_jobs
    from utilities.plotter.jobs.report import jobs_json, jobs_table
    from utilities.remote import RemoteError

    if args.host == "all" and not args.jobs:
        raise UsageError("--host all goes with --jobs only; name one plotter to --stop or --remove-aborted")
    remotes = remote_jobs.choose_remotes(settings, args.host)
    if args.jobs:
        rows, problems = remote_jobs.remote_jobs(settings, remotes)
        if args.host == "all":
            from utilities.plotter.jobs import tracking

            with StateDB(settings.database_path) as db:
                local = [s.as_dict() | {"host": settings.hostname}
                         for s in tracking.list_jobs(settings, db, Notifier(settings.notifications))]
            rows = local + rows
        print(jobs_json(rows) if args.json else jobs_table(rows, problems))
        for name, problem in problems.items():
            log.warning("%s", problem)
            if args.json:
                print(f"{name}: {problem}", file=sys.stderr)
        return 1 if problems else 0
    (remote,) = remotes
    flags = ["--stop", args.stop] if args.stop else ["--remove-aborted"]
    try:
        result = remote_jobs.run_remote(settings, remote, *flags)
    except RemoteError as exc:
        raise PlotManagerError(str(exc)) from None
    # Each line says which plotter it came from, as the --jobs table does.
    for text, stream in ((result.stdout, sys.stdout), (result.stderr, sys.stderr)):
        for line in text.splitlines():
            print(f"{remote.name}: {line}", file=stream)
    return result.exit_status
