"""plot_manager.py's actions: the cron pass, --send, --dry-run and --history."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from utilities.config import Settings
from utilities.errors import UsageError
from utilities.locking import exclusive_lock
from utilities.metrics import plotter_metrics, write_textfile
from utilities.notify import Notifier
from utilities.plot_finder import FinishedPlot
from utilities.plotter import PlotterOutcome, run_plotter_pass
from utilities.state import StateDB

log = logging.getLogger(__name__)


def terminal_progress(plot: FinishedPlot, harvester: str) -> Callable[[int, int], None]:
    """A tqdm bar on the terminal for a manual --send (cron runs log instead)."""
    from tqdm import tqdm

    bar = tqdm(total=plot.size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"{plot.name[:40]} -> {harvester}")
    state = {"done": 0}

    def update(done: int, total: int) -> None:
        bar.update(done - state["done"])
        state["done"] = done
        if done >= total:
            bar.close()

    return update


def logged_progress(plot: FinishedPlot, harvester: str) -> Callable[[int, int], None]:
    """For cron runs: a log line at every quarter of the plot, so a stall shows in the log."""
    state = {"next": 25}

    def update(done: int, total: int) -> None:
        percent = done * 100 // total if total else 100
        while percent >= state["next"] <= 100:
            log.info("%s -> %s: %d%% (%d of %d bytes)", plot.name, harvester, state["next"], done, total)
            state["next"] += 25

    return update


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
    return lines


def history(args: argparse.Namespace, db: StateDB) -> int:
    since = time.time() - 24 * 3600
    records = db.transfers_since(since)
    done = [r for r in records if r.ok]
    total_bytes = sum(r.bytes for r in done)
    total_seconds = sum(r.seconds for r in done)
    summary = {
        "plots_moved_24h": len(done),
        "failed_attempts_24h": len(records) - len(done),
        "bytes_moved_24h": total_bytes,
        "average_mb_per_second": round(total_bytes / 1e6 / total_seconds, 1) if total_seconds else None,
        "transfers": [r.__dict__ | {"mb_per_second": round(r.mb_per_second, 1)} for r in records],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"Plots moved in the last 24 hours:   {summary['plots_moved_24h']}")
    print(f"Failed attempts in the last 24 h:   {summary['failed_attempts_24h']}")
    print(f"Data moved in the last 24 hours:    {total_bytes / 1e9:.1f} GB")
    print(f"Average speed:                      {summary['average_mb_per_second'] or 'n/a'} MB/s")
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at))
        status = f"{r.mb_per_second:.0f} MB/s" if r.ok else f"FAILED: {r.reason}"
        print(f"  {when}  {r.plot}  -> {r.harvester}  {status}")
    return 0


def run_plot_manager(args: argparse.Namespace, settings: Settings, config_path: Path) -> int:
    if args.to and not args.send:
        raise UsageError("--to goes with --send PLOT")
    if args.json and not args.history:
        raise UsageError("--json goes with --history")
    with StateDB(settings.database_path) as db:
        if args.history:
            return history(args, db)
        notifier = Notifier(settings.notifications)
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
    return 1 if outcome.failures or (args.send and outcome.unplaced) else 0
