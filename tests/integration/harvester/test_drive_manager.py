"""drive_manager.py on real loop-mounted drives, run as cron and as a farmer would by hand."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.harvester_env import Harvester, harvester_config
from tests.support.loopdrives import LoopDrives, requires_root_and_loop
from tests.support.plotmaker import copy_plot
from tests.support.smtp_server import SMTPTestServer, free_port
from tests.support.waiting import DEADLINE
from utilities.transfer.channel import LocalExec
from utilities.transfer.claims import CLAIMS_DIRNAME, try_claim
from utilities.transfer.sender import send_plot

pytestmark = [pytest.mark.root, requires_root_and_loop]

ENCLOSURE = [
    "enclosure0/front/column0/drive0",
    "enclosure0/front/column0/drive1",
    "enclosure0/front/column1/drive2",
    "enclosure0/rear/column0/drive10",
]


@pytest.fixture
def farm(tmp_path: Path, plot_size: int, mail: SMTPTestServer) -> Iterator[tuple[Harvester, LoopDrives]]:
    root = tmp_path / "farm"
    root.mkdir()
    with LoopDrives(root / "mnt", ENCLOSURE, size_mb=64) as drives:
        harvester = Harvester(root)
        harvester.write_config(
            harvester_config(root, [str(root / "mnt" / "enclosure*/*/column*/drive*")], plot_size, mail.port)
        )
        yield harvester, drives


def _subjects(mail: SMTPTestServer) -> list[str]:
    return [m.message["Subject"] for m in mail.received]


def _write_chia_log(harvester: Harvester, total: int) -> None:
    log = harvester.root / "chia" / "debug.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(
        "2026-11-23T10:00:00.123 harvester chia.harvester.harvester: INFO     1 plots were eligible for farming "
        f"ab12cd34ef... Found 0 proofs. Time: 0.12345 s. Total {total} plots\n"
    )


def test_cron_run_picks_first_drive_and_writes_script_and_export(farm, mail) -> None:
    harvester, drives = farm
    harvester.run()
    first = drives.drives[0]
    assert harvester.receive_dir() == str(first.mountpoint)
    assert os.access(harvester.receive_script, os.X_OK)
    export = harvester.export()
    assert export["receive_drive"] == "drive0"
    assert [d["name"] for d in export["drives"]] == ["drive0", "drive1", "drive2", "drive10"]
    assert {d["uuid"] for d in export["drives"]} == {d.uuid for d in drives.drives}
    (msg,) = mail.wait_for(1)
    assert "new plot drive" in msg.message["Subject"]
    body = msg.message.get_body(("plain",)).get_content()
    assert str(first.mountpoint) in body
    log_text = (harvester.state_dir / "logs" / "drive_manager.log").read_text()
    assert "receive drive: None -> " + str(first.mountpoint) in log_text
    # A second run with nothing changed neither rewrites the script nor mails again.
    before = harvester.receive_script.stat().st_mtime_ns
    harvester.run()
    assert harvester.receive_script.stat().st_mtime_ns == before
    assert len(mail.received) == 1


def test_changed_setting_rewrites_the_script_without_a_drive_change(farm, mail, plot_size) -> None:
    harvester, drives = farm
    harvester.run()
    assert "--idle-timeout 120 " in harvester.receive_script.read_text()
    config = yaml.safe_load(harvester.config_path.read_text())
    config["harvester"]["receive_idle_timeout_seconds"] = 30
    harvester.write_config(config)
    harvester.run()
    assert "--idle-timeout 30 " in harvester.receive_script.read_text()
    assert harvester.receive_dir() == str(drives.drives[0].mountpoint)
    assert len(mail.wait_for(1)) == 1  # same drive: no second "new plot drive" mail


def test_full_drive_moves_receive_to_next_and_notifies(farm, mail, plot_size) -> None:
    harvester, drives = farm
    harvester.run()
    drives.fill_for_plots(drives.drives[0], 0, plot_size)
    harvester.run()
    assert harvester.receive_dir() == str(drives.drives[1].mountpoint)
    msgs = mail.wait_for(2)
    text = msgs[1].message.get_body(("plain",)).get_content()
    assert str(drives.drives[0].mountpoint) in text and str(drives.drives[1].mountpoint) in text


def test_offline_and_online(farm, plot_size) -> None:
    harvester, drives = farm
    harvester.run()
    out = harvester.run("-off", "drive0").stdout
    assert "offline" in out
    assert harvester.receive_dir() == str(drives.drives[1].mountpoint)
    again = harvester.run("-off", "drive0", check=False)
    assert again.returncode == 3 and "already offline" in again.stderr
    unknown = harvester.run("-off", "drive99", check=False)
    assert unknown.returncode == 3 and "drive99" in unknown.stderr and len(unknown.stderr.splitlines()) == 1
    not_offline = harvester.run("-on", "drive2", check=False)
    assert not_offline.returncode == 3 and "not offline" in not_offline.stderr
    harvester.run("-on", str(drives.drives[0].mountpoint))
    assert harvester.receive_dir() == str(drives.drives[0].mountpoint)
    nothing = harvester.run("-on", "drive0", check=False)
    assert nothing.returncode == 3 and "no drive is offline" in nothing.stderr


def test_offline_of_unmounted_drive_is_an_error(farm) -> None:
    harvester, drives = farm
    drives.unmount(drives.drives[2])
    proc = harvester.run("-off", "drive2", check=False)
    assert proc.returncode == 3 and "not a mounted plot drive" in proc.stderr
    drives.remount(drives.drives[2])
    harvester.run("-off", "drive2")


def test_no_drive_left_refuses_transfers_and_alerts_once(farm, mail, plot_size) -> None:
    harvester, drives = farm
    harvester.run()
    for drive in drives.drives:
        drives.fill_for_plots(drive, 0, plot_size)
    harvester.run()
    harvester.run()
    assert harvester.receive_dir() is None
    refused = subprocess.run(["sh", str(harvester.receive_script), "x.plot", "1", "4000"], capture_output=True, text=True)
    assert refused.returncode == 75 and "no plot drive" in refused.stderr
    subjects = _subjects(mail)
    assert sum("no plot drive can receive" in s for s in subjects) == 1
    assert harvester.export()["receive_drive"] is None
    # Space comes back: the drive is picked again and the alert can fire again later.
    drives.unfill(drives.drives[3])
    harvester.run()
    assert harvester.receive_dir() == str(drives.drives[3].mountpoint)


def test_plot_report_counts_plots_by_kind(farm, plot_size) -> None:
    harvester, drives = farm
    d0, d1 = drives.drives[0].mountpoint, drives.drives[1].mountpoint
    for _ in range(2):
        copy_plot("og", d0)
    for _ in range(3):
        copy_plot("pool", d1)
    (d1 / "plot-k18-in-progress.plot.2.tmp").write_bytes(b"x" * 1000)
    (d1 / ".incoming.plot.part").write_bytes(b"x" * 1000)
    _write_chia_log(harvester, 5)
    harvester.run()
    data = json.loads(harvester.run("-pr", "--json").stdout)
    assert (data["total_plots"], data["og_plots"], data["pool_plots"]) == (5, 2, 3)
    assert data["chia_plots"] == 5
    assert data["drive_count"] == 4
    expected_slots = sum(d["free_bytes"] // plot_size for d in harvester.export()["drives"])
    assert data["slots_until_full"] == expected_slots
    assert data["max_plots"] == expected_slots + 5
    assert data["plots_last_24h"] == 5
    assert data["receive_mountpoint"] == str(d0)
    text = harvester.run("-pr").stdout
    assert "chianas01 Plot Report" in text
    assert any(line.startswith("Total Number of Plots on chianas01:") and line.endswith(" 5") for line in text.splitlines())
    assert any(line.startswith("Total Number of Plots Chia is Farming:") and line.endswith(" 5") for line in text.splitlines())


def test_overlapping_cron_run_exits_quietly(farm) -> None:
    harvester, drives = farm
    lock = harvester.state_dir / "drive_manager.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        proc = harvester.run()
    assert proc.returncode == 0
    assert not harvester.receive_script.exists()


def _script_set(harvester: Harvester) -> list[dict[str, object]]:
    """The receive set receive_plot.sh hands the receiver (--drives), in order."""
    exec_line = next(line for line in harvester.receive_script.read_text().splitlines() if line.startswith("exec "))
    words = shlex.split(exec_line)
    assert words.count("--drives") == 1 and "--dest" not in words and "flock" not in words
    for option, value in (("--claims", str(harvester.state_dir / CLAIMS_DIRNAME)), ("--per-drive", "1")):
        assert words[words.index(option) + 1] == value
    assert words[-1] == "$@"
    return json.loads(words[words.index("--drives") + 1])


def test_script_names_the_receive_set_in_policy_order(farm, plot_size) -> None:
    harvester, drives = farm
    harvester.run()
    dirs = [str(d.mountpoint) for d in drives.drives]
    assert _script_set(harvester) == [
        {"name": name, "dir": path, "replace": False}
        for name, path in zip(["drive0", "drive1", "drive2", "drive10"], dirs, strict=True)
    ]
    export = harvester.export()
    assert export["receive_set"] == [{"name": n, "replace": False} for n in ("drive0", "drive1", "drive2", "drive10")]
    assert (export["receive_drive"], export["receives_available"], export["receiving"]) == ("drive0", 4, [])
    assert export["receive_protocol"] == 3
    # A full drive leaves the set; the set's size is the config's.
    drives.fill_for_plots(drives.drives[1], 0, plot_size)
    config = yaml.safe_load(harvester.config_path.read_text())
    config["harvester"]["concurrent_receive_drives"] = 2
    harvester.write_config(config)
    harvester.run()
    assert [d["name"] for d in _script_set(harvester)] == ["drive0", "drive2"]
    assert harvester.export()["receives_available"] == 2


def test_receive_in_flight_is_exported_and_the_set_rewritten_while_it_runs(farm, plot_size) -> None:
    harvester, drives = farm
    harvester.run()
    claim = try_claim(harvester.state_dir / CLAIMS_DIRNAME, "drive1", 1)  # as a running receiver holds it
    assert claim is not None
    try:
        started = time.time() - 10
        claim.record("plot-k32-2024-01-01-00-00-" + "a" * 64 + ".plot", 4 * 10**6, 10**6, started, force=True)
        drives.fill_for_plots(drives.drives[0], 0, plot_size)
        harvester.run()
        # The script moved off the full drive at once, receive in flight or not.
        assert [d["name"] for d in _script_set(harvester)] == ["drive1", "drive2", "drive10"]
        assert harvester.receive_dir() == str(drives.drives[1].mountpoint)
        export = harvester.export()
        (receiving,) = export["receiving"]
        assert (receiving["drive"], receiving["received"], receiving["size"]) == ("drive1", 10**6, 4 * 10**6)
        assert receiving["pid"] == os.getpid()
        assert export["receives_available"] == 2  # drive1 is taken
        data = json.loads(harvester.run("-pr", "--json").stdout)
        assert [r["drive"] for r in data["receiving"]] == ["drive1"] and data["receives_available"] == 2
        assert data["receiving"][0]["percent"] == 25.0
        text = harvester.run("-pr").stdout
        assert any(line.startswith("Receiving Now on drive1:") and "25%" in line for line in text.splitlines())
        assert any(line.startswith("Receive Drives:") and line.endswith("drive1, drive2, drive10")
                   for line in text.splitlines())
    finally:
        claim.release()
    harvester.run()
    export = harvester.export()
    assert (export["receiving"], export["receives_available"]) == ([], 3)


def test_a_plot_sent_through_the_script_lands_on_the_first_drive_nobody_claimed(farm, tmp_path) -> None:
    """The real receiver, started by the script the pass wrote, over loopback."""
    harvester, drives = farm
    harvester.run()
    source = copy_plot("pool", tmp_path / "plotter")
    sender = LocalExec(env={**os.environ, "SSH_CLIENT": "127.0.0.1 40022 22",
                            "SSH_CONNECTION": "127.0.0.1 40022 127.0.0.1 22"})
    timeouts = {"ready_timeout": DEADLINE, "verify_timeout": DEADLINE, "idle_timeout": DEADLINE}
    claims_dir = harvester.state_dir / CLAIMS_DIRNAME
    held = [try_claim(claims_dir, "drive0", 1)]  # another receiver writes onto drive0
    try:
        result = send_plot(sender, harvester.receive_script, source, "127.0.0.1", free_port(), nc=None, **timeouts)
        assert result.ok, result.reason
        assert (drives.drives[1].mountpoint / source.name).exists()
        assert not (drives.drives[0].mountpoint / source.name).exists()
        # Every drive of the set taken: busy, the plot stays where it is.
        held += [try_claim(claims_dir, name, 1) for name in ("drive1", "drive2", "drive10")]
        assert all(held)
        other = copy_plot("og", tmp_path / "plotter2")
        busy = send_plot(sender, harvester.receive_script, other, "127.0.0.1", free_port(), nc=None, **timeouts)
        assert not busy.ok and busy.receiver_error == "busy", busy
        assert other.exists()
    finally:
        for claim in held:
            if claim is not None:
                claim.release()


def test_daily_report_email_has_text_and_html(farm, mail) -> None:
    harvester, drives = farm
    copy_plot("pool", drives.drives[0].mountpoint)
    harvester.run()
    mail.wait_for(1)
    out = harvester.run("-dr").stdout
    assert "email: sent" in out
    msg = mail.wait_for(2)[1].message
    assert "daily" in msg["Subject"].lower()
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "chianas01" in text and "<html" in html.lower() and "chianas01" in html


def test_update_daily_records_counts(farm) -> None:
    harvester, drives = farm
    copy_plot("og", drives.drives[0].mountpoint)
    out = harvester.run("-ud").stdout
    assert "1 plots" in out


def test_second_layout_nvme_style_and_plot_directory_globs(tmp_path: Path, plot_size: int) -> None:
    """A different farm: drives named by disk under /srv, plus globbed plot dirs, no enclosure."""
    root = tmp_path / "farm2"
    root.mkdir()
    with LoopDrives(root / "srv", ["disk-b", "disk-a", "disk-c"], size_mb=64) as drives:
        by_name = {d.mountpoint.name: d for d in drives.drives}
        for name in ("disk-a", "disk-b"):
            (by_name[name].mountpoint / "plots").mkdir()
            (by_name[name].mountpoint / "plots2").mkdir()
        copy_plot("pool", by_name["disk-a"].mountpoint / "plots")
        copy_plot("og", by_name["disk-a"].mountpoint / "plots2")
        harvester = Harvester(root)
        config = harvester_config(root, [], plot_size)
        config["harvester"]["drive_discovery"]["plot_directories"] = [str(root / "srv" / "disk-*" / "plots*")]
        harvester.write_config(config)
        harvester.run()
        export = harvester.export()
        # disk-c has no plot dir: not a plot drive. disk-a and disk-b count once each.
        assert [d["mountpoint"] for d in export["drives"]] == [
            str(by_name["disk-a"].mountpoint), str(by_name["disk-b"].mountpoint)]
        assert export["drives"][0]["plots_og"] == 1 and export["drives"][0]["plots_pool"] == 1
        assert harvester.receive_dir() == str(by_name["disk-a"].mountpoint / "plots")


def test_check_temps_marks_hot_drive_and_never_wakes_standby(farm, mail, monkeypatch, tmp_path) -> None:
    """-ct and the cron temperature alert, against the stand-in smartctl with real captures."""
    from tests.support.fake_smartctl import SATA_HDD, FakeSmartctl

    harvester, drives = farm
    fake = FakeSmartctl(tmp_path).add("/dev/sdb", SATA_HDD, temperature=41).add(
        "/dev/sdc", SATA_HDD, temperature=57).add("/dev/sdd", SATA_HDD, state="standby")
    fake.install(monkeypatch)
    config = harvester_config(harvester.root, [str(harvester.root / "mnt" / "enclosure*/*/column*/drive*")], 4_000_000, mail.port)
    config["harvester"]["smart_devices"] = {"drive0": "/dev/sdb", "drive1": "/dev/sdc", "drive2": "/dev/sdd"}
    config["harvester"]["alerts"] = {"temperature_check_minutes": 0, "temperature_limit_c": 50}
    harvester.write_config(config)
    data = json.loads(harvester.run("-ct", "--json").stdout)
    by_drive = {row["drive"]: row for row in data["drives"]}
    assert by_drive["drive0"]["temperature_c"] == 41 and not by_drive["drive0"]["hot"]
    assert by_drive["drive1"]["temperature_c"] == 57 and by_drive["drive1"]["hot"]
    assert by_drive["drive2"]["state"] == "standby" and by_drive["drive2"]["temperature_c"] is None
    assert by_drive["drive10"]["state"] == "unavailable"  # a loop device has no SMART
    text = harvester.run("-ct").stdout
    assert "chianas01 Temperature Report" in text
    rows = {f[2]: line for line in text.splitlines() if len(f := line.split()) >= 4 and f[2].startswith("drive")}
    assert "57°C" in rows["drive1"] and rows["drive1"].rstrip().endswith("HOT")
    assert "41°C" in rows["drive0"] and not rows["drive0"].rstrip().endswith("HOT")
    assert "standby" in rows["drive2"]
    # The cron run alerts once for the hot drive, not every minute.
    harvester.run()
    harvester.run()
    temperature_mails = [m for m in mail.received if "°C" in m.message["Subject"]]
    assert len(temperature_mails) == 1
    # The export carries the last temperatures read, so a farm view shows a remote drive's too.
    exported = json.loads(harvester.export_file.read_text())["extra"]["temperatures"]
    assert exported["drive0"] == 41 and exported["drive1"] == 57 and exported["drive2"] is None
    assert "/dev/sdc" not in temperature_mails[0].message["Subject"]
    assert str(drives.drives[1].mountpoint) in temperature_mails[0].message.get_body(("plain",)).get_content()
    assert fake.wake_log.exists() is False or fake.wake_log.read_text() == ""


def test_cron_run_writes_prometheus_metrics(farm, tmp_path) -> None:
    harvester, drives = farm
    copy_plot("og", drives.drives[0].mountpoint)
    config = yaml.safe_load(harvester.config_path.read_text())
    config["harvester"]["metrics_dir"] = str(tmp_path / "textfile")
    harvester.write_config(config)
    harvester.run()
    text = (tmp_path / "textfile" / "plot_manager_harvester.prom").read_text()
    assert 'chia_pm_drive_plots{harvester="chianas01",drive="drive0"' in text
    assert 'chia_pm_plots{harvester="chianas01",kind="og"} 1' in text
    assert 'chia_pm_receive_drive{harvester="chianas01",drive="drive0"} 1' in text
    assert not list((tmp_path / "textfile").glob("*.tmp*"))
