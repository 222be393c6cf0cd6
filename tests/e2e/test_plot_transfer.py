"""The plotter moves plots to harvesters across real SSH and netcat, in network namespaces."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.e2e_farm import E2EFarm, file_hash
from tests.support.loopdrives import requires_root_and_loop
from tests.support.netns_farm import requires_netns
from tests.support.plotmaker import cached_plot, copy_plot
from tests.support.waiting import CHANNEL_TIMEOUT, DEADLINE, wait_until

pytestmark = [pytest.mark.root, requires_root_and_loop, requires_netns, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def plot_size() -> int:
    return cached_plot("pool").stat().st_size


@pytest.fixture
def farm(tmp_path: Path, plot_size: int) -> Iterator[E2EFarm]:
    # chianas02 has the most room (three empty drives), so plots should go there first.
    with E2EFarm(tmp_path / "farm", {"chianas01": 1, "chianas02": 3, "chianas03": 2}, plot_size) as farm:
        yield farm


def _make_plots(farm: E2EFarm, kinds: list[str]) -> dict[str, str]:
    """Plots in the plotter's directory; returns name -> content hash."""
    farm.plotter.plot_dir.mkdir(parents=True, exist_ok=True)
    made = {}
    for kind in kinds:
        path = copy_plot(kind, farm.plotter.plot_dir)
        made[path.name] = file_hash(path)
    return made


def _throttle(farm: E2EFarm, name: str, rate: str = "4mbit") -> None:
    """Slow the harvester's link (real tc on its veth) so a test can act mid-stream: a k=18
    plot then streams for about 8 s, seconds to spare for a test on a busy machine."""
    veth = farm.net.host(name).veth_host_side
    subprocess.run(["tc", "qdisc", "replace", "dev", veth, "root", "tbf", "rate", rate, "burst", "32kbit", "latency", "2s"], check=True)


def _unthrottle(farm: E2EFarm, name: str) -> None:
    subprocess.run(["tc", "qdisc", "del", "dev", farm.net.host(name).veth_host_side, "root"], check=False)


@contextlib.contextmanager
def _slow_send(farm: E2EFarm, name: str = "chianas02") -> Iterator[subprocess.Popen[str]]:
    """A plotter run over a throttled link to ``name``, so the test can act mid-stream.

    Whatever the test does or fails on, the run is killed if still going and the link restored.
    """
    _throttle(farm, name)
    try:
        sender = farm.plotter.popen()
        try:
            yield sender
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait(DEADLINE)
    finally:
        _unthrottle(farm, name)


def _next_run_delivers(farm: E2EFarm, plots: dict[str, str], name: str = "chianas02") -> None:
    """The next plotter run succeeds and the harvester holds exactly these plots, intact."""
    again = farm.plotter.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert {p.name: file_hash(p) for p in farm.harvesters[name].plots()} == plots


def test_plots_go_to_the_harvester_with_most_room_intact(farm: E2EFarm, tmp_path: Path) -> None:
    farm.plotter.write_config(metrics_dir=str(tmp_path / "textfile"))
    plots = _make_plots(farm, ["pool", "og"])
    proc = farm.plotter.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(farm.plotter.plot_dir.iterdir()) == []  # sources deleted after verification
    landed = farm.harvesters["chianas02"].plots()
    receive_dir = farm.export("chianas02")["receive_dir"]
    assert {p.name for p in landed} == set(plots)
    assert {str(p.parent) for p in landed} == {receive_dir}
    assert {p.name: file_hash(p) for p in landed} == plots
    assert farm.harvesters["chianas02"].leftovers() == []
    history = farm.plotter.run("--history").stdout
    assert "Plots moved in the last 24 hours:   2" in history
    log = (farm.plotter.root / "state" / "logs" / "plot_manager.log").read_text()
    assert all(f"{name} -> chianas02: 100%" in log for name in plots)  # cron runs log progress
    metrics = (tmp_path / "textfile" / "plot_manager_plotter.prom").read_text().splitlines()
    sent = [line for line in metrics if line.startswith("chia_pm_plots_sent_total{")]
    assert len(sent) == 1 and 'harvester="chianas02"' in sent[0] and sent[0].endswith(" 2")


