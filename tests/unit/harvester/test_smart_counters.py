"""The sector counters SMART reads carry, from real captures replayed by the stand-in smartctl.

One test per interface (ATA, SCSI/SAS, NVMe): the counter a failing disk shows first must come
out of pySMART's parse of the real format, and grow when the same disk is read again with grown
counts (the stand-in rewrites only those numbers).
"""

from __future__ import annotations

import pytest

from tests.support.fake_smartctl import NVME, SAS_HDD, SATA_HDD, SATA_HDD_FAILING, FakeSmartctl
from utilities.harvester.smart import SmartInfo, read_smart


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakeSmartctl:
    setup = FakeSmartctl(tmp_path)
    setup.add("/dev/sdb", SATA_HDD)
    setup.add("/dev/sdc", SATA_HDD, raw={"5": 16, "197": 3, "198": 2, "199": 7})
    setup.add("/dev/sdd", SATA_HDD_FAILING)
    setup.add("/dev/sde", SAS_HDD, type="scsi")
    setup.add("/dev/sdf", SAS_HDD, type="scsi", lines={"Elements in grown defect list": 12})
    setup.add("/dev/nvme0n1", NVME, lines={"Media and Data Integrity Errors": 4})
    setup.add("/dev/sdg", SATA_HDD, state="standby")
    return setup.install(monkeypatch)


def test_ata_counters_come_from_the_raw_values(fake) -> None:
    info = read_smart("/dev/sdb", smartctl=fake.path)
    assert (info.reallocated_sectors, info.pending_sectors, info.offline_uncorrectable, info.crc_errors) == (0, 0, 0, 0)
    assert info.power_on_hours == 252 and info.health == "PASS"


def test_ata_counters_follow_a_disk_read_again_with_grown_sectors(fake) -> None:
    info = read_smart("/dev/sdc", smartctl=fake.path)
    assert (info.reallocated_sectors, info.pending_sectors, info.offline_uncorrectable, info.crc_errors) == (16, 3, 2, 7)
    assert info.health == "PASS"  # sectors can grow long before the assessment fails


def test_failing_disk_reports_fail_with_its_pending_sectors(fake) -> None:
    info = read_smart("/dev/sdd", smartctl=fake.path)
    assert info.health == "FAIL" and info.pending_sectors == 499 and info.reallocated_sectors == 0
    assert info.power_on_hours == 17328


def test_sas_grown_defects_count_as_reallocated(fake) -> None:
    healthy = read_smart("/dev/sde", smartctl=fake.path)
    grown = read_smart("/dev/sdf", smartctl=fake.path)
    assert healthy.state == "active" and healthy.serial == "8DG3J2ZD" and healthy.temperature_c == 32
    assert healthy.reallocated_sectors == 0 and healthy.offline_uncorrectable == 0
    assert healthy.pending_sectors is None  # SCSI has no pending count
    assert grown.reallocated_sectors == 12


def test_nvme_media_errors_count_as_uncorrectable(fake) -> None:
    info = read_smart("/dev/nvme0n1", smartctl=fake.path)
    assert info.offline_uncorrectable == 4 and info.power_on_hours == 8737
    assert info.reallocated_sectors is None and info.pending_sectors is None


def test_standby_disk_has_no_counters_and_is_not_woken(fake) -> None:
    info = read_smart("/dev/sdg", smartctl=fake.path)
    assert info.state == "standby" and info.pending_sectors is None and info.power_on_hours is None
    assert fake.woken() == []


def test_smartinfo_without_counters_is_still_built_the_old_way() -> None:
    info = SmartInfo(device="/dev/sdb", disk="/dev/sdb", state="active", serial="X", temperature_c=40, health="PASS")
    assert info.reallocated_sectors is None and info.crc_errors is None
