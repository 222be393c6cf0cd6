"""-fr and -uuid across harvesters in namespaces, with one down and one answering garbage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.e2e_farm import SSH_CONNECT_TIMEOUT, E2EFarm
from tests.support.loopdrives import requires_root_and_loop
from tests.support.netns_farm import requires_netns
from tests.support.plotmaker import cached_plot, copy_plot

pytestmark = [pytest.mark.root, requires_root_and_loop, requires_netns, pytest.mark.timeout(600)]


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[E2EFarm]:
    size = cached_plot("pool").stat().st_size
    with E2EFarm(tmp_path / "farm", {"chianas01": 1, "chianas02": 2, "chianas03": 1}, size) as farm:
        # Every harvester knows the others, as the plotter does.
        for name, harvester in farm.harvesters.items():
            config = yaml.safe_load(harvester.config_path.read_text())
            config["farm"] = {
                "harvesters": [h for h in farm.plotter.harvesters if h["name"] != name],
                "ssh": {"key_file": str(farm.net.client_key), "known_hosts": str(farm.net.known_hosts),
                        "connect_timeout_seconds": SSH_CONNECT_TIMEOUT},
            }
            harvester.config_path.write_text(yaml.safe_dump(config))
        yield farm


def test_farm_report_totals_and_broken_harvesters(farm: E2EFarm) -> None:
    copy_plot("og", farm.harvesters["chianas01"].drives.drives[0].mountpoint, patch_id=True)
    for _ in range(2):
        copy_plot("pool", farm.harvesters["chianas02"].drives.drives[1].mountpoint, patch_id=True)
    copy_plot("pool", farm.harvesters["chianas03"].drives.drives[0].mountpoint, patch_id=True)
    for name in farm.harvesters:
        farm.harvester_pass(name)
    data = json.loads(farm.harvester_pass("chianas01", "-fr", "--json").stdout)
    assert data["totals"]["plots"] == 4 and data["totals"]["og_plots"] == 1 and data["totals"]["pool_plots"] == 3
    assert data["totals"]["drives"] == 4 and data["totals"]["unreachable"] == {}
    # chianas03 goes down, chianas02 answers garbage: the report still comes, and says so.
    farm.net.stop_sshd("chianas03")
    farm.harvesters["chianas02"].export_file.write_text("<html>502 Bad Gateway</html>")
    proc = farm.harvester_pass("chianas01", "-fr")
    text = proc.stdout
    assert "Farm Wide Plot Report" in text and "chianas01 Harvester Report" in text
    total = next(line for line in text.splitlines() if line.startswith("Total Number of Plots on Farm:"))
    assert total.split()[-1] == "1"
    unreachable = [line for line in text.splitlines() if line.startswith("UNREACHABLE:")]
    assert len(unreachable) == 2
    assert any("not JSON" in line for line in unreachable)
    data = json.loads(farm.harvester_pass("chianas01", "-fr", "--json").stdout)
    assert set(data["totals"]["unreachable"]) == {"chianas02", "chianas03"}


def test_the_same_plot_on_two_harvesters_is_one_duplicate_counted_once(farm: E2EFarm) -> None:
    import shutil

    shared = copy_plot("pool", farm.harvesters["chianas01"].drives.drives[0].mountpoint, patch_id=True)
    shutil.copyfile(shared, farm.harvesters["chianas03"].drives.drives[0].mountpoint / shared.name)
    copy_plot("pool", farm.harvesters["chianas02"].drives.drives[0].mountpoint, patch_id=True)
    for name in farm.harvesters:
        farm.harvester_pass(name)
    data = json.loads(farm.harvester_pass("chianas01", "-fr", "--json").stdout)
    prefix = shared.name.removesuffix(".plot")[-64:][:16]  # patch_id: the name carries the header's id
    assert data["duplicates"] == [{"plot_id_prefix": prefix, "copies": [
        {"harvester": "chianas01", "drive": "drive0"}, {"harvester": "chianas03", "drive": "drive0"}]}]
    assert (data["totals"]["plot_files"], data["totals"]["plots"], data["totals"]["duplicate_copies"]) == (3, 2, 1)
    text = farm.harvester_pass("chianas01", "-fr").stdout.splitlines()
    assert f"{prefix}: chianas01:drive0, chianas03:drive0" in text
    assert next(x for x in text if x.startswith("Total Number of Plots on Farm:")).split()[-1] == "2"


def test_uuid_search_finds_a_drive_on_another_harvester(farm: E2EFarm) -> None:
    target = farm.harvesters["chianas03"].drives.drives[0]
    out = farm.harvester_pass("chianas01", "-uuid", target.uuid).stdout
    assert "Status:        LOCATED" in out
    assert "Harvester:     chianas03" in out and f"Mount Point:   {target.mountpoint}" in out
    missing = farm.net.exec_in("chianas01", [*_dm(farm, "chianas01"), "-uuid", "00000000-0000-4000-8000-000000000000"])
    assert missing.returncode == 1 and "NOT LOCATED" in missing.stdout
    bad = farm.net.exec_in("chianas01", [*_dm(farm, "chianas01"), "-uuid", "not-a-uuid"])
    assert bad.returncode == 2 and "not a filesystem UUID" in bad.stderr


def _dm(farm: E2EFarm, name: str) -> list[str]:
    import sys

    from tests.support.e2e_farm import REPO

    return [sys.executable, str(REPO / "drive_manager.py"), "--config", str(farm.harvesters[name].config_path)]


def test_daily_email_carries_the_farm_report_when_farm_update_is_on(farm: E2EFarm) -> None:
    import subprocess

    from tests.support.smtp_server import smtp_server
    from tests.support.waiting import CHANNEL_TIMEOUT, DEADLINE

    harvester = farm.harvesters["chianas01"]
    with smtp_server() as mail:
        config = yaml.safe_load(harvester.config_path.read_text())
        config["notifications"] = {
            "email": {"enabled": True, "smtp_host": "127.0.0.1", "smtp_port": mail.port, "to": ["farmer@test.invalid"],
                      "timeout_seconds": CHANNEL_TIMEOUT},
            "events": {"daily_report": ["email"], "farm_update": ["email"]},
        }
        harvester.config_path.write_text(yaml.safe_dump(config))
        # Run from the plotter's namespace, where the loopback SMTP server is.
        proc = subprocess.run([*_dm(farm, "chianas01"), "-dr"], capture_output=True, text=True, timeout=DEADLINE)
        assert proc.returncode == 0, proc.stderr
        (msg,) = mail.wait_for(1)
        text = msg.message.get_body(("plain",)).get_content()
        assert "Farm Wide Plot Report" in text and "chianas03 Harvester Report" in text