def test_unreachable_harvester_is_skipped_reported_once_and_the_plot_goes_elsewhere(farm: E2EFarm) -> None:
    from tests.support.smtp_server import smtp_server

    with smtp_server() as mail:
        farm.plotter.notifications = {
            "email": {"enabled": True, "smtp_host": "127.0.0.1", "smtp_port": mail.port, "to": ["farmer@test.invalid"],
                      "timeout_seconds": CHANNEL_TIMEOUT},
            "events": {"harvester_unreachable": ["email"], "plot_transferred": ["email"]},
        }
        farm.plotter.write_config()
        plots = _make_plots(farm, ["pool"])
        farm.net.stop_sshd("chianas02")
        proc = farm.plotter.run()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "harvester chianas02 skipped" in proc.stdout
        # chianas03 has the next most room.
        assert [p.name for p in farm.harvesters["chianas03"].plots()] == list(plots)
        log = (farm.plotter.root / "state" / "logs" / "plot_manager.log").read_text()
        assert "harvester chianas02 skipped" in log
        _make_plots(farm, ["og"])
        assert farm.plotter.run().returncode == 0  # still down: no second alert
        subjects = [m.message["Subject"] for m in mail.wait_for(3)]
        assert sum("chianas02 cannot be reached" in s for s in subjects) == 1
        assert sum("moved to chianas03" in s for s in subjects) == 2


def test_names_with_shell_characters_never_reach_a_shell(farm: E2EFarm, tmp_path: Path) -> None:
    marker = f"PWNED-{os.getpid()}-{time.monotonic_ns()}"
    places = [tmp_path, Path.home(), Path("/root"), Path.cwd()]

    def canary_exists() -> bool:  # the remote shell would run in the harvester user's home
        return any((place / marker).exists() for place in places) or any(tmp_path.rglob(marker))

    source = cached_plot("pool")
    bad = farm.plotter.plot_dir / f"plot-k18 $(touch {marker}).plot"
    farm.plotter.plot_dir.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(source.read_bytes())
    proc = farm.plotter.run()
    assert proc.returncode == 0
    assert bad.exists() and not canary_exists()
    assert all(h.plots() == [] for h in farm.harvesters.values())
    manual = farm.plotter.run("--send", str(bad))
    assert manual.returncode == 4 and "cannot be sent" in manual.stderr
    assert not canary_exists()


def test_receiver_killed_mid_stream_keeps_source_and_next_run_completes(farm: E2EFarm) -> None:
    plots = _make_plots(farm, ["pool"])
    with _slow_send(farm) as sender:
        wait_until("the stream to start", lambda: farm.harvesters["chianas02"].leftovers() and farm.receivers("chianas02"))
        for pid in farm.receivers("chianas02"):
            os.kill(pid, signal.SIGKILL)
        out, err = sender.communicate(timeout=120)
    assert sender.returncode == 1, out + err
    assert "FAILED" in out
    assert [p.name for p in farm.plotter.plot_dir.iterdir()] == list(plots)
    assert farm.harvesters["chianas02"].plots() == []
    _next_run_delivers(farm, plots)
    assert farm.harvesters["chianas02"].leftovers() == []


def test_link_down_mid_stream_times_out_and_next_run_completes(farm: E2EFarm) -> None:
    plots = _make_plots(farm, ["og"])
    with _slow_send(farm) as sender:
        try:
            wait_until("the stream to start", lambda: farm.harvesters["chianas02"].leftovers())
            farm.net.link_down("chianas02")
            out, err = sender.communicate(timeout=180)
        finally:
            farm.net.link_up("chianas02")
    assert sender.returncode == 1, out + err
    assert [p.name for p in farm.plotter.plot_dir.iterdir()] == list(plots)
    assert farm.harvesters["chianas02"].plots() == []
    wait_until("the receiver to give up", lambda: not farm.receivers("chianas02"))
    _next_run_delivers(farm, plots)
    assert farm.harvesters["chianas02"].leftovers() == []


