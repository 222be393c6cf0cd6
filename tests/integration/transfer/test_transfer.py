"""Plot transfer on loopback: the real receive_plot.py (started through the real receive_plot.sh
drive_manager.py writes, with its receive set of one drive and its drive claims), the real netcat, real chiapos plots and a 64 MiB random file.

What must hold, whatever breaks: bytes land under the final name only when they are identical
to the source; nothing named ``*.plot`` and no ``.part`` is left behind by a failure the
receiver can see; the source is deleted only after OK and only if unchanged.  Waits are on
protocol lines and process exits, each with a timeout; nothing sleeps to synchronise.
Only 127.0.0.1/127.0.0.2 (both on ``lo``) are used.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import xxhash

from tests.support.hashing import sha256, xxh3
from tests.support.plotmaker import cached_plot, copy_plot, plot_name
from tests.support.smtp_server import free_port
from tests.support.tmpfs_drives import TmpfsDrives, requires_root_and_tmpfs
from tests.support.waiting import DEADLINE
from utilities.errors import PlotFileError
from utilities.harvester.drives import DriveLocation
from utilities.harvester.receive_script import render_receive_script
from utilities.transfer.channel import LocalExec, ParamikoExec
from utilities.transfer.protocol import (
    ERR_ABORTED,
    ERR_BAD_NAME,
    ERR_BUSY,
    ERR_EXISTS,
    ERR_MISMATCH,
    ERR_NO_SPACE,
    ERR_PROTOCOL,
    ERR_STREAM,
    ERR_TIMEOUT,
    ERR_USAGE,
    RECEIVER_EXIT_CODES,
    TransferError,
    build_receive_command,
    format_verify,
    parse_receiver_line,
)
from utilities.transfer.sender import TransferResult, delete_source_after_ok, send_plot

pytestmark = [
    pytest.mark.skipif(shutil.which("nc") is None, reason="netcat (nc) is not installed"),
]

REPO = Path(__file__).resolve().parents[3]
RECEIVER = REPO / "receive_plot.py"
LOOPBACK = "127.0.0.1"
OTHER_LOOPBACK = "127.0.0.2"  # also on lo: a second "host" for the peer-address check
SSH_ENV = {"SSH_CLIENT": f"{LOOPBACK} 40022 22", "SSH_CONNECTION": f"{LOOPBACK} 40022 {LOOPBACK} 22"}
BIG = 64 * 1024 * 1024
# Deadlines for transfers that must succeed: only there to end a hung test (a busy machine is slow).
TIMEOUTS = {"ready_timeout": DEADLINE, "verify_timeout": DEADLINE, "idle_timeout": DEADLINE}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def random_plot_file(directory: Path, size: int = BIG) -> Path:
    """A file with random bytes and a chia-style name (the transfer never reads headers)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / plot_name(32, os.urandom(32))
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 1 << 20))
            handle.write(block)
            remaining -= len(block)
    return path


def leftovers(dest: Path) -> list[str]:
    return sorted(os.listdir(dest))


