#!/usr/bin/env python3
"""Benchmark: the harvester's minute job (``drive_manager.py`` cron pass) on a big farm.

Target (from the issue): "the minute job costs well under a second of wall time at 300 drives /
30,000 plots, by not re-reading plot headers it has already read."

What it does (needs root: it mounts one tmpfs per drive):

1. Mounts ``--drives`` tmpfs "drives" under a fresh temporary directory, laid out like the
   original tool's farms (``enclosure{e}/{front|rear}/column{c}/drive{n}``: 36 bays per
   enclosure, front 4 columns x 6, rear 4 columns x 3, drives numbered across the farm), and
   fills each with ``--plots-per-drive`` sparse k32 plot files carrying real headers (v1 OG, v1
   pool, bladebit v2 compressed) under chia-style names, with modification times spread over
   the last ~400 days.  Sparse files cost one page of RAM each.
2. Times the real script in a subprocess with a cron-like environment: ``--version`` (Python
   start-up + imports: the fixed cost), the first cron pass (cold: every header read and
   stored), ``--runs`` warm cron passes and ``--runs`` warm ``-pr --json`` reports.
3. Times peers on the same mounts in the same process run: a bare GNU ``find`` listing (the
   minimum any plot counter must do), ``df`` over every drive (the free-space half of the job),
   and a minimal Python counter (psutil + os.scandir + stat + statfs, no database, no config).
4. Checks the pass saw every drive and plot, the free slots and plot kinds are right, and that a
   warm pass reads no header.  Prints the table (tool, min, median, ratio to ``find``) and the
   phases of a warm pass timed inside a fresh cron-like process; ``--profile`` adds a cProfile
   of one warm pass and the slowest imports (``python -X importtime``), on stderr.
5. Unmounts everything, also on Ctrl-C, SIGTERM or failure, and checks /proc/self/mounts.

Free space: a tmpfs reports its ``size=`` cap as total and only the written pages as used, so a
"drive" with 100 sparse k32 plots would claim all of its cap as free.  To get realistic free
slots each tmpfs is sized to what a ``--drive-tb`` drive holding those plots would have free
(and the first ``--full-drives`` drives to half a plot: full), so free slots are right while
``total_bytes`` in the export is the free space, not the drive size.

Device names: every tmpfs gets its own source ("tmpfs-drive{n}"), because ``select_plot_mounts``
takes one filesystem per *device string* (for bind mounts) and all tmpfs mounts share the device
"tmpfs": with ``--shared-source`` the harvester sees only the first drive (see bench/README.md).

Usage:  sudo .venv/bin/python bench/bench_harvester_pass.py [--drives 300 --plots-per-drive 100]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import REPO, CheckFailed, Scratch, print_markdown_table, run_in_scratch  # bench/ is sys.path[0]

SCRIPT = REPO / "drive_manager.py"
DAY = 24 * 3600
PAGE = 4096

# Bays of one enclosure (a 36-bay 4U JBOD/server as in the original's layout): (side, columns, rows).
ENCLOSURE_LAYOUT = (("front", 4, 6), ("rear", 4, 3))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time drive_manager.py's cron pass on many tmpfs drives full of sparse k32 plots (needs root).",
    )
    p.add_argument("--drives", type=int, default=300, help="number of tmpfs drives (default 300)")
    p.add_argument("--plots-per-drive", type=int, default=100, help="plot files per drive (default 100)")
    p.add_argument("--runs", type=int, default=5, help="timed warm runs per tool (default 5)")
    p.add_argument("--cold-runs", type=int, default=1,
                   help="cold cron passes (state database deleted before each after the first; default 1)")
    p.add_argument("--drive-tb", type=float, default=20.0,
                   help="capacity of each simulated drive in decimal TB, for its free space (default 20)")
    p.add_argument("--full-drives", type=int, default=None,
                   help="leading drives left without a free slot (default: half the drives)")
    p.add_argument("--compressed-share", type=float, default=0.2,
                   help="share of plots that are bladebit v2 compressed (default 0.2; the rest is half OG, half pool v1)")
    p.add_argument("--seed", type=int, default=1, help="random seed for the plot mix and times (default 1)")
    p.add_argument("--tmp", type=Path, default=None, help="parent of the temporary directory (default: system temp)")
    p.add_argument("--shared-source", action="store_true",
                   help='mount every tmpfs with the same source "tmpfs" (reproduces one-drive-only discovery)')
    p.add_argument("--smart", action="store_true",
                   help="let the cron pass read SMART (fake smartctl) on its normal 10-minute schedule; by "
                        "default the temperature check is pushed out so every timed pass is the same work")
    p.add_argument("--history-days", type=int, default=30,
                   help="SMART history kept in the state database before the SMART-pass rows are timed, one read per "
                        "drive every --smart-every minutes (default 30 days, the default harvester.health.history_days)")
    p.add_argument("--smart-every", type=int, default=10,
                   help="minutes between SMART reads in that history (default 10, alerts.temperature_check_minutes)")
    p.add_argument("--keep-going", action="store_true",
                   help="report failed sanity checks and keep measuring instead of stopping")
    p.add_argument("--profile", action="store_true",
                   help="also profile one warm pass in-process (cProfile) and the imports (-X importtime), to stderr")
    args = p.parse_args(argv)
    if args.drives < 1 or args.plots_per_drive < 0 or args.runs < 1 or args.cold_runs < 1:
        p.error("--drives, --runs and --cold-runs must be >= 1, --plots-per-drive >= 0")
    if args.full_drives is None:
        args.full_drives = args.drives // 2
    if not 0 <= args.full_drives <= args.drives:
        p.error("--full-drives must be between 0 and --drives")
    if not 0.0 <= args.compressed_share <= 1.0:
        p.error("--compressed-share must be between 0 and 1")
    return args


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit(
            "bench_harvester_pass.py needs root: it mounts one tmpfs per simulated drive "
            "(run it as root, e.g. sudo .venv/bin/python bench/bench_harvester_pass.py)."
        )
    missing = [t for t in ("mount", "umount", "find", "df") if shutil.which(t) is None]
    if missing:
        sys.exit(f"bench_harvester_pass.py needs these tools on PATH: {', '.join(missing)}")


# --------------------------------------------------------------------------------------------
# Farm layout and plot files
# --------------------------------------------------------------------------------------------


def drive_mountpoints(count: int) -> list[str]:
    """Relative mountpoints ``enclosure{e}/{side}/column{c}/drive{n}``, n counted across the farm."""
    rels: list[str] = []
    enclosure = 0
    while len(rels) < count:
        for side, columns, rows in ENCLOSURE_LAYOUT:
            for column in range(columns):
                for _ in range(rows):
                    if len(rels) < count:
                        rels.append(f"enclosure{enclosure}/{side}/column{column}/drive{len(rels)}")
        enclosure += 1
    return rels


@dataclass
class Expected:
    """What the harvester should report for the farm that was built."""

    drives: int = 0
    plots: int = 0
    og: int = 0
    pool: int = 0
    recent: int = 0
    free_slots: dict[str, int] = field(default_factory=dict)  # mountpoint -> free slots
    receive_mountpoint: str | None = None


@dataclass(frozen=True)
class PlotSpec:
    name: str
    kind: str  # og / pool
    compression: int  # 0: v1 header, else bladebit v2 compressed
    plot_id: bytes
    size: int
    mtime: float


def plan_drive(rng: random.Random, count: int, now: float, compressed_share: float) -> list[PlotSpec]:
    from tests.support.plotmaker import plot_name
    from utilities.plots import expected_plot_size

    specs = []
    for _ in range(count):
        plot_id = rng.randbytes(32)
        r = rng.random()
        if r < compressed_share:
            kind, compression = "pool", rng.randint(1, 7)
        else:
            kind, compression = ("og" if rng.random() < 0.5 else "pool"), 0
        # ~1% finished in the last day (the drive being filled), the rest over ~400 days; an hour
        # of margin so no plot leaves the last 24 h while the benchmark runs.
        age = rng.uniform(60, DAY - 3600) if rng.random() < 0.01 else rng.uniform(DAY + 60, 400 * DAY)
        specs.append(
            PlotSpec(plot_name(32, plot_id, compression), kind, compression, plot_id,
                     expected_plot_size(32, compression), now - age)
        )
    return specs


def write_plots(directory: Path, specs: Sequence[PlotSpec]) -> None:
    from tests.support.plotmaker import write_fake_v1_header, write_fake_v2_header

    for spec in specs:
        path = directory / spec.name
        if spec.compression:
            write_fake_v2_header(path, 32, spec.compression, spec.kind, spec.size, spec.plot_id)
        else:
            write_fake_v1_header(path, 32, spec.kind, spec.size, spec.plot_id)
        ns = int(spec.mtime * 1e9)
        os.utime(path, ns=(ns, ns))


def tmpfs_size(specs: Sequence[PlotSpec], capacity: int, plot_size: int, full: bool) -> tuple[int, int]:
    """(tmpfs size in bytes, free bytes it will report) for a drive holding ``specs``.

    Each sparse plot uses one page; the cap is what would be free on a real drive of
    ``capacity`` bytes (half a plot if the drive is to be full), rounded down to pages, plus
    those pages.
    """
    apparent = sum(s.size for s in specs)
    free = plot_size // 2 if full else max(plot_size // 2, capacity - apparent)
    free -= free % PAGE
    return free + len(specs) * PAGE, free


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def cron_env() -> dict[str, str]:
    """Roughly what cron gives a job: a short PATH, HOME, a shell, no virtualenv variables."""
    env = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LANG": "C.UTF-8"}
    for key in ("HOME", "LOGNAME", "USER"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


@dataclass
class Tool:
    label: str
    cmd: list[str]
    check_output: Callable[[str], None] | None = None
    times: list[float] = field(default_factory=list)

    def run_once(self, env: dict[str, str]) -> str:
        start = time.perf_counter()
        proc = subprocess.run(
            self.cmd, capture_output=True, text=True, env=env, cwd="/", timeout=600, check=False,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise CheckFailed(
                f"{self.label}: exit status {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
            )
        self.times.append(elapsed)
        return proc.stdout


def measure_round_robin(tools: Sequence[Tool], runs: int, env: dict[str, str], checker: Checker) -> None:
    """One untimed warm-up each, then ``runs`` rounds over all tools so drift hits all alike."""
    for tool in tools:
        out = tool.run_once(env)
        tool.times.clear()
        if tool.check_output:
            checker.run(tool.label, lambda t=tool, o=out: t.check_output(o))  # type: ignore[misc]
    for _ in range(runs):
        for tool in tools:
            tool.run_once(env)


class Checker:
    """Sanity checks: stop at the first failure unless --keep-going, then just report them."""

    def __init__(self, keep_going: bool) -> None:
        self.keep_going = keep_going
        self.failures: list[str] = []

    def run(self, what: str, check: Callable[[], None]) -> None:
        try:
            check()
        except CheckFailed as exc:
            message = f"CHECK FAILED ({what}): {exc}"
            print(message, file=sys.stderr, flush=True)
            self.failures.append(message)
            exc.reported = True
            if not self.keep_going:
                raise


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# --------------------------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------------------------

# The least a Python counter must do, on the same mounts: list partitions, match the patterns,
# statfs each drive, scandir it and stat every plot.  No config, no database, no headers.
PY_FLOOR = r"""
import fnmatch, os, sys
import psutil
dev, mp_pat = sys.argv[1], sys.argv[2]
drives = plots = slots = 0
plot_size = int(sys.argv[3])
for part in psutil.disk_partitions(all=True):
    if fnmatch.fnmatchcase(part.device, dev) and fnmatch.fnmatchcase(part.mountpoint, mp_pat):
        drives += 1
        slots += psutil.disk_usage(part.mountpoint).free // plot_size
        with os.scandir(part.mountpoint) as it:
            for entry in it:
                if entry.name.endswith(".plot") and entry.stat(follow_symlinks=False):
                    plots += 1
