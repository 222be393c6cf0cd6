"""Sick and hot drives held back, on real loop drives, with the stand-in smartctl replaying real
captures and a real SMTP server: the real drive_manager.py run as cron and by hand.

Loop devices have no SMART, so each drive's SMART disk is named in ``harvester.smart_devices``
and the stand-in answers for those names; between passes a test changes what a disk answers
(its pending sectors grow, its assessment fails, it heats up or cools down), as a real disk
would between two reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_smartctl import SATA_HDD, SATA_HDD_FAILING, FakeSmartctl
from tests.support.harvester_env import Harvester, harvester_config
from tests.support.loopdrives import LoopDrives, requires_root_and_loop
from tests.support.smtp_server import SMTPTestServer

pytestmark = [pytest.mark.root, requires_root_and_loop]

ENCLOSURE = ["enclosure0/front/column0/drive0", "enclosure0/front/column0/drive1", "enclosure0/front/column1/drive2"]
DISKS = {"drive0": "/dev/sdb", "drive1": "/dev/sdc", "drive2": "/dev/sdd"}


@pytest.fixture
def fake(tmp_path: Path, monkeypatch) -> FakeSmartctl:
    setup = FakeSmartctl(tmp_path / "smart")
    setup.directory.mkdir()
    for disk in DISKS.values():
        setup.add(disk, SATA_HDD, temperature=40)
    return setup.install(monkeypatch)


@pytest.fixture
def farm(tmp_path: Path, plot_size: int, mail: SMTPTestServer, fake: FakeSmartctl) -> Iterator[tuple[Harvester, LoopDrives]]:
    root = tmp_path / "farm"
    root.mkdir()
    with LoopDrives(root / "mnt", ENCLOSURE, size_mb=64) as drives:
        harvester = Harvester(root)
        config = harvester_config(root, [str(root / "mnt" / "enclosure*/*/column*/drive*")], plot_size, mail.port,
                                  smart_devices=DISKS, concurrent_receive_drives=2)
        config["harvester"]["alerts"] = {"temperature_check_minutes": 0, "temperature_limit_c": 50}
        config["notifications"]["events"]["drive_held_back"] = ["email"]
        harvester.write_config(config)
        yield harvester, drives


def _answer(fake: FakeSmartctl, monkeypatch, drive: str, capture: str = SATA_HDD, **settings: object) -> None:
    """From the next read on, ``drive``'s disk answers with ``capture`` changed by ``settings``."""
    fake.add(DISKS[drive], capture, **settings)
    fake.install(monkeypatch)


def _held_mails(mail: SMTPTestServer) -> list[str]:
    return [m.message["Subject"] for m in mail.received if " held back" in m.message["Subject"]
            or "cooled down" in m.message["Subject"]]


def _receive_set(harvester: Harvester) -> list[str]:
    return [entry["name"] for entry in harvester.export()["receive_set"]]


