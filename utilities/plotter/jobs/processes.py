"""Plotter processes: recognise them in the process list, measure them, end them, reap ours.

The manager may have died and restarted, or a job may have been started by hand: the process
list is the truth about what is running. A plotter is recognised by its command line alone
(``identify_plotter`` is pure), with a leading Python interpreter skipped, because chia itself
and test stand-ins are Python scripts whose argv[0] is the interpreter.

A pid alone is not an identity (pids are reused): every process we act on is checked against
the ``create_time`` recorded when we first saw it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

_PYTHON = re.compile(r"python[0-9.]*$")
#: create_time values of one process agree to well within this (seconds).
CREATE_TIME_TOLERANCE = 0.5

# Children this process started and has not reaped yet (``--loop`` runs for days).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class PlotterCommand:
    """What a plotter's command line says about the job."""

    program: str  # chia, madmax or bladebit
    temp_dir: Path | None
    temp2_dir: Path | None
    dest_dir: Path | None
    k: int | None


@dataclass(frozen=True)
class PlotterProcess:
    pid: int
    create_time: float
    cmdline: tuple[str, ...]
    command: PlotterCommand


def _options(args: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``-t X``, ``--tmp_dir X`` and ``--tmp_dir=X`` as a mapping; the rest as positionals.

    Without the program's option table we cannot know which flags take a value, so a flag takes
    the next word when that word does not itself look like a flag; good enough for the few
    flags we read (directories and k), which always take one.
    """
    options: dict[str, str] = {}
    positionals: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word.startswith("--") and "=" in word:
            name, _, value = word.partition("=")
            options[name] = value
        elif word.startswith("-") and len(word) > 1:
            if i + 1 < len(args) and not args[i + 1].startswith("-"):
                options[word] = args[i + 1]
                i += 1
            else:
                options[word] = ""
        else:
            positionals.append(word)
        i += 1
    return options, positionals


def _first(options: dict[str, str], *names: str) -> Path | None:
    for name in names:
        if options.get(name):
            return Path(os.path.normpath(options[name]))
    return None


def _k(options: dict[str, str], *names: str) -> int | None:
    for name in names:
        value = options.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def identify_plotter(cmdline: Sequence[str]) -> PlotterCommand | None:
    """Pure: the plotter job a command line runs, or None when it is no plot-creating plotter."""
    words = list(cmdline)
    if words and _PYTHON.match(os.path.basename(words[0])):
        words = words[1:]
        while words and words[0].startswith("-"):
            words = words[1:]
    if not words:
        return None
    name = os.path.basename(words[0])
    args = words[1:]
    if name == "chia":
        if args[:2] in (["plots", "create"], ["plotters", "chiapos"]):
            opts, _ = _options(args[2:])
            return PlotterCommand("chia", _first(opts, "-t", "--tmp_dir"), _first(opts, "-2", "--tmp_dir2"),
                                  _first(opts, "-d", "--final_dir"), _k(opts, "-k", "--size"))
        if args[:2] == ["plotters", "madmax"]:
            opts, _ = _options(args[2:])
            return PlotterCommand("madmax", _first(opts, "-t", "--tmp_dir"), _first(opts, "-2", "--tmp_dir2"),
                                  _first(opts, "-d", "--final_dir"), _k(opts, "-k", "--size"))
        if args[:2] == ["plotters", "bladebit"]:
            opts, _ = _options(args[2:])
            return PlotterCommand("bladebit", _first(opts, "-t1", "-t", "--tmp_dir"),
                                  _first(opts, "-t2", "-2", "--tmp_dir2"), _first(opts, "-d", "--final_dir"), 32)
        return None
    if name.startswith("chia_plot"):
        opts, _ = _options(args)
        return PlotterCommand("madmax", _first(opts, "-t", "--tmpdir"), _first(opts, "-2", "--tmpdir2"),
                              _first(opts, "-d", "--finaldir"), _k(opts, "-k", "--size"))
    if name in ("bladebit", "bladebit_cuda"):
        opts, positionals = _options(args)
        dest = Path(os.path.normpath(positionals[-1])) if len(positionals) >= 2 else None
        return PlotterCommand("bladebit", _first(opts, "-t1", "--temp1"), _first(opts, "-t2", "--temp2"), dest,
                              _k(opts, "-k", "--size") or 32)
    return None


def plotter_processes() -> list[PlotterProcess]:
    """Every plotter running on this machine (children of a matched plotter are not jobs)."""
    found: dict[int, PlotterProcess] = {}
    parents: dict[int, int] = {}
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "create_time", "status"]):
        info = proc.info
        if info["pid"] == me or not info["cmdline"] or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        command = identify_plotter(info["cmdline"])
        if command is not None:
            found[info["pid"]] = PlotterProcess(info["pid"], info["create_time"], tuple(info["cmdline"]), command)
            parents[info["pid"]] = info["ppid"]
    return [p for pid, p in sorted(found.items()) if parents[pid] not in found]


def live_process(pid: int, create_time: float) -> psutil.Process | None:
    """The process if it still runs and is the very one recorded (not a reused pid)."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > CREATE_TIME_TOLERANCE:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [proc]


@dataclass(frozen=True)
class ProcessStats:
    cpu_percent: float  # average over the job's life, summed over its processes
    rss_bytes: int
    open_files: tuple[str, ...]


def process_stats(proc: psutil.Process) -> ProcessStats:
    """CPU, memory and open files of a job's process tree, without sampling delays.

    CPU is the average since the job started (CPU seconds / wall seconds), which needs no
    second sample and is what a table of long jobs wants anyway.
    """
    cpu = 0.0
    rss = 0
    files: list[str] = []
    started = None
    for member in _tree(proc):
        try:
            with member.oneshot():
                times = member.cpu_times()
                cpu += times.user + times.system
                rss += member.memory_info().rss
                started = started or member.create_time()
                files += [f.path for f in member.open_files()]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    now = time.time()
    wall = max(1e-3, now - (started or now))
    return ProcessStats(round(100.0 * cpu / wall, 1), rss, tuple(sorted(set(files))))


def stdout_log(pid: int, proc_root: str = "/proc") -> Path | None:
    """Where a process's stdout goes, if it is a regular file (an adopted job's log)."""
    try:
        target = os.readlink(f"{proc_root}/{pid}/fd/1")
    except OSError:
        return None
    path = Path(target)
    return path if path.is_absolute() and path.is_file() else None


def terminate_job(proc: psutil.Process, grace_seconds: float) -> list[int]:
    """End a job: SIGTERM to its process group (or tree), SIGKILL what is left after the grace.

    A job we started leads its own session and process group, so the group takes every helper
    process with it. An adopted job may share a group with a shell or anything else, so then
    only its own process tree is signalled. Returns the pids that needed SIGKILL.
    """
    members = _tree(proc)
    own_group = False
    try:
        own_group = os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return []
    _signal_all(proc.pid, members, own_group, signal.SIGTERM)
    alive = wait_gone(members, grace_seconds)
    if alive:
        _signal_all(proc.pid, alive, own_group, signal.SIGKILL)
        wait_gone(alive, 10)
    return [p.pid for p in alive]


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(procs: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has ended; returns those still running after ``timeout``.

    A zombie counts as ended: its parent (a --loop manager, or init) reaps it in its own time,
    and psutil.wait_procs would wait for that reaping, not for the job to end.
    """
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _running(p)]
    return alive


def _signal_all(pgid: int, members: Sequence[psutil.Process], group: bool, sig: int) -> None:
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
    for member in members:
        try:
            member.send_signal(sig)
        except psutil.NoSuchProcess:
            continue


def keep_child(proc: subprocess.Popen[bytes]) -> None:
    """Remember a job this process started, so ``reap_children`` collects its exit status."""
    _children[proc.pid] = proc


def reap_children() -> None:
    """Collect exit statuses of jobs this process started, so none lingers as a zombie."""
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            _children.pop(pid, None)