print(drives, plots, slots)
"""


# --------------------------------------------------------------------------------------------
# Profiling
# --------------------------------------------------------------------------------------------


# Runs drive_manager.main() in a fresh interpreter, as cron does, with timers wrapped around the
# pass's phases (by patching module attributes in that process only), and prints them as JSON.
PHASES_DRIVER = r"""
import json, sys, time
t_start = time.perf_counter()
repo, config = sys.argv[1], sys.argv[2]
sys.path.insert(0, repo)
import drive_manager
import utilities.cli as cli, utilities.harvester.minute_pass as harvester, utilities.harvester.cli as hcli
from utilities.state import StateDB
t_imported = time.perf_counter()
spent = {}
def wrap(owner, name, label):
    original = getattr(owner, name)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - start
    setattr(owner, name, timed)
wrap(cli, "load_settings", "load_settings")
wrap(cli, "setup_logging", "setup_logging")
wrap(drive_manager, "run_drive_manager", "run_drive_manager")
wrap(StateDB, "__init__", "StateDB open")
wrap(hcli, "run_harvester_pass", "pass")
wrap(harvester, "discover_drives", "discover_drives")
wrap(StateDB, "load_headers", "load_headers")
wrap(harvester, "scan_drives", "scan_drives")
wrap(harvester, "write_export", "write_export")
status = drive_manager.main(["--config", config])
t_end = time.perf_counter()
spent.update(imports=t_imported - t_start, main=t_end - t_imported, status=status)
print(json.dumps(spent))
"""

PHASE_ROWS = (
    # (label, how to compute it from the driver's numbers and the wall time)
    ("interpreter start-up and exit (wall - measured)", lambda p, wall: wall - p["imports"] - p["main"]),
    ("imports (drive_manager and utilities)", lambda p, wall: p["imports"]),
    ("run_role: parse args, load_settings, setup_logging, sentry",
     lambda p, wall: p["main"] - p["run_drive_manager"]),
    ("  of which load_settings (YAML + pydantic)", lambda p, wall: p["load_settings"]),
    ("  of which setup_logging (logging.yaml, dictConfig)", lambda p, wall: p["setup_logging"]),
    ("StateDB open + lock + close", lambda p, wall: p["run_drive_manager"] - p["pass"]),
    ("run_harvester_pass:", lambda p, wall: p["pass"]),
    ("  discover_drives (psutil, patterns, natsort)", lambda p, wall: p["discover_drives"]),
    ("  StateDB.load_headers (all rows -> CachedHeader)", lambda p, wall: p["load_headers"]),
    ("  scan_drives (scandir + stat + cache look-ups)", lambda p, wall: p["scan_drives"]),
    ("  write_export (JSON, fsync, rename)", lambda p, wall: p["write_export"]),
    ("  rest (offline, chia log, decide, script, alerts)",
     lambda p, wall: p["pass"] - p["discover_drives"] - p["load_headers"] - p["scan_drives"] - p["write_export"]),
)


def warm_pass_phases(config: Path, runs: int, env: dict[str, str]) -> list[tuple[str, float]]:
    """Median over ``runs`` fresh processes of each phase of a warm cron pass."""
    samples: list[list[float]] = [[] for _ in PHASE_ROWS]
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PHASES_DRIVER, str(REPO), str(config)],
                              capture_output=True, text=True, env=env, cwd="/", check=True)
        wall = time.perf_counter() - start
        phases = json.loads(proc.stdout.strip().splitlines()[-1])
        if phases["status"] != 0:
            raise CheckFailed(f"instrumented cron pass exited {phases['status']}: {proc.stderr[-2000:]}")
        walls.append(wall)
        for i, (_, compute) in enumerate(PHASE_ROWS):
            samples[i].append(compute(phases, wall))
    rows = [("whole process (wall)", statistics.median(walls))]
    return rows + [(label, statistics.median(values)) for (label, _), values in zip(PHASE_ROWS, samples, strict=True)]


def profile_warm_pass(config: Path) -> None:
    from utilities.config import load_settings
    from utilities.harvester.cli import cron_pass
    from utilities.state import StateDB

    settings, config_path = load_settings(str(config))
    with StateDB(settings.database_path) as db:
        prof = cProfile.Profile()
        prof.enable()
        cron_pass(settings, config_path, db)
        prof.disable()
    print("\n--- cProfile of one warm cron pass, in-process (no start-up, no imports) ---", file=sys.stderr)
    for order in ("cumulative", "tottime"):
        print(f"top 10 by {order}:", file=sys.stderr)
        pstats.Stats(prof, stream=sys.stderr).strip_dirs().sort_stats(order).print_stats(10)


def profile_imports(env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(SCRIPT), "--version"],
        capture_output=True, text=True, env=env, cwd="/", check=True,
    )
    top: list[tuple[int, str]] = []
    by_package: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:"):].split("|", 2)
        package = name.strip().split(".")[0]
        by_package[package] = by_package.get(package, 0) + int(self_us)
        if not name.startswith("  "):  # nested imports are indented under their importer
            top.append((int(cumulative_us), name.strip()))
    total = sum(c for c, _ in top)
    print(f"\n--- python -X importtime drive_manager.py --version: {total / 1e6:.3f} s of imports ---", file=sys.stderr)
    print("top-level imports (cumulative):", file=sys.stderr)
    for us, name in sorted(top, reverse=True)[:5]:
        print(f"{us / 1e6:8.3f} s  {name}", file=sys.stderr)
    print("by package, all its modules wherever imported (self time):", file=sys.stderr)
    for package, us in sorted(by_package.items(), key=lambda kv: kv[1], reverse=True)[:12]:
        print(f"{us / 1e6:8.3f} s  {package}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# The pass with a SMART read due: the history write and the held-back decision (issue 14)
# --------------------------------------------------------------------------------------------


# A cron pass in a fresh process as cron runs it, with the SMART read made due and answered at
# once with an active, healthy read per drive (what pySMART returns from a real disk; a real
# read costs smartctl's time, which does not change here), so the figure is the pass's own work
# on the read. Mode "before": the history write and the held-back decision switched off (the
# pass as it was before issue 14: the read fed the temperature alerts only); "history": the pass
# as it is. Prints the seconds spent in run_harvester_pass and in the history step.
SMART_PASS_DRIVER = r"""
import json, sys, time
repo, config, mode = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, repo)
import drive_manager
import utilities.harvester.minute_pass as mp, utilities.harvester.cli as hcli
from utilities.harvester.smart import SmartInfo
spent = {"pass": 0.0, "history": 0.0}
def smart_read(settings, db, snap):
    return {d.name: SmartInfo(device=d.device, disk=d.device, state="active", serial=f"ZL{i:06d}", model="ST20000NM007D",
                              temperature_c=38 + i % 7, health="PASS", reallocated_sectors=i % 3, pending_sectors=0,
                              offline_uncorrectable=0, crc_errors=0, power_on_hours=20000 + i)
            for i, d in enumerate(snap.drives) if d.mounted}
