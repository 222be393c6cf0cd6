#!/usr/bin/env python3
"""Benchmark: move_local_plots.py's copy (utilities/transfer/local_copy.py move_plot) against cp, rsync and mv.

The question: what does the safe local move (hashed while read, written to a flocked part file,
write-back per 64 MiB window with sync_file_range, fsync, read back from the disk and hashed
again, link into place,
source deleted) cost next to the ordinary tools, on the same data, in the same run?

What it does (root only):

1. Writes one fake plot under ``--work-dir`` (a valid chia v1 header and name, so that
   move_local_plots.py accepts it; the rest incompressible random bytes): the k whose expected
   size is closest to ``--size-gib``. It is fsynced once and kept as the master copy; every run
   moves a hard link of it (same inode) out of an "output directory", so tools that delete their
   source (mv, ours) only remove the link.
2. Makes one ext4 loop-mounted drive (tests/support/loopdrives.py, sparse image under
   --work-dir; the loop device set to direct I/O unless --loop-buffered, so its writes reach the
   host disk once, as a real drive's do).
3. After one untimed warm-up copy, per run, round-robin over the tools (load changes of this
   shared machine hit all alike), the order rotated each run so no tool always goes first:

   * ``cp + sync``: ``cp SRC DEST/`` then ``sync DEST/NAME`` (fsync of the copy only; a plain
     ``sync`` would also flush everything else this shared machine has dirty);
   * ``rsync --whole-file + sync``, ``mv + sync`` (mv across filesystems: copy, then unlink);
   * ``ours, verify`` and ``ours, no verify``: ``move_plot`` with ``verify`` on / off, called in a
     child process (so its peak RSS is its own), timed inside the child around ``move_plot`` only,
     with the phases taken apart by wrapping ``os.preadv``/``pwrite``/``fsync``/``fdatasync``, the
     copier's ``sync_file_range`` and
     the xxh3 digest in that child (a few clock reads per 1 MiB chunk);
   * ``move_local_plots.py``: the whole cron run as a subprocess (interpreter start-up, imports,
     config, SQLite, usage check, plot finder, reservation re-check, the move, the log line),
     with the drive reservation drive_manager.py would make written into its database first.

   The external tools are timed until their copy is durable (``sync FILE`` included), as ours is.
4. Cache protocol, the same before every run of every tool: the destination emptied and
   ``syncfs``'d; ``posix_fadvise(DONTNEED)`` on the source, on the loop image file and on the
   loop device (so the source is read from the host disk, and no tool finds the destination's
   blocks cached); ``--warm-source`` reads the source into the page cache instead. The global
   ``/proc/sys/vm/drop_caches`` is NOT used: it would hit the other work on this machine.
   ``fincore`` reports how much of the source was cached at each start.
5. Every copy is hashed (xxh3-128) against the master and then deleted. Peak RSS and CPU time of
   every tool are its rusage as GNU ``/usr/bin/time`` reports it (``wait4``, i.e.
   ``getrusage(RUSAGE_CHILDREN)`` of a small launcher; ``ru_maxrss`` is the largest single process
   of the tool's tree, e.g. rsync's sender or receiver, cp or sync, not their sum). Not wait4 from
   this Python process: a child it forks starts with ``ru_maxrss`` at this process's RSS.
6. Prints the table (median MB/s = 10**6 bytes/s, min..max, ratio to cp + sync), the phases of
   ours, then unmounts, detaches and removes everything, also on Ctrl-C / SIGTERM / failure.
   Exit 0 only if every copy of every tool was identical to the source.

Usage:  sudo .venv/bin/python bench/bench_local_move.py [--size-gib 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (  # bench/ is sys.path[0] when run
    GIB,
    MIB,
    REPO,
    CheckFailed,
    Scratch,
    cached_fraction,
    chosen_tools,
    loop_direct_io,
    make_source_plot,
    mbps,
    print_markdown_table,
    require_root_and_tools,
    run_in_scratch,
)

PYTHON = sys.executable
TOOLS = ("cp", "rsync", "mv", "ours-verify", "ours-noverify", "whole-run")
LABELS = {
    "cp": "cp + sync FILE",
    "rsync": "rsync --whole-file + sync FILE",
    "mv": "mv (across filesystems) + sync FILE",
    "ours-verify": "ours: move_plot, verify_after_copy",
    "ours-noverify": "ours: move_plot, no verify",
    "whole-run": "move_local_plots.py (whole run)",
}
TIME = "/usr/bin/time"  # GNU time: peak RSS of a command without our own memory in it (see Bench.run)
CHILD_FLAG = "--child-move"  # internal: this script re-run as the child that calls move_plot


# --------------------------------------------------------------------------------------------
# The child: move_plot in its own process, instrumented
# --------------------------------------------------------------------------------------------


def child_move(source: str, dest_dir: str, verify: bool) -> int:
    """Run one move_plot with timing wrappers; print the result and phase times as JSON.

    The wrappers live in this throw-away process only. They sort every preadv, pwrite, hash
    update and sync into the phase the copier is in ("copy" until ``_read_back`` starts).
    """
    import xxhash

    from utilities.transfer import copy_worker, local_copy

    times: dict[str, float] = {}
    phase = ["setup"]
    clock = time.perf_counter

    def add(what: str, seconds: float) -> None:
        key = f"{phase[0]}:{what}"
        times[key] = times.get(key, 0.0) + seconds

    def timed(name: str, what: str) -> None:
        original = getattr(os, name)

        def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = clock()
            try:
                return original(*a, **kw)
            finally:
                add(what, clock() - t0)

        setattr(os, name, wrapper)

    timed("preadv", "read")
    timed("pwrite", "write")
    timed("fdatasync", "sync")
    timed("fsync", "sync")
    timed("posix_fadvise", "fadvise")
    real_sync_range = copy_worker._SYNC_FILE_RANGE
    if real_sync_range is not None:  # write-back per window (sync_file_range) counts as sync too

        def timed_sync_range(*a: Any) -> None:
            t0 = clock()
            try:
                real_sync_range(*a)
            finally:
                add("sync", clock() - t0)

        copy_worker._SYNC_FILE_RANGE = timed_sync_range

    class TimedDigest:
        def __init__(self) -> None:
            self._digest = xxhash.xxh3_128()

        def update(self, data: Any) -> None:
            t0 = clock()
            self._digest.update(data)
            add("hash", clock() - t0)

        def hexdigest(self) -> str:
            return self._digest.hexdigest()

    class XxhashShim:
        xxh3_128 = TimedDigest

    copy_worker.xxhash = XxhashShim  # type: ignore[assignment]
    copier_cls: Any = copy_worker.Copier
    real_copy, real_read_back = copier_cls._copy, copier_cls._read_back
    marks: dict[str, float] = {}

    def in_phase(name: str, real: Any) -> Any:
        """The copier's method ``real``, its calls counted in phase ``name``, start and end marked."""

        def wrapped(self: Any) -> str:
            phase[0] = name
            marks[f"{name}_start"] = clock()
            try:
                return real(self)
            finally:
                marks[f"{name}_end"] = clock()
                phase[0] = "commit"

        return wrapped

    copier_cls._copy, copier_cls._read_back = in_phase("copy", real_copy), in_phase("verify", real_read_back)
    options = local_copy.MoveOptions(stall_seconds=120, verify=verify)
    t0 = clock()
    result = local_copy.move_plot(Path(source), Path(dest_dir), options, kind="pool")
    total = clock() - t0
    spans = {
        "setup (stat, stale parts, flock, statvfs, create + fallocate part)": marks.get("copy_start", t0) - t0,
        "copy loop (read, hash, write, write-back per 64 MiB window, fsync)": marks.get("copy_end", 0) - marks.get("copy_start", 0),
        "read back (fadvise, read, hash)": marks.get("verify_end", 0) - marks.get("verify_start", 0),
        "commit + delete source (link, unlink, fsync dirs)": t0 + total - max(marks.get("copy_end", t0),
                                                                               marks.get("verify_end", t0)),
    }
    print(json.dumps({"status": result.status, "reason": result.reason, "hexdigest": result.hexdigest,
                      "source_deleted": result.source_deleted, "seconds": total, "spans": spans, "ops": times}))
    return 0 if result.ok else 1


