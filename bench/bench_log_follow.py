#!/usr/bin/env python3
"""Benchmark: coin_monitor.py's cron run on a big chia ``debug.log``.

Target (issue 5): "the second run on a 1 GiB log must cost time proportional to the new bytes
only". What it does:

1. Writes a ``--size-mib`` (default 1024) ``debug.log`` of chia 2.5.7 lines, formatted like
   chia formats them (tests/support/chia_log_writer.py): signage points, harvester checks,
   peer noise, wallet coin lines, a farmed block, pool errors. A 1 MiB block of lines is
   written over and over (the same coins and blocks repeat: they are recorded once).
2. Times the peers that read the whole file: ``wc -l`` and ``grep -c 'Farmed unfinished_block'``.
3. Times coin_monitor.py's runs, each a fresh process like cron starts it, with the state
   database in a temporary state directory and no notification switched on:
   the first run (``farmer.start_at: beginning``: reads and parses the whole file), a run with
   nothing new, and runs after appending ``--append-mib`` (default 1 and 16) MiB.
   ``coin_monitor.py --version`` is timed as the fixed cost of starting Python and importing.
4. Prints each time, the bytes the run read (from the state database's offsets), and the ratios
   of the second run to the full-file peers and to the first run.

The file is in the page cache for every tool (it was just written): the figures compare work
done, not disk speed; on a cold cache the full reads would be slower still.

Usage:  .venv/bin/python bench/bench_log_follow.py [--size-mib 1024] [--append-mib 1 16] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.chia_log_writer import CHIA_2_5_7, ChiaLogWriter  # noqa: E402
from utilities.config import load_settings  # noqa: E402
from utilities.farmer.monitor import run_monitor  # noqa: E402
from utilities.notify import Notifier  # noqa: E402
from utilities.state import StateDB  # noqa: E402

MIB = 1024 * 1024


def make_block(writer: ChiaLogWriter, target: int) -> bytes:
    """About ``target`` bytes of chia lines in a farmer's usual proportions."""
    path = writer.path
    if path.exists():
        path.unlink()
    index = 0
    while not path.exists() or path.stat().st_size < target:
        writer.noise(6)
        writer.harvester(eligible=index % 7, proofs=0, seconds=0.3 + (index % 5) / 10, total=18321, seed=index)
        writer.write("full_node", "full_node_server", "INFO", f"Connection closed: 10.0.{index % 250}.7, node id: {index:064x}")
        if index % 50 == 0:
            writer.coin(index, 250_000_000_000)
            writer.pool_error("sending")
        if index % 400 == 0:
            writer.block(index)
        index += 1
    data = path.read_bytes()
    path.unlink()
    return data


