"""A harvester under test: its config file, state dir and a way to run drive_manager.py for real.

Tests run the real script in a subprocess (as cron would), so argument parsing, exit codes,
locking and the written files are all exercised, not just library calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.waiting import CHANNEL_TIMEOUT, DEADLINE

REPO = Path(__file__).resolve().parents[2]
FAKE_SMARTCTL = REPO / "tests" / "support" / "fake_smartctl" / "smartctl"


@dataclass
class Harvester:
    root: Path
    hostname: str = "chianas01"
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.root / "plot_manager.yaml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def receive_script(self) -> Path:
        return self.root / "receive_plot.sh"

    @property
    def export_file(self) -> Path:
        return self.state_dir / "export" / "harvester.json"

    def write_config(self, data: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        self.config_path.chmod(0o600)

    def run(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run(
            [sys.executable, str(REPO / "drive_manager.py"), "--config", str(self.config_path), *args],
            capture_output=True, text=True, env=full_env, timeout=DEADLINE,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"drive_manager.py {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def export(self) -> dict[str, Any]:
        return json.loads(self.export_file.read_text())

    def receive_dir(self) -> str | None:
        for line in self.receive_script.read_text().splitlines():
            if line.startswith("RECEIVE_DIR="):
                return line.partition("=")[2].strip("'")
        return None


def harvester_config(
    root: Path,
    mountpoint_patterns: list[str],
    plot_size: int,
    smtp_port: int | None = None,
    device_patterns: tuple[str, ...] = ("/dev/loop*",),
    **harvester_extra: Any,
) -> dict[str, Any]:
    """A config for a test harvester whose drives live under ``root``."""
    notifications: dict[str, Any] = {}
    if smtp_port is not None:
        notifications = {
            "email": {"enabled": True, "smtp_host": "127.0.0.1", "smtp_port": smtp_port,
                      "from_address": "harvester@test.invalid", "to": ["farmer@test.invalid"],
                      "timeout_seconds": CHANNEL_TIMEOUT},
            "events": {e: ["email"] for e in ("new_plot_drive", "daily_report", "drive_temperature",
                                              "drives_filling", "no_receive_drive")},
        }
    harvester = {
        "drive_discovery": {"device_patterns": list(device_patterns), "mountpoint_patterns": mountpoint_patterns},
        "receive_script": str(root / "receive_plot.sh"),
        "chia_log": str(root / "chia" / "debug.log"),
        "smartctl": str(FAKE_SMARTCTL),
        **harvester_extra,
    }
    return {
        "config_version": 1,
        "hostname": "chianas01",
        "state_dir": str(root / "state"),
        "plot_size": plot_size,
        "notifications": notifications,
        "harvester": harvester,
    }
