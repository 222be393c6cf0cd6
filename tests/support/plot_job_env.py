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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml

from tests.support.fake_plotter import encode_puzzle_hash, install_fake_plotters

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
FARMER_KEY = "8" * 96
CONTRACT = encode_puzzle_hash(bytes(range(32)))


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


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
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=60, env=env or self.env)

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
                if abs(proc.create_time() - created) > 0.5:
                    continue
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    proc.kill()
                wait_until(f"pid {pid} to end", lambda pid=pid, created=created: not alive(pid, created), 10)
            except (psutil.NoSuchProcess, ProcessLookupError):
                continue


def alive(pid: int, created: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - created) <= 0.5 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def files_with(directory: Path, plot_id: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if plot_id in p.name)
