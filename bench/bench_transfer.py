#!/usr/bin/env python3
"""Benchmark: sending one plot plotter -> harvester, ours (verified) against nc, rsync and scp.

The issue: "Send the same large file (several GiB) plotter -> harvester namespace in one run
with: raw ``nc < file`` (no verification), this project's verified transfer, ``rsync`` over SSH,
and ``scp``.  Destination once on tmpfs (the pipeline's own cost) and once on a real filesystem.
Print MB/s and the ratio to raw nc.  Target: at least 0.95x raw nc with full verification, and
ahead of rsync and scp.  Report peak RSS of both ends while sending (must stay flat, not grow
with file size)."

What it does (root only):

1. Writes a fake plot under ``--work-dir`` (default /var/tmp, a real filesystem): a valid chia
   v1 header and a chia name for the largest k whose expected size fits ``--size-gib``, the rest
   incompressible random bytes (AES-CTR keystream; not sparse, so no tool is measured on zeros).
   A second, 4x smaller plot (k-2) shows whether memory grows with the file size.  Both are
   fsynced once, then stay in the page cache: every tool reads the same warm file (checked with
   ``fincore`` before every run; nothing is dropped from the page cache of this shared machine).
2. Starts a ``NetnsFarm`` with one harvester (a network namespace with its own sshd, reached
   over a veth + bridge on 10.213.77.0/24, host keys checked) and mounts two destinations
   inside the farm root, so they are visible in the namespace: a tmpfs (source name
   ``benchtmpfs``) and a loop-mounted ``--fstype`` filesystem (sparse image under --work-dir;
   the loop device set to direct I/O so its writes reach the disk once, as a real drive's do).
   Each destination has its own harvester config whose drive discovery matches only that
   mount; ``drive_manager.py`` runs inside the namespace and writes ``receive_plot.sh`` pointing
   at it (checked), as on a real harvester.
3. Per destination and run, round-robin over the tools (so load changes of the shared machine
   hit all alike), deleting every received file between runs (and ``syncfs`` of the loop drive,
   so one run's write-back does not land in the next):

   * ``nc``: ``nc -l -p PORT > dest`` started in the namespace, then ``nc -N addr PORT < file``;
     timed until both ends exited.  No verification at all.
   * ``ours``: ``plot_manager.py --send PLOT --to chianas01`` as a subprocess, the full
     production path: start-up, reading the harvester's export over SFTP, SSH connect,
     ``receive_plot.sh`` -> ``receive_plot.py`` (space reserved, READY), nc stream hashed on
     both ends, VERIFY, fsync, rename, OK, source deleted (a hard link of the warm file is
     sent, so the file itself stays).  Timed until the process exits.
   * ``ours in-process``: ``remote.connect`` + ``send_plot(ParamikoExec(client), ...)`` called
     here with the same settings, timed from connect to the returned OK, with the phases
     (connect, receiver start until READY, stream until nc exits, VERIFY -> fsync -> rename ->
     OK) taken apart by wrapping ``utilities.transfer.sender.stream_file`` in this process only.
   * ``rsync -e "ssh -F <farm ssh_config>" file chianas01:dest`` and ``scp -F <farm ssh_config>``,
     host-key checking on, timed until the command exits.

   Derived rows: ``nc + fsync`` (the nc run plus an fsync of the copy: what nc costs when it
   must be on disk as ours is), and ``ours to end of stream`` (in-process, without VERIFY,
   fsync and rename).
4. Peak RSS (VmHWM from /proc, polled every 0.1 s) of every process on each side: the
   sender's process tree in the root namespace and every process in the harvester namespace
   except its listening sshd (so the sshd session doing the decryption for rsync/scp counts).
   Measured for the small and the large plot.
5. Prints the table (median MB/s, 10**6 bytes/s), ratios to raw nc on the same destination,
   RSS per side and the phases of ours, then unmounts and removes everything, also on Ctrl-C /
   SIGTERM / failure.

Usage:  sudo .venv/bin/python bench/bench_transfer.py [--size-gib 4] [--runs 3] [--dest both]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
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
    SourcePlot,
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
HARVESTER = "chianas01"
TMPFS_SOURCE = "benchtmpfs"
NC_PORT_BASE = 4900  # raw nc runs; ours uses the config's port_base (4040..)

# --------------------------------------------------------------------------------------------
# Arguments and machine checks
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench_transfer.py",
        description="Send one plot plotter -> harvester namespace with ours, raw nc, rsync and scp; "
        "tmpfs and a real filesystem as destination; MB/s, ratio to nc, peak RSS of both ends.",
    )
    p.add_argument("--size-gib", type=float, default=4.0,
                   help="plot size: the largest k whose expected plot size is <= this (4 -> k27, 2.68 GiB; "
                        "6 -> k28, 5.56 GiB). The RSS check also sends a k-2 plot (4x smaller)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per tool and destination (median shown)")
    p.add_argument("--dest", choices=("tmpfs", "disk", "both"), default="both")
    p.add_argument("--fstype", choices=("ext4", "xfs"), default="ext4", help="the real filesystem (loop-mounted)")
    p.add_argument("--loop-buffered", action="store_true",
                   help="leave the loop device buffered (default: direct I/O, like a real drive)")
    p.add_argument("--work-dir", default="/var/tmp",
                   help="where the source plots and the loop image live (a real filesystem, not tmpfs)")
    p.add_argument("--tools", default="nc,ours,ours-noresume,ours-inproc,rsync,scp",
                   help="comma-separated subset of nc,ours,ours-noresume,ours-inproc,rsync,scp "
                        "(ours-noresume: plot_manager.py --no-resume, no journal: the journal's cost)")
    p.add_argument("--stream-with", choices=("nc", "python"), default="python",
                   help="plotter.transfer.stream_with for ours: pipe into nc, or the socket of plot_manager.py itself")
    p.add_argument("--skip-small", action="store_true",
                   help="no small-plot round (it also serves as the untimed warm-up)")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    args.tools = chosen_tools(p, args.tools, TOOLS)
    args.dests = ["tmpfs", "disk"] if args.dest == "both" else [args.dest]
    return args


TOOLS = ("nc", "ours", "ours-noresume", "ours-inproc", "rsync", "scp")


def choose_k(size_gib: float) -> int:
    from utilities.plots import expected_plot_size

    fitting = [k for k in range(20, 34) if expected_plot_size(k) <= size_gib * GIB]
    if not fitting:
        raise CheckFailed(f"--size-gib {size_gib} is smaller than a k20 plot")
    return max(fitting)


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "?"


# --------------------------------------------------------------------------------------------
# Peak RSS of both ends
# --------------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def _label(pid: int) -> str | None:
    raw = _read(f"/proc/{pid}/cmdline")
    if raw is None:
        return None
    argv = [a for a in raw.split("\0") if a]
    if not argv:
        return None
    prog = os.path.basename(argv[0])
    if prog.startswith("python"):
        script = next((a for a in argv[1:] if not a.startswith("-")), "")
        return f"python {os.path.basename(script)}" if script else prog
    if prog.startswith("sshd"):
        return argv[0]  # "sshd: root@notty" (its proctitle)
    return prog


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, ...]; utime/stime at 11/12."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields if len(fields) > 12 else None


def _ppid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def _cpu_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields else None


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _memory_kib(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in KiB; None for kernel threads, zombies and gone processes."""
    status = _read(f"/proc/{pid}/status")
    if status is None:
        return None
    hwm = rss = None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1])
            break
    return (hwm, rss) if hwm is not None and rss is not None else None