# --------------------------------------------------------------------------------------------
# Arguments and machine facts
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench_local_move.py",
        description="Copy one plot onto an ext4 loop drive with cp, rsync, mv and move_local_plots.py's move_plot "
        "(with and without read-back verify) and the whole move_local_plots.py run; MB/s, ratio to cp + sync, "
        "peak RSS.",
    )
    p.add_argument("--size-gib", type=float, default=2.0,
                   help="plot size: the k whose expected plot size is closest to this (1 -> k26, 1.29 GiB; "
                        "2 -> k27, 2.68 GiB)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per tool (median shown)")
    p.add_argument("--work-dir", default="/var/tmp",
                   help="where the source plot and the loop image live (a real filesystem, not tmpfs)")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    p.add_argument("--loop-buffered", action="store_true",
                   help="leave the loop device buffered (default: direct I/O, like a real drive)")
    p.add_argument("--warm-source", action="store_true",
                   help="read the source into the page cache before each run (default: drop it, cold reads)")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    if args.size_gib <= 0:
        p.error("--size-gib must be > 0")
    args.tools = chosen_tools(p, args.tools, TOOLS)
    return args


def closest_k(size_gib: float) -> int:
    from utilities.plots import expected_plot_size

    return min(range(20, 34), key=lambda k: abs(expected_plot_size(k) - size_gib * GIB))


