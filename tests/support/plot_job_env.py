"""Plot job test environment: fake plotters that look like the real ones in the process list,
temp/output directories, gate files and a plotter config; every job it started is killed by
pid + create_time in ``kill_everything`` (call it from a fixture's ``finally``)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from tests.support.fake_plotter import encode_puzzle_hash, install_fake_plotters
from tests.support.waiting import DEADLINE, wait_until
from utilities.plotter.jobs.processes import CREATE_TIME_TOLERANCE

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
FARMER_KEY = "8" * 96
CONTRACT = encode_puzzle_hash(bytes(range(32)))


#: ``create_time()`` counts in clock ticks: a process started at t reads as up to one tick before t.
CREATE_TIME_RESOLUTION = 1.0 / os.sysconf("SC_CLK_TCK")


def process_clock() -> float:
    """Now, on the clock psutil's ``create_time()`` reads.

    On Linux ``create_time()`` is /proc/stat's ``btime`` (the wall clock at boot, truncated to
    whole seconds) plus the process's start counted in CLOCK_BOOTTIME.  ``time.time()`` runs a
    fixed 0..1 s (per boot) ahead of that, so a ``create_time()`` is compared with this, never
    with ``time.time()``.
    """
    return psutil.boot_time() + time.clock_gettime(time.CLOCK_BOOTTIME)


def wall_to_process_clock(wall: float) -> float:
    """A ``time.time()`` value (e.g. a recorded ``started_at``) moved onto ``process_clock()``."""
    for _ in range(100):  # both clocks read back to back; retried if preempted in between
        before = time.clock_gettime(time.CLOCK_BOOTTIME)
        now = time.time()
        after = time.clock_gettime(time.CLOCK_BOOTTIME)
        if after - before < 1e-4:
            break
    offset = now - (psutil.boot_time() + (before + after) / 2)
    assert -0.001 <= offset < 1.001, f"time.time() is {offset:.3f} s from psutil's clock, expected 0..1 s"
    return wall - offset


class JobsFarm:
    """One plotter: temp and output directories, gates, a config, and the jobs it started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.temps = [root / "t1", root / "t2"]
        self.out = root / "out"
        self.gates = root / "gates"
        self.state = root / "state"
        self.config_path = root / "plot_manager.yaml"
        for d in (*self.temps, self.out, self.gates):
            d.mkdir(parents=True, exist_ok=True)
        install_fake_plotters(self.bin)
        self.env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}",
                    "FAKE_PLOTTER_GATE_DIR": str(self.gates)}
        self.env.pop("FAKE_PLOTTER_FAIL_AT", None)
        self.extra_pids: list[tuple[int, float]] = []
        self.notifications: dict[str, Any] = {}

    def configure(self, *, top: dict[str, Any] | None = None, plotter: dict[str, Any] | None = None, **jobs: Any) -> None:
        """Write the config: ``jobs`` overrides plotter.jobs keys, ``plotter`` other plotter keys,
        ``top`` whole top-level sections (farm, hostname ...)."""
        settings = {
            "enabled": True, "program": "chia", "k": 18, "farmer_public_key": FARMER_KEY,
            "pool_contract_address": CONTRACT, "temp_space_gib": 0.001, "buffer": 100, "buckets": 32,
            "temp_directories": [{"path": str(self.temps[0]), "max_jobs": 4}],
            "output_directories": [str(self.out)], "max_jobs": 4, "stop_grace_seconds": 5,
            **jobs,
        }
        config = {"state_dir": str(self.state),
                  "plotter": {"plot_directories": [str(self.out)], **(plotter or {}), "jobs": settings},
                  "notifications": self.notifications, **(top or {})}
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.config_path.chmod(0o600)

    def command(self, *args: str) -> list[str]:
        return [PYTHON, str(REPO / "plot_manager.py"), "--config", str(self.config_path), *args]

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=DEADLINE,
                              env=env or self.env)

    def jobs(self) -> list[dict[str, Any]]:
        proc = self.run("--jobs", "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def records(self) -> list[tuple]:
        db = self.state / "state.sqlite3"
        if not db.exists():
            return []
        with sqlite3.connect(db) as conn:
            try:
                return conn.execute("SELECT job_id, pid, create_time, started_at, temp_dir, state FROM plot_jobs "
                                    "ORDER BY started_at").fetchall()
            except sqlite3.OperationalError:
                return []

    def open_gate(self, key: object, phase: int) -> None:
        (self.gates / f"{key}.phase{phase}").touch()

    def held_at(self, pid: int, phase: int) -> bool:
        """The job with this pid is waiting before ``phase`` (the fake plotter's marker)."""
        for marker in self.gates.glob(f"*.waiting_phase{phase}"):
            try:
                if marker.read_text().strip() == str(pid):
                    return True
            except OSError:
                continue
        return False

    def kill_everything(self) -> None:
        targets = [(pid, created) for _id, pid, created, *_ in self.records()] + self.extra_pids
        for pid, created in targets:
            try:
                proc = psutil.Process(pid)
                if abs(proc.create_time() - created) > CREATE_TIME_TOLERANCE:
                    continue
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    proc.kill()
                wait_until(f"pid {pid} to end", lambda pid=pid, created=created: not alive(pid, created))
            except (psutil.NoSuchProcess, ProcessLookupError):
                continue


def alive(pid: int, created: float) -> bool:
    """``pid`` still runs and is the process started at ``created`` (a psutil ``create_time()``,
    as recorded: compared with psutil's own reading, never with ``time.time()``)."""
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - created) <= CREATE_TIME_TOLERANCE and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def files_with(directory: Path, plot_id: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if plot_id in p.name)