def reap_tree(pid: int) -> None:
    """Kill, by pid, whatever is left of a process tree this test started."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=DEADLINE)


class DirectReceiver:
    """receive_plot.py run straight from argv (no shell) with pipes: the tests' plotter side."""

    def __init__(
        self,
        dest: Path,
        name: str,
        size: int,
        port: int,
        *options: str,
        env: dict[str, str] | None = None,
        argv: list[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        args = argv if argv is not None else [*options, name, str(size), str(port)]
        self.proc = subprocess.Popen(
            [sys.executable, str(RECEIVER), "--config", "/nonexistent/config.yaml", "--dest", str(dest), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(SSH_ENV if env is None else env)},
            cwd=cwd,
        )
        self._buffer = b""

    def line(self, timeout: float = DEADLINE) -> str:
        """The next stdout line; fails the test if none comes in time."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line from the receiver within {timeout} s"
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                data = os.read(fd, 4096)
                assert data, f"receiver closed stdout; had {self._buffer!r}"
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def ready(self) -> int:
        reply = parse_receiver_line(self.line())
        assert reply.kind == "READY", reply
        assert reply.port is not None
        return reply.port

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def exit_status(self, timeout: float = DEADLINE) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=DEADLINE)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]


@pytest.fixture
def receivers() -> Iterator[Callable[..., DirectReceiver]]:
    started: list[DirectReceiver] = []

    def start(*args: object, **kwargs: object) -> DirectReceiver:
        receiver = DirectReceiver(*args, **kwargs)  # type: ignore[arg-type]
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


class NetcatSender:
    """A bare ``nc -N`` the test feeds by hand: a plotter's data path we can kill at will."""

    def __init__(self, port: int, source: str | None = None) -> None:
        argv = ["nc", "-N"] + (["-s", source] if source else []) + [LOOPBACK, str(port)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def finish(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=DEADLINE)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=DEADLINE)
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]


@pytest.fixture
def senders() -> Iterator[Callable[..., NetcatSender]]:
    started: list[NetcatSender] = []

    def start(*args: object, **kwargs: object) -> NetcatSender:
        sender = NetcatSender(*args, **kwargs)  # type: ignore[arg-type]
        started.append(sender)
        return sender

    yield start
    for sender in started:
        sender.kill()


class FlipProxy:
    """TCP relay on 127.0.0.1 between nc and the receiver that can flip one byte of the stream.

    ``route`` is send_plot's ``data_address`` hook: the receiver's port becomes the upstream
    and nc is pointed at the proxy instead.
    """

    def __init__(self, flip_at: int | None) -> None:
        self.flip_at = flip_at
        self.upstream_port: int | None = None
        self.forwarded = 0
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        self._threads: list[threading.Thread] = []
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def route(self, _host: str, port: int) -> tuple[str, int]:
        self.upstream_port = port
        return LOOPBACK, self.port

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self._listener.accept()
            assert self.upstream_port is not None
            upstream = socket.create_connection((LOOPBACK, self.upstream_port), timeout=10)
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            self._start(self._pump, client, upstream, True)
            self._start(self._pump, upstream, client, False)

    def _pump(self, source: socket.socket, sink: socket.socket, forward: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                if forward:
                    if self.flip_at is not None and self.forwarded <= self.flip_at < self.forwarded + len(data):
                        buffer = bytearray(data)
                        buffer[self.flip_at - self.forwarded] ^= 0x01
                        data = bytes(buffer)
                    self.forwarded += len(data)
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=10)


class Harvester:
    """A receive directory plus the real receive_plot.sh that drive_manager.py would write."""

    def __init__(
        self,
        root: Path,
        dest: Path | None = None,
        env: dict[str, str] | None = None,
        replace: bool = False,
        per_drive: int = 1,
    ) -> None:
        self.root = root
        self.dest = dest or root / "harvester" / "drive0" / "plots"
        self.dest.mkdir(parents=True, exist_ok=True)
        state = root / "harvester" / "state"
        state.mkdir(parents=True, exist_ok=True)
        drive = DriveLocation("drive0", str(self.dest), "/dev/test0", "ext4", (str(self.dest),))
        self.script = root / "harvester" / "receive_plot.sh"
        self.script.write_text(
            render_receive_script(
                drive,
                "harvester0",
                root / "config.yaml",
                state / "receiving",
                time.time(),
                python=sys.executable,
                replace=replace,
                per_drive=per_drive,
            )
        )
        self.script.chmod(0o755)
        self.exec = LocalExec(env={**os.environ, **(SSH_ENV if env is None else env)})

    def send(self, source: Path, port: int | None = None, **kwargs: object) -> TransferResult:
        options = {**TIMEOUTS, **kwargs}
        return send_plot(self.exec, self.script, source, LOOPBACK, port or free_port(), **options)  # type: ignore[arg-type]

    def receiver_pid(self) -> int:
        """The receive_plot.py process the newest ``sh -c`` started (or became, by exec)."""
        shell = psutil.Process(self.exec.started[-1].pid)
        for child in [shell, *shell.children(recursive=True)]:
            if child.cmdline()[:2] == [sys.executable, str(RECEIVER)]:
                return child.pid
        raise AssertionError("receive_plot.py is not running")

    def close(self) -> None:
        for process in self.exec.started:
            if process.proc.poll() is None:  # still our unreaped child: its pid is still its own
                reap_tree(process.pid)
            process.kill()


@pytest.fixture
def harvester(tmp_path: Path) -> Iterator[Harvester]:
    farm = Harvester(tmp_path)
    yield farm
    farm.close()


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_plot_file(tmp_path_factory.mktemp("big"))


@pytest.fixture
def big_copy(big_source: Path, tmp_path: Path) -> Path:
    """A private copy (tests delete and compare sources) under a fresh plot name."""
    target = tmp_path / "plotter" / plot_name(32, os.urandom(32))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(big_source, target)
    return target


def assert_clean(dest: Path) -> None:
    """No plot and no part file: what every failure the receiver sees must leave."""
    assert leftovers(dest) == []


PLOT = "plot-k32-2026-01-02-03-04-" + "ab" * 32 + ".plot"


# --------------------------------------------------------------------------------------------
# Happy path
# --------------------------------------------------------------------------------------------


def test_plot_and_big_file_arrive_identical_and_source_goes_only_after_ok(
    harvester: Harvester, tmp_path: Path, big_copy: Path
) -> None:
    plot = copy_plot("pool", tmp_path / "plotter")
    for source in (plot, big_copy):
        before = sha256(source)
        progress: list[tuple[int, int]] = []
        result = harvester.send(source, progress_cb=lambda sent, total, seen=progress: seen.append((sent, total)))
        assert result.ok, result.reason
        assert result.size == source.stat().st_size and result.hexdigest == xxh3(source)
        assert result.receiver_status == 0 and result.mb_per_s > 0
        assert progress[-1] == (result.size, result.size)
        final = harvester.dest / source.name
        assert sha256(final) == before
        assert final.stat().st_size == result.size
        # send_plot never deletes: the caller does, through the re-checking helper.
        assert source.exists()
        delete_source_after_ok(source, result)
        assert not source.exists()
    assert leftovers(harvester.dest) == sorted([plot.name, big_copy.name])


def test_source_is_kept_when_changed_after_sending_or_transfer_failed(harvester: Harvester, tmp_path: Path) -> None:
    source = copy_plot("pool", tmp_path / "plotter")
    result = harvester.send(source)
    assert result.ok, result.reason
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))  # rewritten since it was sent
    with pytest.raises(TransferError, match="changed"):
        delete_source_after_ok(source, result)
    assert source.exists()
    with pytest.raises(TransferError, match="did not succeed"):
        delete_source_after_ok(source, TransferResult(False, source.name, "mismatch"))
    assert source.exists()