mp._read_smart_if_due = smart_read
check = mp._check_drive_health
def timed_check(*args):
    start = time.perf_counter()
    try:
        return check(*args) if mode == "history" else None
    finally:
        spent["history"] += time.perf_counter() - start
mp._check_drive_health = timed_check
run_pass = hcli.run_harvester_pass
def timed_pass(*args, **kwargs):
    start = time.perf_counter()
    try:
        return run_pass(*args, **kwargs)
    finally:
        spent["pass"] += time.perf_counter() - start
hcli.run_harvester_pass = timed_pass
spent["status"] = drive_manager.main(["--config", config])
print(json.dumps(spent))
"""


def fill_smart_history(database: Path, drives: int, days: int, every_minutes: int, now: float) -> int:
    """``days`` of SMART reads of every drive (as the drive names the pass gives them) into the
    state database, like a harvester that has run that long; returns the rows written."""
    from utilities.harvester.smart_history import Reading, record_readings
    from utilities.state import StateDB

    step = every_minutes * 60.0
    reads = int(days * DAY / step)
    with StateDB(database) as db:
        names = [f"drive{n}" for n in range(drives)]
        for k in range(reads, 0, -1):
            at = now - k * step
            record_readings(db, [Reading(name, at, "active", f"ZL{i:06d}", 38 + i % 7, i % 3, 0, 0, 0, 20000 + i, "PASS")
                                 for i, name in enumerate(names)], keep_days=days + 1)
        count = db.query("SELECT COUNT(*) FROM smart_history")[0][0]
    return int(count)


def check_history(database: Path, args: argparse.Namespace) -> None:
    """The "history" passes wrote one row per drive each (the "before" ones none), and every
    drive's rows are of one disk (the stub's serials match the filled history's)."""
    from utilities.state import StateDB

    with StateDB(database) as db:
        per_pass = db.query("SELECT read_at, COUNT(*), COUNT(DISTINCT serial) FROM smart_history GROUP BY read_at "
                            "ORDER BY read_at DESC LIMIT ?", (args.runs + 1,))
        serials = db.query("SELECT COUNT(*) FROM (SELECT drive FROM smart_history GROUP BY drive "
                           "HAVING COUNT(DISTINCT serial) > 1)")[0][0]
    expect([count for _, count, _ in per_pass] == [args.drives] * (args.runs + 1),
           f"the last SMART passes wrote {[c for _, c, _ in per_pass]} rows, expected {args.drives} each")
    expect(serials == 0, f"{serials} drives have reads of two disks: the stub does not match the history")


