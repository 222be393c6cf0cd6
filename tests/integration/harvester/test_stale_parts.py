"""Issue 10, "A slot lost for good": the minute pass removes part files no writer holds.

Real loop drives, the real drive_manager.py cron pass in a subprocess, and a real receiver
(the receive_plot.sh that pass wrote, with its flock) fed over loopback and SIGKILLed mid-plot.
Waits are on real conditions (the receiver's READY line, the sent bytes in its part file,
process exits), each with the one generous deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.support.harvester_env import Harvester, harvester_config
from tests.support.loopdrives import LoopDrive, LoopDrives, requires_root_and_loop
from tests.support.plotmaker import plot_name
from tests.support.smtp_server import free_port
from tests.support.waiting import DEADLINE, wait_until

pytestmark = [pytest.mark.root, requires_root_and_loop]

PLOT = 8 * 1024 * 1024  # the farm's plot size here: a 64 MiB drive holds 7
SENT = 3 * 1024 * 1024  # what the plotter sends before its receiver is killed
WRITTEN = 1024 * 1024  # what must be in the part file by then (the receiver reads in 256 KiB steps)
LOOPBACK = "127.0.0.1"
DRIVES = ["enclosure0/front/column0/drive0", "enclosure0/front/column0/drive1", "enclosure0/front/column0/drive2"]
RECEIVER = "receive_plot.py"


@dataclass
class Farm:
    harvester: Harvester
    loops: LoopDrives

    def drive(self, index: int) -> LoopDrive:
        return self.loops.drives[index]

    def log_text(self) -> str:
        return (self.harvester.state_dir / "logs" / "drive_manager.log").read_text()

    def removed(self) -> dict[str, int]:
        return self.harvester.export()["stale_parts_removed_24h"]

    def free_slots(self, name: str) -> int:
        return next(d["free_slots"] for d in self.harvester.export()["drives"] if d["name"] == name)


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    root = tmp_path / "farm"
    root.mkdir()
    with LoopDrives(root / "mnt", DRIVES, size_mb=64) as loops:
        harvester = Harvester(root)
        harvester.write_config(harvester_config(root, [str(root / "mnt" / "enclosure*/*/column*/drive*")], PLOT))
        yield Farm(harvester, loops)


class Receiver:
    """The harvester's own receive_plot.sh, started as a plotter's SSH session would start it."""

    def __init__(self, script: Path, name: str, size: int) -> None:
        env = {**os.environ, "SSH_CLIENT": f"{LOOPBACK} 40022 22", "SSH_CONNECTION": f"{LOOPBACK} 40022 {LOOPBACK} 22"}
        self.proc = subprocess.Popen(
            ["sh", str(script), name, str(size), str(free_port())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )
        self._buffer = b""

    def line(self) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + DEADLINE
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line from the receiver; had {self._buffer!r}"
            if select.select([self.proc.stdout], [], [], remaining)[0]:
                data = os.read(self.proc.stdout.fileno(), 4096)
                assert data, f"the receiver closed stdout; had {self._buffer!r}"
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def ready_port(self) -> int:
        kind, _, port = self.line().partition(" ")
        assert kind == "READY", (kind, port)
        return int(port)

    def receiver_pid(self) -> int:
        """receive_plot.py itself: the script's sh execs it (so it is the process started)."""
        shell = psutil.Process(self.proc.pid)
        for child in [shell, *shell.children(recursive=True)]:
            if any(arg.endswith(RECEIVER) for arg in child.cmdline()[:2]):
                return child.pid
        raise AssertionError("receive_plot.py is not running")

    def stop(self) -> None:
        """Kill, by pid, whatever is left of the tree this test started."""
        with contextlib.suppress(psutil.NoSuchProcess):
            tree = [*psutil.Process(self.proc.pid).children(recursive=True), psutil.Process(self.proc.pid)]
            for process in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
        self.proc.wait(timeout=DEADLINE)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]


@pytest.fixture
def receivers() -> Iterator[Callable[[Path, str, int], Receiver]]:
    started: list[Receiver] = []

    def start(script: Path, name: str, size: int) -> Receiver:
        started.append(Receiver(script, name, size))
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


def holds(part: Path, data: bytes) -> bool:
    """The part file begins with ``data``: the receiver has written that much of the stream."""
    with open(part, "rb") as handle:
        return handle.read(len(data)) == data


