#!/usr/bin/env python3
"""Throughput of ``drive_manager.py --check-plots`` against chia's own way of checking plots.

The peer is what ``chia plots check`` does (chia-blockchain ``chia/plotting/check_plots.py``):
one process, chiapos' DiskProver per plot, qualities for 30 challenges sha256(i as 32 bytes),
the full proof of every quality, verified; chia runs the plots in a pool of 5 threads
(harvester.parallel_decompressers_count), so the peer is measured with 1 and with 5 threads.
Ours is the real script as cron starts it: its own process, idle I/O priority, nice 19, and a
child process per plot (so a plot that crashes chiapos cannot end the run); and once more with
``idle_priority: false``, which tells the cost of politeness (on a busy machine a nice-19 process
waits for every other one) from the cost of the mechanism.

Every tool reads cold: before each run the plot files are dropped from the page cache
(posix_fadvise DONTNEED on the fsynced files), so "bytes read" is what came from the disk. It is
counted for the whole tool process and its children (getrusage RUSAGE_CHILDREN, ru_inblock).
The plots are real chiapos plots (tests/support/plotmaker.py), plotted once per k and copied.

No root needed.  .venv/bin/python bench/bench_check_plots.py [--k 18 20] [--plots 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from benchlib import REPO, cached_fraction, print_markdown_table

from tests.support.plotmaker import make_plot, plot_name

PEER = textwrap.dedent('''
    import concurrent.futures, hashlib, json, sys
    from pathlib import Path
    from chiapos import DiskProver, Verifier
    paths, num, threads = sys.argv[1:-2], int(sys.argv[-2]), int(sys.argv[-1])
    verifier = Verifier()
    def check(path):
        prover = DiskProver(path)
        proofs = 0
        for i in range(num):
            challenge = hashlib.sha256(i.to_bytes(32, "big")).digest()
            for index, quality in enumerate(prover.get_qualities_for_challenge(challenge)):
                proof = prover.get_full_proof(challenge, index, True)
                assert verifier.validate_proof(prover.get_id(), prover.get_size(), challenge, proof) == quality
                proofs += 1
        return proofs
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        print(json.dumps(list(pool.map(check, paths))))
''')


@dataclass
class Run:
    seconds: float  # the whole process, start-up included
    bytes_read: int
    proofs: int
    checking_seconds: float | None = None  # ours: the checks alone (its summary), without start-up


def drop_cache(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(cmd: list[str], paths: list[Path]) -> tuple[float, int, str]:
    """Run ``cmd`` on a cold page cache: wall seconds, bytes it (and its children) read from disk, stdout."""
    drop_cache(paths)
    resident = [f for f in (cached_fraction(p) for p in paths[:3]) if f is not None]
    if any(f > 0.01 for f in resident):
        print(f"warning: plots still {max(resident):.0%} in the page cache", file=sys.stderr)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_inblock
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    read = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_inblock - before) * 512
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{cmd[:3]} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return seconds, read, proc.stdout


def ours(config: Path, paths: list[Path]) -> Run:
    """The real script as cron runs it (config: idle priority on or off)."""
    seconds, read, out = timed([sys.executable, str(REPO / "drive_manager.py"), "--config", str(config),
                                "--check-plots", "--json"], paths)
    result = json.loads(out)
    if result["summary"]["plots_checked"] != len(paths) or result["summary"]["ok"] != len(paths):
        raise SystemExit(f"--check-plots did not pass every plot: {result['summary']}")
    return Run(seconds, read, sum(p["proofs"] for p in result["plots"]), result["summary"]["seconds"])


def peer(paths: list[Path], challenges: int, threads: int) -> Run:
    seconds, read, out = timed([sys.executable, "-c", PEER, *map(str, paths), str(challenges), str(threads)], paths)
    return Run(seconds, read, sum(json.loads(out)))


def setup(work: Path, k: int, count: int, challenges: int) -> tuple[Path, Path, list[Path]]:
    plots = work / f"k{k}" / "plots"
    plots.mkdir(parents=True)
    started = time.perf_counter()
    source = make_plot(work / f"k{k}" / "source", k=k)
    print(f"k{k}: plotted in {time.perf_counter() - started:.1f} s ({source.stat().st_size / 1e6:.1f} MB); "
          f"{count} copies", file=sys.stderr)
    paths = []
    for _ in range(count):
        target = plots / plot_name(k, os.urandom(32))
        shutil.copyfile(source, target)
        paths.append(target)
    config = work / f"k{k}" / "plot_manager.yaml"
    config.write_text(yaml.safe_dump({
        "config_version": 1, "hostname": "bench", "state_dir": str(work / f"k{k}" / "state"), "plot_size": "k32",
        "harvester": {
            "drive_discovery": {"device_patterns": ["/nonexistent"], "mountpoint_patterns": ["/nonexistent"],
                                "plot_directories": [str(plots)]},
            "receive_script": str(work / "receive_plot.sh"), "chia_log": str(work / "debug.log"),
            "plot_checks": {"challenges": challenges, "recheck_days": 0, "budget_minutes": 10_000},
        },
    }))
    config.chmod(0o600)
    normal = config.with_name("normal_priority.yaml")
    data = yaml.safe_load(config.read_text())
    data["harvester"]["plot_checks"]["idle_priority"] = False
    normal.write_text(yaml.safe_dump(data))
    normal.chmod(0o600)
    return config, normal, paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[18, 20], help="plot sizes (default 18 20)")
    parser.add_argument("--plots", type=int, default=30, help="plots per k (default 30)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool; the median is shown (default 3)")
    parser.add_argument("--challenges", type=int, default=30, help="challenges per plot (default 30, chia's)")
    parser.add_argument("--work-dir", type=Path, default=Path("/var/tmp"), help="where the plots go (a disk, not tmpfs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-check-plots-", dir=args.work_dir))
    rows = []
    try:
        for k in args.k:
            config, normal, paths = setup(work, k, args.plots, args.challenges)
            tools = {
                "ours (--check-plots)": lambda c=config, p=paths: ours(c, p),
                "ours, idle_priority: false": lambda c=normal, p=paths: ours(c, p),
                "peer, 1 thread": lambda p=paths: peer(p, args.challenges, 1),
                "peer, 5 threads (chia's default)": lambda p=paths: peer(p, args.challenges, 5),
            }
            results: dict[str, list[Run]] = {name: [] for name in tools}
            for _ in range(args.runs):  # interleaved, so drift in the machine hits every tool alike
                for name, tool in tools.items():
                    results[name].append(tool())
            proofs = {name: {r.proofs for r in runs} for name, runs in results.items()}
            if len({p for ps in proofs.values() for p in ps}) != 1:
                raise SystemExit(f"the tools found different proofs: {proofs}")
            base = statistics.median(r.seconds for r in results["ours (--check-plots)"])
            for name, runs in results.items():
                seconds = statistics.median(r.seconds for r in runs)
                read = statistics.median(r.bytes_read for r in runs)
                checking = [r.checking_seconds for r in runs if r.checking_seconds is not None]
                inner = f" ({statistics.median(checking):.2f})" if checking else ""
                rows.append([
                    f"k{k}", name, str(len(paths)), f"{seconds:.2f}{inner}", f"{len(paths) / seconds * 60:.0f}",
                    f"{read / len(paths) / 1e6:.2f}", f"{paths[0].stat().st_size / 1e6:.1f}", f"{seconds / base:.2f}",
                ])
        print_markdown_table(
            ["k", "tool", "plots", "seconds", "plots/min", "MB read/plot", "plot MB", "time vs ours"], rows,
            ["<", "<", ">", ">", ">", ">", ">", ">"],
        )
        print("\nseconds: the whole process (in brackets: ours' checks alone, without its start-up); "
              "MB read/plot: from the disk, for the whole process")
        print(f"{args.challenges} challenges per plot, every quality's full proof verified; cold page cache; "
              f"median of {args.runs} runs; {os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