def test_growing_pending_sectors_move_the_receive_drive_in_the_same_pass(farm, fake, mail, monkeypatch) -> None:
    harvester, drives = farm
    harvester.run()
    assert harvester.receive_dir() == str(drives.drives[0].mountpoint)
    assert _receive_set(harvester) == ["drive0", "drive1"]

    _answer(fake, monkeypatch, "drive0", raw={"197": 2}, temperature=40)
    harvester.run()  # this pass reads SMART, finds drive0's pending sectors grown, and moves on
    assert harvester.receive_dir() == str(drives.drives[1].mountpoint)
    assert _receive_set(harvester) == ["drive1", "drive2"]
    (held,) = harvester.export()["extra"]["held_back"]
    assert held["name"] == "drive0" and held["reason"] == "sectors" and "pending sectors 0 -> 2" in held["detail"]
    harvester.run()
    harvester.run()
    assert _held_mails(mail) == [f"chianas01: plot drive {drives.drives[0].mountpoint} held back: bad sectors growing"]
    (message,) = [m.message for m in mail.received if " held back" in m.message["Subject"]]
    body = message.get_body(("plain",)).get_content()
    assert "pending sectors 0 -> 2" in body and "drive_manager.py -on drive0" in body

    # -pr says which drive and why; -ct shows the trend; the daily report lists the growth.
    report = json.loads(harvester.run("-pr", "--json").stdout)
    assert [(h["name"], h["reason"]) for h in report["held_back"]] == [("drive0", "sectors")]
    text = harvester.run("-pr").stdout.splitlines()
    assert any(line.startswith("Held Back Plot Drives:") and line.endswith(" 1") for line in text)
    assert any(line.strip().startswith("drive0: bad sectors growing since ") for line in text)
    temps = {row["drive"]: row for row in json.loads(harvester.run("-ct", "--json").stdout)["drives"]}
    assert temps["drive0"]["trend"]["now"]["pending"] == 2 and temps["drive0"]["held_back"] == "bad sectors growing"
    assert temps["drive0"]["trend"]["grown_24h"]["pending"] == {"from": 0, "to": 2}
    assert temps["drive1"]["trend"]["now"]["pending"] == 0 and temps["drive1"]["held_back"] is None
    ct_rows = {f[2]: line for line in harvester.run("-ct").stdout.splitlines()
               if len(f := line.split()) > 3 and f[2].startswith("drive")}
    assert "2/n/a/n/a" in ct_rows["drive0"] and "bad sectors growing" in ct_rows["drive0"]
    daily = harvester.run("-dr").stdout
    assert "Drives whose SMART counts grew in 24 hours" in daily and "pending sectors 0 -> 2" in daily

    # -on puts it back at once; the two sectors it had are accepted, so it stays.
    out = harvester.run("-on", "drive0").stdout
    assert "drive0 was held back" in out
    assert harvester.receive_dir() == str(drives.drives[0].mountpoint)
    harvester.run()
    assert harvester.export()["extra"]["held_back"] == [] and _receive_set(harvester) == ["drive0", "drive1"]
    assert len(_held_mails(mail)) == 1
    assert fake.woken() == []


def test_failed_assessment_holds_until_on_and_hot_drive_returns_when_cool(farm, fake, mail, monkeypatch) -> None:
    harvester, drives = farm
    _answer(fake, monkeypatch, "drive0", SATA_HDD_FAILING)
    _answer(fake, monkeypatch, "drive1", temperature=57)
    harvester.run()
    assert harvester.receive_dir() == str(drives.drives[2].mountpoint)
    assert _receive_set(harvester) == ["drive2"]
    reasons = {h["name"]: h["reason"] for h in harvester.export()["extra"]["held_back"]}
    assert reasons == {"drive0": "failing", "drive1": "hot"}

    _answer(fake, monkeypatch, "drive1", temperature=47)  # below the limit, not below 50 - 5
    harvester.run()
    assert _receive_set(harvester) == ["drive2"]
    _answer(fake, monkeypatch, "drive1", temperature=44)
    harvester.run()
    assert _receive_set(harvester) == ["drive1", "drive2"]  # the failing drive0 stays out
    subjects = _held_mails(mail)
    assert sorted(subjects) == sorted([
        f"chianas01: plot drive {drives.drives[0].mountpoint} held back: SMART assessment FAIL",
        f"chianas01: plot drive {drives.drives[1].mountpoint} held back: too hot",
        f"chianas01: plot drive {drives.drives[1].mountpoint} cooled down and receives plots again",
    ])

    harvester.run("-on", str(drives.drives[0].mountpoint))
    assert harvester.receive_dir() == str(drives.drives[0].mountpoint)
    harvester.run()
    assert _receive_set(harvester) == ["drive0", "drive1"] and len(_held_mails(mail)) == 3


def test_a_drive_in_standby_is_not_read_not_woken_and_keeps_its_place(farm, fake, mail, monkeypatch) -> None:
    harvester, drives = farm
    _answer(fake, monkeypatch, "drive0", state="standby")
    harvester.run()
    harvester.run()
    assert _receive_set(harvester) == ["drive0", "drive1"]
    assert harvester.export()["extra"]["held_back"] == []
    assert fake.woken() == []
    assert not any("--all" in argv or "-a" in argv for argv in fake.calls_for(DISKS["drive0"]))
    temps = {row["drive"]: row for row in json.loads(harvester.run("-ct", "--json").stdout)["drives"]}
    assert temps["drive0"]["state"] == "standby" and temps["drive0"]["trend"]["now"]["pending"] is None