def report_line(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(label))


@contextlib.contextmanager
def flocked(path: Path) -> Iterator[None]:
    """Hold ``path``'s flock (a file or a directory) as a living writer holds it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_a_killed_receivers_part_is_removed_and_its_drive_receives_again(farm: Farm, receivers) -> None:
    harvester, a = farm.harvester, farm.drive(0)
    farm.loops.fill_for_plots(a, 1, PLOT)  # drive0 has exactly one free slot
    harvester.run()
    assert harvester.receive_dir() == str(a.mountpoint) and farm.free_slots("drive0") == 1

    name = plot_name(32, os.urandom(32))
    part = a.mountpoint / f".{name}.part"
    receiver = receivers(harvester.receive_script, name, PLOT)
    data = os.urandom(SENT)
    with socket.create_connection((LOOPBACK, receiver.ready_port()), timeout=DEADLINE) as stream:
        stream.sendall(data)
        wait_until("the receiver to write what was sent into its part file", lambda: holds(part, data[:WRITTEN]))

        # While it lives its part (which takes the drive's only slot) stays, whatever the pass
        # thinks of the drive; the receive set moves on at once (the receiver keeps its own).
        harvester.run()
        assert harvester.receive_dir() == str(farm.drive(1).mountpoint)
        assert part.exists() and farm.removed() == {"files": 0, "bytes": 0}
        assert farm.free_slots("drive0") == 0

        pid = receiver.receiver_pid()
        os.kill(pid, signal.SIGKILL)
        assert receiver.proc.wait(timeout=DEADLINE) != 0
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert part.exists()  # SIGKILL: nobody removed it, and no receiver will come back to drive0

    harvester.run()
    assert not part.exists()
    assert harvester.receive_dir() == str(a.mountpoint)  # the slot is back, in this very pass
    assert farm.free_slots("drive0") == 1
    removed = farm.removed()
    assert removed["files"] == 1 and removed["bytes"] >= PLOT  # preallocated: the whole plot
    assert f"removed stale part file {part} on drive0: " in farm.log_text()

    report = json.loads(harvester.run("-pr", "--json").stdout)
    assert (report["stale_parts_removed_24h"], report["stale_part_bytes_freed_24h"]) == (1, removed["bytes"])
    line = report_line(harvester.run("-pr").stdout, "Stale Part Files Removed (24 h):")
    assert line.endswith(" 1 (8.0 MiB freed)"), line

    harvester.run()  # nothing more to remove: the figures are the day's, not counted twice
    assert farm.removed() == removed


def test_parts_of_living_writers_stay_and_the_rest_go_on_every_drive(farm: Farm) -> None:
    harvester = farm.harvester
    offline, busy_dir, held_dir = (farm.drive(i).mountpoint for i in range(3))
    harvester.run("-off", "drive0")
    parts = {path: os.urandom(WRITTEN) for path in (
        offline / f".{plot_name(32, os.urandom(32))}.part",  # a dead writer's, on a drive in maintenance
        busy_dir / f".{plot_name(32, os.urandom(32))}.part",  # dead, but a writer is taking its turn there
        held_dir / f".{plot_name(32, os.urandom(32))}.part",  # a living local move's (it holds the flock)
    )}
    for path, data in parts.items():
        path.write_bytes(data)
    on_offline, in_busy_dir, held = parts
    not_ours = held_dir / ".not-a-plot.part"
    not_ours.write_bytes(b"someone else's")

    with flocked(held):
        with flocked(busy_dir):
            harvester.run()
            assert not on_offline.exists()  # offline drives are swept too: the part is garbage either way
            assert in_busy_dir.exists()  # never raced with a writer creating its part: left for the next pass
            assert held.read_bytes() == parts[held]
            assert farm.removed()["files"] == 1
        # Nothing changed in these directories since: the pass remembers their part files.
        harvester.run()
        assert not in_busy_dir.exists() and held.read_bytes() == parts[held]
        assert farm.removed()["files"] == 2
    harvester.run()  # the local move died and its lock with it
    assert not held.exists() and not_ours.exists()
    removed = farm.removed()
    assert removed["files"] == 3 and removed["bytes"] >= 3 * WRITTEN
    log = farm.log_text()
    assert all(f"removed stale part file {path} on " in log for path in parts)
    assert f"{on_offline} on drive0:" in log and f"{held} on drive2:" in log