def smart_pass_rows(config: Path, runs: int, env: dict[str, str]) -> list[tuple[str, list[float], list[float]]]:
    """Per mode: wall seconds of the whole process and seconds of the history step, ``runs``
    fresh processes each, alternating so drift hits both alike."""
    modes = {"before": ([], [], []), "history": ([], [], [])}
    for _ in range(runs + 1):  # the first round warms caches and is dropped
        for mode, (walls, passes, steps) in modes.items():
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", SMART_PASS_DRIVER, str(REPO), str(config), mode],
                                  capture_output=True, text=True, env=env, cwd="/", check=True)
            wall = time.perf_counter() - start
            spent = json.loads(proc.stdout.strip().splitlines()[-1])
            if spent["status"] != 0:
                raise CheckFailed(f"SMART pass ({mode}) exited {spent['status']}: {proc.stderr[-2000:]}")
            walls.append(wall)
            passes.append(spent["pass"])
            steps.append(spent["history"])
    return [(mode, walls[1:], passes[1:], steps[1:]) for mode, (walls, passes, steps) in modes.items()]


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f}"


def print_table(rows: list[tuple[str, list[float]]], baseline: float) -> None:
    header = ("tool", "runs", "min s", "median s", "x find")
    lines = []
    for label, times in rows:
        med = statistics.median(times)
        lines.append((label, str(len(times)), fmt_s(min(times)), fmt_s(med), f"{med / baseline:.1f}"))
    print_markdown_table(header, lines, ["<"] + [">"] * (len(header) - 1))