def drop_cache(path: Path | str) -> None:
    """posix_fadvise(DONTNEED) on one file or block device: its clean pages leave the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_through(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.read(fd, 8 * MIB):
            pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# The bench
# --------------------------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    maxrss_kib: int
    cpu_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    master: Path  # the source plot; runs move a hard link of it
    digest: str
    outbox: Path  # move_local_plots.py's plot directory
    dest: Path  # the loop drive's mountpoint
    device: str
    image: Path
    config: Path
    database: Path
    children: list[subprocess.Popen[Any]] = field(default_factory=list)
    cached_at_start: list[float] = field(default_factory=list)

    @property
    def source(self) -> Path:
        return self.outbox / self.master.name

    @property
    def copy(self) -> Path:
        return self.dest / self.master.name

    def kill_children(self) -> None:
        """Stop what we started and reap it: each command runs in its own process group (made
        for it by ``start_new_session``), so the group's id reaches the tool under ``time``
        and rsync's helpers too, and nothing else."""
        for proc in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
                proc.wait(timeout=10)
        self.children.clear()

    def run(self, argv: Sequence[str], **kwargs: Any) -> tuple[float, int, float, str, str]:
        """Run one command to its end: (seconds, peak RSS KiB, CPU s, stdout, stderr).

        Peak RSS and CPU are the rusage of the command as GNU time reports it: ``wait4`` on a
        child forked by ``time``, i.e. ``getrusage(RUSAGE_CHILDREN)`` of a small launcher. Not
        wait4 from here: a child forked from this Python process starts with ``ru_maxrss`` at
        this process's RSS (the pre-exec copy of our memory counts), which would hide the tool's.
        """
        with tempfile.NamedTemporaryFile("w+", dir=self.work) as usage_file, \
                tempfile.TemporaryFile("w+") as err_file:  # a file, not a pipe: no deadlock on a chatty stderr
            t0 = time.perf_counter()
            proc = subprocess.Popen([TIME, "-o", usage_file.name, "-f", "%M %U %S", *argv], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=err_file, text=True, start_new_session=True,
                                    **kwargs)
            self.children.append(proc)
            out = proc.stdout.read() if proc.stdout else ""
            proc.wait()
            seconds = time.perf_counter() - t0
            if proc.stdout:
                proc.stdout.close()
            self.children.remove(proc)
            err_file.seek(0)
            err = err_file.read()
            usage_file.seek(0)
            usage = usage_file.read().split()
        if proc.returncode != 0:
            raise CheckFailed(f"{' '.join(argv)} exited {proc.returncode}: {err.strip() or out.strip()}")
        try:
            maxrss, user, system = int(usage[-3]), float(usage[-2]), float(usage[-1])
        except (IndexError, ValueError):
            raise CheckFailed(f"{TIME} wrote no usage for {' '.join(argv)}: {usage!r}") from None
        return seconds, maxrss, user + system, out, err

    def prepare(self) -> None:
        """The same starting point for every run of every tool (see the module notes)."""
        from tests.support.loopdrives import _syncfs

        for entry in self.dest.iterdir():
            if entry.name != "lost+found":
                entry.unlink()
        _syncfs(self.dest)
        if not self.source.exists():
            os.link(self.master, self.source)
        if self.args.warm_source:
            read_through(self.master)
        else:
            drop_cache(self.master)
        drop_cache(self.image)
        drop_cache(self.device)
        frac = cached_fraction(self.master)
        if frac is not None:
            self.cached_at_start.append(frac)

    def check(self, tool: str) -> None:
        from utilities.transfer.integrity import hash_file

        left = sorted(p.name for p in self.dest.iterdir() if p.name not in ("lost+found", self.master.name))
        if left:
            raise CheckFailed(f"{tool}: left behind on the drive: {left}")
        if not self.copy.exists():
            raise CheckFailed(f"{tool}: {self.copy} was not created")
        size, digest = hash_file(self.copy)
        if digest != self.digest or size != self.master.stat().st_size:
            raise CheckFailed(f"{tool}: the copy differs from the source ({size} bytes, xxh3-128 {digest}, "
                              f"source {self.digest})")

    # -- the tools --------------------------------------------------------------------------

    def run_external(self, tool: str) -> Sample:
        src, dest = str(self.source), str(self.dest) + "/"
        argv = {"cp": ["cp", "--", src, dest], "rsync": ["rsync", "--whole-file", "--", src, dest],
                "mv": ["mv", "--", src, dest]}[tool]
        seconds, rss, cpu, _, _ = self.run(argv)
        sync_s, sync_rss, sync_cpu, _, _ = self.run(["sync", "--", str(self.copy)])
        if tool == "mv" and self.source.exists():
            raise CheckFailed("mv left its source")
        return Sample(seconds + sync_s, max(rss, sync_rss), cpu + sync_cpu, extra={"sync": sync_s, "tool": seconds})

    def run_ours(self, verify: bool) -> Sample:
        argv = [PYTHON, str(Path(__file__).resolve()), CHILD_FLAG, str(self.source), str(self.dest),
                "1" if verify else "0"]
        wall, rss, cpu, out, _ = self.run(argv, cwd="/")
        report = json.loads(out.strip().splitlines()[-1])
        if report["status"] != "moved" or not report["source_deleted"]:
            raise CheckFailed(f"move_plot: {report['status']}: {report['reason']}")
        if report["hexdigest"] != self.digest:
            raise CheckFailed(f"move_plot hashed {report['hexdigest']} while reading, the source is {self.digest}")
        return Sample(report["seconds"], rss, cpu, extra={"wall": wall, "spans": report["spans"], "ops": report["ops"]})

    def run_whole(self) -> Sample:
        self.write_reservation()
        wall, rss, cpu, out, err = self.run([PYTHON, str(REPO / "move_local_plots.py"), "--config", str(self.config)],
                                            cwd="/")
        if self.source.exists():
            raise CheckFailed(f"move_local_plots.py exited 0 but kept {self.source}: {out} {err}")
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.database)) as conn:
            row = conn.execute("SELECT seconds, status FROM local_moves ORDER BY id DESC LIMIT 1").fetchone()
        if row is None or row[1] != "moved":
            raise CheckFailed(f"move_local_plots.py recorded {row!r}, not a move")
        return Sample(wall, rss, cpu, extra={"move": float(row[0])})

    def write_reservation(self) -> None:
        """What drive_manager.py's pass records for move_local_plots.py (utilities/harvester/minute_pass.py)."""
        from utilities.settings.local_moves import LOCAL_RECEIVE_KEY
        from utilities.state import StateDB

        with StateDB(self.database) as db:
            db.set(LOCAL_RECEIVE_KEY, {"decided_at": time.time(), "name": self.dest.name, "mountpoint": str(self.dest),
                                       "device": self.device, "receive_dir": str(self.dest), "replace": False})

    def run_tool(self, tool: str) -> Sample:
        self.prepare()
        try:
            if tool in ("cp", "rsync", "mv"):
                sample = self.run_external(tool)
            elif tool == "whole-run":
                sample = self.run_whole()
            else:
                sample = self.run_ours(tool == "ours-verify")
            self.check(tool)
            return sample
        finally:
            self.kill_children()


