"""Plot drives that vanish between cron passes, on real loop drives with a real SMTP server:
alerted once however many passes follow, the return noticed, -pr and the export list them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.harvester_env import Harvester, harvester_config
from tests.support.loopdrives import LoopDrives, requires_root_and_loop
from tests.support.plotmaker import copy_plot
from tests.support.smtp_server import SMTPTestServer

pytestmark = [pytest.mark.root, requires_root_and_loop]

ENCLOSURE = ["enclosure0/front/column0/drive0", "enclosure0/front/column0/drive1", "enclosure0/front/column1/drive2"]


def _config(root: Path, plot_size: int, mail: SMTPTestServer, patterns: list[str]) -> dict:
    config = harvester_config(root, patterns, plot_size, mail.port)
    config["notifications"]["events"]["drive_missing"] = ["email"]
    return config


@pytest.fixture
def farm(tmp_path: Path, plot_size: int, mail: SMTPTestServer) -> Iterator[tuple[Harvester, LoopDrives]]:
    root = tmp_path / "farm"
    root.mkdir()
    with LoopDrives(root / "mnt", ENCLOSURE, size_mb=64) as drives:
        harvester = Harvester(root)
        harvester.write_config(_config(root, plot_size, mail, [str(root / "mnt" / "enclosure*/*/column*/drive*")]))
        yield harvester, drives


def _missing_mails(mail: SMTPTestServer) -> list[str]:
    return [m.message["Subject"] for m in mail.received if "drive(s) missing" in m.message["Subject"]]


def test_an_unmounted_drive_is_alerted_once_listed_by_pr_and_its_return_noticed(farm, mail) -> None:
    harvester, drives = farm
    gone = drives.drives[1]
    for _ in range(3):
        copy_plot("pool", gone.mountpoint, patch_id=True)
    harvester.run()  # the first pass: nothing to compare with
    assert _missing_mails(mail) == []
    assert json.loads(harvester.run("-pr", "--json").stdout)["missing_drives"] == []

    drives.unmount(gone)
    for _ in range(3):  # three passes after the unmount: one mail
        harvester.run()
    assert _missing_mails(mail) == ["chianas01: 1 plot drive(s) missing, 3 plots not farmed"]
    (msg,) = [m for m in mail.received if "drive(s) missing" in m.message["Subject"]]
    body = msg.message.get_body(("plain",)).get_content()
    assert "drive1: " + str(gone.mountpoint) in body and gone.uuid in body

    data = json.loads(harvester.run("-pr", "--json").stdout)
    (missing,) = data["missing_drives"]
    assert (missing["name"], missing["mountpoint"], missing["plots"], missing["uuid"]) == (
        "drive1", str(gone.mountpoint), 3, gone.uuid)
    assert data["drive_count"] == 2
    text = harvester.run("-pr").stdout.splitlines()
    assert any(line.startswith("Missing Plot Drives:") and line.endswith(" 1") for line in text)
    assert any(line.strip().startswith(f"drive1: {gone.mountpoint}, 3 plots, missing since ") for line in text)
    (exported,) = harvester.export()["missing_drives"]
    assert exported["name"] == "drive1" and exported["plots"] == 3

    drives.remount(gone)
    harvester.run()
    harvester.run()
    back = [m.message["Subject"] for m in mail.received if "back" in m.message["Subject"]]
    assert back == ["chianas01: 1 missing plot drive(s) back"]
    assert json.loads(harvester.run("-pr", "--json").stdout)["missing_drives"] == []
    assert harvester.export()["missing_drives"] == []
    # Gone again later: a new alert.
    drives.unmount(gone)
    harvester.run()
    assert len(_missing_mails(mail)) == 2


def test_a_drive_taken_offline_then_unmounted_is_not_missing(farm, mail) -> None:
    harvester, drives = farm
    harvester.run()
    harvester.run("-off", "drive2")
    drives.unmount(drives.drives[2])
    harvester.run()
    harvester.run()
    assert _missing_mails(mail) == []
    assert json.loads(harvester.run("-pr", "--json").stdout)["missing_drives"] == []


def test_the_farmer_forgets_a_drive_that_will_not_come_back(farm, mail) -> None:
    harvester, drives = farm
    harvester.run()
    drives.unmount(drives.drives[0])
    harvester.run()
    assert len(_missing_mails(mail)) == 1
    out = harvester.run("-on", str(drives.drives[0].mountpoint)).stdout
    assert "drive0" in out and "forgotten" in out
    assert json.loads(harvester.run("-pr", "--json").stdout)["missing_drives"] == []
    harvester.run()
    assert len(_missing_mails(mail)) == 1
    unknown = harvester.run("-on", "drive0", check=False)  # forgotten: neither offline nor missing
    assert unknown.returncode == 3 and "not offline" in unknown.stderr


def test_a_globbed_plot_directory_found_again_on_the_filesystem_underneath_is_still_missing(
    tmp_path: Path, plot_size: int, mail: SMTPTestServer
) -> None:
    """With plot_directories globs an unmounted drive's directory can reappear, empty, on the
    filesystem below the mountpoint (a script that recreates it): that is not the drive."""
    root = tmp_path / "farm"
    root.mkdir()
    with LoopDrives(root / "srv", ["disk-a", "disk-b"], size_mb=64) as drives:
        for drive in drives.drives:
            (drive.mountpoint / "plots").mkdir()
        copy_plot("pool", drives.drives[0].mountpoint / "plots", patch_id=True)
        harvester = Harvester(root)
        config = _config(root, plot_size, mail, [])
        config["harvester"]["drive_discovery"]["plot_directories"] = [str(root / "srv" / "disk-*" / "plots")]
        harvester.write_config(config)
        harvester.run()
        drives.unmount(drives.drives[0])
        (drives.drives[0].mountpoint / "plots").mkdir()
        try:
            harvester.run()
            harvester.run()
            data = json.loads(harvester.run("-pr", "--json").stdout)
        finally:
            (drives.drives[0].mountpoint / "plots").rmdir()
        (missing,) = data["missing_drives"]
        assert (missing["name"], missing["plots"], missing["uuid"]) == ("disk-a", 1, drives.drives[0].uuid)
        assert _missing_mails(mail) == ["chianas01: 1 plot drive(s) missing, 1 plots not farmed"]
