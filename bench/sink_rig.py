"""The plot-sink benchmark's rig: one harvester namespace, its link, and the tools it times.

Why a module of its own: bench_sink.py decides what to run and prints the figures; this holds
how each tool is started and timed on the harvester (raw nc streams, rsync over SSH, a
plot_manager.py cron pass against a harvester whose drive_manager.py pass wrote the receive
script), so every measurement is made the same way in both parts of the benchmark.

Every tool is timed until its data is on the drives: nc and rsync until they exit and then a
``syncfs`` of every drive they wrote (in parallel), ours until ``plot_manager.py`` exits (its
receivers fsync each plot before OK). The time of nc and rsync without the flush is kept too.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_transfer import wait_listening, write_yaml  # bench/ is sys.path[0] when run
from benchlib import CheckFailed, SourcePlot
from sink_watch import ReceiverWatch, WatchResult

from tests.support.loopdrives import _syncfs

PYTHON = sys.executable
HARVESTER = "chianas01"
PLOTTER = "chiaplot01"
NC_PORT_BASE = 4900


@dataclass
class Sample:
    """One timed run of one tool: wall seconds until on disk, bytes that landed, what it did."""

    seconds: float
    landed: int
    watch: WatchResult | None = None
    extra: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class Harvester:
    """A harvester config + state dir in the farm root, and the plotter config that targets it.

    The plotter's root must be on the sources' filesystem and mount (outside the farm root's
    bind mount): its outbox gets hard links of the warm source plots.
    """

    root: Path
    plotter_root: Path

    @property
    def config(self) -> Path:
        return self.root / "plot_manager.yaml"

    @property
    def receive_script(self) -> Path:
        return self.root / "receive_plot.sh"

    @property
    def plotter_config(self) -> Path:
        return self.plotter_root / "plot_manager.yaml"

    @property
    def outbox(self) -> Path:
        return self.plotter_root / "outbox"


def syncfs_all(paths: Sequence[Path]) -> None:
    """syncfs every path's filesystem at once, so one slow drive does not serialise the others."""
    threads = [threading.Thread(target=_syncfs, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def clear_dir(path: Path) -> None:
    """Delete everything a run left in a drive (not lost+found)."""
    for entry in path.iterdir():
        if entry.name == "lost+found":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def landed_bytes(dirs: Sequence[Path], names: set[str] | None = None) -> dict[str, int]:
    """name -> size of every finished file in ``dirs`` (only ``names`` when given; no .part)."""
    found: dict[str, int] = {}
    for d in dirs:
        for entry in d.iterdir():
            if entry.is_file() and (names is None or entry.name in names):
                found[entry.name] = entry.stat().st_size
    return found


@dataclass
class Rig:
    """The farm, its harvester's address and namespace, and the processes we started."""

    farm: Any
    address: str
    netns: tuple[int, int]
    product: Path  # the tree whose plot_manager.py / drive_manager.py run
    children: list[subprocess.Popen[Any]] = field(default_factory=list)
    nc_port: int = NC_PORT_BASE

    # -- processes ---------------------------------------------------------------------------

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

    def watch(self, drives: dict[str, Path]) -> ReceiverWatch:
        sshd = self.farm.sshd_pid(HARVESTER)
        return ReceiverWatch(self.netns, drives, exclude={sshd} if sshd else set())

    # -- the link ----------------------------------------------------------------------------

    @property
    def veth(self) -> str:
        return str(self.farm.host(HARVESTER).veth_host_side)

    def cap_link(self, mb_per_s: float) -> str:
        """tbf on the bridge side of the harvester's veth: plotter -> harvester at most this."""
        mbit = int(mb_per_s * 8)
        # burst: a few GSO packets; tbf splits a GSO packet bigger than the burst into segments.
        argv = ["tc", "qdisc", "replace", "dev", self.veth, "root", "tbf", "rate", f"{mbit}mbit",
                "burst", "1mb", "latency", "50ms"]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise CheckFailed(f"{' '.join(argv)}: {proc.stderr.strip()}")
        return " ".join(argv[2:])

    def uncap_link(self) -> None:
        subprocess.run(["tc", "qdisc", "del", "dev", self.veth, "root"], capture_output=True, check=False)

    def link_mb_per_s(self, source: SourcePlot) -> float:
        """One nc stream of ``source`` to /dev/null on the harvester: what the link carries."""
        port = self.next_port()
        receiver = self.popen_in(["nc", "-l", "-p", str(port)], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(receiver, port)
        with open(source.path, "rb") as src:
            t0 = time.perf_counter()
            sender = self.popen(["nc", "-N", self.address, str(port)], stdin=src, stdout=subprocess.DEVNULL)
            rc = (sender.wait(), receiver.wait(timeout=120))
            seconds = time.perf_counter() - t0
        if rc != (0, 0):
            raise CheckFailed(f"link check: nc exited {rc}")
        return source.size / seconds / 1e6

    def next_port(self) -> int:
        self.nc_port += 1
        return self.nc_port

    # -- raw nc ------------------------------------------------------------------------------

    def run_nc_streams(self, files: Sequence[Sequence[Path]], dests: Sequence[Path],
                       drives: dict[str, Path]) -> Sample:
        """One nc stream per drive, carrying that drive's files back to back into one file; then syncfs."""
        watch = self.watch(drives).start()
        receivers, ports = [], []
        for dest in dests:
            port = self.next_port()
            with open(dest / "nc.bin", "wb") as out:
                receivers.append(self.popen_in(["nc", "-l", "-p", str(port)], stdin=subprocess.DEVNULL,
                                               stdout=out, stderr=subprocess.DEVNULL))
            ports.append(port)
        for proc, port in zip(receivers, ports, strict=True):
            wait_listening(proc, port)
        t0 = time.perf_counter()
        senders = []
        for chunk, port in zip(files, ports, strict=True):
            cat = self.popen(["cat", *map(str, chunk)], stdout=subprocess.PIPE)
            senders.append(self.popen(["nc", "-N", self.address, str(port)], stdin=cat.stdout,
                                      stdout=subprocess.DEVNULL))
            assert cat.stdout is not None
            cat.stdout.close()  # nc holds the pipe now
        codes = [p.wait() for p in senders] + [p.wait(timeout=600) for p in receivers]
        t_net = time.perf_counter() - t0
        syncfs_all(dests)
        seconds = time.perf_counter() - t0
        result = watch.stop()
        if any(codes):
            raise CheckFailed(f"nc streams: exit codes {codes}")
        expected = [sum(p.stat().st_size for p in chunk) for chunk in files]
        got = [(d / "nc.bin").stat().st_size for d in dests]
        if got != expected:
            raise CheckFailed(f"nc streams: wrote {got} bytes per drive, expected {expected}")
        return Sample(seconds, sum(got), result, {"to_exit": t_net})

    def run_nc_files(self, files: Sequence[Path], dest: Path) -> Sample:
        """nc file after file into one directory: a listener started, the file sent, next."""
        watch = self.watch({"dest": dest}).start()
        t0 = time.perf_counter()
        for path in files:
            port = self.next_port()
            with open(dest / path.name, "wb") as out:
                receiver = self.popen_in(["nc", "-l", "-p", str(port)], stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.DEVNULL)
            wait_listening(receiver, port)
            with open(path, "rb") as src:
                sender = self.popen(["nc", "-N", self.address, str(port)], stdin=src, stdout=subprocess.DEVNULL)
                codes = (sender.wait(), receiver.wait(timeout=120))
            if codes != (0, 0):
                raise CheckFailed(f"nc {path.name}: exit codes {codes}")
        seconds = time.perf_counter() - t0
        result = watch.stop()
        landed = landed_bytes([dest], {p.name for p in files})
        self._check_all_landed("nc file after file", files, landed)
        return Sample(seconds, sum(landed.values()), result)

    # -- the drives alone --------------------------------------------------------------------

    def run_local_copies(self, files: Sequence[Sequence[Path]], dests: Sequence[Path],
                         drives: dict[str, Path]) -> Sample:
        """One ``cp`` per drive from the warm sources, no network, then syncfs: what the drives take."""
        watch = self.watch(drives).start()  # sees nothing in the namespace: kept for the same columns
        t0 = time.perf_counter()
        procs = [self.popen(["cp", *map(str, chunk), f"{dest}/"], stdin=subprocess.DEVNULL)
                 for chunk, dest in zip(files, dests, strict=True)]
        codes = [p.wait() for p in procs]
        t_exit = time.perf_counter() - t0
        syncfs_all(dests)
        seconds = time.perf_counter() - t0
        result = watch.stop()
        if any(codes):
            raise CheckFailed(f"cp: exit codes {codes}")
        names = {p.name for chunk in files for p in chunk}
        landed = landed_bytes(dests, names)
        self._check_all_landed("cp", [p for chunk in files for p in chunk], landed)
        return Sample(seconds, sum(landed.values()), result, {"to_exit": t_exit})

    # -- rsync over SSH ----------------------------------------------------------------------

    def run_rsyncs(self, files: Sequence[Sequence[Path]], dests: Sequence[Path],
                   drives: dict[str, Path]) -> Sample:
        """One ``rsync -e ssh`` per drive, all at once (as plow does), then syncfs."""
        ssh = f"ssh -F {shlex.quote(str(self.farm.ssh_config))}"
        watch = self.watch(drives).start()
        t0 = time.perf_counter()
        procs = [self.popen(["rsync", "-e", ssh, *map(str, chunk), f"{HARVESTER}:{dest}/"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for chunk, dest in zip(files, dests, strict=True)]
        outputs = [p.communicate(timeout=1800) for p in procs]
        t_exit = time.perf_counter() - t0
        syncfs_all(dests)
        seconds = time.perf_counter() - t0
        result = watch.stop()
        for proc, (out, err) in zip(procs, outputs, strict=True):
            if proc.returncode != 0:
                raise CheckFailed(f"rsync exited {proc.returncode}: {err.strip() or out.strip()}")
        names = {p.name for chunk in files for p in chunk}
        landed = landed_bytes(dests, names)
        self._check_all_landed("rsync", [p for chunk in files for p in chunk], landed)
        return Sample(seconds, sum(landed.values()), result, {"to_exit": t_exit})

    # -- this product ------------------------------------------------------------------------

    def harvester_pass(self, harvester: Harvester) -> None:
        """drive_manager.py's cron pass in the harvester namespace (writes export and receive_plot.sh)."""
        proc = self.farm.exec_in(HARVESTER, [PYTHON, str(self.product / "drive_manager.py"),
                                             "--config", str(harvester.config)], timeout=120)
        if proc.returncode != 0:
            raise CheckFailed(f"drive_manager.py exited {proc.returncode}: {proc.stderr.strip()}")
        if not harvester.receive_script.exists():
            raise CheckFailed(f"drive_manager.py wrote no {harvester.receive_script}")

    def run_ours(self, harvester: Harvester, plots: Sequence[SourcePlot], dests: Sequence[Path],
                 drives: dict[str, Path]) -> Sample:
        """One plot_manager.py cron pass sending ``plots`` (hard links of the warm sources)."""
        self.harvester_pass(harvester)  # a fresh export (the plotter refuses old ones); untimed
        for plot in plots:
            link = harvester.outbox / plot.name
            if not link.exists():
                os.link(plot.path, link)
        argv = [PYTHON, str(self.product / "plot_manager.py"), "--config", str(harvester.plotter_config)]
        watch = self.watch(drives).start()
        wall0 = time.time()
        t0 = time.perf_counter()
        proc = self.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        out, err = proc.communicate(timeout=1800)
        seconds = time.perf_counter() - t0
        result = watch.stop()
        names = {p.name for p in plots}
        landed = landed_bytes(dests, names)
        parts = [e.name for d in dests for e in d.iterdir() if e.name.endswith(".part")]
        kept = sorted(p.name for p in harvester.outbox.iterdir())
        for link in harvester.outbox.iterdir():
            link.unlink()
        wrong = {n: s for n, s in landed.items() if s != next(p.size for p in plots if p.name == n)}
        if proc.returncode != 0 or parts or wrong:
            raise CheckFailed(f"plot_manager.py exited {proc.returncode}; part files left {parts}; "
                              f"wrong sizes {wrong}\n{out}\n{err}")
        if set(kept) & set(landed):
            raise CheckFailed(f"plot_manager.py kept sources of plots that landed: {sorted(set(kept) & set(landed))}")
        note = f"{len(landed)} of {len(plots)} plots sent" if len(landed) != len(plots) else ""
        return Sample(seconds, sum(landed.values()), result, {"send_seconds": sent_seconds(harvester, wall0)},
                      note=note)

    @staticmethod
    def _check_all_landed(tool: str, files: Sequence[Path], landed: dict[str, int]) -> None:
        wrong = [p.name for p in files if landed.get(p.name) != p.stat().st_size]
        if wrong:
            raise CheckFailed(f"{tool}: {len(wrong)} files missing or of the wrong size, e.g. {wrong[0]}")


def sent_seconds(harvester: Harvester, since: float) -> float:
    """The plotter's own record: seconds of every plot it sent OK since ``since`` (wall clock), summed.

    Per plot, from the receiver's start (or the session's PLOT line) to OK: the run's one-off
    start (Python, config, export, SSH connect) is not in it.
    """
    db = harvester.plotter_root / "state" / "state.sqlite3"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute("SELECT COALESCE(SUM(seconds), 0) FROM transfers WHERE ok AND started_at >= ?",
                           (since - 1,)).fetchone()
    return float(row[0])


def product_has_setting(product: Path, section: str, key: str) -> bool:
    """Whether the product tree's config knows ``section.key`` (older trees reject unknown keys)."""
    module, cls = {"harvester": ("utilities.settings.harvester", "HarvesterSettings"),
                   "transfer": ("utilities.settings.plotter", "TransferSettings")}[section]
    code = f"import sys; from {module} import {cls} as C; sys.exit(0 if {key!r} in C.model_fields else 1)"
    proc = subprocess.run([PYTHON, "-c", code], cwd=product, capture_output=True, check=False)
    return proc.returncode == 0


def product_revision(product: Path) -> str:
    """``abc1234`` (+ ``, uncommitted changes in ...``) of the tree the product runs from."""
    head = subprocess.run(["git", "-C", str(product), "log", "-1", "--format=%h %s"], capture_output=True,
                          text=True, check=False)
    if head.returncode != 0:
        return f"{product} (not a git checkout)"
    dirty = subprocess.run(["git", "-C", str(product), "status", "--porcelain", "--untracked-files=no", "--",
                            "utilities", "templates", "plot_manager.py", "drive_manager.py", "receive_plot.py"],
                           capture_output=True, text=True, check=False).stdout.split("\n")
    changed = [line[3:] for line in dirty if line.strip()]
    rev = head.stdout.strip()[:90]
    return rev + (f"; NOT COMMITTED: {len(changed)} changed product files ({', '.join(changed[:4])}...)"
                  if changed else "")


def write_configs(harvester: Harvester, *, address: str, farm: Any, mountpoints: Sequence[Path],
                  devices: Sequence[str], plot_size: int, receive_drives: int | None,
                  max_concurrent: int) -> None:
    """The harvester's config (only these drives) and the plotter's (only this harvester)."""
    from tests.support.harvester_env import harvester_config

    harvester.root.mkdir(exist_ok=True)
    harvester.plotter_root.mkdir(exist_ok=True)
    harvester.outbox.mkdir(exist_ok=True)
    extra: dict[str, Any] = {}
    if receive_drives is not None:
        extra["concurrent_receive_drives"] = receive_drives
    config = harvester_config(harvester.root, [str(m) for m in mountpoints], plot_size,
                              device_patterns=tuple(devices), **extra)
    config["hostname"] = HARVESTER
    config["harvester"]["alerts"] = {"temperature_check_minutes": 10**8}  # no fake SMART in timed passes
    write_yaml(harvester.config, config)
    write_yaml(harvester.plotter_config, {
        "hostname": PLOTTER,
        "state_dir": str(harvester.plotter_root / "state"),
        "plot_size": plot_size,
        "farm": {
            "harvesters": [{
                "name": HARVESTER, "host": address, "user": "root",
                "receive_script": str(harvester.receive_script),
                "export_file": str(harvester.root / "state" / "export" / "harvester.json"),
            }],
            "ssh": {"key_file": str(farm.client_key), "known_hosts": str(farm.known_hosts),
                    "connect_timeout_seconds": 5},
        },
        "plotter": {
            "plot_directories": [str(harvester.outbox)],
            "transfer": {"idle_timeout_seconds": 60, "port_count": 100, "max_concurrent_transfers": max_concurrent},
        },
    })