def test_two_transfers_at_once_into_one_directory(tmp_path: Path, big_copy: Path) -> None:
    """Two receives at once on one drive, as ``receives_per_drive: 2`` allows."""
    harvester = Harvester(tmp_path, per_drive=2)
    try:
        plot = copy_plot("og", tmp_path / "plotter")
        sums = {p.name: sha256(p) for p in (plot, big_copy)}
        both_streaming = threading.Barrier(2, timeout=DEADLINE)
        seen: dict[str, bool] = {}

        def meet(name: str) -> Callable[[int, int], None]:
            def progress(_sent: int, _total: int) -> None:
                if name not in seen:  # first chunk of each: wait until the other one streams too
                    seen[name] = True
                    both_streaming.wait()

            return progress

        results: dict[str, TransferResult] = {}
        port_a, port_b = free_port(), free_port()

        def run(source: Path, port: int) -> None:
            results[source.name] = harvester.send(source, port, port_count=1, progress_cb=meet(source.name))

        threads = [threading.Thread(target=run, args=(plot, port_a)), threading.Thread(target=run, args=(big_copy, port_b))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=2 * DEADLINE)
        assert not both_streaming.broken
        assert all(r.ok for r in results.values()), results
        assert {r.port for r in results.values()} == {port_a, port_b}
        for name, digest in sums.items():
            assert sha256(harvester.dest / name) == digest
        assert leftovers(harvester.dest) == sorted(sums)
    finally:
        harvester.close()


def test_data_over_another_network_than_ssh(tmp_path: Path) -> None:
    """SSH came from 127.0.0.2 (the control network), the data comes from 127.0.0.1 (the
    plotter's data_host route): send_plot names that address, so the receiver accepts it."""
    farm = Harvester(tmp_path, env={"SSH_CLIENT": f"{OTHER_LOOPBACK} 40022 22"})
    try:
        source = copy_plot("pool", tmp_path / "plotter")
        result = farm.send(source)
        assert result.ok, result.reason
        assert sha256(farm.dest / source.name) == sha256(source)
    finally:
        farm.close()


def test_port_in_use_moves_to_the_next_port(harvester: Harvester, tmp_path: Path) -> None:
    source = copy_plot("pool", tmp_path / "plotter")
    with socket.create_server((LOOPBACK, 0)) as squatter:
        taken = squatter.getsockname()[1]
        result = harvester.send(source, taken, port_count=5)
    assert result.ok, result.reason
    assert result.port is not None and taken < result.port < taken + 5
    assert sha256(harvester.dest / source.name) == sha256(source)


