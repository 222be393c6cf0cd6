"""A whole farm for end-to-end tests: harvesters in namespaces with loop drives, and a plotter.

Each harvester gets its own loop-mounted drives, config, state directory and a real
``drive_manager.py`` cron pass run inside its namespace; the plotter (root namespace) gets a
config listing every harvester with the farm's SSH key and known_hosts, so host keys are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.harvester_env import harvester_config
from tests.support.hashing import sha256
from tests.support.loopdrives import LoopDrives
from tests.support.netns_farm import NetnsFarm

#: SSH connect timeout for harvesters that are up: a busy machine may take seconds to answer.
SSH_CONNECT_TIMEOUT = 30
#: The transfer's idle limit: long enough for a busy machine, short enough for the tests that
#: cut a link mid-stream (they wait it out).
TRANSFER_IDLE_TIMEOUT = 20

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@dataclass
class FarmHarvester:
    name: str
    root: Path
    drives: LoopDrives

    @property
    def config_path(self) -> Path:
        return self.root / "plot_manager.yaml"

    @property
    def export_file(self) -> Path:
        return self.root / "state" / "export" / "harvester.json"

    def plots(self) -> list[Path]:
        """Every finished plot on this harvester's drives."""
        return sorted(p for d in self.drives.drives for p in d.mountpoint.iterdir() if p.name.endswith(".plot"))

    def leftovers(self) -> list[Path]:
        """Anything a transfer may leave behind: hidden part files and the like."""
        return sorted(p for d in self.drives.drives for p in d.mountpoint.iterdir() if p.name.startswith(".") and p.name.endswith(".part"))


@dataclass
class Plotter:
    root: Path
    harvesters: list[dict[str, Any]]
    farm: NetnsFarm
    transfer: dict[str, Any] = field(default_factory=dict)
    notifications: dict[str, Any] = field(default_factory=dict)

    @property
    def plot_dir(self) -> Path:
        return self.root / "plots"

    @property
    def config_path(self) -> Path:
        return self.root / "plot_manager.yaml"

    def write_config(self, **plotter_extra: Any) -> None:
        self.plot_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "hostname": "chiaplot01",
            "state_dir": str(self.root / "state"),
            "notifications": self.notifications,
            "farm": {
                "harvesters": self.harvesters,
                "ssh": {"key_file": str(self.farm.client_key), "known_hosts": str(self.farm.known_hosts),
                        "connect_timeout_seconds": SSH_CONNECT_TIMEOUT},
            },
            "plotter": {
                "plot_directories": [str(self.plot_dir)],
                "transfer": {"idle_timeout_seconds": TRANSFER_IDLE_TIMEOUT, "port_count": 20, **self.transfer},
                **plotter_extra,
            },
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.config_path.chmod(0o600)

    def command(self, *args: str) -> list[str]:
        return [PYTHON, str(REPO / "plot_manager.py"), "--config", str(self.config_path), *args]

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


file_hash = sha256  # content identity, independent of the product's xxh3


class E2EFarm:
    """NetnsFarm + drives per harvester + a plotter. Use as a context manager."""

    def __init__(self, root: Path, drives_per_harvester: dict[str, int], plot_size: int, drive_mb: int = 64) -> None:
        self.root = root
        self.layout = drives_per_harvester
        self.plot_size = plot_size
        self.drive_mb = drive_mb
        self._stack = ExitStack()
        self.harvesters: dict[str, FarmHarvester] = {}

    def __enter__(self) -> E2EFarm:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.net = self._stack.enter_context(NetnsFarm(self.root, list(self.layout)))
            for name, count in self.layout.items():
                hroot = self.root / name
                hroot.mkdir()
                mountpoints = [f"enclosure0/front/column0/drive{i}" for i in range(count)]
                drives = self._stack.enter_context(LoopDrives(hroot / "mnt", mountpoints, size_mb=self.drive_mb))
                harvester = FarmHarvester(name, hroot, drives)
                config = harvester_config(hroot, [str(hroot / "mnt" / "enclosure*/*/column*/drive*")], self.plot_size)
                config["hostname"] = name
                harvester.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
                harvester.config_path.chmod(0o600)
                self.harvesters[name] = harvester
                self.harvester_pass(name)
            self.plotter = Plotter(
                self.root / "plotter",
                [
                    {"name": name, "host": self.net.host(name).address, "user": "root",
                     "receive_script": str(h.root / "receive_plot.sh"), "export_file": str(h.export_file)}
                    for name, h in self.harvesters.items()
                ],
                self.net,
            )
            self.plotter.write_config()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def harvester_pass(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """drive_manager.py inside the harvester's namespace, as its cron would run it."""
        harvester = self.harvesters[name]
        proc = self.net.exec_in(name, [PYTHON, str(REPO / "drive_manager.py"), "--config", str(harvester.config_path), *args])
        if proc.returncode != 0:
            raise AssertionError(f"drive_manager.py on {name} exited {proc.returncode}: {proc.stderr}")
        return proc

    def export(self, name: str) -> dict[str, Any]:
        return json.loads(self.harvesters[name].export_file.read_text())

    def receivers(self, name: str) -> list[int]:
        """Pids of receive_plot.py processes running on a harvester."""
        from tests.support.netns_farm import pids_in_netns

        pids = []
        for pid in pids_in_netns(self.net.host(name).namespace):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(part.endswith(b"receive_plot.py") for part in cmdline):
                pids.append(pid)
        return pids


def env_without_tty() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TERM"}
