"""Helpers for tests that run the stand-in ``smartctl`` in this directory.

``FakeSmartctl`` writes the JSON config the script reads (see the script's docstring), points
``FAKE_SMARTCTL_CONFIG`` at it and reads back what the script logged: every argv it was called
with, and every call that would have woken a disk in standby.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).resolve().with_name("smartctl")
OUTPUTS = Path(__file__).resolve().with_name("outputs")

SATA_HDD = "sata_hdd_seagate_oos12000g.txt"
SATA_HDD_FAILING = "sata_hdd_seagate_st1000lm024_failing.txt"
NVME = "nvme_toshiba_kbg30zmv256g.txt"
SAS_HDD = "sas_hdd_hgst_huh721212al4204.txt"


@dataclass
class FakeSmartctl:
    """One fake smartctl setup living in ``directory`` (a test's ``tmp_path``)."""

    directory: Path
    devices: dict[str, dict] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return str(SCRIPT)

    @property
    def config_path(self) -> Path:
        return self.directory / "fake_smartctl.json"

    @property
    def call_log(self) -> Path:
        return self.directory / "smartctl_calls.jsonl"

    @property
    def wake_log(self) -> Path:
        return self.directory / "smartctl_woken.log"

    def add(self, device: str, output: str, **settings: object) -> FakeSmartctl:
        self.devices[device] = {"output": output, **settings}
        return self

    def install(self, monkeypatch) -> FakeSmartctl:
        """Write the config and point ``FAKE_SMARTCTL_CONFIG`` at it for this test."""
        config = {
            "devices": self.devices,
            "call_log": str(self.call_log),
            "wake_log": str(self.wake_log),
        }
        self.config_path.write_text(json.dumps(config, indent=2))
        monkeypatch.setenv("FAKE_SMARTCTL_CONFIG", str(self.config_path))
        return self

    def calls(self) -> list[list[str]]:
        if not self.call_log.exists():
            return []
        return [json.loads(line) for line in self.call_log.read_text().splitlines() if line]

    def calls_for(self, device: str) -> list[list[str]]:
        return [argv for argv in self.calls() if device in argv]

    def woken(self) -> list[str]:
        if not self.wake_log.exists():
            return []
        return [line for line in self.wake_log.read_text().splitlines() if line]