# --------------------------------------------------------------------------------------------
# Corruption and crashes
# --------------------------------------------------------------------------------------------


def test_a_flipped_byte_in_the_stream_is_caught(harvester: Harvester, big_copy: Path) -> None:
    before = sha256(big_copy)
    proxy = FlipProxy(flip_at=BIG // 2 + 12345)
    try:
        result = harvester.send(big_copy, data_address=proxy.route)
    finally:
        proxy.close()
    assert proxy.forwarded == BIG  # every byte went through, one of them flipped
    assert not result.ok
    assert result.receiver_error == ERR_MISMATCH, result.reason
    assert result.receiver_status == RECEIVER_EXIT_CODES[ERR_MISMATCH]
    assert_clean(harvester.dest)
    assert sha256(big_copy) == before
    with pytest.raises(TransferError):
        delete_source_after_ok(big_copy, result)


def test_receiver_killed_mid_stream_leaves_no_plot_and_next_run_cleans_up(harvester: Harvester, big_copy: Path) -> None:
    before = sha256(big_copy)
    killed: list[int] = []

    def kill_receiver(sent: int, _total: int) -> None:
        if sent >= 8 * 1024 * 1024 and not killed:
            pid = harvester.receiver_pid()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    result = harvester.send(big_copy, progress_cb=kill_receiver)
    assert killed and not result.ok
    assert sha256(big_copy) == before
    # SIGKILL cannot be cleaned up after: only the hidden part file may remain, never a plot.
    assert leftovers(harvester.dest) == [f".{big_copy.name}.part"]

    again = harvester.send(big_copy)
    assert again.ok, again.reason
    assert leftovers(harvester.dest) == [big_copy.name]
    assert sha256(harvester.dest / big_copy.name) == before


def test_sender_killed_mid_stream(receivers, senders, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    name = plot_name(32, os.urandom(32))
    receiver = receivers(dest, name, BIG, free_port(), "--idle-timeout", "60")
    port = receiver.ready()
    assert leftovers(dest) == [f".{name}.part"]
    sender = senders(port)
    sender.write(os.urandom(8 * 1024 * 1024))
    sender.kill()  # the plotter's nc dies; the control channel stays open
    reply = parse_receiver_line(receiver.line())
    assert reply.reason == ERR_STREAM, reply
    assert receiver.exit_status() == RECEIVER_EXIT_CODES[ERR_STREAM]
    assert_clean(dest)


def test_plotter_gone_while_stream_is_open(receivers, senders, tmp_path: Path) -> None:
    """The SSH channel ends (plotter died) while nc still holds the connection: the receiver
    must not wait for its idle timeout (an hour here, far beyond the test's deadline; had it
    waited, it would also have said "timeout", not "aborted")."""
    dest = tmp_path / "dest"
    dest.mkdir()
    receiver = receivers(dest, plot_name(32, os.urandom(32)), BIG, free_port(), "--idle-timeout", "3600")
    sender = senders(receiver.ready())
    sender.write(os.urandom(1024 * 1024))
    receiver.close_stdin()
    assert receiver.exit_status() == RECEIVER_EXIT_CODES[ERR_ABORTED]
    assert_clean(dest)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGINT])
def test_signals_remove_the_part_file(receivers, senders, tmp_path: Path, signum: int) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    receiver = receivers(dest, plot_name(32, os.urandom(32)), BIG, free_port())
    sender = senders(receiver.ready())
    sender.write(os.urandom(1024 * 1024))
    receiver.proc.send_signal(signum)
    assert receiver.exit_status() == RECEIVER_EXIT_CODES[ERR_ABORTED]
    assert_clean(dest)


