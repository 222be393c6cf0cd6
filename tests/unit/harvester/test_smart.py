"""SMART reads against a stand-in smartctl that replays real captured outputs.

The fake (tests/support/fake_smartctl) logs every argv and every call that would have woken a
disk in standby, so "we never spin a sleeping disk up" is asserted, not assumed.
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from tests.support.fake_smartctl import NVME, SATA_HDD, SATA_HDD_FAILING, SCRIPT, FakeSmartctl
from utilities.harvester.smart import (
    PowerCheck,
    SmartInfo,
    classify_power_check,
    parent_disk,
    partition_parent_name,
    read_many,
    read_smart,
)


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakeSmartctl:
    setup = FakeSmartctl(tmp_path)
    setup.add("/dev/sdb", SATA_HDD)
    setup.add("/dev/sdc", SATA_HDD, state="standby")
    setup.add("/dev/sdd", SATA_HDD_FAILING)
    setup.add("/dev/sde", SATA_HDD, temperature=41)
    setup.add("/dev/nvme0n1", NVME)
    return setup.install(monkeypatch)


# ------------------------------------------------------------------------ parent_disk


@pytest.mark.parametrize(
    ("device", "disk"),
    [
        ("/dev/sdb1", "/dev/sdb"),
        ("/dev/sdb", "/dev/sdb"),
        ("/dev/sdaa1", "/dev/sdaa"),
        ("/dev/sdaa", "/dev/sdaa"),
        ("/dev/sdp", "/dev/sdp"),
        ("/dev/sdp12", "/dev/sdp"),
        ("/dev/nvme0n1p1", "/dev/nvme0n1"),
        ("/dev/nvme0n1", "/dev/nvme0n1"),
        ("/dev/nvme10n2p15", "/dev/nvme10n2"),
        ("/dev/mmcblk0p2", "/dev/mmcblk0"),
        ("/dev/mmcblk0", "/dev/mmcblk0"),
        ("/dev/vda3", "/dev/vda"),
        ("/dev/xvdf1", "/dev/xvdf"),
        ("/dev/loop0", "/dev/loop0"),
        ("/dev/loop0p1", "/dev/loop0"),
        ("sdc4", "sdc"),
        ("  /dev/sdb1\n", "/dev/sdb"),
    ],
)
def test_parent_disk_of_partitions_and_whole_disks(device, disk):
    assert parent_disk(device, slaves_of=_no_sysfs, resolve=_no_links) == disk


def test_dm_device_with_one_slave_resolves_to_that_slaves_disk():
    slaves = {"dm-3": ["sdf1"]}
    assert parent_disk("/dev/dm-3", slaves_of=slaves.get, resolve=_no_links) == "/dev/sdf"


def test_mapper_name_is_resolved_through_its_dm_node_and_slave():
    links = {"/dev/mapper/plots-crypt": "/dev/dm-0"}
    slaves = {"dm-0": ["nvme1n1p3"]}
    assert parent_disk("/dev/mapper/plots-crypt", slaves_of=slaves.get, resolve=links.get) == "/dev/nvme1n1"


def test_stacked_dm_devices_are_followed_down_to_the_disk():
    slaves = {"dm-5": ["dm-2"], "dm-2": ["sdk"]}
    assert parent_disk("/dev/dm-5", slaves_of=slaves.get, resolve=_no_links) == "/dev/sdk"


@pytest.mark.parametrize("slaves", [[], ["sdb1", "sdc1"]])
def test_dm_device_without_exactly_one_slave_is_returned_unchanged(slaves):
    assert parent_disk("/dev/dm-1", slaves_of=lambda _: slaves, resolve=_no_links) == "/dev/dm-1"
    links = {"/dev/mapper/vg-plots": "/dev/dm-1"}
    assert parent_disk("/dev/mapper/vg-plots", slaves_of=lambda _: slaves, resolve=links.get) == "/dev/mapper/vg-plots"


def test_unresolvable_mapper_name_is_not_mangled_as_a_partition():
    # "disk1p1" would look like a p-style partition; a mapper name is not a kernel name.
    assert parent_disk("/dev/mapper/disk1p1", slaves_of=_no_sysfs, resolve=_no_links) == ("/dev/mapper/disk1p1")


def test_by_id_link_is_resolved_to_its_partition_and_disk():
    links = {"/dev/disk/by-id/ata-ST16000NM001G-2KK103_ZL2ABCDE-part1": "/dev/sdq1"}
    assert (
        parent_disk(
            "/dev/disk/by-id/ata-ST16000NM001G-2KK103_ZL2ABCDE-part1",
            slaves_of=_no_sysfs,
            resolve=links.get,
        )
        == "/dev/sdq"
    )


def test_partition_parent_name_is_pure_string_logic():
    assert partition_parent_name("sdz9") == "sdz"
    assert partition_parent_name("nvme3n1") == "nvme3n1"
    assert partition_parent_name("dm-7") == "dm-7"


def _no_sysfs(name: str) -> list[str]:
    raise AssertionError(f"sysfs must not be consulted for {name}")


def _no_links(path: str) -> str:
    return path


# ------------------------------------------------------------------ classify_power_check


def test_standby_message_wins_over_the_ambiguous_exit_status():
    output = (
        "smartctl 7.3 2022-02-28 r5338 [x86_64-linux-6.1.0] (local build)\n"
        "Copyright (C) 2002-22, Bruce Allen, Christian Franke, www.smartmontools.org\n\n"
        "Device is in STANDBY mode, exit(2)\n"
    )
    assert classify_power_check(output, 2) == PowerCheck("standby")
    assert classify_power_check(output.replace("exit(2)", "exit(0)"), 0).state == "standby"
    assert classify_power_check("Device is in SLEEP mode, exit(2)\n", 2).state == "standby"


def test_open_failure_with_the_same_exit_status_is_unavailable_with_smartctls_reason():
    output = (
        "smartctl 7.3 2022-02-28 r5338 [x86_64-linux-6.1.0] (local build)\n"
        "Copyright (C) 2002-22, Bruce Allen, Christian Franke, www.smartmontools.org\n\n"
        "Smartctl open device: /dev/sdb failed: Permission denied\n"
    )
    assert classify_power_check(output, 2) == PowerCheck(
        "unavailable", "Smartctl open device: /dev/sdb failed: Permission denied"
    )


def test_ignored_power_check_is_unknown_and_spinning_disk_is_active():
    ignored = "CHECK POWER MODE not implemented, ignoring -n option\nDevice Model: X\n"
    assert classify_power_check(ignored, 0).state == "unknown"
    assert classify_power_check("Power mode is:    ACTIVE or IDLE\n", 0) == PowerCheck("active")


# ------------------------------------------------------------------------ read_smart


def test_fake_smartctl_is_an_executable_script():
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")
    assert os.stat(SCRIPT).st_mode & stat.S_IXUSR


def test_active_sata_hdd_reports_the_captures_identity_temperature_and_health(fake):
    info = read_smart("/dev/sdb1", fake.path)
    assert info == SmartInfo(
        device="/dev/sdb1",
        disk="/dev/sdb",
        state="active",
        serial="00008AXB",
        model="OOS12000G",
        temperature_c=38,
        health="PASS",
        error=None,
        reallocated_sectors=0,
        pending_sectors=0,
        offline_uncorrectable=0,
        crc_errors=0,
        power_on_hours=252,
    )


def test_every_smartctl_call_carries_no_wake_option(fake):
    read_smart("/dev/sdb", fake.path)
    calls = fake.calls_for("/dev/sdb")
    assert calls[0] == ["-n", "standby", "-i", "/dev/sdb"]
    assert ["-n", "standby", "-d", "sat", "--all", "/dev/sdb"] in calls
    assert all(argv[:2] == ["-n", "standby"] for argv in calls)


def test_temperature_follows_the_drive(fake):
    assert read_smart("/dev/sde", fake.path).temperature_c == 41


def test_nvme_drive(fake):
    info = read_smart("/dev/nvme0n1p1", fake.path)
    assert (info.state, info.disk) == ("active", "/dev/nvme0n1")
    assert (info.serial, info.model) == ("68APC048P12P", "KBG30ZMV256G TOSHIBA")
    assert (info.temperature_c, info.health) == (59, "PASS")


def test_failing_drive_reports_fail(fake):
    info = read_smart("/dev/sdd", fake.path)
    assert info.state == "active"
    assert info.health == "FAIL"
    assert info.serial == "S2WZJ90C728321"
    assert info.temperature_c == 47


def test_standby_disk_is_reported_and_never_woken(fake):
    info = read_smart("/dev/sdc1", fake.path)
    assert info == SmartInfo(device="/dev/sdc1", disk="/dev/sdc", state="standby")
    assert fake.calls_for("/dev/sdc") == [["-n", "standby", "-i", "/dev/sdc"]]
    assert fake.woken() == []


def test_fake_records_a_call_that_would_wake_a_standby_disk(fake):
    # Guards the guard: without -n the fake must log a wake, or the test above proves nothing.
    subprocess.run([fake.path, "-a", "/dev/sdc"], check=False, capture_output=True)
    assert fake.woken() == ["/dev/sdc -a /dev/sdc"]


def test_disk_that_spins_down_between_check_and_read_is_not_woken(tmp_path, monkeypatch):
    fake = FakeSmartctl(tmp_path)
    fake.add("/dev/sdg", SATA_HDD, states=["active", "active", "standby"])
    fake.install(monkeypatch)
    info = read_smart("/dev/sdg", fake.path)
    assert info.state == "standby"
    assert fake.woken() == []
    assert fake.calls_for("/dev/sdg")[-1][:2] == ["-n", "standby"]


def test_known_device_type_skips_autodetection(fake):
    info = read_smart("/dev/sdb", fake.path, device_type="sat")
    assert info.serial == "00008AXB"
    calls = fake.calls_for("/dev/sdb")
    assert calls[0] == ["-n", "standby", "-i", "-d", "sat", "/dev/sdb"]
    assert not any("test" in argv for argv in calls)


def test_unknown_power_mode_is_not_read_unless_allowed(tmp_path, monkeypatch):
    fake = FakeSmartctl(tmp_path)
    fake.add("/dev/sdh", SATA_HDD, state="power_check_unsupported")
    fake.install(monkeypatch)
    refused = read_smart("/dev/sdh", fake.path)
    assert refused.state == "unavailable"
    assert "ignoring -n option" in (refused.error or "")
    assert len(fake.calls_for("/dev/sdh")) == 1
    allowed = read_smart("/dev/sdh", fake.path, wake_if_unknown=True)
    assert (allowed.state, allowed.serial) == ("active", "00008AXB")


def test_missing_smartctl_is_unavailable(fake):
    for smartctl in ("no-such-smartctl-binary", "/nonexistent/sbin/smartctl"):
        info = read_smart("/dev/sdb", smartctl)
        assert info.state == "unavailable"
        assert info.error == f"smartctl not found: {smartctl}"
    assert fake.calls() == []


def test_smartctl_is_found_on_path_by_name(fake, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "smartctl").symlink_to(SCRIPT)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    assert read_smart("/dev/sdb").serial == "00008AXB"


def test_loop_and_virtual_devices_are_unavailable_without_calling_smartctl(fake):
    for device in ("/dev/loop3", "/dev/zram0", "/dev/md127"):
        info = read_smart(device, fake.path)
        assert info.state == "unavailable"
        assert "virtual" in (info.error or "")
    assert fake.calls() == []


def test_missing_disk_is_unavailable_with_smartctls_message(fake):
    info = read_smart("/dev/sdz1", fake.path)
    assert info.state == "unavailable"
    assert info.error == "Smartctl open device: /dev/sdz failed: No such device"


def test_permission_denied_is_unavailable(tmp_path, monkeypatch):
    fake = FakeSmartctl(tmp_path).add("/dev/sdb", SATA_HDD, state="permission_denied")
    fake.install(monkeypatch)
    info = read_smart("/dev/sdb", fake.path)
    assert info.state == "unavailable"
    assert info.error == "Smartctl open device: /dev/sdb failed: Permission denied"


def test_hung_smartctl_is_killed_and_reported(tmp_path):
    slow = tmp_path / "smartctl"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")  # exec: the kill reaches the sleep itself, nothing lingers
    slow.chmod(0o755)
    info = read_smart("/dev/sdb", str(slow), timeout=0.3)
    assert info.state == "unavailable"
    assert info.error == "smartctl timed out after 0.3s"


# ------------------------------------------------------------------------ read_many


def test_read_many_reads_each_parent_disk_once(fake):
    devices = ["/dev/sdb1", "/dev/sdb2", "/dev/sdb", "/dev/sdc1", "/dev/nvme0n1p1", "/dev/sdb1"]
    results = read_many(devices, fake.path, max_workers=4)
    assert list(results) == ["/dev/sdb1", "/dev/sdb2", "/dev/sdb", "/dev/sdc1", "/dev/nvme0n1p1"]
    assert results["/dev/sdb2"].device == "/dev/sdb2"
    assert results["/dev/sdb2"].disk == "/dev/sdb"
    assert results["/dev/sdb2"].serial == results["/dev/sdb1"].serial == "00008AXB"
    assert results["/dev/sdc1"].state == "standby"
    assert results["/dev/nvme0n1p1"].model == "KBG30ZMV256G TOSHIBA"
    checks = [argv for argv in fake.calls() if argv[:3] == ["-n", "standby", "-i"]]
    assert sorted(argv[-1] for argv in checks) == ["/dev/nvme0n1", "/dev/sdb", "/dev/sdc"]
    full_reads = [argv for argv in fake.calls() if "--all" in argv]
    assert sorted(argv[-1] for argv in full_reads) == ["/dev/nvme0n1", "/dev/sdb"]
    assert fake.woken() == []


def test_read_many_of_nothing_is_empty(fake):
    assert read_many([], fake.path) == {}
    assert fake.calls() == []