def run_benchmark(args: argparse.Namespace, scratch: Scratch) -> int:
    import yaml

    from tests.support.harvester_env import harvester_config
    from tests.support.tmpfs_drives import TmpfsDrives
    from utilities.plots import parse_plot_size_setting
    from utilities.settings.harvester import DriveDiscoverySettings

    tmp, stack = scratch.work, scratch.stack  # the mounted drives go on the stack
    plot_size = parse_plot_size_setting("k32")
    capacity = int(args.drive_tb * 1e12)
    mnt = tmp / "mnt"
    home = tmp / "harvester"
    home.mkdir()
    rels = drive_mountpoints(args.drives)
    rng = random.Random(args.seed)
    now = time.time()
    checker = Checker(args.keep_going)
    expected = Expected(drives=args.drives)

    # ---- mount and fill -----------------------------------------------------------------
    t0 = time.perf_counter()
    written_pages = 0
    for n, rel in enumerate(rels):
        specs = plan_drive(rng, args.plots_per_drive, now, args.compressed_share)
        full = n < args.full_drives
        size, free = tmpfs_size(specs, capacity, plot_size, full)
        source = "tmpfs" if args.shared_source else f"tmpfs-drive{n}"
        drive = stack.enter_context(TmpfsDrives(mnt, [rel], size=str(size), source=source)).drives[0]
        write_plots(drive.mountpoint, specs)
        written_pages += len(specs)
        slots = free // plot_size
        expected.free_slots[str(drive.mountpoint)] = slots
        if slots and expected.receive_mountpoint is None:
            expected.receive_mountpoint = str(drive.mountpoint)
        expected.plots += len(specs)
        expected.og += sum(s.kind == "og" for s in specs)
        expected.pool += sum(s.kind == "pool" for s in specs)
        expected.recent += sum(now - s.mtime < DAY for s in specs)
        if (n + 1) % 50 == 0:
            print(f"  mounted and filled {n + 1}/{len(rels)} drives", file=sys.stderr, flush=True)
    fill_seconds = time.perf_counter() - t0
    mount_root = mnt.resolve()
    pattern = f"{mount_root}/enclosure*/*/column*/drive*"
    print(f"farm: {args.drives} tmpfs drives, {expected.plots} sparse k32 plots "
          f"({expected.og} OG, {expected.pool} pool, {expected.recent} in the last 24 h), "
          f"{sum(expected.free_slots.values())} free slots, "
          f"{written_pages * PAGE / 2**20:.0f} MiB of RAM; built in {fill_seconds:.1f} s", flush=True)

    # ---- config -------------------------------------------------------------------------
    alerts = {} if args.smart else {"temperature_check_minutes": 10**8}  # ~190 years: never due
    config = harvester_config(home, [pattern], plot_size="k32", device_patterns=("tmpfs*",), alerts=alerts)
    config["harvester"]["drive_discovery"]["exclude_fstypes"] = list(DriveDiscoverySettings().exclude_fstypes)
    expect("tmpfs" not in config["harvester"]["drive_discovery"]["exclude_fstypes"],
           "tmpfs is excluded by the default exclude_fstypes")
    config_path = home / "plot_manager.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    config_path.chmod(0o600)
    state = home / "state"
    export_path = state / "export" / "harvester.json"
    env = cron_env()
    dm = [sys.executable, str(SCRIPT), "--config", str(config_path)]

    def check_export() -> None:
        data = json.loads(export_path.read_text())
        totals = data["totals"]
        expect(totals["drives"] == expected.drives,
               f"harvester found {totals['drives']} drives, {expected.drives} are mounted")
        expect(totals["plots"] == expected.plots, f"harvester counted {totals['plots']} plots, not {expected.plots}")
        expect((totals["og_plots"], totals["pool_plots"]) == (expected.og, expected.pool),
               f"OG/pool {totals['og_plots']}/{totals['pool_plots']}, expected {expected.og}/{expected.pool}")
        expect(totals["plots_last_24h"] == expected.recent,
               f"{totals['plots_last_24h']} plots in the last 24 h, expected {expected.recent}")
        slots = {d["mountpoint"]: d["free_slots"] for d in data["drives"]}
        wrong = {mp: (slots.get(mp), want) for mp, want in expected.free_slots.items() if slots.get(mp) != want}
        expect(not wrong, f"free slots (got, want) differ on {len(wrong)} drives, e.g. {list(wrong.items())[:3]}")
        receive = next((d["mountpoint"] for d in data["drives"] if d["name"] == data["receive_drive"]), None)
        expect(receive == expected.receive_mountpoint,
               f"receive drive {receive}, expected {expected.receive_mountpoint}")

    def check_headers_cached() -> None:
        from utilities.config import load_settings
        from utilities.harvester.minute_pass import scan_harvester
        from utilities.state import StateDB

        settings, _ = load_settings(str(config_path))
        with StateDB(settings.database_path) as db:
            cached = len(db.load_headers())
            scan = scan_harvester(settings, db)
        expect(cached == expected.plots, f"{cached} headers cached, expected {expected.plots}")
        expect(scan.headers_read == 0, f"a warm scan read {scan.headers_read} plot headers (expected 0)")

    def check_report(out: str) -> None:
        data = json.loads(out)
        expect(data.get("total_plots") == expected.plots,
               f"-pr --json total_plots {data.get('total_plots')}, expected {expected.plots}")

    def check_floor(out: str) -> None:
        want = f"{expected.drives} {expected.plots} {sum(expected.free_slots.values())}"
        expect(out.split() == want.split(), f"python floor printed {out.strip()!r}, expected {want!r}")

    def check_find(out: str) -> None:
        expect(int(out) == expected.plots, f"find counted {out.strip()} plots, expected {expected.plots}")

    # ---- fixed cost, cold pass --------------------------------------------------------
    version = Tool("drive_manager.py --version (start-up + imports)", [*dm, "--version"])
    version.run_once(env)  # byte-compile caches, page cache
    version.times.clear()
    cold = Tool("drive_manager.py cron pass, cold (all headers read)", dm)
    for i in range(args.cold_runs):
        if i:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    (state / f"state.sqlite3{suffix}").unlink()
        cold.run_once(env)
        checker.run("cold cron pass export", check_export)
    print(f"cold cron pass: {fmt_s(min(cold.times))} s", flush=True)
    checker.run("warm scan reads no header", check_headers_cached)

    # ---- warm runs and peers, round robin -----------------------------------------------
    tools = [
        version,
        Tool("drive_manager.py cron pass, warm", dm),
        Tool("drive_manager.py -pr --json, warm", [*dm, "-pr", "--json"], check_output=check_report),
        Tool("python floor: psutil+scandir+stat+statfs", [sys.executable, "-c", PY_FLOOR, "tmpfs*", pattern,
                                                          str(plot_size)], check_output=check_floor),
        Tool("find <mnt> -name '*.plot' -printf x | wc -c",
             ["sh", "-c", f"find {shlex.quote(str(mount_root))} -name '*.plot' -printf x | wc -c"],
             check_output=check_find),
        Tool(f"df over the {args.drives} mounts", ["df", "-B1", "--output=target,size,used,avail",
                                                    *sorted(expected.free_slots)]),
    ]
    measure_round_robin(tools, args.runs, env, checker)
    checker.run("warm cron pass export", check_export)

    find_median = statistics.median(tools[4].times)
    print(f"\n{args.drives} drives x {args.plots_per_drive} plots = {expected.plots} plots; "
          f"{args.runs} warm runs per tool (median, min); python {sys.version.split()[0]}; "
          f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d')}\n")
    rows = [(version.label, version.times), (cold.label, cold.times)]
    rows += [(t.label, t.times) for t in tools[1:]]
    print_table(rows, find_median)
    warm = statistics.median(tools[1].times)
    fixed = statistics.median(version.times)
    print(f"\nwarm cron pass {fmt_s(warm)} s = start-up/imports {fmt_s(fixed)} s + pass {fmt_s(warm - fixed)} s; "
          f"{warm:.0%} of the 1 s budget{'' if warm < 1.0 else ' (OVER BUDGET)'}")

    print(f"\nwhere a warm cron pass spends its time (fresh process as cron runs it, timers wrapped round "
          f"the phases, median of {args.runs}):")
    for label, seconds in warm_pass_phases(config_path, args.runs, env):
        print(f"  {seconds:7.3f} s  {label}")

    if args.history_days > 0:
        start = time.perf_counter()
        rows = fill_smart_history(state / "state.sqlite3", args.drives, args.history_days, args.smart_every, time.time())
        print(f"\na SMART read due in the pass (answered at once), {rows} history rows in the state database "
              f"({args.history_days} days x {args.drives} drives every {args.smart_every} min, written in "
              f"{time.perf_counter() - start:.0f} s); median of {args.runs} fresh processes each:")
        print_markdown_table(
            ("cron pass with a SMART read", "runs", "wall median s", "pass median s", "history step median s"),
            [(("before issue 14: no history, no holds" if mode == "before" else "with the history write and holds"),
              str(len(walls)), fmt_s(statistics.median(walls)), fmt_s(statistics.median(passes)),
              fmt_s(statistics.median(steps))) for mode, walls, passes, steps in smart_pass_rows(config_path, args.runs, env)],
            ["<", ">", ">", ">", ">"],
        )
        checker.run("the SMART passes recorded their reads", lambda: check_history(state / "state.sqlite3", args))

    if args.profile:
        profile_warm_pass(config_path)
        profile_imports(env)

    if checker.failures:
        print(f"\n{len(checker.failures)} sanity check(s) failed:", *checker.failures, sep="\n")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    require_root()
    tmp = Path(tempfile.mkdtemp(prefix="bench-harvester-", dir=args.tmp)).resolve()
    # every tmpfs unmounted (retrying if busy) and the dirs made removed; clean-up timed (300 mounts)
    return run_in_scratch(tmp, lambda scratch: run_benchmark(args, scratch), time_clean_up=True)


if __name__ == "__main__":
    sys.exit(main())