def test_idle_stream_and_missing_connection_time_out(receivers, senders, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    # The stalled stream must connect before its idle timeout runs out: 5 s leaves starting
    # nc on a busy machine room to spare (the connection that never comes can wait 1 s).
    stalled = receivers(dest, plot_name(32, os.urandom(32)), BIG, free_port(), "--idle-timeout", "5")
    sender = senders(stalled.ready())
    sender.write(b"x" * 1000)  # then nothing, with the connection left open
    nobody = receivers(dest, plot_name(32, os.urandom(32)), BIG, free_port(), "--idle-timeout", "1")
    nobody.ready()  # and nobody ever connects
    for receiver, what in ((stalled, "no data"), (nobody, "no connection")):
        reply = parse_receiver_line(receiver.line())
        assert reply.reason == ERR_TIMEOUT and what in reply.detail, reply
        assert receiver.exit_status() == RECEIVER_EXIT_CODES[ERR_TIMEOUT]
    assert_clean(dest)


@pytest.mark.parametrize("case", ["more bytes", "wrong hash", "wrong size", "garbage"])
def test_stream_and_verify_must_match_exactly(receivers, senders, tmp_path: Path, case: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 17)
    receiver = receivers(dest, plot_name(32, os.urandom(32)), len(data), free_port())
    sender = senders(receiver.ready())
    sender.write(data + (b"surplus" if case == "more bytes" else b""))
    status = sender.finish()  # with surplus bytes the receiver hangs up on nc: any status
    assert status == 0 or case == "more bytes"
    digest = xxhash.xxh3_128(data).hexdigest()
    verify = {
        "more bytes": format_verify(len(data), digest),
        "wrong hash": format_verify(len(data), xxhash.xxh3_128(data[:-1] + bytes([data[-1] ^ 0xFF])).hexdigest()),
        "wrong size": format_verify(len(data) + 1, digest),
        "garbage": "VERIFY please",
    }[case]
    with contextlib.suppress(BrokenPipeError):
        receiver.send(verify + "\n")
    reply = parse_receiver_line(receiver.line())
    expected = {"more bytes": ERR_STREAM, "garbage": ERR_PROTOCOL}.get(case, ERR_MISMATCH)
    assert reply.reason == expected, reply
    assert receiver.exit_status() == RECEIVER_EXIT_CODES[expected]
    assert_clean(dest)


# --------------------------------------------------------------------------------------------
# Refusals before anything is created
# --------------------------------------------------------------------------------------------

UNSAFE_NAMES = [
    "../" + PLOT,
    "plot-k32 2026-01-02-03-04-" + "ab" * 32 + ".plot",
    "x;touch MARKER;.plot",
    "$(touch MARKER).plot",
    "`touch MARKER`.plot",
    "-" + PLOT,
    "--dest=/",
    "." + PLOT,
    PLOT + "\n",
    "",
]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_names_are_refused_before_any_shell_or_file(receivers, harvester: Harvester, name: str) -> None:
    marker_dir = harvester.root
    with pytest.raises(PlotFileError):
        build_receive_command(harvester.script, name, 100, 45000)

    # The plotter refuses such a source file before starting anything remote.
    if name and "/" not in name and "\n" not in name and name not in (".", ".."):
        started: list[str] = []
        source = harvester.root / "plotter" / name
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(b"x" * 100)
        result = send_plot(lambda cmd: started.append(cmd), harvester.script, source, LOOPBACK, 45000)  # type: ignore[arg-type,return-value]
        assert not result.ok and "refused before starting" in result.reason
        assert started == []
        assert source.exists()

    # A receiver handed the name anyway (no shell involved: argv) refuses it too.
    receiver = receivers(harvester.dest, name, 100, free_port(), cwd=marker_dir)
    reply = parse_receiver_line(receiver.line())
    assert reply.reason in (ERR_BAD_NAME, ERR_USAGE), reply
    assert receiver.exit_status() == RECEIVER_EXIT_CODES[reply.reason]
    assert_clean(harvester.dest)
    assert not list(marker_dir.rglob("MARKER"))


def test_option_injection_through_the_script_arguments(receivers, tmp_path: Path) -> None:
    """receive_plot.sh appends the plotter's words after --dest: they must not move it."""
    dest, elsewhere = tmp_path / "dest", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    port = str(free_port())
    for extra in (
        ["--dest", str(elsewhere), PLOT, "100", port],
        [f"--dest={elsewhere}", "100", port],
        ["--idle-timeout", "5", "100", port],
        [PLOT, "100", port, "extra"],
        [PLOT, "0x10", port],
        [PLOT, "100", "80"],
    ):
        receiver = receivers(dest, "", 0, 0, argv=extra)
        reply = parse_receiver_line(receiver.line())
        assert reply.reason in (ERR_USAGE, ERR_BAD_NAME), (extra, reply)
        assert receiver.exit_status() == RECEIVER_EXIT_CODES[reply.reason]
    assert_clean(dest)
    assert_clean(elsewhere)


def test_plot_already_there_after_a_lost_ok_is_confirmed_by_hash(harvester: Harvester, tmp_path: Path) -> None:
    """The receiver committed, but its OK never reached the plotter: the retry must not fail
    forever with "exists", and must not stream again; it proves the copy and then succeeds."""
    source = copy_plot("pool", tmp_path / "plotter")
    (harvester.dest / source.name).write_bytes(source.read_bytes())
    result = harvester.send(source)
    assert result.ok and "already on the harvester" in result.reason, result.reason
    assert result.stream_seconds == 0.0
    delete_source_after_ok(source, result)
    assert not source.exists()
    assert leftovers(harvester.dest) == [source.name]


def test_same_size_different_plot_under_the_name_is_refused(harvester: Harvester, tmp_path: Path) -> None:
    source = copy_plot("pool", tmp_path / "plotter")
    impostor = bytearray(source.read_bytes())
    impostor[len(impostor) // 2] ^= 0xFF
    existing = harvester.dest / source.name
    existing.write_bytes(bytes(impostor))
    result = harvester.send(source)
    assert not result.ok and result.receiver_error == ERR_EXISTS, result.reason
    assert existing.read_bytes() == bytes(impostor)
    assert source.exists()


def test_existing_final_name_is_refused(harvester: Harvester, tmp_path: Path) -> None:
    source = copy_plot("pool", tmp_path / "plotter")
    existing = harvester.dest / source.name
    existing.write_bytes(b"an older plot with this name")
    result = harvester.send(source)
    assert not result.ok and result.receiver_error == ERR_EXISTS, result.reason
    assert result.receiver_status == RECEIVER_EXIT_CODES[ERR_EXISTS]
    assert existing.read_bytes() == b"an older plot with this name"
    assert leftovers(harvester.dest) == [source.name]
    assert source.exists()


def test_missing_destination_and_refusing_script(receivers, tmp_path: Path) -> None:
    receiver = receivers(tmp_path / "no-such-dir", PLOT, 100, free_port())
    assert parse_receiver_line(receiver.line()).reason == "bad dest"
    assert receiver.exit_status() == RECEIVER_EXIT_CODES["bad dest"]

    # drive_manager.py writes a refusing script when no drive has room: the plotter must
    # report that (exit 75 and the script's message), not hang.
    script = tmp_path / "receive_plot.sh"
    script.write_text(render_receive_script(None, "harvester0", tmp_path / "c.yaml", tmp_path / "l", time.time()))
    script.chmod(0o755)
    source = copy_plot("pool", tmp_path / "plotter")
    result = send_plot(LocalExec(), script, source, LOOPBACK, free_port(), **TIMEOUTS)  # type: ignore[arg-type]
    assert not result.ok and result.receiver_status == 75
    assert "no plot drive on harvester0 has room" in result.reason
    assert source.exists()


def test_stale_part_files_go_but_live_ones_stay(harvester: Harvester, tmp_path: Path) -> None:
    source = copy_plot("pool", tmp_path / "plotter")
    stale_same = harvester.dest / f".{source.name}.part"
    stale_other = harvester.dest / f".{plot_name(32, os.urandom(32))}.part"
    live_other = harvester.dest / f".{plot_name(32, os.urandom(32))}.part"
    unrelated = harvester.dest / ".not-ours.part"
    for path in (stale_same, stale_other, live_other, unrelated):
        path.write_bytes(b"half a plot")
    with open(live_other, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a living receiver holds its part file like this
        result = harvester.send(source)
        assert result.ok, result.reason
        assert leftovers(harvester.dest) == sorted([source.name, live_other.name, unrelated.name])

        # The same name held by a living receiver: refused as busy, its file untouched.
        busy_name = live_other.name[1 : -len(".part")]
        busy_source = tmp_path / "plotter" / busy_name
        shutil.copyfile(source, busy_source)
        busy = harvester.send(busy_source)
        assert not busy.ok and busy.receiver_error == ERR_BUSY, busy.reason
        assert live_other.read_bytes() == b"half a plot"


def test_connections_from_other_addresses_are_refused(receivers, senders, tmp_path: Path) -> None:
    """Only the plotter's address (SSH_CLIENT) may feed the stream; a stranger is hung up on."""
    dest = tmp_path / "dest"
    dest.mkdir()
    data = os.urandom(1024 * 1024)
    env = {"SSH_CLIENT": f"{OTHER_LOOPBACK} 40022 22", "SSH_CONNECTION": f"{OTHER_LOOPBACK} 40022 {LOOPBACK} 22"}
    name = plot_name(32, os.urandom(32))
    receiver = receivers(dest, name, len(data), free_port(), env=env)
    port = receiver.ready()
    with socket.create_connection((LOOPBACK, port), timeout=DEADLINE, source_address=(LOOPBACK, 0)) as stranger:
        with contextlib.suppress(OSError):
            stranger.sendall(b"not the plot")
        try:
            hung_up = stranger.recv(1) == b""  # closed on us without a word...
        except ConnectionResetError:
            hung_up = True  # ...or reset, because our bytes were never read
        assert hung_up
    plotter = senders(port, source=OTHER_LOOPBACK)
    plotter.write(data)
    assert plotter.finish() == 0
    receiver.send(format_verify(len(data), xxhash.xxh3_128(data).hexdigest()) + "\n")
    assert parse_receiver_line(receiver.line()).kind == "OK"
    assert receiver.exit_status() == 0
    assert (dest / name).read_bytes() == data
    assert leftovers(dest) == [name]


# --------------------------------------------------------------------------------------------
# Full disks (root: a real, tiny tmpfs)
# --------------------------------------------------------------------------------------------


@requires_root_and_tmpfs
def test_destination_too_small_is_refused_up_front(tmp_path: Path) -> None:
    source = copy_plot("pool", tmp_path / "plotter")
    with TmpfsDrives(tmp_path / "mnt", ["small"], size="1M") as drives:
        dest = drives.drives[0].mountpoint
        farm = Harvester(tmp_path, dest=dest)
        try:
            result = farm.send(source)
        finally:
            farm.close()
        assert not result.ok and result.receiver_error == ERR_NO_SPACE, result.reason
        assert result.receiver_status == RECEIVER_EXIT_CODES[ERR_NO_SPACE]
        assert_clean(dest)
    assert source.exists()


@requires_root_and_tmpfs
def test_space_is_reserved_while_receiving(receivers, tmp_path: Path) -> None:
    """Two plots that fit one at a time but not together: the second is refused at once,
    because the first already holds its space (fallocate), not when the disk runs full."""
    size = 5 * 1024 * 1024
    with TmpfsDrives(tmp_path / "mnt", ["eight"], size="8M") as drives:
        dest = drives.drives[0].mountpoint
        first = receivers(dest, plot_name(32, os.urandom(32)), size, free_port())
        first.ready()
        second = receivers(dest, plot_name(32, os.urandom(32)), size, free_port())
        reply = parse_receiver_line(second.line())
        assert reply.reason == ERR_NO_SPACE, reply
        assert second.exit_status() == RECEIVER_EXIT_CODES[ERR_NO_SPACE]
        first.close_stdin()
        assert first.exit_status() == RECEIVER_EXIT_CODES[ERR_ABORTED]
        assert_clean(dest)


# --------------------------------------------------------------------------------------------
# The production exec path: paramiko -> a real sshd on loopback -> receive_plot.sh
# --------------------------------------------------------------------------------------------

SSHD = "/usr/sbin/sshd"


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """A private sshd on 127.0.0.1 (foreground, so its pid is ours): port, host key, user key."""
    if os.geteuid() != 0 or not os.path.exists(SSHD) or not os.path.isdir("/run/sshd"):
        pytest.skip("needs root, openssh-server and /run/sshd")
    keys = tmp_path / "ssh"
    keys.mkdir()
    for key in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / key)], check=True)
    shutil.copyfile(keys / "user.pub", keys / "authorized_keys")
    port = free_port()
    config = keys / "sshd_config"
    config.write_text(
        f"ListenAddress {LOOPBACK}:{port}\nHostKey {keys / 'host'}\nAuthorizedKeysFile {keys / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "UsePAM no\nStrictModes no\n"
    )
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + DEADLINE
        seen = b""
        while b"Server listening" not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0 and proc.poll() is None, f"sshd did not start: {seen!r}"
            if select.select([proc.stderr], [], [], remaining)[0]:
                seen += os.read(proc.stderr.fileno(), 4096)
        yield port, keys / "host", keys / "user"
    finally:
        reap_tree(proc.pid)
        proc.wait(timeout=DEADLINE)


