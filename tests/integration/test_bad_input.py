"""Inputs that used to do the wrong thing: each is refused with one line naming it, and nothing done.

The role scripts run for real, as cron or a farmer would start them, against one config that
serves every role. Its cron passes visibly act (a state directory, a log, an export, a
transfer attempt at the plot waiting in the plot directory), so a bad flag that fell through
to the cron pass would leave those traces; ``test_the_config_is_live`` shows that it does.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_cli import _dm
from tests.support.harvester_env import harvester_config
from tests.support.plotmaker import copy_plot
from utilities.errors import UsageError
from utilities.harvester.drives import DriveLocation, find_drive

REPO = Path(__file__).resolve().parents[2]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def _closed_port() -> int:
    """A loopback port nothing listens on: the farm's harvester refuses at once, no timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(root: Path, harvesters: bool = True) -> dict[str, Any]:
    """Harvester (no drives), plotter (one plot directory) and farmer in one config."""
    config = harvester_config(root, [str(root / "mnt" / "drive*")], 1 << 30)
    config["farmer"] = {"chia_log": str(root / "chia" / "debug.log")}
    config["plotter"] = {"plot_directories": [str(root / "plots")]}
    config["farm"] = {
        "harvesters": [{"name": "nas1", "host": "127.0.0.1", "ssh_port": _closed_port(),
                        "receive_script": "/nonexistent/receive_plot.sh", "export_file": "/nonexistent/h.json"}]
        if harvesters else [],
        "ssh": {"known_hosts": str(root / "known_hosts"), "connect_timeout_seconds": 2},
    }
    return config


def _write(root: Path, config: dict[str, Any], mode: int = 0o600) -> Path:
    path = root / "plot_manager.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(mode)
    return path


@pytest.fixture
def farm(tmp_path: Path) -> Path:
    """The config's directory, with a real finished plot waiting to be sent."""
    copy_plot("pool", tmp_path / "plots")
    _write(tmp_path, _config(tmp_path))
    return tmp_path


def _env(root: Path) -> dict[str, str]:
    return {"PLOT_MANAGER_CONFIG": str(root / "plot_manager.yaml")}


def _role(script: str, *args: str, root: Path) -> subprocess.CompletedProcess[str]:
    """Any role script with the farm's config from the environment, as ``_dm`` runs drive_manager.py."""
    if script == "drive_manager.py":
        return _dm(*args, env=_env(root))
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **_env(root)})


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _plots(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "plots").iterdir())


def test_the_config_is_live(farm: Path) -> None:
    """Without a flag each cron pass acts: what the bad flags below must not cause."""
    plots = _plots(farm)
    assert _role("plot_manager.py", root=farm).returncode == 0
    log = (farm / "state" / "logs" / "plot_manager.log").read_text()
    assert "harvester nas1 skipped" in log and _plots(farm) == plots  # it tried; nas1 is down
    assert _role("drive_manager.py", root=farm).returncode == 0
    assert (farm / "state" / "export" / "harvester.json").exists() and (farm / "receive_plot.sh").exists()


VALUE_FLAGS = [
    ("plot_manager.py", "--send"), ("plot_manager.py", "--to"), ("plot_manager.py", "--stop"),
    ("plot_manager.py", "--host"), ("plot_manager.py", "--loop"), ("plot_manager.py", "--config"),
    ("drive_manager.py", "-off"), ("drive_manager.py", "-on"), ("drive_manager.py", "-uuid"),
    ("drive_manager.py", "--prepare-drive"), ("drive_manager.py", "--config"),
    ("move_local_plots.py", "--clear-error"), ("move_local_plots.py", "--config"),
    ("coin_monitor.py", "--farm-log"), ("coin_monitor.py", "--last"), ("coin_monitor.py", "--lines"),
    ("coin_monitor.py", "--config"),
]


