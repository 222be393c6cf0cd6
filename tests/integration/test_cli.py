"""The role scripts' common behaviour: config discovery, --check-config, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.waiting import DEADLINE

REPO = Path(__file__).resolve().parents[2]


def _dm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "drive_manager.py"), *args],
        capture_output=True, text=True, timeout=DEADLINE, env={**os.environ, **(env or {})},
    )


def test_check_config_prints_effective_settings_without_secrets(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "plot_size: k32-c5\nstate_dir: %s\nnotifications:\n  pushbullet: {enabled: true, api_key: o.SECRET}\n"
        % (tmp_path / "state")
    )
    proc = _dm("--check-config", env={"PLOT_MANAGER_CONFIG": str(config)})
    assert proc.returncode == 0, proc.stderr
    assert f"# {config}: valid" in proc.stdout
    assert "plot_size: k32-c5" in proc.stdout and "o.SECRET" not in proc.stdout
    assert not (tmp_path / "state").exists()  # checking writes nothing


def test_bad_config_one_line_per_problem_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("harvester:\n  reserve_slots: lots\n  alerts: {temprature_limit_c: 40}\n")
    proc = _dm("--config", str(config), "-pr")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2
    assert any("harvester.reserve_slots" in line and "'lots'" in line for line in lines)
    assert any("harvester.alerts.temprature_limit_c: unknown key" in line for line in lines)
    assert all(str(config) in line for line in lines)


def test_missing_default_config_explains_what_to_do(tmp_path: Path) -> None:
    proc = _dm()  # HOME is a fresh test directory: no default config there
    assert proc.returncode == 2
    assert "not found" in proc.stderr and "--config" in proc.stderr


def test_flag_misuse_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    proc = _dm("--config", str(config), "--json")
    assert proc.returncode == 2 and "--json goes with" in proc.stderr
    both = _dm("--config", str(config), "-pr", "-ct")
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_version() -> None:
    proc = _dm("-v")
    assert proc.returncode == 0 and proc.stdout.startswith("drive_manager.py ")