def test_over_real_ssh_with_paramiko(sshd, harvester: Harvester, tmp_path: Path, big_copy: Path) -> None:
    paramiko = pytest.importorskip("paramiko")
    port, host_key_file, user_key = sshd
    client = paramiko.SSHClient()
    host_key = paramiko.Ed25519Key.from_private_key_file(str(host_key_file))
    client.get_host_keys().add(f"[{LOOPBACK}]:{port}", host_key.get_name(), host_key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())  # host keys are checked
    client.connect(
        LOOPBACK, port=port, username="root", key_filename=str(user_key), look_for_keys=False, allow_agent=False,
        timeout=DEADLINE, banner_timeout=DEADLINE, auth_timeout=DEADLINE,
    )
    try:
        ssh = ParamikoExec(client)
        plot = copy_plot("pool", tmp_path / "plotter")
        result = send_plot(ssh, harvester.script, plot, LOOPBACK, free_port(), **TIMEOUTS)  # type: ignore[arg-type]
        assert result.ok, result.reason
        assert sha256(harvester.dest / plot.name) == sha256(plot)

        # Sent again (as after a lost OK): the harvester proves it has this very plot.
        again = send_plot(ssh, harvester.script, plot, LOOPBACK, free_port(), **TIMEOUTS)  # type: ignore[arg-type]
        assert again.ok and "already on the harvester" in again.reason, again.reason

        # The SSH channel dies mid-stream: sshd's receiver must clean up after itself.
        channels: list = []

        def opened(command: str):  # type: ignore[no-untyped-def]
            process = ssh(command)
            channels.append(process)
            return process

        receivers_seen: list[psutil.Process] = []

        def drop_channel(sent: int, _total: int) -> None:
            if sent >= 8 * 1024 * 1024 and not receivers_seen:
                sshd_tree = psutil.Process(os.getpid()).children(recursive=True)
                receivers_seen.extend(p for p in sshd_tree if p.cmdline()[:2] == [sys.executable, str(RECEIVER)])
                channels[-1].channel.close()

        dropped = send_plot(
            opened, harvester.script, big_copy, LOOPBACK, free_port(), progress_cb=drop_channel, **TIMEOUTS
        )  # type: ignore[arg-type]
        assert not dropped.ok and receivers_seen
        _gone, alive = psutil.wait_procs(receivers_seen, timeout=DEADLINE)
        assert not alive
        assert leftovers(harvester.dest) == [plot.name]
        assert big_copy.exists()
    finally:
        client.close()


