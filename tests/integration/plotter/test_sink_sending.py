"""The plotter's sending run against harvesters that are plot sinks: the real receive_plot.sh
(as drive_manager.py renders it, with a receive set and a claims directory) started by a local
shell as sshd would, the real receive_plot.py, loopback streams, real drive claims.

What must hold: plots go through sessions and land intact, each source deleted after its OK; a
harvester takes as many sessions at once as its export says, each on its own drive; a receiver
that answers busy is no failure (no record, no failure count) and the plot goes once a drive is
free again, or waits for the next run; an older harvester still gets one receiver per plot.
The export is the only thing not read over SSH: the tests hand the run the snapshot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.hashing import xxh3
from tests.support.plotmaker import plot_name
from tests.support.smtp_server import free_port
from tests.support.waiting import DEADLINE, wait_until
from utilities.config import Settings
from utilities.harvester.drives import DriveLocation
from utilities.harvester.receive_script import SetDrive, render_receive_script
from utilities.harvester_export import DriveSummary, HarvesterSnapshot, ReceiveSetDrive
from utilities.notify import Notifier
from utilities.plot_finder import FinishedPlot
from utilities.plots import PlotHeader
from utilities.plotter.sending import PlotterOutcome, plan_transfers, send_planned
from utilities.settings.farm import HarvesterTarget
from utilities.state import StateDB
from utilities.transfer.channel import ExecFn, LocalExec
from utilities.transfer.claims import DriveClaim, receives_in_flight, try_claim
from utilities.transfer.protocol import RECEIVER_EXIT_CODES

SSH_ENV = {"SSH_CLIENT": "127.0.0.1 40022 22", "SSH_CONNECTION": "127.0.0.1 40022 127.0.0.1 22"}
BUSY_EXIT = RECEIVER_EXIT_CODES["busy"]
RETRY = 0.2  # the dispatch's retry interval after a busy answer, short for the tests


class SinkHarvester:
    """A harvester with ``drives`` plot drives (directories), its claims directory and the
    receive_plot.sh drive_manager.py would write for that receive set."""

    def __init__(self, root: Path, name: str, drives: int, per_drive: int = 1, resume_chunk: int | None = None) -> None:
        self.name = name
        self.root = root / name
        self.claims = self.root / "state" / "receiving"
        self.claims.mkdir(parents=True)
        self.locations = []
        for i in range(drives):
            plots = self.root / f"drive{i}" / "plots"
            plots.mkdir(parents=True)
            self.locations.append(DriveLocation(f"drive{i}", str(plots.parent), f"/dev/test{i}", "ext4", (str(plots),)))
        self.script = self.root / "receive_plot.sh"
        self.script.write_text(render_receive_script(
            [SetDrive(loc) for loc in self.locations], name, root / "config.yaml", self.claims, time.time(),
            python=sys.executable, idle_timeout=DEADLINE, per_drive=per_drive, resume_chunk=resume_chunk,
        ))  # fmt: skip
        self.script.chmod(0o755)
        self.exec = LocalExec(env={**os.environ, **SSH_ENV})

    def snapshot(self, receives_available: int | None, protocol: int = 2, free_slots: int = 100) -> HarvesterSnapshot:
        drives = tuple(
            DriveSummary(loc.name, loc.mountpoint, loc.device, None, "ext4", 10**12, 10**12, 0, 0, 0, 0, free_slots,
                         False, True)
            for loc in self.locations
        )  # fmt: skip
        return HarvesterSnapshot(
            self.name, time.time(), 10**6, drives, receive_drive=self.locations[0].name,
            receive_set=tuple(ReceiveSetDrive(loc.name) for loc in self.locations),
            receives_available=receives_available, receive_protocol=protocol,
        )  # fmt: skip

    def landed(self) -> dict[str, str]:
        """Plot name -> content hash, over every drive; fails on a part file left behind."""
        found = {}
        for loc in self.locations:
            for path in Path(loc.receive_dir).iterdir():
                assert not path.name.endswith(".part"), path
                found[path.name] = xxh3(path)
        return found

    def drive_of(self, plot: str) -> str:
        (drive,) = [loc.name for loc in self.locations if (Path(loc.receive_dir) / plot).exists()]
        return drive

    def receivers_started(self) -> int:
        return len(self.exec.started)

    def close(self) -> None:
        for process in self.exec.started:
            process.kill()


class Run:
    """The plotter side: settings, state database and plots for send_planned."""

    def __init__(self, root: Path, harvesters: list[SinkHarvester], **transfer: object) -> None:
        self.root = root
        self.harvesters = {h.name: h for h in harvesters}
        self.plot_dir = root / "plotter" / "plots"
        self.plot_dir.mkdir(parents=True)
        self.settings = Settings.model_validate({
            "hostname": "plotter0",
            "state_dir": str(root / "plotter" / "state"),
            "plotter": {"transfer": {"port_base": free_port(), "port_count": 40, "stream_with": "python",
                                     "idle_timeout_seconds": DEADLINE, **transfer}},
            "farm": {"harvesters": [{"name": h.name, "host": "127.0.0.1", "receive_script": str(h.script)}
                                    for h in harvesters]},
        })  # fmt: skip
        self.db = StateDB(self.settings.database_path)

    def make_plots(self, count: int, size: int = 2 << 20) -> dict[str, str]:
        made = {}
        for i in range(count):
            path = self.plot_dir / plot_name(32, os.urandom(32))
            path.write_bytes(os.urandom(size + i))
            os.utime(path, (1000 + i, 1000 + i))  # oldest first, in the order made
            made[path.name] = xxh3(path)
        return made

    def plots(self) -> list[FinishedPlot]:
        paths = sorted(self.plot_dir.iterdir(), key=lambda p: p.stat().st_mtime)
        return [FinishedPlot(p, p.stat().st_size, p.stat().st_mtime, PlotHeader("v1", 32, "ab" * 32, 128, "og", 0))
                for p in paths]

    def exec_for(self, target: HarvesterTarget) -> ExecFn:
        return self.harvesters[target.name].exec

    def send(self, snapshots: dict[str, HarvesterSnapshot],
             progress: Callable[[FinishedPlot, str], Callable[[int, int], None] | None] | None = None) -> PlotterOutcome:
        outcome = PlotterOutcome()
        transfer = self.settings.plotter.transfer
        outcome.planned, outcome.unplaced = plan_transfers(self.plots(), snapshots, "fill",
                                                           transfer.max_concurrent_transfers)
        send_planned(self.settings, self.db, Notifier(self.settings.notifications), snapshots, outcome,
                     progress=progress, exec_for=self.exec_for, retry=RETRY)
        return outcome

    def failures_recorded(self) -> int:
        return sum(1 for r in self.db.transfers_since(0) if not r.ok)

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., tuple[Run, list[SinkHarvester]]]]:
    made: list[SinkHarvester | Run] = []

    def build(drives: list[int], **transfer: object) -> tuple[Run, list[SinkHarvester]]:
        sinks = [SinkHarvester(tmp_path, f"h{i}", n) for i, n in enumerate(drives)]
        run = Run(tmp_path, sinks, **transfer)
        made.extend([*sinks, run])
        return run, sinks

    yield build
    for thing in reversed(made):
        thing.close()


def test_ten_plots_through_one_session_land_intact_and_their_sources_go(make) -> None:
    run, (sink,) = make([1])
    plots = run.make_plots(10)
    outcome = run.send({"h0": sink.snapshot(receives_available=1)})
    assert [r.ok for _, r in outcome.results] == [True] * 10, [r.reason for _, r in outcome.results]
    assert sink.landed() == plots
    assert list(run.plot_dir.iterdir()) == []
    assert sink.receivers_started() == 1  # one receiver took all ten
    assert [r.ok for r in run.db.transfers_since(0)] == [True] * 10
    assert outcome.waiting == {} and outcome.unplaced == []


def test_one_session_per_drive_at_once_when_the_harvester_has_receives_available(make) -> None:
    run, (sink,) = make([4], max_concurrent_transfers=4)
    plots = run.make_plots(8)
    seen: list[list[str]] = []
    # The first plot of every worker waits mid-stream until four streams run at once; then the
    # drives being received onto are read from the claims, as -pr reads them.
    barrier = threading.Barrier(4, action=lambda: seen.append(sorted(r.drive for r in receives_in_flight(sink.claims))))
    waited: set[str] = set()
    lock = threading.Lock()

    def progress(plot: FinishedPlot, harvester: str) -> Callable[[int, int], None]:
        def tick(sent: int, total: int) -> None:
            with lock:
                first = len(waited) < 4 and plot.name not in waited
                if first:
                    waited.add(plot.name)
            if first:
                barrier.wait(DEADLINE)
        return tick

    outcome = run.send({"h0": sink.snapshot(receives_available=4)}, progress)
    assert all(r.ok for _, r in outcome.results) and len(outcome.results) == 8
    assert seen == [["drive0", "drive1", "drive2", "drive3"]]  # four receives, one per drive
    assert sink.landed() == plots
    assert sink.receivers_started() == 4
    # A session keeps its drive: every plot of one worker (its own ports) is on one drive, and
    # no two workers shared a drive.
    drives_by_worker: dict[int, set[str]] = {}
    for planned, result in outcome.results:
        drives_by_worker.setdefault(planned.slot, set()).add(sink.drive_of(result.name))
    assert all(len(d) == 1 for d in drives_by_worker.values())
    assert len(set.union(*drives_by_worker.values())) == len(drives_by_worker)


def test_sessions_spread_over_harvesters_by_their_receives_available(make) -> None:
    run, (a, b) = make([2, 2], max_concurrent_transfers=3)
    plots = run.make_plots(6)
    outcome = run.send({"h0": a.snapshot(receives_available=1), "h1": b.snapshot(receives_available=2)})
    assert all(r.ok for _, r in outcome.results)
    assert {**a.landed(), **b.landed()} == plots
    assert a.receivers_started() <= 1 and b.receivers_started() <= 2


def test_a_busy_receiver_is_no_failure_and_the_plot_goes_once_a_drive_is_free(make) -> None:
    run, (sink,) = make([1])
    plots = run.make_plots(1)
    held: DriveClaim | None = try_claim(sink.claims, "drive0")  # another plotter's receive
    assert held is not None
    result: list[PlotterOutcome] = []
    sender = threading.Thread(target=lambda: result.append(run.send({"h0": sink.snapshot(receives_available=1)})))
    sender.start()
    try:
        wait_until("a receiver to answer busy",
                   lambda: any(p.proc.poll() == BUSY_EXIT for p in sink.exec.started))
        assert run.failures_recorded() == 0
        held.release()
        held = None
        sender.join(DEADLINE)
        assert not sender.is_alive()
    finally:
        if held is not None:
            held.release()
        sender.join(DEADLINE)
    (outcome,) = result
    assert [r.ok for _, r in outcome.results] == [True]  # the busy answers are not results
    assert outcome.failures == 0 and outcome.waiting == {}
    assert sink.landed() == plots
    assert run.failures_recorded() == 0 and len(run.db.transfers_since(0)) == 1
    assert sink.receivers_started() >= 2


def test_busy_for_longer_than_busy_wait_leaves_the_plot_for_the_next_run(make) -> None:
    run, (sink,) = make([1], busy_wait_seconds=1)
    plots = run.make_plots(2)
    held = try_claim(sink.claims, "drive0")
    assert held is not None
    try:
        outcome = run.send({"h0": sink.snapshot(receives_available=1)})
    finally:
        held.release()
    assert outcome.results == [] and outcome.failures == 0
    assert set(outcome.waiting) == set(plots) and all("busy" in why for why in outcome.waiting.values())
    assert run.failures_recorded() == 0
    assert sorted(p.name for p in run.plot_dir.iterdir()) == sorted(plots)  # sources kept
    assert sink.landed() == {}


def test_an_older_harvester_gets_one_receiver_per_plot(make) -> None:
    run, (sink,) = make([1], max_concurrent_transfers=2)
    plots = run.make_plots(3)
    outcome = run.send({"h0": sink.snapshot(receives_available=None, protocol=1)})
    assert all(r.ok for _, r in outcome.results) and len(outcome.results) == 3
    assert sink.landed() == plots
    assert sink.receivers_started() == 3


def test_a_plot_another_run_is_sending_is_left_alone(make) -> None:
    from utilities.locking import exclusive_lock

    run, (sink,) = make([1])
    plots = run.make_plots(2)
    first = run.plots()[0]
    with exclusive_lock(run.settings.state_path / "sending" / f"{first.name}.lock", "a manual --send"):
        outcome = run.send({"h0": sink.snapshot(receives_available=1)})
    by_name = {r.name: r for _, r in outcome.results}
    assert by_name[first.name].reason == "another run is sending it"
    assert set(sink.landed()) == set(plots) - {first.name}
    assert first.path.exists()


# -- the production path: one paramiko connection per harvester, a real sshd on loopback ----------

SSHD = "/usr/sbin/sshd"


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, Path, Path, Path, psutil.Process]]:
    """A private sshd on 127.0.0.1 (foreground: its pid is ours): port, known_hosts, user key,
    its log (each accepted connection is a line) and its process (a child per connection)."""
    if os.geteuid() != 0 or not os.path.exists(SSHD) or not os.path.isdir("/run/sshd"):
        pytest.skip("needs root, openssh-server and /run/sshd")
    keys = tmp_path / "ssh"
    keys.mkdir()
    for key in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / key)], check=True)
    shutil.copyfile(keys / "user.pub", keys / "authorized_keys")
    port = free_port()
    known_hosts = keys / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {(keys / 'host.pub').read_text().split(' ')[0]} "
                           f"{(keys / 'host.pub').read_text().split(' ')[1]}\n")
    config = keys / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1:{port}\nHostKey {keys / 'host'}\nAuthorizedKeysFile {keys / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "UsePAM no\nStrictModes no\nMaxSessions 32\n"
    )
    log = keys / "sshd.log"
    with open(log, "wb") as errors:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=errors)
    try:
        wait_until("sshd to listen", lambda: b"Server listening" in log.read_bytes() or proc.poll() is not None)
        assert proc.poll() is None, log.read_text()
        yield port, known_hosts, keys / "user", log, psutil.Process(proc.pid)
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait(DEADLINE)


def test_one_ssh_connection_per_harvester_carries_every_session_of_the_run(make, sshd) -> None:
    port, known_hosts, user_key, log, daemon = sshd
    run, (sink,) = make([3], max_concurrent_transfers=3)
    run.settings = Settings.model_validate({
        **run.settings.model_dump(mode="json"),
        "farm": {"ssh": {"key_file": str(user_key), "known_hosts": str(known_hosts), "connect_timeout_seconds": DEADLINE},
                 "harvesters": [{"name": "h0", "host": "127.0.0.1", "ssh_port": port, "user": "root",
                                 "receive_script": str(sink.script)}]},
    })  # fmt: skip
    plots = run.make_plots(9)
    outcome = PlotterOutcome()
    snapshots = {"h0": sink.snapshot(receives_available=3)}
    outcome.planned, _ = plan_transfers(run.plots(), snapshots, "fill", 3)
    send_planned(run.settings, run.db, Notifier(run.settings.notifications), snapshots, outcome, retry=RETRY)
    assert all(r.ok for _, r in outcome.results) and len(outcome.results) == 9, [r.reason for _, r in outcome.results]
    assert sink.landed() == plots
    assert log.read_text().count("Accepted publickey") == 1, log.read_text()  # one connection, three sessions
    wait_until("the run's connection to close", lambda: not daemon.children())


def test_a_transfer_killed_mid_plot_resumes_in_the_next_run_and_history_counts_the_bytes_saved(tmp_path: Path) -> None:
    """Issue 13 through the whole sending run: the receiver is SIGKILLed mid-plot (a failure
    recorded, the source kept); the next run sends only what the harvester's kept part lacks,
    lands the identical plot, deletes the source, and its record says how many bytes it saved."""
    from utilities.transfer.journal import read_journal
    from utilities.transfer.part_files import open_directory, part_name

    chunk = 256 * 1024
    sink = SinkHarvester(tmp_path, "h0", 1, resume_chunk=chunk)
    run = Run(tmp_path, [sink])
    try:
        made = run.make_plots(1, size=6 << 20)
        (name,) = made
        drive_dir = Path(sink.locations[0].receive_dir)

        def held() -> int:
            fd = open_directory(drive_dir)
            try:
                journal, _ = read_journal(fd, part_name(name))
            finally:
                os.close(fd)
            return len(journal.chunks) if journal is not None else 0

        killed: list[int] = []

        def progress(_plot: FinishedPlot, _harvester: str) -> Callable[[int, int], None]:
            def tick(sent: int, _total: int) -> None:
                if sent >= 3 << 20 and not killed:
                    wait_until("chunks in the journal", lambda: held() >= 4)
                    for shell in sink.exec.started:
                        for proc in [psutil.Process(shell.pid), *psutil.Process(shell.pid).children(recursive=True)]:
                            if "receive_plot.py" in " ".join(proc.cmdline()):
                                proc.kill()
                                killed.append(proc.pid)
            return tick

        snapshots = {"h0": sink.snapshot(1, protocol=3)}
        first = run.send(snapshots, progress=progress)
        assert killed and first.failures and (run.plot_dir / name).exists()
        kept = held()
        assert kept >= 4 and (drive_dir / part_name(name)).exists()

        second = run.send(snapshots)
        assert not second.failures and sink.landed() == made
        assert not (run.plot_dir / name).exists()
        records = run.db.transfers_since(0)
        assert [r.ok for r in records] == [False, True]
        assert records[1].saved == kept * chunk and records[1].bytes == (6 << 20)
    finally:
        sink.close()
        run.close()


def test_the_retry_of_a_killed_transfer_goes_back_to_the_harvester_holding_its_part(tmp_path: Path) -> None:
    """h1 had the most room when the plot went there and its receiver was killed; in the next
    run h0 has more room, yet the plot goes back to h1 and only the rest is sent."""
    from utilities.transfer.part_files import part_name

    chunk = 256 * 1024
    sinks = [SinkHarvester(tmp_path, f"h{i}", 1, resume_chunk=chunk) for i in range(2)]
    run = Run(tmp_path, sinks)
    try:
        made = run.make_plots(1, size=6 << 20)
        (name,) = made
        part = Path(sinks[1].locations[0].receive_dir) / part_name(name)
        journal = part.with_name(part.name + ".journal")
        killed: list[int] = []

        def progress(_plot: FinishedPlot, _harvester: str) -> Callable[[int, int], None]:
            def tick(sent: int, _total: int) -> None:
                if sent >= 3 << 20 and not killed:
                    wait_until("a journal on h1", journal.exists)
                    for shell in sinks[1].exec.started:
                        for proc in [psutil.Process(shell.pid), *psutil.Process(shell.pid).children(recursive=True)]:
                            if "receive_plot.py" in " ".join(proc.cmdline()):
                                proc.kill()
                                killed.append(proc.pid)
            return tick

        first = run.send({"h0": sinks[0].snapshot(1, protocol=3, free_slots=5),
                          "h1": sinks[1].snapshot(1, protocol=3, free_slots=50)}, progress=progress)
        assert killed and first.failures and part.exists()
        second = run.send({"h0": sinks[0].snapshot(1, protocol=3, free_slots=50),
                           "h1": sinks[1].snapshot(1, protocol=3, free_slots=5)})
        assert not second.failures and sinks[1].landed() == made and sinks[0].landed() == {}
        records = run.db.transfers_since(0)
        assert [(r.harvester, r.ok) for r in records] == [("h1", False), ("h1", True)] and records[1].saved > 0
    finally:
        for sink in sinks:
            sink.close()
        run.close()
