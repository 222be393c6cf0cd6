"""farm_dashboard.py as a real server (waitress on loopback), and install.sh --dashboard's unit.

The server runs exactly as the unit install.sh writes would run it; a harvester that does not
answer is a line on the page, never a 500; without a secret it refuses any other address before
it listens; with one, the page needs the token, and the token never reaches its log.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.harvester_env import REPO
from tests.support.smtp_server import free_port
from tests.support.waiting import DEADLINE, wait_until

TOKEN = "integration-token-0123456789"


def _install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / "install.sh"), *args], capture_output=True, text=True, timeout=600)


def _unit_command(unit: Path) -> tuple[list[str], dict[str, str], str]:
    """ExecStart, Environment and WorkingDirectory of a unit file, as systemd splits them."""
    lines = dict(line.split("=", 1) for line in unit.read_text().splitlines() if "=" in line and not line.startswith("#"))
    env = dict(word.split("=", 1) for word in shlex.split(lines["Environment"]))
    return shlex.split(lines["ExecStart"]), env, lines["WorkingDirectory"]


def _get(url: str, **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")


def _edit(config: Path, tmp_path: Path, port: int, **dashboard: object) -> None:
    data = yaml.safe_load(config.read_text())
    data["state_dir"] = str(tmp_path / "state")
    data["hostname"] = "chiafarm"
    # A harvester nothing answers for: the page must say so, not fail.
    data["farm"] = {"harvesters": [{"name": "chianas09", "host": "127.0.0.1", "ssh_port": free_port()}],
                    "ssh": {"known_hosts": str(tmp_path / "known_hosts"), "connect_timeout_seconds": 5}}
    data["dashboard"] = {**data["dashboard"], "port": port, "include_this_machine": False, **dashboard}
    config.write_text(yaml.safe_dump(data))
    (tmp_path / "known_hosts").write_text("")


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "conf" / "plot_manager.yaml"
    units = tmp_path / "systemd"
    args = ("farmer", "--dashboard", "--no-apt", "--config", str(config), "--systemd-dir", str(units))
    first = _install(*args)
    assert first.returncode == 0, first.stderr
    assert "systemd is not running here" in first.stdout or "enabled and started" in first.stdout
    unit = units / "plot_manager-dashboard.service"
    before = unit.read_text()
    assert _install(*args).returncode == 0 and unit.read_text() == before  # rewritten whole, the same
    return config, unit


@pytest.fixture
def serve(installed: tuple[Path, Path], tmp_path: Path) -> Iterator[Callable[..., str]]:
    config, unit = installed
    started: list[subprocess.Popen[str]] = []

    def start(**dashboard: object) -> str:
        port = free_port()
        _edit(config, tmp_path, port, **dashboard)
        argv, env, workdir = _unit_command(unit)
        proc = subprocess.Popen(argv, cwd=workdir, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        started.append(proc)
        url = f"http://127.0.0.1:{port}/"
        wait_until("the dashboard to answer", lambda: proc.poll() is not None or _answers(url))
        assert proc.poll() is None, proc.communicate()
        return url

    yield start
    for proc in started:
        proc.terminate()
        proc.communicate(timeout=DEADLINE)


def _answers(url: str) -> bool:
    try:
        _get(url + "static/dashboard.css")
    except OSError:
        return False
    return True


def test_the_installed_service_serves_the_farm_and_names_a_dead_harvester(serve: Callable[..., str]) -> None:
    url = serve()
    status, html = _get(url, Accept="text/html")
    assert status == 200
    assert 'data-harvester="chianas09"' in html and "UNREACHABLE" in html
    assert 'id="total-harvesters" data-value="0"' in html
    request = urllib.request.Request(url, data=b"x=1", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=DEADLINE)
    assert refused.value.code == 405


def test_with_a_token_the_page_needs_it_and_the_log_never_shows_it(serve: Callable[..., str], tmp_path: Path) -> None:
    url = serve(auth_token=TOKEN)
    assert _get(url, Accept="application/json")[0] == 401
    assert _get(url + f"?token={TOKEN}", Accept="application/json")[0] == 401
    status, html = _get(url, Authorization=f"Bearer {TOKEN}")
    assert status == 200 and "Farm totals" in html
    logs = "".join(p.read_text() for p in (tmp_path / "state" / "logs").glob("*"))
    assert "farm dashboard on http://127.0.0.1:" in logs and TOKEN not in logs


def test_another_address_without_a_secret_refuses_to_start(installed: tuple[Path, Path], tmp_path: Path) -> None:
    config, unit = installed
    argv, env, workdir = _unit_command(unit)
    run_env = {**os.environ, **env}
    _edit(config, tmp_path, free_port())
    proc = subprocess.run([*argv, "--bind", "10.213.77.250"], cwd=workdir, env=run_env, capture_output=True,
                          text=True, timeout=DEADLINE)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: --bind 10.213.77.250 is reachable from other machines: set dashboard.auth_token or "
        "dashboard.password first, or listen on 127.0.0.1"
    ]
    _edit(config, tmp_path, free_port(), bind="0.0.0.0")
    proc = subprocess.run(argv, cwd=workdir, env=run_env, capture_output=True, text=True, timeout=DEADLINE)
    assert proc.returncode == 2 and "dashboard: bind 0.0.0.0 is reachable from other machines" in proc.stderr
    proc = subprocess.run([*argv, "--bind", "farm.example"], cwd=workdir, env=run_env, capture_output=True,
                          text=True, timeout=DEADLINE)
    assert proc.returncode == 2


def test_the_unit_runs_the_dashboard_as_the_user_with_the_config(installed: tuple[Path, Path]) -> None:
    config, unit = installed
    text = unit.read_text()
    assert f'Environment="PLOT_MANAGER_CONFIG={config}"' in text
    assert "User=" in text and "Restart=on-failure" in text and "WantedBy=multi-user.target" in text
    assert f'"{REPO}/farm_dashboard.py"' in text