# --------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------


def make_master(directory: Path, k: int) -> tuple[Path, str]:
    """The fake plot (header + AES-CTR keystream, as bench_transfer's), fsynced; and its xxh3-128."""
    from utilities.transfer.integrity import hash_file

    plot = make_source_plot(directory, k)
    return plot.path, hash_file(plot.path)[1]


def setup(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> Bench:
    import yaml

    from tests.support.harvester_env import harvester_config
    from tests.support.loopdrives import LoopDrives
    from utilities.plots import expected_plot_size

    k = closest_k(args.size_gib)
    size = expected_plot_size(k)
    free = shutil.disk_usage(work).free
    image_mb = math.ceil(size * 1.1 / MIB) + 256
    if free < size + image_mb * MIB + 4 * GIB:
        raise CheckFailed(f"{work}: {free / GIB:.1f} GiB free; the bench needs {(size + image_mb * MIB) / GIB:.1f} GiB "
                          "+ 4 GiB: use a smaller --size-gib")
    store, outbox = work / "store", work / "out"
    store.mkdir()
    outbox.mkdir()
    t0 = time.perf_counter()
    master, digest = make_master(store, k)
    print(f"source: k{k} plot, {size} bytes ({size / GIB:.2f} GiB), random after its header page, on "
          f"{args.work_dir}; written, fsynced and hashed in {time.perf_counter() - t0:.1f} s", flush=True)
    images = work / "images"
    images.mkdir()
    loop = stack.enter_context(LoopDrives(work / "mnt", ["drive0"], size_mb=image_mb, fstype="ext4", image_dir=images))
    drive = loop.drives[0]
    dio = "buffered"
    if not args.loop_buffered:
        dio = loop_direct_io(drive.device)
    print(f"destination: ext4 on {drive.device} at {drive.mountpoint}, {image_mb / 1024:.1f} GiB sparse image on "
          f"{args.work_dir}, loop {dio}", flush=True)
    if dio != "direct I/O":
        print("  note: a buffered loop device writes through the host's page cache: fsync reaches the image file's "
              "page cache, and reads may be served from it; DONTNEED on the image before each run drops those pages",
              flush=True)
    root = work / "harvester"
    root.mkdir()
    config = harvester_config(root, [str(drive.mountpoint)], size,
                              local_moves={"enabled": True, "plot_directories": [str(outbox)]})
    config_path = root / "plot_manager.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    config_path.chmod(0o600)
    return Bench(args, work, master, digest, outbox, drive.mountpoint, drive.device, drive.image, config_path,
                 Path(config["state_dir"]) / "state.sqlite3")


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def sync_seconds(sample: Sample) -> float:
    """Time spent making the copy durable: ``sync FILE``, or ours' fdatasync + fsync calls."""
    if "sync" in sample.extra:
        return float(sample.extra["sync"])
    return sum(v for k, v in sample.extra.get("ops", {}).items() if k.endswith(":sync"))


def print_table(size: int, results: dict[str, list[Sample]]) -> None:
    base = statistics.median(mbps(size, s.seconds) for s in results["cp"]) if results.get("cp") else None
    header = ("tool", "runs", "s median", "MB/s median", "min..max", "x cp+sync", "of which (f)sync s",
              "peak RSS MiB", "CPU s")
    table = []
    for tool, samples in results.items():
        speeds = [mbps(size, s.seconds) for s in samples]
        med = statistics.median(speeds)
        sync = f"{statistics.median(sync_seconds(s) for s in samples):.2f}" if sync_seconds(samples[0]) else ""
        table.append((LABELS[tool], str(len(samples)), f"{statistics.median(s.seconds for s in samples):.2f}",
                      f"{med:.0f}", f"{min(speeds):.0f}..{max(speeds):.0f}", f"{med / base:.2f}" if base else "-", sync,
                      f"{statistics.median(s.maxrss_kib for s in samples) / 1024:.1f}",
                      f"{statistics.median(s.cpu_seconds for s in samples):.2f}"))
    print_markdown_table(header, table, ["<"] + [">"] * (len(header) - 1))


def print_details(size: int, results: dict[str, list[Sample]]) -> None:
    print("\nevery run, seconds (run 1, 2, ...):")
    for tool, samples in results.items():
        print(f"  {tool:13} " + " ".join(f"{s.seconds:6.2f}" for s in samples))
    for tool in ("ours-verify", "ours-noverify"):
        samples = results.get(tool)
        if not samples:
            continue
        print(f"\n{LABELS[tool]}: where the time goes (median of {len(samples)} runs, seconds; move_plot wall "
              f"{statistics.median(s.seconds for s in samples):.2f}, child process wall incl. start-up "
              f"{statistics.median(s.extra['wall'] for s in samples):.2f}):")
        for span in samples[0].extra["spans"]:
            value = statistics.median(s.extra["spans"][span] for s in samples)
            if value > 0.0005:
                print(f"  {value:7.2f}  {span}")
        ops = sorted({k for s in samples for k in s.extra["ops"]})
        for op in ops:
            value = statistics.median(s.extra["ops"].get(op, 0.0) for s in samples)
            rate = f"  ({mbps(size, value):.0f} MB/s)" if op.split(":")[1] in ("read", "write", "hash") and value else ""
            print(f"    {value:7.2f}  {op}{rate}")
    whole = results.get("whole-run")
    if whole:
        move = statistics.median(s.extra["move"] for s in whole)
        wall = statistics.median(s.seconds for s in whole)
        print(f"\nmove_local_plots.py: {wall:.2f} s whole run, of which the move as it recorded it {move:.2f} s; "
              f"{wall - move:.2f} s start-up, imports, config, SQLite, plot finder, checks (median)")


def hash_rate() -> float:
    """xxh3-128 over 256 MiB in memory, MB/s (what hashing costs without any I/O)."""
    import xxhash

    data = os.urandom(256 * MIB)
    t0 = time.perf_counter()
    xxhash.xxh3_128(data).hexdigest()
    return len(data) / (time.perf_counter() - t0) / 1e6


def run_benchmark(args: argparse.Namespace, scratch: Scratch) -> int:
    started = time.perf_counter()
    print(f"bench_local_move: {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} CPUs, "
          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / GIB:.0f} GiB RAM, kernel {platform.release()}, "
          f"python {platform.python_version()}, load {os.getloadavg()[0]:.2f}", flush=True)
    bench = setup(args, scratch.work, scratch.stack)
    scratch.stop_first.append(bench.kill_children)
    size = bench.master.stat().st_size
    cache = ("source read into the page cache (--warm-source)" if args.warm_source
             else "source dropped (posix_fadvise DONTNEED)")
    print(f"cache protocol before every run of every tool: destination emptied + syncfs; {cache}; DONTNEED on the "
          "loop image file and the loop device; /proc/sys/vm/drop_caches not touched (shared machine)", flush=True)
    t0 = time.perf_counter()
    bench.run_tool("cp")  # untimed warm-up: the fresh filesystem's first big write, the tools' first start
    print(f"warm-up (one untimed cp): {time.perf_counter() - t0:.1f} s", flush=True)
    results: dict[str, list[Sample]] = {t: [] for t in args.tools}
    for run in range(args.runs):
        t0 = time.perf_counter()
        # The order rotates each run, so no tool always goes first (or always follows the same one).
        order = args.tools[run % len(args.tools):] + args.tools[:run % len(args.tools)]
        for tool in order:
            results[tool].append(bench.run_tool(tool))
        print(f"run {run + 1}/{args.runs} ({', '.join(order)}): {time.perf_counter() - t0:.1f} s, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    cached = (f"{min(bench.cached_at_start) * 100:.1f}%..{max(bench.cached_at_start) * 100:.1f}%"
              if bench.cached_at_start else "unknown (no fincore)")
    print(f"\n{size} bytes ({size / GIB:.2f} GiB); {args.runs} runs per tool, round-robin, rotated; MB/s = 10^6 bytes/s; "
          f"source cached at the start of a run: {cached}; every copy checked identical (xxh3-128); "
          f"load {os.getloadavg()[0]:.2f}\n")
    print_table(size, results)
    print_details(size, results)
    print(f"\nxxh3-128 in memory (no I/O): {hash_rate():.0f} MB/s")
    print(f"whole benchmark: {time.perf_counter() - started:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == [CHILD_FLAG]:
        return child_move(raw[1], raw[2], raw[3] == "1")
    args = parse_args(raw)
    try:
        require_root_and_tools("loop devices and mounts",
                               ("cp", "mv", "rsync", "sync", "losetup", "mount", "mkfs.ext4", TIME))
    except CheckFailed as exc:
        print(f"bench_local_move: {exc}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-local-move-", dir=args.work_dir)).resolve()
    # the loop drive: unmounted, detached, its image deleted
    return run_in_scratch(work, lambda scratch: run_benchmark(args, scratch))


if __name__ == "__main__":
    sys.exit(main())
