"""The harvester's receiver with a receive set: real receive_plot.py processes started by
``/bin/sh -c`` as sshd starts receive_plot.sh (pipes are the control channel), real sockets on
127.0.0.1, real drive claims, temporary directories (and, as root, tiny tmpfs mounts) as drives.

What must hold: each plot of a session lands intact, under its name, on the drive the session
holds; a drive claimed by another receiver is skipped and a full one given back for the next;
all drives claimed is "busy", no drive with room is "no space"; the claim shows the plot and its
progress while it streams and is gone when the receiver is; a session that is killed or fails
leaves no part file it could remove and never a held claim; every bad command line is one
ERROR line.  Waits are on protocol lines, process exits and claims, each with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import xxhash

from tests.support.hashing import sha256
from tests.support.plotmaker import cached_plot, copy_plot, plot_name
from tests.support.smtp_server import free_port
from tests.support.tmpfs_drives import TmpfsDrives, requires_root_and_tmpfs
from tests.support.waiting import DEADLINE, wait_until
from utilities.transfer.channel import LocalExec, LocalProcess
from utilities.transfer.claims import DriveClaim, ReceiveInFlight, receives_in_flight, try_claim
from utilities.transfer.intake import RECV_LOW_WATER
from utilities.transfer.part_files import part_name
from utilities.transfer.protocol import (
    ERR_BAD_NAME,
    ERR_BUSY,
    ERR_MISMATCH,
    ERR_NO_SPACE,
    ERR_PROTOCOL,
    ERR_USAGE,
    RECEIVER_EXIT_CODES,
    ReceiverReply,
    format_plot,
    format_verify,
    parse_receiver_line,
)
from utilities.transfer.writeback import RECEIVE_WINDOW

REPO = Path(__file__).resolve().parents[3]
RECEIVER = REPO / "receive_plot.py"
LOOPBACK = "127.0.0.1"
SSH_ENV = {"SSH_CLIENT": f"{LOOPBACK} 40022 22", "SSH_CONNECTION": f"{LOOPBACK} 40022 {LOOPBACK} 22"}
MIB = 1024 * 1024


def drives_json(dirs: list[Path], replace: tuple[bool, ...] = ()) -> str:
    return json.dumps(
        [{"name": f"d{n}", "dir": str(d), "replace": n < len(replace) and replace[n]} for n, d in enumerate(dirs)]
    )


class Receiver:
    """receive_plot.py as sshd would run it (``/bin/sh -c``), talked to as a plotter would."""

    def __init__(self, process: LocalProcess) -> None:
        self.process = process
        self._buffer = b""

    @property
    def pid(self) -> int:
        """receive_plot.py's pid: the shell's child (or the shell itself, if it exec'd it)."""

        def find() -> int | None:
            shell = psutil.Process(self.process.pid)
            for proc in [shell, *shell.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    if proc.cmdline()[:2] == [sys.executable, str(RECEIVER)]:
                        return proc.pid
            return None

        return wait_until("receive_plot.py to run", find)

    def line(self) -> str:
        """The next stdout line; fails the test if none comes within the deadline."""
        fd = self.process.proc.stdout.fileno()  # type: ignore[union-attr]
        deadline = time.monotonic() + DEADLINE
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line from the receiver within {DEADLINE} s"
            if select.select([fd], [], [], remaining)[0]:
                data = os.read(fd, 4096)
                assert data, f"receiver closed stdout; had {self._buffer!r}"
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def reply(self) -> ReceiverReply:
        return parse_receiver_line(self.line())

    def rest_of_stdout(self) -> bytes:
        """Everything still to come on stdout, up to its end (the receiver exits)."""
        fd = self.process.proc.stdout.fileno()  # type: ignore[union-attr]
        data = self._buffer
        while chunk := os.read(fd, 4096):
            data += chunk
        self._buffer = b""
        return data

    def send(self, line: str) -> None:
        self.process.stdin.write(f"{line}\n".encode())
        self.process.stdin.flush()

    def close_stdin(self) -> None:
        self.process.close_stdin()

    def exit_status(self) -> int:
        status = self.process.wait(DEADLINE)
        assert status is not None, "the receiver did not exit"
        return status

    def start_plot(self, name: str, size: int) -> int:
        """PLOT, then READY: the port to stream to."""
        self.send(format_plot(name, size))
        reply = self.reply()
        assert reply.kind == "READY" and reply.port is not None, reply
        return reply.port

    def finish_plot(self, data: bytes) -> ReceiverReply:
        self.send(format_verify(len(data), xxhash.xxh3_128(data).hexdigest()))
        return self.reply()

    def send_plot(self, name: str, data: bytes) -> None:
        """One whole plot of a session, which must end in OK."""
        port = self.start_plot(name, len(data))
        with socket.create_connection((LOOPBACK, port), timeout=DEADLINE) as conn:
            conn.sendall(data)
        reply = self.finish_plot(data)
        assert reply.kind == "OK" and reply.hexdigest == xxhash.xxh3_128(data).hexdigest(), reply


class Sink:
    """A harvester's receive set (directories), its claims directory and the receivers started."""

    def __init__(self, root: Path, drives: int = 2) -> None:
        self.root = root
        self.dirs = [root / f"drive{n}" for n in range(drives)]
        for path in self.dirs:
            path.mkdir(parents=True, exist_ok=True)
        self.claims = root / "state" / "receiving"
        self.exec = LocalExec(env={**os.environ, **SSH_ENV})
        self.held: list[DriveClaim] = []

    def command(self, *words: str, dirs: list[Path] | None = None, replace: tuple[bool, ...] = (),
                per_drive: int = 1, idle_timeout: float = DEADLINE) -> str:
        argv = [sys.executable, str(RECEIVER), "--config", "/nonexistent/config.yaml",
                "--drives", drives_json(dirs or self.dirs, replace), "--claims", str(self.claims),
                "--per-drive", str(per_drive), "--idle-timeout", f"{idle_timeout:g}", *words]
        return shlex.join(argv)

    def start(self, *words: str, **options: object) -> Receiver:
        return Receiver(self.exec(self.command(*words, **options)))  # type: ignore[arg-type]

    def session(self, **options: object) -> Receiver:
        return self.start("--session", str(free_port()), **options)

    def hold(self, drive: str) -> DriveClaim:
        """Claim a drive as another receiver would."""
        claim = try_claim(self.claims, drive)
        assert claim is not None, f"{drive} is already claimed"
        self.held.append(claim)
        return claim

    def in_flight(self) -> dict[str, ReceiveInFlight]:
        """The claims held by receivers (not by this test), by drive."""
        return {r.drive: r for r in receives_in_flight(self.claims) if r.pid != os.getpid()}

    def contents(self) -> list[list[str]]:
        return [sorted(os.listdir(path)) for path in self.dirs]

    def close(self) -> None:
        for process in self.exec.started:
            process.kill()
        for claim in self.held:
            claim.release()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    made = Sink(tmp_path)
    yield made
    made.close()


def plot_bytes(size: int) -> tuple[str, bytes]:
    return plot_name(32, os.urandom(32)), os.urandom(size)


# -- sessions ------------------------------------------------------------------------------------


def test_a_session_lands_each_plot_intact_on_the_drive_it_holds(sink: Sink) -> None:
    receiver = sink.session()
    plots = [plot_bytes(size) for size in (MIB, 3 * MIB, RECEIVE_WINDOW + 12345, 12345)]
    for name, data in plots:
        receiver.send_plot(name, data)
        assert (sink.dirs[0] / name).read_bytes() == data
        between = sink.in_flight()
        assert list(between) == ["d0"] and between["d0"].plot == "" and between["d0"].pid == receiver.pid
    assert sink.contents() == [sorted(name for name, _ in plots), []]
    receiver.close_stdin()
    assert receiver.exit_status() == 0
    assert receiver.rest_of_stdout() == b""  # nothing after the last OK
    assert receives_in_flight(sink.claims) == []


def test_the_claim_shows_the_plot_and_its_progress_while_it_streams(sink: Sink) -> None:
    receiver = sink.session()
    name, data = plot_bytes(RECEIVE_WINDOW + 8 * MIB)
    port = receiver.start_plot(name, len(data))
    claimed = sink.in_flight()["d0"]
    assert (claimed.plot, claimed.size, claimed.received, claimed.pid) == (name, len(data), 0, receiver.pid)
    with socket.create_connection((LOOPBACK, port), timeout=DEADLINE) as conn:
        conn.sendall(data[: RECEIVE_WINDOW + MIB])  # past the first window, then the stream waits
        moving = wait_until(
            "the first window in the claim",
            lambda: (r := sink.in_flight().get("d0")) is not None and r.received >= RECEIVE_WINDOW and r,
        )
        assert moving.plot == name and moving.size == len(data) and 0 < moving.fraction < 1
        conn.sendall(data[RECEIVE_WINDOW + MIB :])
    assert receiver.finish_plot(data).kind == "OK"
    assert sink.in_flight()["d0"].plot == ""  # the session keeps its drive, receiving nothing
    receiver.close_stdin()
    assert receiver.exit_status() == 0
    assert receives_in_flight(sink.claims) == []
    assert (sink.dirs[0] / name).read_bytes() == data


def _cached_bytes(path: Path) -> int:
    """How much of ``path`` is in the page cache (util-linux fincore, i.e. mincore(2))."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True, timeout=DEADLINE).stdout
    return int(out.strip())


def test_the_drive_writes_while_the_plot_streams_and_memory_stays_flat(sink: Sink) -> None:
    """Write-back a window behind: while the plot streams at most about two windows of it are
    in the page cache, and after its OK none (a page cache file system keeps everything: skip)."""
    if shutil.which("fincore") is None:
        pytest.skip("fincore (util-linux) is not installed")
    if os.statvfs(sink.dirs[0]).f_blocks == 0 or _is_tmpfs(sink.dirs[0]):
        pytest.skip("the drives are in memory here (tmpfs): nothing to write back")
    receiver = sink.session()
    name, data = plot_bytes(4 * RECEIVE_WINDOW)
    port = receiver.start_plot(name, len(data))
    part = sink.dirs[0] / part_name(name)
    with socket.create_connection((LOOPBACK, port), timeout=DEADLINE) as conn:
        conn.sendall(data[: 3 * RECEIVE_WINDOW + RECEIVE_WINDOW // 2])  # then the stream waits
        sent = 3 * RECEIVE_WINDOW + RECEIVE_WINDOW // 2
        # All but what waits in the socket for its low-water mark (only the plot's end skips that)
        arrived = sent - RECV_LOW_WATER
        wait_until("the receiver to write what was sent", lambda: _bytes_written(receiver.pid) >= arrived)
        assert _cached_bytes(part) <= 2 * RECEIVE_WINDOW + 8 * MIB
        conn.sendall(data[sent:])
    assert receiver.finish_plot(data).kind == "OK"
    assert _cached_bytes(sink.dirs[0] / name) == 0
    receiver.close_stdin()
    assert receiver.exit_status() == 0
    assert (sink.dirs[0] / name).read_bytes() == data


def _bytes_written(pid: int) -> int:
    """Bytes the process has handed to write(2) so far (its part file's, and a few lines)."""
    with open(f"/proc/{pid}/io", encoding="ascii") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))


def _is_tmpfs(path: Path) -> bool:
    """True when ``path`` is on a tmpfs (its pages cannot be written back or dropped)."""
    best = ""
    fstype = ""
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            mountpoint = fields[1].replace("\\040", " ")
            if str(path.resolve()).startswith(mountpoint.rstrip("/") + "/") and len(mountpoint) >= len(best):
                best, fstype = mountpoint, fields[2]
    return fstype == "tmpfs"


def test_a_session_holds_its_drive_between_plots(sink: Sink) -> None:
    """One drive, one receive per drive: a second session is busy until the first one ends."""
    one_drive = {"dirs": sink.dirs[:1]}
    first = sink.session(**one_drive)
    first.send_plot(*plot_bytes(MIB))
    second = sink.session(**one_drive)
    name, data = plot_bytes(MIB)
    second.send(format_plot(name, len(data)))
    busy = second.reply()
    assert busy.reason == ERR_BUSY, busy
    assert second.exit_status() == RECEIVER_EXIT_CODES[ERR_BUSY]
    first.close_stdin()
    assert first.exit_status() == 0
    third = sink.session(**one_drive)
    third.send_plot(name, data)
    third.close_stdin()
    assert third.exit_status() == 0
    assert (sink.dirs[0] / name).read_bytes() == data


def test_two_receives_per_drive_share_it(sink: Sink) -> None:
    one_drive = {"dirs": sink.dirs[:1], "per_drive": 2}
    receivers = [sink.session(**one_drive) for _ in range(2)]
    plots = [plot_bytes(MIB) for _ in receivers]
    ports = [r.start_plot(name, len(data)) for r, (name, data) in zip(receivers, plots, strict=True)]
    assert [r.drive for r in receives_in_flight(sink.claims)] == ["d0", "d0"]  # both at once
    for receiver, port, (_name, data) in zip(receivers, ports, plots, strict=True):
        with socket.create_connection((LOOPBACK, port), timeout=DEADLINE) as conn:
            conn.sendall(data)
        assert receiver.finish_plot(data).kind == "OK"
        receiver.close_stdin()
        assert receiver.exit_status() == 0
    assert sink.contents()[0] == sorted(name for name, _ in plots)


# -- drives taken, full, missing -----------------------------------------------------------------


def test_a_drive_claimed_by_another_receiver_is_skipped(sink: Sink) -> None:
    sink.hold("d0")
    receiver = sink.session()
    name, data = plot_bytes(MIB)
    receiver.send_plot(name, data)
    assert list(sink.in_flight()) == ["d1"]
    assert sink.contents() == [[], [name]]
    receiver.close_stdin()
    assert receiver.exit_status() == 0


@pytest.mark.parametrize("mode", ["session", "single plot"])
def test_busy_when_every_drive_of_the_set_is_claimed(sink: Sink, mode: str) -> None:
    sink.hold("d0")
    sink.hold("d1")
    name, data = plot_bytes(MIB)
    if mode == "session":
        receiver = sink.session()
        receiver.send(format_plot(name, len(data)))
    else:
        receiver = sink.start(name, str(len(data)), str(free_port()))
    reply = receiver.reply()
    assert reply.reason == ERR_BUSY and "d0, d1" in reply.detail, reply
    assert receiver.exit_status() == RECEIVER_EXIT_CODES[ERR_BUSY]
    assert sink.contents() == [[], []]


def test_a_drive_that_is_gone_is_passed_over(sink: Sink) -> None:
    """A drive unmounted since the script was written: the next drive of the set takes the plot."""
    gone = sink.root / "unmounted"
    receiver = sink.session(dirs=[gone, sink.dirs[1]])
    name, data = plot_bytes(MIB)
    receiver.send_plot(name, data)
    assert list(sink.in_flight()) == ["d1"]
    assert sink.contents() == [[], [name]] and not gone.exists()
    receiver.close_stdin()
    assert receiver.exit_status() == 0


@requires_root_and_tmpfs
def test_a_full_drive_is_given_back_and_the_next_one_takes_the_plot(tmp_path: Path) -> None:
    with TmpfsDrives(tmp_path / "mnt", ["d0", "d1"], size="4M") as drives:
        sink = Sink(tmp_path)
        sink.dirs = [d.mountpoint for d in drives.drives]
        try:
            receiver = sink.session()
            first, second = plot_bytes(MIB), plot_bytes(2 * MIB + MIB // 2)
            receiver.send_plot(*first)  # fits d0 (with the margin); the second no longer does
            receiver.send_plot(*second)
            assert sink.contents() == [[first[0]], [second[0]]]
            assert list(sink.in_flight()) == ["d1"]  # d0 given back
            receiver.close_stdin()
            assert receiver.exit_status() == 0
        finally:
            sink.close()


@requires_root_and_tmpfs
def test_no_space_when_no_drive_has_room(tmp_path: Path) -> None:
    with TmpfsDrives(tmp_path / "mnt", ["d0", "d1"], size="2M") as drives:
        sink = Sink(tmp_path)
        sink.dirs = [d.mountpoint for d in drives.drives]
        try:
            receiver = sink.session()
            name, data = plot_bytes(2 * MIB)
            receiver.send(format_plot(name, len(data)))
            reply = receiver.reply()
            assert reply.reason == ERR_NO_SPACE, reply
            assert "no drive of the receive set can take it" in reply.detail and "d0:" in reply.detail
            assert "d1:" in reply.detail
            assert receiver.exit_status() == RECEIVER_EXIT_CODES[ERR_NO_SPACE]
            assert sink.contents() == [[], []]
            assert receives_in_flight(sink.claims) == []
        finally:
            sink.close()


@requires_root_and_tmpfs
def test_replace_is_decided_per_drive(tmp_path: Path) -> None:
    """Both drives hold an OG and a pool plot and have room for the incoming plot only without
    the OG one: the first drive may not replace, so the second (which may) deletes its OG plot."""
    og_size, pool_size = cached_plot("og").stat().st_size, cached_plot("pool").stat().st_size
    capacity = og_size + pool_size + pool_size // 2
    incoming = copy_plot("pool", tmp_path / "plotter")
    with TmpfsDrives(tmp_path / "mnt", ["d0", "d1"], size=str(capacity)) as drives:
        sink = Sink(tmp_path)
        sink.dirs = [d.mountpoint for d in drives.drives]
        try:
            kept = [(copy_plot("og", d), copy_plot("pool", d)) for d in sink.dirs]
            receiver = sink.session(replace=(False, True))
            receiver.send_plot(incoming.name, incoming.read_bytes())
            receiver.close_stdin()
            assert receiver.exit_status() == 0
            (og0, pool0), (og1, pool1) = kept
            assert og0.exists() and pool0.exists() and pool1.exists() and not og1.exists()
            assert sha256(sink.dirs[1] / incoming.name) == sha256(incoming)
            assert sink.contents() == [sorted([og0.name, pool0.name]), sorted([pool1.name, incoming.name])]
        finally:
            sink.close()


def test_a_plot_already_on_another_drive_of_the_set_is_proven_there(sink: Sink) -> None:
    """An earlier OK was lost and the session now holds another drive: the plot is not landed
    twice, its copy on the second drive is proven by hash."""
    name, data = plot_bytes(MIB)
    (sink.dirs[1] / name).write_bytes(data)
    receiver = sink.session()
    receiver.send_plot(*plot_bytes(MIB))  # takes d0
    receiver.send(format_plot(name, len(data)))
    assert receiver.reply().kind == "PRESENT"
    assert receiver.finish_plot(data).kind == "OK"
    assert name not in sink.contents()[0]
    receiver.close_stdin()
    assert receiver.exit_status() == 0


# -- ends: killed, idle, failed ------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_session_killed_mid_plot_leaves_no_held_claim(sink: Sink, signum: int) -> None:
    receiver = sink.session()
    receiver.send_plot(*plot_bytes(MIB))
    name, data = plot_bytes(8 * MIB)
    port = receiver.start_plot(name, len(data))
    with socket.create_connection((LOOPBACK, port), timeout=DEADLINE) as conn:
        conn.sendall(data[: 2 * MIB])
        wait_until("the part file", lambda: (sink.dirs[0] / part_name(name)).exists())
        os.kill(receiver.pid, signum)
        receiver.exit_status()
    assert receives_in_flight(sink.claims) == []
    if signum == signal.SIGTERM:
        assert part_name(name) not in sink.contents()[0]
    else:  # nothing can clean up after SIGKILL; the next receiver on that drive does
        assert part_name(name) in sink.contents()[0]
        again = sink.session()
        again.send_plot(name, data)
        again.close_stdin()
        assert again.exit_status() == 0
        assert part_name(name) not in sink.contents()[0]
        assert (sink.dirs[0] / name).read_bytes() == data


def test_an_idle_session_ends_quietly_and_gives_its_drive_back(sink: Sink) -> None:
    receiver = sink.session(idle_timeout=1)
    receiver.send_plot(*plot_bytes(MIB))
    assert receiver.exit_status() == 0  # no PLOT within the idle timeout: nothing in flight
    assert receiver.rest_of_stdout() == b""
    assert receives_in_flight(sink.claims) == []


def test_a_mismatch_ends_the_session_and_leaves_nothing(sink: Sink) -> None:
    receiver = sink.session()
    name, data = plot_bytes(MIB)
    port = receiver.start_plot(name, len(data))
    with socket.create_connection((LOOPBACK, port), timeout=DEADLINE) as conn:
        conn.sendall(data)
    receiver.send(format_verify(len(data), "0" * 32))
    assert receiver.reply().reason == ERR_MISMATCH
    assert receiver.exit_status() == RECEIVER_EXIT_CODES[ERR_MISMATCH]
    assert sink.contents() == [[], []]
    assert receives_in_flight(sink.claims) == []


@pytest.mark.parametrize(
    ("line", "kind"),
    [("HELLO", ERR_PROTOCOL), ("PLOT ../../etc/passwd.plot 100", ERR_BAD_NAME), (f"PLOT {plot_name(32, b'x' * 32)} 0x10", ERR_PROTOCOL)],
)
def test_a_line_that_is_not_a_plot_ends_the_session(sink: Sink, line: str, kind: str) -> None:
    receiver = sink.session()
    receiver.send(line)
    assert receiver.reply().reason == kind
    assert receiver.exit_status() == RECEIVER_EXIT_CODES[kind]
    assert sink.contents() == [[], []]


# -- bad command lines ---------------------------------------------------------------------------


def _argv_cases(sink: Sink) -> list[tuple[list[str], str]]:
    drives = drives_json(sink.dirs)
    plot = [plot_name(32, b"p" * 32), "100", str(free_port())]
    base = [sys.executable, str(RECEIVER), "--config", "/nonexistent/config.yaml"]
    return [
        ([*base, "--dest", str(sink.dirs[0]), "--drives", drives, "--claims", str(sink.claims), *plot],
         "--drives and --dest exclude each other"),
        ([*base, "--drives", drives, *plot], "--drives needs --claims DIR"),
        ([*base, "--drives", "{not json", "--claims", str(sink.claims), *plot], "--drives: not JSON"),
        ([*base, "--drives", '[{"name": "d0", "dir": "drive0", "replace": false}]', "--claims", str(sink.claims),
          "--session", "4000"], "dir must be an absolute path"),
        ([*base, "--drives", drives, "--claims", str(sink.claims), "--per-drive", "9", *plot], "--per-drive must be 1..8"),
        ([*base, "--drives", drives, "--claims", str(sink.claims), "--session", "4000", *plot],
         "--session takes no NAME SIZE PORT"),
    ]


def test_bad_command_lines_are_one_error_line_and_exit_2(sink: Sink) -> None:
    for argv, problem in _argv_cases(sink):
        receiver = Receiver(sink.exec(shlex.join(argv)))
        out = receiver.rest_of_stdout().decode()
        assert out.count("\n") == 1 and out.startswith(f"ERROR {ERR_USAGE}: ") and problem in out, (argv, out)
        assert receiver.exit_status() == RECEIVER_EXIT_CODES[ERR_USAGE]
    assert sink.contents() == [[], []]
    assert not sink.claims.exists()