def test_plotter_killed_mid_stream_leaves_nothing_and_no_stuck_lock(farm: E2EFarm) -> None:
    plots = _make_plots(farm, ["pool"])
    with _slow_send(farm) as sender:
        wait_until("the stream to start", lambda: farm.harvesters["chianas02"].leftovers())
        sender.kill()
        sender.wait(DEADLINE)
    wait_until("the receiver to notice the plotter died", lambda: not farm.receivers("chianas02"))
    assert farm.harvesters["chianas02"].plots() == []
    assert farm.harvesters["chianas02"].leftovers() == []
    assert [p.name for p in farm.plotter.plot_dir.iterdir()] == list(plots)
    _next_run_delivers(farm, plots)


def test_byte_flipped_on_the_wire_is_caught_and_next_run_completes(farm: E2EFarm) -> None:
    from tests.support.flip_proxy import FlipProxy

    plots = _make_plots(farm, ["pool"])
    target = next(h for h in farm.plotter.harvesters if h["name"] == "chianas02")
    bridge = "10.213.77.1"
    target["data_host"] = bridge  # plot data goes through the corrupting proxy on the bridge
    farm.plotter.write_config()
    with FlipProxy(bridge, farm.net.host("chianas02").address, range(4040, 4060), flip_at=123_457) as proxy:
        proc = farm.plotter.run()
        assert proxy.flipped.is_set()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "mismatch" in proc.stdout
    assert [p.name for p in farm.plotter.plot_dir.iterdir()] == list(plots)
    assert farm.harvesters["chianas02"].plots() == []
    # The whole plot arrived, so its part stays with a journal for a resume (issue 13); the next
    # run finds the flipped chunk differs from the source and sends from there.
    left = farm.harvesters["chianas02"].leftovers()
    assert all(p.with_name(p.name + ".journal").exists() for p in left), left
    del target["data_host"]
    farm.plotter.write_config()
    _next_run_delivers(farm, plots)
    assert farm.harvesters["chianas02"].leftovers() == []


def test_drive_filling_up_mid_stream_does_not_break_the_transfer(farm: E2EFarm) -> None:
    """The receiver reserves the plot's space before READY, so a filler cannot take it."""
    plots = _make_plots(farm, ["pool"])
    harvester = farm.harvesters["chianas02"]
    receive_dir = Path(farm.export("chianas02")["receive_dir"])
    drive = next(d for d in harvester.drives.drives if d.mountpoint == receive_dir)
    with _slow_send(farm) as sender:
        wait_until("the stream to start", lambda: harvester.leftovers())
        harvester.drives.fill(drive, 0)  # everything else on the drive is now taken
        out, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, out + err
    assert {p.name: file_hash(p) for p in harvester.plots()} == plots
    assert harvester.leftovers() == []


def test_full_drive_refuses_before_streaming_and_the_plot_goes_later(farm: E2EFarm) -> None:
    """The export said there was room, but every drive of the receive set filled since (the
    receiver walks the set, so one full drive is not enough): nothing is lost."""
    plots = _make_plots(farm, ["og"])
    harvester = farm.harvesters["chianas02"]
    export = farm.export("chianas02")
    mountpoints = {d["name"]: d["mountpoint"] for d in export["drives"]}
    in_set = {mountpoints[d["name"]] for d in export["receive_set"]}
    full = [d for d in harvester.drives.drives if str(d.mountpoint) in in_set]
    assert full, export["receive_set"]
    try:
        for drive in full:
            harvester.drives.fill(drive, 0)
        proc = farm.plotter.run()
        assert proc.returncode == 1 and "no space" in proc.stdout, proc.stdout + proc.stderr
        assert [p.name for p in farm.plotter.plot_dir.iterdir()] == list(plots)
        assert harvester.plots() == [] and harvester.leftovers() == []
        harvester.drives.unfill(full.pop())  # room comes back on one drive of the set
        farm.harvester_pass("chianas02")
        again = farm.plotter.run()  # to the harvester with the most room now, intact
        assert again.returncode == 0, again.stdout + again.stderr
        landed = {p.name: file_hash(p) for h in farm.harvesters.values() for p in h.plots()}
        assert {name: landed.get(name) for name in plots} == plots
    finally:
        for drive in full:
            harvester.drives.unfill(drive)
        farm.harvester_pass("chianas02")