# --------------------------------------------------------------------------------------------
# Replace mode: drive_manager.py's script gives the drive "replace": true in --drives
# --------------------------------------------------------------------------------------------


@requires_root_and_tmpfs
def test_replace_mode_deletes_one_old_og_plot_and_never_a_pool_plot(tmp_path: Path) -> None:
    og_size = cached_plot("og").stat().st_size
    pool_size = cached_plot("pool").stat().st_size
    # Room for one OG and one pool plot plus half of the incoming one: it fits only if the OG goes.
    capacity = og_size + pool_size + pool_size // 2
    incoming = copy_plot("pool", tmp_path / "plotter")
    with TmpfsDrives(tmp_path / "mnt", ["drive0"], size=str(capacity)) as drives:
        dest = drives.drives[0].mountpoint
        old_og = copy_plot("og", dest)
        pool = copy_plot("pool", dest)

        plain = Harvester(tmp_path / "plain", dest=dest)
        try:
            refused = plain.send(incoming)
        finally:
            plain.close()
        assert not refused.ok and refused.receiver_error == ERR_NO_SPACE, refused.reason
        assert old_og.exists() and pool.exists()

        replacing = Harvester(tmp_path / "replacing", dest=dest, replace=True)
        try:
            assert '"replace":true' in replacing.script.read_text()  # the drive's replace mode in --drives
            result = replacing.send(incoming)
            assert result.ok, result.reason
            assert not old_og.exists() and pool.exists()
            assert sha256(dest / incoming.name) == sha256(incoming)

            # No OG plot left to replace: refused, and no pool plot is ever touched.
            second = copy_plot("pool", tmp_path / "plotter")
            again = replacing.send(second)
            assert not again.ok and again.receiver_error == ERR_NO_SPACE, again.reason
            assert "no old OG plot" in again.reason
        finally:
            replacing.close()
        assert leftovers(dest) == sorted([pool.name, incoming.name])