def build_log(path: Path, size_mib: int) -> bytes:
    writer = ChiaLogWriter(path.with_name("template.log"), CHIA_2_5_7, start=datetime(2025, 11, 21, 7, 0, 0))
    block = make_block(writer, MIB)
    with open(path, "wb") as handle:
        for _ in range(max(1, size_mib * MIB // len(block))):
            handle.write(block)
    later = ChiaLogWriter(path.with_name("template.log"), CHIA_2_5_7, start=datetime(2025, 11, 22, 7, 0, 0) + timedelta(hours=1))
    return make_block(later, 64 * 1024)


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # grep -c exits 1 when nothing matches
        raise SystemExit(f"{command[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed


def offset(state_db: Path, log: Path) -> int:
    with sqlite3.connect(state_db) as conn:
        row = conn.execute("SELECT offset FROM log_follow WHERE log_path = ?", (str(log),)).fetchone()
    return int(row[0]) if row else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--append-mib", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--runs", type=int, default=3, help="repetitions of the peers and the warm runs (median)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the log (default: a temporary directory)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench_log_follow.", dir=args.dir))
    try:
        log = root / "log" / "debug.log"
        log.parent.mkdir()
        state = root / "state"
        config = root / "plot_manager.yaml"
        config.write_text(
            f"state_dir: {state}\nfarmer:\n  chia_log: {log}\n  chia_config: {root / 'config.yaml'}\n"
            "  start_at: beginning\n  harvester_silent_minutes: 0\n"
        )
        config.chmod(0o600)
        (root / "config.yaml").write_text("logging:\n  log_level: INFO\n")
        env = {**os.environ, "PLOT_MANAGER_CONFIG": str(config)}
        monitor = [sys.executable, str(REPO / "coin_monitor.py")]

        t0 = time.perf_counter()
        more = build_log(log, args.size_mib)
        size = log.stat().st_size
        print(f"log: {size / MIB:,.0f} MiB written in {time.perf_counter() - t0:.1f} s ({log})")

        def median(command: list[str]) -> float:
            return statistics.median(timed(command, env) for _ in range(args.runs))

        rows: list[tuple[str, float, int | None]] = []
        wc = median(["wc", "-l", str(log)])
        grep = median(["grep", "-c", "Farmed unfinished_block", str(log)])
        startup = median([*monitor, "--version"])
        rows += [("wc -l (whole file)", wc, size), ("grep -c (whole file)", grep, size),
                 ("coin_monitor.py --version (start-up)", startup, None)]

        # In this process (no Python start-up): the follow + parse + record work alone.
        os.environ["PLOT_MANAGER_CONFIG"] = str(config)
        settings, _ = load_settings(None)
        inproc_db = root / "inproc.sqlite3"

        def in_process() -> float:
            start = time.perf_counter()
            with StateDB(inproc_db) as db:
                run_monitor(settings.farmer, db, Notifier(settings.notifications), "bench")
            return time.perf_counter() - start

        in_first = in_process()
        in_nothing = statistics.median(in_process() for _ in range(args.runs))

        first = timed(monitor, env)
        read_first = offset(state / "state.sqlite3", log)
        rows.append(("coin_monitor.py first run (whole file)", first, read_first))
        nothing = median(monitor)
        rows.append(("coin_monitor.py second run, nothing new", nothing, 0))
        seconds_by_size: dict[int, float] = {}
        in_by_size: dict[int, float] = {}
        for mib in args.append_mib:
            times, in_times = [], []
            for _ in range(args.runs):
                before = offset(state / "state.sqlite3", log)
                with open(log, "ab") as handle:
                    for _ in range(mib * MIB // len(more)):
                        handle.write(more)
                times.append(timed(monitor, env))
                read = offset(state / "state.sqlite3", log) - before
                in_times.append(in_process())
            seconds_by_size[mib] = statistics.median(times)
            in_by_size[mib] = statistics.median(in_times)
            rows.append((f"coin_monitor.py second run, +{mib} MiB", seconds_by_size[mib], read))
        rows += [("in-process first run (whole file)", in_first, size),
                 ("in-process second run, nothing new", in_nothing, 0)]
        rows += [(f"in-process second run, +{mib} MiB", seconds, mib * MIB // len(more) * len(more))
                 for mib, seconds in in_by_size.items()]

        print(f"\n{'what':<44} {'seconds':>9} {'bytes read':>15}")
        for name, seconds, read in rows:
            print(f"{name:<44} {seconds:>9.3f} {('' if read is None else f'{read:,}'):>15}")
        print("\nratios (second run / peer):")
        for mib, seconds in seconds_by_size.items():
            print(f"  +{mib} MiB: {seconds / wc:.3f} x wc -l, {seconds / grep:.3f} x grep -c, "
                  f"{seconds / first:.4f} x first run; above start-up: {seconds - startup:.3f} s")
        print(f"  nothing new: {nothing / wc:.3f} x wc -l, {nothing / first:.4f} x first run; "
              f"above start-up: {nothing - startup:.3f} s")
        print("in process (no Python start-up):")
        for mib, seconds in in_by_size.items():
            print(f"  +{mib} MiB: {seconds / wc:.3f} x wc -l, {seconds / grep:.3f} x grep -c, {seconds / in_first:.4f} x first run")
        print(f"  nothing new: {in_nothing * 1000:.1f} ms, {in_nothing / wc:.4f} x wc -l")
        if len(in_by_size) >= 2:
            (small, t_small), (big, t_big) = sorted(in_by_size.items())[:2]
            print(f"  +{big} MiB vs +{small} MiB: {t_big / t_small:.1f}x the time for {big / small:.0f}x the bytes")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