def test_plots_waiting_for_room_warn_once_not_every_run(farm: E2EFarm) -> None:
    """A full farm keeps the plots; cron mail (stderr) hears of it once, and again only after room came back."""
    plots = _make_plots(farm, ["og"])
    filled = []
    try:
        for name, harvester in farm.harvesters.items():
            for drive in harvester.drives.drives:
                harvester.drives.fill(drive, 0)
                filled.append((harvester, drive))
            farm.harvester_pass(name)
        runs = [farm.plotter.run() for _ in range(2)]
        assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
        assert ["no harvester has room" in r.stderr for r in runs] == [True, False]
        assert [p.name for p in farm.plotter.plot_dir.iterdir()] == list(plots)
    finally:
        for harvester, drive in filled:
            harvester.drives.unfill(drive)
    for name in farm.harvesters:
        farm.harvester_pass(name)
    again = farm.plotter.run()
    assert again.returncode == 0 and "no harvester has room" not in again.stderr, again.stderr
    assert [p.name for p in farm.plotter.plot_dir.iterdir()] == []


def test_two_plotters_sending_to_one_harvester_at_once(farm: E2EFarm, tmp_path: Path) -> None:
    from tests.support.e2e_farm import Plotter

    only = [h for h in farm.plotter.harvesters if h["name"] == "chianas02"]
    first = Plotter(farm.root / "plotter-a", only, farm.net)
    second = Plotter(farm.root / "plotter-b", only, farm.net)
    plots = {}
    for plotter in (first, second):
        plotter.write_config()
        for kind in ("pool", "og"):
            path = copy_plot(kind, plotter.plot_dir)
            plots[path.name] = file_hash(path)
    _throttle(farm, "chianas02", rate="40mbit")  # make the two runs overlap
    try:
        running = [first.popen(), second.popen()]
        results = [p.communicate(timeout=180) for p in running]
    finally:
        _unthrottle(farm, "chianas02")
    for process, (out, err) in zip(running, results, strict=True):
        assert process.returncode == 0, out + err
    assert {p.name: file_hash(p) for p in farm.harvesters["chianas02"].plots()} == plots
    assert farm.harvesters["chianas02"].leftovers() == []


def test_dry_run_sends_nothing(farm: E2EFarm) -> None:
    plots = _make_plots(farm, ["pool"])
    proc = farm.plotter.run("--dry-run")
    assert proc.returncode == 0
    (name,) = plots
    assert f"would send {farm.plotter.plot_dir / name}" in proc.stdout and "to chianas02" in proc.stdout
    assert [p.name for p in farm.plotter.plot_dir.iterdir()] == [name]
    assert all(h.plots() == [] for h in farm.harvesters.values())


def test_portable_prefix_names_pool_plots_on_the_harvester(farm: E2EFarm) -> None:
    farm.plotter.transfer = {"portable_prefix": True}
    farm.plotter.write_config()
    plots = _make_plots(farm, ["pool", "og"])
    proc = farm.plotter.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    landed = {p.name: file_hash(p) for p in farm.harvesters["chianas02"].plots()}
    pool_name, og_name = list(plots)
    assert landed == {f"portable.{pool_name}": plots[pool_name], og_name: plots[og_name]}
    assert list(farm.plotter.plot_dir.iterdir()) == []