@pytest.mark.parametrize("value", ["", " \t"], ids=["empty", "blank"])
@pytest.mark.parametrize(("script", "flag"), VALUE_FLAGS, ids=[f"{s}{f}" for s, f in VALUE_FLAGS])
def test_an_empty_flag_value_is_an_error_not_the_cron_pass(farm: Path, script: str, flag: str, value: str) -> None:
    plots = _plots(farm)
    proc = _role(script, flag, value, root=farm)
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc)
    assert line.startswith("error: argument ") and flag in line
    assert proc.stdout == ""
    # Nothing done: no state (no transfer recorded, no drive state, no log) and the plot stays.
    assert not (farm / "state").exists() and not (farm / "receive_plot.sh").exists()
    assert _plots(farm) == plots


def test_find_drive_refuses_a_blank_name_that_would_match_the_root_filesystem() -> None:
    root = DriveLocation("root", "/", "/dev/sda1", "ext4", ("/",))
    for blank in ("", "  "):
        with pytest.raises(UsageError, match="must not be empty"):
            find_drive([root], blank)


@pytest.mark.parametrize("script", ["plot_manager.py", "drive_manager.py", "move_local_plots.py", "coin_monitor.py"])
def test_an_unknown_flag_is_one_line_naming_it(farm: Path, script: str) -> None:
    proc = _role(script, "--bogus", root=farm)
    assert proc.returncode == 2
    assert _one_line(proc) == "error: unrecognized arguments: --bogus (see --help)"
    assert not (farm / "state").exists()


def _history(root: Path) -> dict[str, Any]:
    proc = _role("plot_manager.py", "--history", "--json", root=root)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_send_to_an_unknown_harvester_is_a_flag_error(farm: Path) -> None:
    (plot,) = (farm / "plots").iterdir()
    proc = _role("plot_manager.py", "--send", str(plot), "--to", "nas9", root=farm)
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc)
    assert "--to" in line and "'nas9'" in line and "nas1" in line
    assert plot.exists()
    assert _history(farm)["transfers"] == []


def test_an_empty_farm_is_a_config_error(tmp_path: Path) -> None:
    copy_plot("pool", tmp_path / "plots")
    _write(tmp_path, _config(tmp_path, harvesters=False))
    plots = _plots(tmp_path)
    proc = _role("plot_manager.py", root=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "farm.harvesters is empty" in _one_line(proc)
    assert _plots(tmp_path) == plots and _history(tmp_path)["transfers"] == []


def test_online_when_nothing_is_offline_names_the_drive(farm: Path) -> None:
    proc = _role("drive_manager.py", "-on", "drive1", root=farm)
    assert proc.returncode == 3, proc.stderr
    line = _one_line(proc)
    assert "'drive1'" in line and "is not offline" in line
    assert not (farm / "receive_plot.sh").exists()  # no cron pass after a refused -on


def test_check_config_warns_about_a_config_others_can_read(tmp_path: Path) -> None:
    config = _write(tmp_path, _config(tmp_path), mode=0o644)
    proc = _role("drive_manager.py", "--check-config", root=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = _one_line(proc)
    assert str(config) in line and "readable by others" in line and "chmod 600" in line
    assert f"# {config}: valid" in proc.stdout
    assert not (tmp_path / "state").exists()  # still writes nothing
    config.chmod(0o600)
    quiet = _role("drive_manager.py", "--check-config", root=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_a_file_name_cannot_forge_a_log_line(farm: Path) -> None:
    """A plot name carrying a newline, a carriage return and a terminal escape is refused by
    the plot finder, and its refusal is logged on one line with those characters escaped."""
    forged = "2030-01-01 00:00:00,000 utilities.plotter.sending:1 ERROR forged"
    (good,) = (farm / "plots").iterdir()
    bad = farm / "plots" / f"{good.name}\n{forged}\r\x1b[2K.plot"
    good.rename(bad)
    assert _role("plot_manager.py", root=farm).returncode == 0
    log = (farm / "state" / "logs" / "plot_manager.log").read_text()
    assert all(LOG_LINE.match(line) for line in log.splitlines()), log
    assert not any(line.startswith("2030-01-01") for line in log.splitlines())
    refused = [line for line in log.splitlines() if "not sending" in line]
    assert len(refused) == 1 and f"\\n{forged}\\r\\x1b[2K.plot" in refused[0]
    assert bad.exists()
