"""install.sh on this machine, without apt and into a test cron directory."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / "install.sh"), *args], capture_output=True, text=True, timeout=600)


def test_harvester_install_is_idempotent_and_keeps_the_config(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "plot_manager.yaml"
    cron_dir = tmp_path / "cron.d"
    args = ("harvester", "--cron", "--no-apt", "--config", str(config), "--cron-dir", str(cron_dir))
    first = _install(*args)
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert config.read_text() == (REPO / "config" / "plot_manager.skel.yaml").read_text()
    cron_file = cron_dir / "plot_manager-harvester"
    entries = [line for line in cron_file.read_text().splitlines() if "drive_manager.py" in line]
    assert len(entries) == 4 and entries[0].startswith("* * * * * ")
    assert any(line.endswith("drive_manager.py -ud >/dev/null") for line in entries)
    assert any(line.endswith("drive_manager.py --check-plots --budget-minutes 60 >/dev/null") for line in entries)
    assert "move_local_plots.py" not in cron_file.read_text()  # local moves are off by default
    # The farmer edits the config; a second install keeps the edit and writes the same cron file.
    config.write_text(config.read_text().replace("plot_size: k32", "plot_size: k33"))
    before = cron_file.read_text()
    second = _install(*args)
    assert second.returncode == 0, second.stderr
    assert "plot_size: k33" in config.read_text()
    assert cron_file.read_text() == before


def test_install_refuses_bad_arguments_and_bad_config(tmp_path: Path) -> None:
    assert _install("nas").returncode == 2
    assert _install().returncode == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("harvester:\n  reserve_slot: 1\n")
    proc = _install("harvester", "--no-apt", "--config", str(bad))
    assert proc.returncode == 2
    assert "harvester.reserve_slot: unknown key" in proc.stderr


def test_harvester_that_plots_gets_the_local_move_cron_line(tmp_path: Path) -> None:
    config = tmp_path / "plot_manager.yaml"
    outputs = tmp_path / "plots"
    config.write_text(f"harvester:\n  local_moves:\n    enabled: true\n    plot_directories: [{outputs}]\n")
    config.chmod(0o600)
    cron_dir = tmp_path / "cron.d"
    proc = _install("harvester", "--cron", "--no-apt", "--config", str(config), "--cron-dir", str(cron_dir))
    assert proc.returncode == 0, proc.stderr
    lines = (cron_dir / "plot_manager-harvester").read_text().splitlines()
    moves = [line for line in lines if "move_local_plots.py" in line]
    assert len(moves) == 1 and moves[0].startswith("*/2 * * * * ")