def test_replace_mode_swaps_one_old_plot_per_incoming_pool_plot(farm: E2EFarm, plot_size: int) -> None:
    """chianas01's only drive is full of OG plots: each incoming plot replaces exactly one."""
    import yaml

    harvester = farm.harvesters["chianas01"]
    drive = harvester.drives.drives[0]
    olds = [copy_plot("og", drive.mountpoint) for _ in range(3)]
    pools_before = [copy_plot("pool", drive.mountpoint)]
    harvester.drives.fill_for_plots(drive, 0, plot_size)
    config = yaml.safe_load(harvester.config_path.read_text())
    config["harvester"].update(replace_non_pool_plots=True, fill_empty_drives_first=False)
    harvester.config_path.write_text(yaml.safe_dump(config))
    farm.harvester_pass("chianas01")
    assert farm.export("chianas01")["extra"]["receive_replaces_old_plots"] is True
    farm.plotter.harvesters = [h for h in farm.plotter.harvesters if h["name"] == "chianas01"]
    farm.plotter.write_config(priority="replace")
    plots = _make_plots(farm, ["pool", "pool"])
    proc = farm.plotter.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    on_drive = {p.name for p in harvester.plots()}
    assert set(plots) <= on_drive
    assert all(p.exists() for p in pools_before)  # a pool plot is never deleted
    assert sum(p.exists() for p in olds) == 1  # two incoming plots, two OG plots gone, oldest first
    assert len(on_drive) == len(olds) + len(pools_before)  # the count never dropped


def test_concurrent_transfers_and_repeated_failures_alert_once(farm: E2EFarm) -> None:
    from tests.support.smtp_server import smtp_server

    with smtp_server() as mail:
        farm.plotter.transfer = {"max_concurrent_transfers": 2, "failures_before_alert": 2}
        farm.plotter.notifications = {
            "email": {"enabled": True, "smtp_host": "127.0.0.1", "smtp_port": mail.port, "to": ["farmer@test.invalid"],
                      "timeout_seconds": CHANNEL_TIMEOUT},
            "events": {"transfer_failed": ["email"]},
        }
        farm.plotter.write_config()
        plots = _make_plots(farm, ["pool", "og", "pool"])
        proc = farm.plotter.run()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        landed = {p.name: file_hash(p) for h in farm.harvesters.values() for p in h.plots()}
        assert landed == plots
        # Now every transfer fails (the receive script is gone): the farmer hears once, at the 2nd failure.
        stuck = _make_plots(farm, ["og"])
        for h in farm.harvesters.values():
            (h.root / "receive_plot.sh").unlink()
        runs = [farm.plotter.run() for _ in range(3)]
        assert [r.returncode for r in runs] == [1, 1, 1]
        # Cron mail (stderr) hears of the 1st failure and the alerting 2nd, not of the 3rd.
        assert ["failed (" in r.stderr for r in runs] == [True, True, False], [r.stderr for r in runs]
        (mail_msg,) = mail.wait_for(1)
        assert "failed 2 times" in mail_msg.message["Subject"] and next(iter(stuck)) in mail_msg.message["Subject"]
        assert len(mail.received) == 1
        assert [p.name for p in farm.plotter.plot_dir.iterdir()] == list(stuck)


def test_replace_migration_one_by_one_never_drops_the_count(farm: E2EFarm, plot_size: int) -> None:
    """A drive full of OG plots becomes a drive of pool plots, one plot per run."""
    import yaml

    from utilities.plots import read_plot_header

    harvester = farm.harvesters["chianas01"]
    drive = harvester.drives.drives[0]
    for _ in range(3):
        copy_plot("og", drive.mountpoint)
    harvester.drives.fill_for_plots(drive, 0, plot_size)
    config = yaml.safe_load(harvester.config_path.read_text())
    config["harvester"].update(replace_non_pool_plots=True, fill_empty_drives_first=False)
    harvester.config_path.write_text(yaml.safe_dump(config))
    farm.plotter.harvesters = [h for h in farm.plotter.harvesters if h["name"] == "chianas01"]
    farm.plotter.write_config(priority="replace")

    def kinds() -> list[str]:
        return sorted(read_plot_header(p).kind for p in harvester.plots())

    assert kinds() == ["og", "og", "og"]
    for step in range(1, 4):
        farm.harvester_pass("chianas01")
        _make_plots(farm, ["pool"])
        proc = farm.plotter.run()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert kinds() == sorted(["pool"] * step + ["og"] * (3 - step)), step  # count stays 3, no pool lost
    farm.harvester_pass("chianas01")
    export = farm.export("chianas01")
    assert export["receive_drive"] is None  # no OG plot left and no free space: nothing to receive on
