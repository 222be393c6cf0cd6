"""move_local_plots.py on real loop-mounted drives with real chiapos plots, run as cron runs it.

drive_manager.py (the real script) reserves the local drive; move_local_plots.py (the real
script, in a subprocess) moves plots onto it. A real stall is a frozen destination filesystem
(``fsfreeze``: writes block in the kernel until it is thawed). The tests of held plots run the
move in-process with a source read that does not return until the test opens a gate, which
makes a stall on the source side and several stalls in a row cheap.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.gated_reader import GatedReader
from tests.support.harvester_env import REPO, Harvester, harvester_config
from tests.support.hashing import xxh3
from tests.support.loopdrives import LoopDrives, requires_root_and_loop
from tests.support.plotmaker import copy_plot
from tests.support.smtp_server import SMTPTestServer, smtp_server
from tests.support.waiting import DEADLINE, wait_until
from utilities.config import load_settings
from utilities.harvester.local_moves import run_local_moves
from utilities.harvester.reports import plot_report_data
from utilities.harvester_export import HarvesterSnapshot
from utilities.notify import Notifier
from utilities.state import StateDB

pytestmark = [pytest.mark.root, requires_root_and_loop]

ENCLOSURE = [
    "enclosure0/front/column0/drive0",
    "enclosure0/front/column0/drive1",
    "enclosure0/front/column1/drive2",
]


# A throttled copy of a k=18 plot (about 4 MB) takes 8 s: a test acting once a quarter is
# copied has 6 s to do it, however busy the machine.
SLOW_MB_PER_SECOND = 0.5


@dataclass
class LocalFarm:
    harvester: Harvester
    drives: LoopDrives
    out: Path
    mail: SMTPTestServer
    config: dict[str, Any]

    def drive(self, name: str) -> Path:
        return next(d.mountpoint for d in self.drives.drives if d.mountpoint.name == name)

    def local_moves(self, **settings: Any) -> None:
        self.config["harvester"]["local_moves"].update(settings)
        self.harvester.write_config(self.config)

    def move(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REPO / "move_local_plots.py"), "--config", str(self.harvester.config_path), *args],
            capture_output=True, text=True, timeout=DEADLINE,
        )

    def popen_move(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(REPO / "move_local_plots.py"), "--config", str(self.harvester.config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    @contextmanager
    def move_under_way(self, plot: Path) -> Iterator[subprocess.Popen[str]]:
        """move_local_plots.py running, a quarter into copying ``plot``; killed if it is still
        running when the block ends (a failed assertion included)."""
        proc = self.popen_move()
        try:
            wait_until("a quarter copied",
                       lambda: f"{plot.name}: copy 25%" in self.log_text() or proc.poll() is not None)
            assert proc.poll() is None, proc.communicate()
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=DEADLINE)

    def log_text(self) -> str:
        path = self.harvester.state_dir / "logs" / "move_local_plots.log"
        return path.read_text() if path.exists() else ""

    def local_drive(self) -> str | None:
        return self.harvester.export()["extra"].get("local_receive_drive")

    def files(self, name: str) -> list[str]:
        return sorted(p.name for p in self.drive(name).iterdir() if p.name not in ("lost+found", ".loopdrives-filler"))

    def moves(self) -> list[tuple[str, str]]:
        with sqlite3.connect(self.harvester.state_dir / "state.sqlite3") as conn:
            return conn.execute("SELECT plot, status FROM local_moves ORDER BY id").fetchall()


@pytest.fixture
def farm(tmp_path: Path, plot_size: int) -> Iterator[LocalFarm]:
    root = tmp_path / "farm"
    out = root / "plotter-out"
    out.mkdir(parents=True)
    with smtp_server() as mail, LoopDrives(root / "mnt", ENCLOSURE, size_mb=64) as drives:
        harvester = Harvester(root)
        config = harvester_config(
            root, [str(root / "mnt" / "enclosure*/*/column*/drive*")], plot_size, mail.port,
            # A stall only where a test makes one: a busy machine may pause a healthy copy for seconds.
            local_moves={"enabled": True, "plot_directories": [str(out)], "stall_seconds": DEADLINE},
        )
        config["notifications"]["events"].update(local_move_failed=["email"], disk_usage=["email"])
        harvester.write_config(config)
        yield LocalFarm(harvester, drives, out, mail, config)


def _subjects(mail: SMTPTestServer) -> list[str]:
    return [m.message["Subject"] for m in mail.received]


def test_plots_move_intact_to_a_drive_apart_from_the_network_drive(farm: LocalFarm) -> None:
    farm.harvester.run()
    export = farm.harvester.export()
    assert export["receive_drive"] == "drive0"
    assert farm.local_drive() == "drive1"  # never the drive receiving from the network
    report = plot_report_data(HarvesterSnapshot.from_dict(export), None)  # -pr's figures from this pass
    assert (report["local_receive_drive"], report["local_receive_mountpoint"]) == ("drive1", str(farm.drive("drive1")))
    pr = subprocess.run([sys.executable, str(REPO / "drive_manager.py"), "--config", str(farm.harvester.config_path),
                         "-pr", "--json"], capture_output=True, text=True, timeout=DEADLINE)
    assert pr.returncode == 0, pr.stderr
    assert json.loads(pr.stdout)["local_receive_drive"] == "drive1"  # -pr shows the reservation too
    plots = [copy_plot("og", farm.out), copy_plot("pool", farm.out)]
    digests = {p.name: xxh3(p) for p in plots}
    proc = farm.move()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""  # cron stays quiet when all is well
    assert farm.files("drive1") == sorted(digests)
    assert {name: xxh3(farm.drive("drive1") / name) for name in digests} == digests
    assert not any(p.exists() for p in plots) and farm.files("drive0") == []
    assert sorted(farm.moves()) == sorted((name, "moved") for name in digests)
    assert farm.log_text().count("source deleted") == 2
    # The next drive_manager pass counts them on drive1 and keeps both reservations.
    farm.harvester.run()
    drive1 = next(d for d in farm.harvester.export()["drives"] if d["name"] == "drive1")
    assert (drive1["plots_og"], drive1["plots_pool"]) == (1, 1)
    assert farm.local_drive() == "drive1"


def test_nothing_moves_without_a_reservation_or_when_switched_off(farm: LocalFarm) -> None:
    plot = copy_plot("pool", farm.out)
    proc = farm.move()
    assert proc.returncode == 1
    assert "1 plot(s) stay where they are: no local plot drive is reserved" in proc.stderr
    assert plot.exists()
    farm.local_moves(enabled=False)
    off = farm.move()
    assert off.returncode == 2
    assert off.stderr.strip().splitlines() == [
        "error: harvester.local_moves.enabled is false: set it to true and list the plotter's output directories "
        "in harvester.local_moves.plot_directories"
    ]


def test_dry_run_says_where_and_changes_nothing(farm: LocalFarm) -> None:
    farm.harvester.run()
    plot = copy_plot("pool", farm.out)
    proc = farm.move("--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"would move {plot} (pool, {plot.stat().st_size} bytes) to {farm.drive('drive1')} (drive1)" in proc.stdout
    assert "output " + str(farm.out) in proc.stdout  # the usage of the output directory
    assert plot.exists() and farm.files("drive1") == []


def test_offline_and_unmounted_drives_are_skipped(farm: LocalFarm) -> None:
    farm.harvester.run()
    assert farm.local_drive() == "drive1"
    farm.harvester.run("-off", "drive1")  # runs the pass at once: a new reservation
    assert farm.local_drive() == "drive2"
    plot = copy_plot("og", farm.out)
    assert farm.move().returncode == 0
    assert farm.files("drive2") == [plot.name] and farm.files("drive1") == []

    # The reserved drive disappears between drive_manager's pass and this run: re-checked.
    second = copy_plot("pool", farm.out)
    digest = xxh3(second)
    drive2 = next(d for d in farm.drives.drives if d.mountpoint.name == "drive2")
    farm.drives.unmount(drive2)
    try:
        proc = farm.move()
        assert proc.returncode == 1
        assert "the local plot drive drive2 is not mounted at" in proc.stderr
        assert list(drive2.mountpoint.iterdir()) == []  # nothing written into the bare mountpoint
        assert xxh3(second) == digest
    finally:
        farm.drives.remount(drive2)
    assert farm.move().returncode == 0
    assert farm.files("drive2") == sorted([plot.name, second.name])


def test_full_drive_keeps_the_source_and_the_next_reservation_takes_it(farm: LocalFarm, plot_size: int) -> None:
    farm.harvester.run()
    drive1 = next(d for d in farm.drives.drives if d.mountpoint.name == "drive1")
    farm.drives.fill_for_plots(drive1, 0, plot_size)
    plot = copy_plot("pool", farm.out)
    digest = xxh3(plot)
    proc = farm.move()
    assert proc.returncode == 1
    assert "the local plot drive drive1 is full:" in proc.stderr
    assert "1 plot(s) kept where they are until drive_manager.py reserves a drive with room" in proc.stderr
    assert xxh3(plot) == digest and farm.files("drive1") == []
    again = farm.move()  # still full: said once, then only logged
    assert again.returncode == 1 and again.stderr == ""
    farm.harvester.run()
    assert farm.local_drive() == "drive2" and farm.harvester.export()["receive_drive"] == "drive0"
    assert farm.move().returncode == 0
    assert farm.files("drive2") == [plot.name] and xxh3(farm.drive("drive2") / plot.name) == digest


def test_killed_copy_loses_nothing_and_the_next_run_completes_it(farm: LocalFarm) -> None:
    farm.local_moves(max_mb_per_second=SLOW_MB_PER_SECOND)  # time to kill it mid-way
    farm.harvester.run()
    plot = copy_plot("pool", farm.out)
    digest = xxh3(plot)
    part = farm.drive("drive1") / f".{plot.name}.part"
    with farm.move_under_way(plot) as proc:
        os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert part.exists() and not (farm.drive("drive1") / plot.name).exists()
    assert xxh3(plot) == digest
    farm.local_moves(max_mb_per_second=0)
    rerun = farm.move()
    assert rerun.returncode == 0, rerun.stderr
    assert f"removed {part} left by a copy that was killed" in farm.log_text()
    assert farm.files("drive1") == [plot.name]
    assert xxh3(farm.drive("drive1") / plot.name) == digest and not plot.exists()


@contextmanager
def frozen(mountpoint: Path) -> Iterator[None]:
    """Freeze a test drive's filesystem: every write to it blocks in the kernel until it is
    thawed, as on a disk that stopped answering. Always thawed again, even on failure."""
    subprocess.run(["fsfreeze", "--freeze", str(mountpoint)], check=True, timeout=DEADLINE)
    try:
        yield
    finally:
        subprocess.run(["fsfreeze", "--unfreeze", str(mountpoint)], capture_output=True, timeout=DEADLINE)


def test_copy_stalled_on_a_frozen_drive_is_aborted_cleaned_and_retried(farm: LocalFarm) -> None:
    farm.local_moves(max_mb_per_second=SLOW_MB_PER_SECOND, stall_seconds=1)
    farm.harvester.run()
    plot = copy_plot("pool", farm.out)
    digest = xxh3(plot)
    with farm.move_under_way(plot) as proc:
        with frozen(farm.drive("drive1")):
            wait_until("the stall to be detected", lambda: f"{plot.name}: stalled at byte" in farm.log_text())
        _, stderr = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 1
    assert f"FAILED {plot}: stalled: no byte copied for 1 s" in stderr
    assert farm.files("drive1") == []  # the part file was removed once the drive answered
    assert xxh3(plot) == digest
    assert farm.moves() == [(plot.name, "failed")]
    farm.local_moves(max_mb_per_second=0)
    assert farm.move().returncode == 0  # retried on the next run
    assert farm.files("drive1") == [plot.name] and xxh3(farm.drive("drive1") / plot.name) == digest


def test_stalled_copy_is_cleaned_retried_held_and_cleared(farm: LocalFarm) -> None:
    farm.local_moves(stall_seconds=0.3, failures_before_alert=2)
    farm.harvester.run()
    plot = copy_plot("og", farm.out)
    digest = xxh3(plot)
    settings, _ = load_settings(str(farm.harvester.config_path))
    readers: list[GatedReader] = []

    def failure_mails() -> list[Any]:
        return [m for m in farm.mail.received if "failed" in m.message["Subject"]]

    def run_once() -> Any:
        reader = GatedReader()
        readers.append(reader)
        with StateDB(settings.database_path) as db:
            return run_local_moves(settings, db, Notifier(settings.notifications), read=reader), reader

    try:
        for attempt in (1, 2):
            outcome, reader = run_once()
            assert reader.holding.is_set()
            (failed,) = outcome.failed
            assert failed.stalled and "stalled: no byte copied for 0.3 s" in failed.reason
            assert farm.files("drive1") == []  # the part file is gone
            assert xxh3(plot) == digest
            if attempt == 1:
                assert failure_mails() == []
        wait_until("the local_move_failed mail", lambda: failure_mails() != [])
        (mail,) = failure_mails()
        assert mail.message["Subject"] == f"chianas01: moving {plot.name} failed 2 times"
        assert f"--clear-error {plot.name}" in mail.message.get_body(("plain",)).get_content()

        held, reader = run_once()  # held: not even tried
        assert not reader.holding.is_set() and held.failed == [] and [h.plot for h in held.held] == [plot.name]
        assert len(failure_mails()) == 1
    finally:
        for reader in readers:
            reader.gate.set()  # let the abandoned copy threads end

    unknown = farm.move("--clear-error", "plot-k18-nothing.plot")
    assert unknown.returncode == 2 and f"(held plots: {plot.name})" in unknown.stderr
    cleared = farm.move("--clear-error", str(plot))
    assert cleared.returncode == 0 and f"cleared the failures of {plot.name}" in cleared.stdout
    assert farm.move().returncode == 0
    assert farm.files("drive1") == [plot.name] and xxh3(farm.drive("drive1") / plot.name) == digest


def test_usage_alert_fires_once_and_again_only_after_clearing(farm: LocalFarm, tmp_path: Path) -> None:
    with LoopDrives(tmp_path / "scratch", ["plot-tmp"], size_mb=64) as scratch:
        tmp_drive = scratch.drives[0]
        farm.local_moves(temp_directories=[str(tmp_drive.mountpoint)])
        info = os.statvfs(tmp_drive.mountpoint)
        capacity = (info.f_blocks - info.f_bfree + info.f_bavail) * info.f_frsize

        def at(percent: float) -> None:
            scratch.fill(tmp_drive, int(capacity * (100 - percent) / 100))

        def alerts() -> int:
            return sum(str(tmp_drive.mountpoint) in s for s in _subjects(farm.mail))

        sequence = [(95, 1), (96, 1), (85, 1), (50, 1), (85, 1), (95, 2)]
        for percent, expected in sequence:
            at(percent)
            proc = farm.move()
            assert proc.returncode == 0, proc.stderr
            if expected > alerts():
                farm.mail.wait_for(len(farm.mail.received) + 1)
            assert alerts() == expected, f"at {percent}%"
        message = next(m for m in farm.mail.received if str(tmp_drive.mountpoint) in m.message["Subject"])
        assert "temp directory" in message.message.get_body(("plain",)).get_content()


def test_terminated_copy_removes_its_part_file(farm: LocalFarm) -> None:
    farm.local_moves(max_mb_per_second=SLOW_MB_PER_SECOND)
    farm.harvester.run()
    plot = copy_plot("og", farm.out)
    digest = xxh3(plot)
    with farm.move_under_way(plot) as proc:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 130 and "error: interrupted" in stderr
    assert farm.files("drive1") == []  # SIGTERM (unlike SIGKILL) leaves no part file behind
    assert xxh3(plot) == digest


def test_replace_mode_makes_room_by_deleting_exactly_one_old_og_plot(farm: LocalFarm, plot_size: int) -> None:
    farm.config["harvester"].update(replace_non_pool_plots=True, fill_empty_drives_first=False)
    farm.harvester.write_config(farm.config)
    for name in ("drive0", "drive1"):
        old = [copy_plot("og", farm.drive(name)) for _ in range(2)]
        os.utime(old[0], (1_600_000_000, 1_600_000_000))  # the oldest
    oldest = old[0]
    drive1 = next(d for d in farm.drives.drives if d.mountpoint.name == "drive1")
    farm.drives.fill_for_plots(drive1, 0, plot_size)
    farm.harvester.run()
    export = farm.harvester.export()
    assert export["receive_drive"] == "drive0" and export["extra"]["receive_replaces_old_plots"]
    assert farm.local_drive() == "drive1" and export["extra"]["local_replaces_old_plots"]

    og_incoming = copy_plot("og", farm.out)  # an OG plot never replaces another
    proc = farm.move()
    assert proc.returncode == 1 and "the local plot drive drive1 is full" in proc.stderr
    assert og_incoming.exists() and oldest.exists()
    og_incoming.unlink()

    pool = copy_plot("pool", farm.out)
    digest = xxh3(pool)
    assert farm.move().returncode == 0
    assert not oldest.exists()
    assert farm.files("drive1") == sorted([old[1].name, pool.name])  # one OG plot replaced, not two
    assert xxh3(farm.drive("drive1") / pool.name) == digest
    with sqlite3.connect(farm.harvester.state_dir / "state.sqlite3") as conn:
        assert conn.execute("SELECT path FROM replaced_plots").fetchall() == [(str(oldest),)]


def test_a_stall_ends_the_run_and_later_plots_wait(farm: LocalFarm) -> None:
    farm.local_moves(stall_seconds=0.3)
    farm.harvester.run()
    plots = [copy_plot("pool", farm.out), copy_plot("og", farm.out)]
    settings, _ = load_settings(str(farm.harvester.config_path))
    reader = GatedReader()
    try:
        with StateDB(settings.database_path) as db:
            outcome = run_local_moves(settings, db, Notifier(settings.notifications), read=reader)
    finally:
        reader.gate.set()
    assert len(outcome.failed) == 1 and outcome.failed[0].stalled
    assert (logging.INFO, "1 more plot(s) wait for the next run after the stall") in outcome.lines
    assert all(p.exists() for p in plots) and farm.files("drive1") == []
    assert [status for _, status in farm.moves()] == ["failed"]  # the second was not started


def test_copy_renamed_by_a_killed_run_is_finished_where_it_is_not_copied_again(farm: LocalFarm, plot_size: int) -> None:
    from utilities.harvester.local_move_records import SCHEMA, part_recorder
    from utilities.plot_finder import finished_plots

    farm.harvester.run()
    plot = copy_plot("pool", farm.out)
    digest = xxh3(plot)
    # What a run SIGKILLed right after its rename leaves: the plot in place on drive1, its
    # part file recorded in the state database, and the source not yet deleted.
    (farm.drive("drive1") / plot.name).write_bytes(plot.read_bytes())
    settings, _ = load_settings(str(farm.harvester.config_path))
    with StateDB(settings.database_path) as db:
        db.ensure_tables(SCHEMA)
        (found,), _ = finished_plots([str(farm.out)])
        part_recorder(db, found)(farm.drive("drive1") / f".{plot.name}.part")
    # Meanwhile drive1 filled up and drive_manager.py reserved drive2.
    drive1 = next(d for d in farm.drives.drives if d.mountpoint.name == "drive1")
    farm.drives.fill_for_plots(drive1, 0, plot_size)
    farm.harvester.run()
    assert farm.local_drive() == "drive2"
    assert farm.move().returncode == 0
    assert not plot.exists()
    assert farm.files("drive1") == [plot.name] and farm.files("drive2") == []
    assert xxh3(farm.drive("drive1") / plot.name) == digest
    assert "already on the drive, identical" in farm.log_text()


def test_overlapping_runs_and_a_claimed_plot_are_left_alone(farm: LocalFarm) -> None:
    import fcntl

    farm.harvester.run()
    plot = copy_plot("pool", farm.out)
    run_lock = farm.harvester.state_dir / "move_local_plots.lock"
    with open(run_lock, "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another move_local_plots.py run is busy
        busy = farm.move()
    assert busy.returncode == 0 and busy.stdout == "" and busy.stderr == ""
    assert plot.exists() and farm.files("drive1") == []
    claim = farm.harvester.state_dir / "sending" / f"{plot.name}.lock"
    claim.parent.mkdir(parents=True, exist_ok=True)
    with open(claim, "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # plot_manager.py is sending this very plot
        claimed = farm.move()
    assert claimed.returncode == 0 and plot.exists() and farm.files("drive1") == []
    assert farm.move().returncode == 0 and farm.files("drive1") == [plot.name]


def test_a_plot2_moves_and_a_plot_group_stays_but_is_counted(farm: LocalFarm) -> None:
    """Proof-of-space v2: a .plot2 is a finished plot like any other; a .gplot (a plot group,
    format not settled) is never moved, but counted wherever it lies on a plot drive."""
    farm.harvester.run()
    assert farm.local_drive() == "drive1"
    stem = "plot-k28-2026-01-01-00-00-"
    plot2 = farm.out / (stem + "1" * 64 + ".plot2")
    plot2.write_bytes(b"pos2" + bytes([1]) + bytes([0x11]) * 32 + bytes([28, 2]) + bytes(112) + os.urandom(256 * 1024))
    digest = xxh3(plot2)
    group = farm.out / (stem + "2" * 64 + ".gplot")
    group.write_bytes(b"PoS2" + os.urandom(256 * 1024))
    on_drive = farm.drive("drive2") / (stem + "3" * 64 + ".gplot")
    on_drive.write_bytes(group.read_bytes())
    proc = farm.move()
    assert proc.returncode == 0, proc.stderr
    assert farm.files("drive1") == [plot2.name] and xxh3(farm.drive("drive1") / plot2.name) == digest
    assert not plot2.exists() and group.exists()
    assert f"not moving {group}: a plot group (.gplot)" in farm.log_text()
    farm.harvester.run()
    drives = {d["name"]: d for d in farm.harvester.export()["drives"]}
    assert (drives["drive1"]["plots_pool"], drives["drive1"]["plots_unknown"]) == (1, 0)
    assert (drives["drive2"]["plots_pool"], drives["drive2"]["plots_unknown"]) == (0, 1)
    assert farm.move().returncode == 0 and group.exists() and farm.files("drive1") == [plot2.name]