@dataclass
class ProcPeak:
    pid: int
    label: str
    hwm_kib: int


class RssWatch:
    """Polls /proc: memory of the sender's process tree and of the harvester namespace's processes.

    Sides: a process in the harvester's network namespace (except its listening sshd) is on the
    receiver side; a descendant of ``sender_root`` on the sender side.  Per process we keep its
    VmHWM (the peak of the current program image: after an exec it starts again and the label
    changes); per side, the largest sum of VmRSS over one poll (what the machine held at once)
    and the CPU time (user+sys) its processes used, as of their last poll (a process's last
    <= 0.1 s may be missed).
    Processes that existed when the watch was made are never counted; a new one that fits no
    side yet (``ip netns exec`` before its setns) is looked at again for 2 s.
    """

    RECHECK_TICKS = 20

    def __init__(self, netns: tuple[int, int], exclude: set[int], interval: float = 0.1) -> None:
        self.netns = netns
        self.interval = interval
        self.sender_root: int | None = None
        self.side: dict[int, str] = {}
        self.others: set[int] = set(exclude) | {int(e) for e in os.listdir("/proc") if e.isdigit()}
        self.pending: dict[int, int] = {}
        self.peaks: dict[int, ProcPeak] = {}
        self.cpu_ticks: dict[int, int] = {}
        self.peak_sum_kib = {"sender": 0, "receiver": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-watch", daemon=True)

    def start(self, sender_root: int | None) -> RssWatch:
        self.sender_root = sender_root
        self._thread.start()
        return self

    def stop(self) -> Rss:
        self._stop.set()
        self._thread.join(5)
        per_process: dict[str, list[ProcPeak]] = {"sender": [], "receiver": []}
        for pid, peak in self.peaks.items():
            per_process[self.side[pid]].append(peak)
        for peaks in per_process.values():
            peaks.sort(key=lambda p: -p.hwm_kib)
        cpu = {"sender": 0.0, "receiver": 0.0}
        for pid, ticks in self.cpu_ticks.items():
            cpu[self.side[pid]] += ticks / CLK_TCK
        return Rss(per_process, dict(self.peak_sum_kib), cpu)

    def _loop(self) -> None:
        while True:
            self.tick()
            if self._stop.wait(self.interval):
                self.tick()
                return

    def _classify(self, pid: int) -> str | None:
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            return None
        if (st.st_dev, st.st_ino) == self.netns:
            return "receiver"
        if self.sender_root is None:
            return None
        current: int | None = pid
        for _ in range(64):
            if current is None or current <= 1:
                return None
            if current == self.sender_root:
                return "sender"
            current = _ppid(current)
        return None

    def tick(self) -> None:
        sums = {"sender": 0, "receiver": 0}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid in self.others:
                continue
            side = self.side.get(pid)
            if side is None:
                side = self._classify(pid)
                if side is None:
                    seen = self.pending[pid] = self.pending.get(pid, 0) + 1
                    if seen >= self.RECHECK_TICKS:
                        self.others.add(pid)
                    continue
                self.side[pid] = side
            memory = _memory_kib(pid)
            label = _label(pid)
            if memory is None or label is None:
                continue
            hwm, rss = memory
            sums[side] += rss
            ticks = _cpu_ticks(pid)
            if ticks is not None:
                self.cpu_ticks[pid] = max(ticks, self.cpu_ticks.get(pid, 0))
            peak = self.peaks.get(pid)
            if peak is None or peak.label != label:
                self.peaks[pid] = ProcPeak(pid, label, hwm)
            elif hwm > peak.hwm_kib:
                peak.hwm_kib = hwm
        for side, total in sums.items():
            self.peak_sum_kib[side] = max(self.peak_sum_kib[side], total)


@dataclass
class Rss:
    per_process: dict[str, list[ProcPeak]]  # side -> VmHWM per process, biggest first
    peak_sum_kib: dict[str, int]  # side -> largest sum of VmRSS seen in one poll
    cpu_seconds: dict[str, float]  # side -> user+sys CPU of its processes (last poll; approximate)


def rss_summary(peaks: list[ProcPeak]) -> str:
    return ", ".join(f"{p.label} {p.hwm_kib / 1024:.1f}" for p in peaks if p.hwm_kib >= 512) or "-"


def rss_sum_mib(rss: Rss, side: str) -> float:
    return rss.peak_sum_kib[side] / 1024


# --------------------------------------------------------------------------------------------
# The farm: one harvester namespace, a tmpfs and a loop drive as destinations
# --------------------------------------------------------------------------------------------


@dataclass
class Destination:
    key: str  # "tmpfs" | "disk"
    mountpoint: Path
    harvester_root: Path
    plotter_config: Path
    fs: str

    @property
    def harvester_config(self) -> Path:
        return self.harvester_root / "plot_manager.yaml"

    @property
    def receive_script(self) -> Path:
        return self.harvester_root / "receive_plot.sh"


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    farm: Any
    address: str
    netns: tuple[int, int]
    outbox: Path
    dests: dict[str, Destination] = field(default_factory=dict)
    children: list[subprocess.Popen[Any]] = field(default_factory=list)
    nc_port: int = NC_PORT_BASE
    min_cached: float | None = None

    # -- helpers ---------------------------------------------------------------------------

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(list(argv), **kwargs)
        self.children.append(proc)
        return proc

    def popen_in(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = self.farm.popen_in(HARVESTER, list(argv), **kwargs)
        self.children.append(proc)
        return proc

    def kill_children(self) -> None:
        """Stop what we started, by pid (Popen), and reap it."""
        for proc in self.children:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.children.clear()

    def watch(self) -> RssWatch:
        return RssWatch(self.netns, exclude={p for p in [self.farm.sshd_pid(HARVESTER)] if p is not None})

    def clear_dest(self, dest: Destination) -> None:
        for entry in dest.mountpoint.iterdir():
            if entry.name == "lost+found":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if dest.key == "disk":
            from tests.support.loopdrives import _syncfs

            _syncfs(dest.mountpoint)  # the next run starts without this run's write-back

    def note_cache(self, source: SourcePlot) -> None:
        frac = cached_fraction(source.path)
        if frac is not None:
            self.min_cached = frac if self.min_cached is None else min(self.min_cached, frac)

    def check_copy(self, path: Path, size: int, what: str) -> None:
        try:
            got = path.stat().st_size
        except FileNotFoundError:
            raise CheckFailed(f"{what}: {path} was not created") from None
        if got != size:
            raise CheckFailed(f"{what}: {path} has {got} bytes, expected {size}")

    def harvester_pass(self, dest: Destination) -> None:
        proc = self.farm.exec_in(
            HARVESTER, [PYTHON, str(REPO / "drive_manager.py"), "--config", str(dest.harvester_config)], timeout=120
        )
        if proc.returncode != 0:
            raise CheckFailed(f"drive_manager.py for {dest.key} exited {proc.returncode}: {proc.stderr.strip()}")
        target = receive_dir_of(dest.receive_script)
        if target is None or Path(target).resolve() != dest.mountpoint:
            raise CheckFailed(f"receive_plot.sh for {dest.key} points at {target!r}, not {dest.mountpoint}")

    # -- the tools -------------------------------------------------------------------------

    def run_nc(self, dest: Destination, source: SourcePlot) -> Sample:
        port = self.nc_port
        self.nc_port += 1
        copy = dest.mountpoint / "nc.bin"
        watch = self.watch()
        watch.start(None)
        with open(copy, "wb") as out:
            receiver = self.popen_in(["nc", "-l", "-p", str(port)], stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.DEVNULL)
        wait_listening(receiver, port)
        with open(source.path, "rb") as src:
            t0 = time.perf_counter()
            sender = self.popen(["nc", "-N", self.address, str(port)], stdin=src, stdout=subprocess.DEVNULL)
            watch.sender_root = sender.pid
            sender_rc = sender.wait()
            receiver_rc = receiver.wait(timeout=60)
            seconds = time.perf_counter() - t0
        rss = watch.stop()
        if sender_rc != 0 or receiver_rc != 0:
            raise CheckFailed(f"nc: sender exited {sender_rc}, receiver {receiver_rc}")
        self.check_copy(copy, source.size, "nc")
        t1 = time.perf_counter()
        fd = os.open(copy, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_s = time.perf_counter() - t1
        return Sample(seconds, rss, extra={"fsync": fsync_s})

    def run_ours(self, dest: Destination, source: SourcePlot, *extra: str) -> Sample:
        """The whole production run; ``extra`` arguments (``--no-resume``) go to plot_manager.py."""
        self.harvester_pass(dest)  # a fresh export (the plotter refuses old ones); untimed
        link = self.outbox / source.name
        if not link.exists():
            os.link(source.path, link)  # same inode, same warm page cache; plot_manager deletes the link
        db = sqlite_path(dest.plotter_config)
        argv = [PYTHON, str(REPO / "plot_manager.py"), "--config", str(dest.plotter_config),
                "--send", str(link), "--to", HARVESTER, *extra]
        watch = self.watch()
        t0 = time.perf_counter()
        proc = self.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        watch.start(proc.pid)
        out, err = proc.communicate(timeout=1800)
        seconds = time.perf_counter() - t0
        rss = watch.stop()
        if proc.returncode != 0:
            raise CheckFailed(f"plot_manager.py --send exited {proc.returncode}:\n{out}\n{err}")
        if link.exists():
            raise CheckFailed("plot_manager.py said OK but kept the source link")
        self.check_copy(dest.mountpoint / source.name, source.size, "ours")
        leftovers = [p.name for p in dest.mountpoint.iterdir() if p.name.endswith(".part")]
        if leftovers:
            raise CheckFailed(f"ours: part files left: {leftovers}")
        return Sample(seconds, rss, extra={"send_plot": last_transfer_seconds(db)})

    def run_ours_inproc(self, dest: Destination, source: SourcePlot) -> Sample:
        from utilities import remote
        from utilities.config import load_settings
        from utilities.transfer import channel, sender

        self.harvester_pass(dest)  # untimed, as for ours
        settings, _ = load_settings(str(dest.plotter_config))
        target = settings.farm.harvesters[0]
        marks: dict[str, float] = {}
        original = sender.stream_file

        def timed_stream_file(*a: Any, **kw: Any) -> Any:
            marks["stream_start"] = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                marks["stream_end"] = time.perf_counter()

        watch = self.watch().start(os.getpid())  # the sender is this process (CPU via process_time) + its nc
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        client = remote.connect(target, settings.farm.ssh)
        t_connected = time.perf_counter()
        sender.stream_file = timed_stream_file  # this process only; restored below
        try:
            result = sender.send_plot(
                channel.ParamikoExec(client), target.receive_script, source.path, target.data_host or target.host,
                settings.plotter.transfer.port_base, port_count=settings.plotter.transfer.port_count,
                idle_timeout=settings.plotter.transfer.idle_timeout_seconds,
                nc="nc" if settings.plotter.transfer.stream_with == "nc" else None,
            )
        finally:
            sender.stream_file = original
            t_done = time.perf_counter()
            cpu_self = time.process_time() - cpu0
            client.close()
            rss = watch.stop()
        if not result.ok:
            raise CheckFailed(f"send_plot failed: {result.reason}")
        self.check_copy(dest.mountpoint / source.name, source.size, "ours in-process")
        phases = {
            "connect": t_connected - t0,
            "receiver start -> READY": marks["stream_start"] - t_connected,
            "stream (nc, hashed)": marks["stream_end"] - marks["stream_start"],
            "VERIFY -> fsync, rename -> OK": t_done - marks["stream_end"],
        }
        return Sample(t_done - t0, rss, extra={"to_stream_end": marks["stream_end"] - t0, "cpu_self": cpu_self,
                                               **phases})

    def run_ssh_tool(self, tool: str, dest: Destination, source: SourcePlot) -> Sample:
        cfg = str(self.farm.ssh_config)
        remote_path = f"{HARVESTER}:{dest.mountpoint / (tool + '.bin')}"
        if tool == "rsync":
            argv = ["rsync", "-e", f"ssh -F {shlex.quote(cfg)}", str(source.path), remote_path]
        else:
            argv = ["scp", "-q", "-F", cfg, str(source.path), remote_path]
        watch = self.watch()
        t0 = time.perf_counter()
        proc = self.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watch.start(proc.pid)
        out, err = proc.communicate(timeout=1800)
        seconds = time.perf_counter() - t0
        rss = watch.stop()
        if proc.returncode != 0:
            raise CheckFailed(f"{tool} exited {proc.returncode}: {err.strip() or out.strip()}")
        self.check_copy(dest.mountpoint / (tool + ".bin"), source.size, tool)
        return Sample(seconds, rss)

    def pm_fixed_costs(self, dest: Destination, source: SourcePlot, runs: int) -> dict[str, float]:
        """What plot_manager.py --send costs besides send_plot: start-up, then + export and plan."""
        self.harvester_pass(dest)
        link = self.outbox / source.name
        if not link.exists():
            os.link(source.path, link)
        base = [PYTHON, str(REPO / "plot_manager.py"), "--config", str(dest.plotter_config)]
        commands = {
            "start-up + imports (--version)": [*base, "--version"],
            "+ config, DB, export over SFTP, plan (--send --dry-run)": [*base, "--send", str(link), "--to",
                                                                        HARVESTER, "--dry-run"],
        }
        out: dict[str, float] = {}
        try:
            for what, argv in commands.items():
                times = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    proc = subprocess.run(argv, capture_output=True, text=True, cwd="/", timeout=120, check=False)
                    times.append(time.perf_counter() - t0)
                    if proc.returncode != 0:
                        raise CheckFailed(f"{' '.join(argv[1:])} exited {proc.returncode}: {proc.stderr.strip()}")
                out[what] = statistics.median(times)
        finally:
            link.unlink(missing_ok=True)
        return out

    def run_tool(self, tool: str, dest: Destination, source: SourcePlot) -> Sample:
        self.clear_dest(dest)
        self.note_cache(source)
        try:
            if tool == "nc":
                return self.run_nc(dest, source)
            if tool == "ours":
                return self.run_ours(dest, source)
            if tool == "ours-noresume":
                return self.run_ours(dest, source, "--no-resume")
            if tool == "ours-inproc":
                return self.run_ours_inproc(dest, source)
            return self.run_ssh_tool(tool, dest, source)
        finally:
            self.kill_children()
            self.clear_dest(dest)


@dataclass
class Sample:
    seconds: float
    rss: Rss | None
    extra: dict[str, float] = field(default_factory=dict)


def receive_dir_of(script: Path) -> str | None:
    """RECEIVE_DIR of a receive_plot.sh (None: the refusing script, or none written)."""
    try:
        text = script.read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("RECEIVE_DIR="):
            words = shlex.split(line.partition("=")[2])
            return words[0] if words else None
    return None


def wait_listening(proc: subprocess.Popen[Any], port: int, timeout: float = 10.0) -> None:
    """Until ``proc`` (in its namespace) listens on ``port``: its /proc/<pid>/net/tcp, no connect."""
    want = f":{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"nc -l -p {port} exited with {proc.returncode} before listening")
        table = _read(f"/proc/{proc.pid}/net/tcp") or ""
        for line in table.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[1].endswith(want) and fields[3] == "0A":
                return
        time.sleep(0.005)
    raise CheckFailed(f"nc -l -p {port} not listening after {timeout} s")


def sqlite_path(plotter_config: Path) -> Path:
    import yaml

    data = yaml.safe_load(plotter_config.read_text())
    return Path(data["state_dir"]) / "state.sqlite3"


def last_transfer_seconds(db: Path) -> float:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute("SELECT seconds, ok FROM transfers ORDER BY id DESC LIMIT 1").fetchone()
    if row is None or not row[1]:
        raise CheckFailed(f"no successful transfer recorded in {db}")
    return float(row[0])


# --------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)


def setup_destinations(bench: Bench, stack: contextlib.ExitStack, plot_size: int) -> None:
    from tests.support.harvester_env import harvester_config
    from tests.support.loopdrives import LoopDrives
    from tests.support.tmpfs_drives import TmpfsDrives

    farm = bench.farm
    hroot = farm.root / HARVESTER
    hroot.mkdir()
    mnt = hroot / "mnt"
    mounts: dict[str, tuple[Path, str, tuple[str, ...]]] = {}
    if "tmpfs" in bench.args.dests:
        size = plot_size + plot_size // 4 + 64 * MIB  # one plot slot, room for rsync's temp file
        tmpfs = stack.enter_context(TmpfsDrives(mnt, ["tmpfs/drive0"], size=str(size), source=TMPFS_SOURCE))
        mounts["tmpfs"] = (tmpfs.drives[0].mountpoint, f"tmpfs (size={size / GIB:.2f} GiB)", (TMPFS_SOURCE,))
    if "disk" in bench.args.dests:
        images = bench.work / "images"
        images.mkdir()
        size_mb = math.ceil((plot_size + plot_size // 4) / MIB) + 512
        loop = stack.enter_context(LoopDrives(mnt, ["disk/drive0"], size_mb=size_mb, fstype=bench.args.fstype,
                                              image_dir=images))
        drive = loop.drives[0]
        dio = "buffered"
        if not bench.args.loop_buffered:
            dio = loop_direct_io(drive.device)
        mounts["disk"] = (drive.mountpoint, f"{drive.fstype} on {drive.device} ({size_mb / 1024:.1f} GiB sparse "
                                            f"image on {bench.args.work_dir}, loop {dio})", (drive.device,))
    for key, (mountpoint, fs, device_patterns) in mounts.items():
        root = hroot / f"harvester-{key}"
        root.mkdir()
        config = harvester_config(root, [str(mountpoint)], plot_size, device_patterns=device_patterns)
        config["hostname"] = HARVESTER
        write_yaml(root / "plot_manager.yaml", config)
        proot = farm.root / f"plotter-{key}"
        proot.mkdir()
        plotter_config = proot / "plot_manager.yaml"
        write_yaml(plotter_config, {
            "hostname": "chiaplot01",
            "state_dir": str(proot / "state"),
            "farm": {
                "harvesters": [{
                    "name": HARVESTER, "host": bench.address, "user": "root",
                    "receive_script": str(root / "receive_plot.sh"),
                    "export_file": str(root / "state" / "export" / "harvester.json"),
                }],
                "ssh": {"key_file": str(farm.client_key), "known_hosts": str(farm.known_hosts),
                        "connect_timeout_seconds": 5},
            },
            "plotter": {
                "plot_directories": [str(bench.outbox)],
                "transfer": {"idle_timeout_seconds": 30, "port_count": 20, "stream_with": bench.args.stream_with},
            },
        })
        dest = Destination(key, mountpoint, root, plotter_config, fs)
        bench.dests[key] = dest
        bench.harvester_pass(dest)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

LABELS = {
    "nc": "nc -N < file (raw, no verification)",
    "nc+fsync": "  nc, plus fsync of the copy",
    "ours": "ours: plot_manager.py --send (whole run)",
    "ours:send_plot": "  of which send_plot (receiver start -> OK)",
    "ours-noresume": "ours --no-resume (no resume journal)",
    "ours-noresume:send_plot": "  of which send_plot (receiver start -> OK)",
    "ours-inproc": "ours: connect + send_plot() in-process",
    "ours-inproc:stream": "  same, to end of stream (no VERIFY/fsync)",
    "rsync": "rsync -e ssh",
    "scp": "scp (SFTP)",
}


def print_table(bench: Bench, source: SourcePlot, results: dict[tuple[str, str], list[Sample]]) -> None:
    rows: list[tuple[str, str, list[float], list[Sample]]] = []
    for dest in bench.args.dests:
        for tool in bench.args.tools:
            samples = results.get((tool, dest), [])
            if not samples:
                continue
            rows.append((tool, dest, [s.seconds for s in samples], samples))
            if tool == "nc" and dest == "disk":
                rows.append(("nc+fsync", dest, [s.seconds + s.extra["fsync"] for s in samples], []))
            if tool in ("ours", "ours-noresume"):
                rows.append((f"{tool}:send_plot", dest, [s.extra["send_plot"] for s in samples], []))
            if tool == "ours-inproc":
                rows.append(("ours-inproc:stream", dest, [s.extra["to_stream_end"] for s in samples], []))
    nc_median = {
        dest: mbps(source.size, statistics.median(s.seconds for s in results[("nc", dest)]))
        for dest in bench.args.dests
        if results.get(("nc", dest))
    }
    header = ("tool", "dest", "runs", "s median", "MB/s median", "min..max", "x raw nc", "RSS send MiB",
              "RSS recv MiB", "CPU s send", "CPU s recv")
    table = []
    for key, dest, seconds, samples in rows:
        speeds = [mbps(source.size, s) for s in seconds]
        med = statistics.median(speeds)
        ratio = f"{med / nc_median[dest]:.2f}" if dest in nc_median else "-"
        rss_s = rss_r = cpu_s = cpu_r = ""
        measured = [s.rss for s in samples if s.rss is not None]
        if measured:
            if key != "ours-inproc":  # in-process the sender is this benchmark's own process
                rss_s = f"{statistics.median(rss_sum_mib(r, 'sender') for r in measured):.1f}"
            rss_r = f"{statistics.median(rss_sum_mib(r, 'receiver') for r in measured):.1f}"
            cpu_s = f"{statistics.median(s.rss.cpu_seconds['sender'] + s.extra.get('cpu_self', 0.0) for s in samples if s.rss):.2f}"
            cpu_r = f"{statistics.median(r.cpu_seconds['receiver'] for r in measured):.2f}"
        table.append((LABELS[key], dest, str(len(speeds)), f"{statistics.median(seconds):.2f}", f"{med:.0f}",
                      f"{min(speeds):.0f}..{max(speeds):.0f}", ratio, rss_s, rss_r, cpu_s, cpu_r))
    print_markdown_table(header, table, ["<", "<", ">", ">", ">", ">", ">", ">", ">", ">", ">"])


def print_details(bench: Bench, source: SourcePlot, results: dict[tuple[str, str], list[Sample]]) -> None:
    print("\nevery run, seconds (in the order run):")
    for dest in bench.args.dests:
        for tool in bench.args.tools:
            samples = results.get((tool, dest))
            if samples:
                print(f"  {tool:11} {dest:5} " + " ".join(f"{s.seconds:6.2f}" for s in samples))
    print("\npeak RSS (VmHWM, MiB) per process, last run of each tool (the table shows per side the largest sum of "
          "VmRSS over processes alive at the same poll):")
    for dest in bench.args.dests:
        for tool in bench.args.tools:
            samples = results.get((tool, dest))
            if not samples or samples[-1].rss is None:
                continue
            rss = samples[-1].rss
            own = "(this benchmark process, not counted) + " if tool == "ours-inproc" else ""
            print(f"  {tool:11} {dest:5}  sender: {own}{rss_summary(rss.per_process['sender'])}")
            print(f"  {'':11} {'':5}  receiver: {rss_summary(rss.per_process['receiver'])}")
    for dest in bench.args.dests:
        samples = results.get(("ours-inproc", dest))
        if not samples:
            continue
        print(f"\nours in-process on {dest}, phases (median of {len(samples)} runs, seconds):")
        for phase in ("connect", "receiver start -> READY", "stream (nc, hashed)", "VERIFY -> fsync, rename -> OK"):
            values = [s.extra[phase] for s in samples]
            print(f"  {statistics.median(values):7.3f}  {phase}"
                  + (f"  ({mbps(source.size, statistics.median(values)):.0f} MB/s)" if phase.startswith("stream")
                     else ""))
        print(f"  {statistics.median(s.seconds for s in samples):7.3f}  total")
    for dest in bench.args.dests:
        samples = results.get(("nc", dest))
        if samples and dest == "disk":
            print(f"\nfsync of nc's fresh copy on {dest}: median {statistics.median(s.extra['fsync'] for s in samples):.3f} s")
        ours = results.get(("ours", dest))
        if ours:
            overhead = statistics.median(s.seconds - s.extra["send_plot"] for s in ours)
            print(f"plot_manager.py --send on {dest}: {overhead:.3f} s (median) outside send_plot "
                  "(start-up, imports, config, export over SFTP, SSH connect, deleting the source)")


def print_rss_flatness(small: SourcePlot | None, large: SourcePlot,
                       results_small: dict[tuple[str, str], list[Sample]],
                       results: dict[tuple[str, str], list[Sample]], bench: Bench) -> None:
    if small is None:
        return
    print(f"\npeak RSS (MiB) at two plot sizes: k{small.k} ({small.size / GIB:.2f} GiB) vs k{large.k} "
          f"({large.size / GIB:.2f} GiB): biggest process per side (VmHWM), [largest VmRSS sum per side]:")
    for dest in bench.args.dests:
        for tool in bench.args.tools:
            a = results_small.get((tool, dest))
            b = results.get((tool, dest))
            if not a or not b or a[-1].rss is None or b[-1].rss is None:
                continue
            cells = []
            for side in ("sender", "receiver"):
                ra, rb = a[-1].rss, b[-1].rss
                pa, pb = ra.per_process[side], rb.per_process[side]
                top_a = f"{pa[0].label} {pa[0].hwm_kib / 1024:.1f}" if pa else "-"
                top_b = f"{pb[0].hwm_kib / 1024:.1f}" if pb else "-"
                cells.append(f"{side} {top_a} -> {top_b} "
                             f"[sum {rss_sum_mib(ra, side):.1f} -> {rss_sum_mib(rb, side):.1f}]")
            print(f"  {tool:11} {dest:5}  " + ";  ".join(cells))


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace, scratch: Scratch) -> int:
    from tests.support.netns_farm import NetnsFarm
    from utilities.plots import expected_plot_size

    work, stack = scratch.work, scratch.stack
    k = choose_k(args.size_gib)
    plot_size = expected_plot_size(k)
    small_k = k - 2 if not args.skip_small and k - 2 >= 20 else None
    small_size = expected_plot_size(small_k) if small_k else 0
    disk_free = shutil.disk_usage(work).free
    need_disk = plot_size + small_size + (plot_size * 5 // 4 + 512 * MIB if "disk" in args.dests else 0)
    if disk_free < need_disk + 4 * GIB:
        raise CheckFailed(f"{work}: {disk_free / GIB:.1f} GiB free, the bench needs {need_disk / GIB:.1f} GiB + 4 GiB")
    need_ram = plot_size + small_size + (plot_size if "tmpfs" in args.dests else 0)
    if mem_available() < need_ram + 4 * GIB:
        raise CheckFailed(f"MemAvailable {mem_available() / GIB:.1f} GiB < {need_ram / GIB:.1f} GiB "
                          "(warm source files + tmpfs copy) + 4 GiB: use a smaller --size-gib")

    started = time.perf_counter()
    print(f"bench_transfer: {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} CPUs ({cpu_model()}), "
          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / GIB:.0f} GiB RAM, "
          f"kernel {platform.release()}, python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    src_dir = work / "src"
    src_dir.mkdir()
    t0 = time.perf_counter()
    source = make_source_plot(src_dir, k)
    small = make_source_plot(src_dir, small_k) if small_k else None
    print(f"source: {source.path} (k{k}, {source.size} bytes = {source.size / GIB:.2f} GiB, random after the "
          f"header page{f'; small plot k{small_k}, {small.size / GIB:.2f} GiB' if small else ''}), written and "
          f"fsynced in {time.perf_counter() - t0:.1f} s; cached: {fmt_cached(cached_fraction(source.path))}")

    farm_root = work / "farm"
    farm_root.mkdir()
    outbox = work / "outbox"
    outbox.mkdir()
    farm = stack.enter_context(NetnsFarm(farm_root, [HARVESTER]))
    host = farm.host(HARVESTER)
    st = os.stat(f"/run/netns/{host.namespace}")
    bench = Bench(args, work, farm, host.address, (st.st_dev, st.st_ino), outbox)
    scratch.stop_first.append(bench.kill_children)
    setup_destinations(bench, stack, plot_size)
    print(f"farm: {HARVESTER} at {host.address} in netns {host.namespace}, up in {farm.up_seconds:.1f} s; "
          + "; ".join(f"{d.key}: {d.mountpoint} = {d.fs}" for d in bench.dests.values()))

    results_small: dict[tuple[str, str], list[Sample]] = {}
    if small is not None:
        t0 = time.perf_counter()
        for dest in args.dests:
            for tool in args.tools:
                results_small.setdefault((tool, dest), []).append(bench.run_tool(tool, bench.dests[dest], small))
        print(f"small-plot round (warm-up, and RSS at k{small.k}): {time.perf_counter() - t0:.1f} s")
        print_table(bench, small, results_small)

    results: dict[tuple[str, str], list[Sample]] = {}
    bench.min_cached = None
    for run in range(args.runs):
        t0 = time.perf_counter()
        for dest in args.dests:
            for tool in args.tools:
                sample = bench.run_tool(tool, bench.dests[dest], source)
                results.setdefault((tool, dest), []).append(sample)
        print(f"run {run + 1}/{args.runs}: {time.perf_counter() - t0:.1f} s, load {os.getloadavg()[0]:.2f}",
              flush=True)

    fixed = bench.pm_fixed_costs(bench.dests[args.dests[0]], source, 3) if "ours" in args.tools else {}

    print(f"\nk{k} plot, {source.size} bytes ({source.size / GIB:.2f} GiB); {args.runs} runs per tool and "
          f"destination, round-robin; MB/s = 10^6 bytes/s; warm page cache for the source "
          f"(min cached before a run: {fmt_cached(bench.min_cached)}); load {os.getloadavg()[0]:.2f}\n")
    print_table(bench, source, results)
    print_details(bench, source, results)
    if fixed:
        print(f"\nplot_manager.py fixed costs on {args.dests[0]} (median of 3, seconds):")
        for what, seconds in fixed.items():
            print(f"  {seconds:7.3f}  {what}")
    print_rss_flatness(small, source, results_small, results, bench)
    print(f"\nwhole benchmark: {time.perf_counter() - started:.0f} s")
    return 0


def fmt_cached(frac: float | None) -> str:
    return "unknown (no fincore)" if frac is None else f"{frac * 100:.1f}%"




def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        require_root_and_tools("network namespaces, tmpfs and loop mounts",
                               ("nc", "rsync", "scp", "ssh", "ip", "mount", "losetup"))
    except CheckFailed as exc:
        print(f"bench_transfer: {exc}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-transfer-", dir=args.work_dir)).resolve()
    # farm, tmpfs, loop drive: unmounted, the farm stopped (killing what runs in its namespace)
    return run_in_scratch(work, lambda scratch: run_benchmark(args, scratch))


if __name__ == "__main__":
    sys.exit(main())
