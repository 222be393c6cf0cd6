"""Moving one plot from the plotter to a harvester: control over SSH, data over netcat.

A plot is hours of compute, so the rules are: the harvester writes to a hidden ``.NAME.part``
(chia never sees half a plot), both ends hash the bytes as they pass (xxh3-128), and only when
the hashes and sizes agree does the receiver fsync, rename into place and answer ``OK``.  The
plotter deletes its copy only after that ``OK`` and only if the source is still the same file.

The protocol, one line each way over the SSH channel (the receiver's stdin/stdout)::

    plotter runs:   receive_plot.sh NAME SIZE PORT      (built by build_receive_command)
    receiver:       READY <port>                        listening, disk space reserved
    plotter:        (streams SIZE bytes with ``nc -N host port``)
    plotter:        VERIFY <size> <xxh3_128 hex>
    receiver:       OK <xxh3_128 hex>                   fsynced and renamed into place
    or at any step: ERROR <kind>: <detail>              nothing left behind, non-zero exit

The receiver itself lives in ``receive_plot.py`` (repo root); the line formats, error kinds and
exit codes are defined here once so both ends agree.  Pure pieces (command building, line
parsing, port choice) are kept apart from the I/O (``stream_file``, ``send_plot``) so they can be
tested without processes.  Nothing in this module imports paramiko or the config: the receiver
imports it too and must start fast.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import queue
import re
import shlex
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import xxhash

from utilities.errors import PlotManagerError
from utilities.plots import validate_plot_name

# --------------------------------------------------------------------------------------------
# Protocol: lines, error kinds, exit codes
# --------------------------------------------------------------------------------------------

READY = "READY"
PRESENT = "PRESENT"  # the final name already holds a file of this size: prove it is this plot
OK = "OK"
ERROR = "ERROR"
VERIFY = "VERIFY"

MIN_PORT = 1024
MAX_PORT = 65535
# Longest control line either side accepts; a peer that sends more is not speaking the protocol.
MAX_LINE = 4096

# 1 MiB chunks measured best on both ends (see the module notes in send_plot / receive_plot):
# big enough that per-chunk syscalls vanish, small enough that a chunk is still in the CPU cache
# when it is hashed right after being read.
DEFAULT_CHUNK = 1024 * 1024
# The kernel's default cap for an unprivileged pipe (/proc/sys/fs/pipe-max-size); 16x fewer
# wake-ups between us and nc than the 64 KiB default.
PIPE_SIZE = 1024 * 1024

# Error kinds: the word(s) after "ERROR " up to the colon.  The plotter decides on them (retry
# on another port, try another harvester, alert the farmer), so they are fixed strings.
ERR_USAGE = "usage"
ERR_BAD_NAME = "bad name"
ERR_BAD_DEST = "bad dest"
ERR_EXISTS = "exists"
ERR_BUSY = "busy"
ERR_NO_SPACE = "no space"
ERR_PORT_IN_USE = "port in use"
ERR_LISTEN = "listen"
ERR_TIMEOUT = "timeout"
ERR_STREAM = "stream"
ERR_MISMATCH = "mismatch"
ERR_ABORTED = "aborted"
ERR_IO = "io"
ERR_PROTOCOL = "protocol"  # a line that is not protocol (only produced by the parser)

# Receiver exit status per error kind: distinct so a log of exit codes alone says what failed.
# 75 (EX_TEMPFAIL) is taken by the refusing receive_plot.sh ("no drive has room").
RECEIVER_EXIT_CODES: dict[str, int] = {
    ERR_USAGE: 2,
    ERR_BAD_DEST: 3,
    ERR_BAD_NAME: 4,
    ERR_EXISTS: 5,
    ERR_BUSY: 6,
    ERR_NO_SPACE: 7,
    ERR_PORT_IN_USE: 8,
    ERR_LISTEN: 9,
    ERR_TIMEOUT: 10,
    ERR_STREAM: 11,
    ERR_MISMATCH: 12,
    ERR_ABORTED: 13,
    ERR_IO: 14,
    ERR_PROTOCOL: 15,
}
ERROR_KINDS = tuple(RECEIVER_EXIT_CODES)

_HEX128_RE = re.compile(r"[0-9a-f]{32}")
_DIGITS_RE = re.compile(r"[0-9]{1,20}")


class TransferError(PlotManagerError):
    """A transfer step failed; the message says which and why (the source is never touched)."""

    exit_code = 5


def format_ready(port: int) -> str:
    return f"{READY} {port}"


def format_present(size: int) -> str:
    return f"{PRESENT} {size}"


def format_ok(hexdigest: str) -> str:
    return f"{OK} {hexdigest}"


def format_error(kind: str, detail: str = "") -> str:
    """One ``ERROR kind: detail`` line; newlines in the detail are flattened so it stays one line."""
    detail = " ".join(detail.split())
    return f"{ERROR} {kind}: {detail}" if detail else f"{ERROR} {kind}"


def format_verify(size: int, hexdigest: str) -> str:
    return f"{VERIFY} {size} {hexdigest}"


def _as_text(line: str | bytes) -> str:
    if isinstance(line, bytes):
        return line.decode("utf-8", "replace")
    return line


def parse_int_field(text: str, low: int, high: int) -> int | None:
    """A plain decimal in [low, high] (no sign, no spaces, no ``1_000``), else None."""
    if not _DIGITS_RE.fullmatch(text):
        return None
    value = int(text)
    return value if low <= value <= high else None


def parse_verify_line(line: str | bytes) -> tuple[int, str] | None:
    """``VERIFY <size> <hex>`` -> (size, lower-case hex); anything else -> None (pure)."""
    parts = _as_text(line).strip().split(" ")
    if len(parts) != 3 or parts[0] != VERIFY:
        return None
    size = parse_int_field(parts[1], 0, 2**63 - 1)
    digest = parts[2].lower()
    if size is None or not _HEX128_RE.fullmatch(digest):
        return None
    return size, digest


@dataclass(frozen=True)
class ReceiverReply:
    """One line from the receiver.  ``kind`` is READY, OK or ERROR; ``reason`` is the error
    kind (one of ERROR_KINDS, "protocol" for a line that is not protocol at all)."""

    kind: str
    port: int | None = None
    hexdigest: str | None = None
    reason: str = ""
    detail: str = ""
    size: int | None = None  # with PRESENT: the size of the file already there

    @property
    def is_error(self) -> bool:
        return self.kind == ERROR

    def describe(self) -> str:
        if self.kind == ERROR:
            return f"{self.reason}: {self.detail}" if self.detail else self.reason
        return f"{self.kind} {self.port if self.kind == READY else self.hexdigest}"


def _protocol_error(line: str) -> ReceiverReply:
    shown = line if len(line) <= 200 else line[:200] + "..."
    return ReceiverReply(ERROR, reason=ERR_PROTOCOL, detail=f"unexpected line from receiver: {shown!r}")


def parse_receiver_line(line: str | bytes) -> ReceiverReply:
    """Parse one receiver line (pure); never raises: garbage becomes an ERROR "protocol" reply.

    Whatever a broken or foreign program prints on the channel must turn into a failed transfer
    with the line in the reason, not into an exception in the middle of the plotter's loop.
    """
    text = _as_text(line).rstrip("\r\n")
    word, _, rest = text.partition(" ")
    if word == READY:
        port = parse_int_field(rest, MIN_PORT, MAX_PORT)
        return ReceiverReply(READY, port=port) if port is not None else _protocol_error(text)
    if word == PRESENT:
        size = parse_int_field(rest, 0, 2**63 - 1)
        return ReceiverReply(PRESENT, port=None, size=size) if size is not None else _protocol_error(text)
    if word == OK:
        digest = rest.strip().lower()
        return ReceiverReply(OK, hexdigest=digest) if _HEX128_RE.fullmatch(digest) else _protocol_error(text)
    if word == ERROR and rest.strip():
        kind, _, detail = rest.partition(":")
        kind = kind.strip()
        if kind not in ERROR_KINDS:
            return ReceiverReply(ERROR, reason="unknown", detail=rest.strip())
        return ReceiverReply(ERROR, reason=kind, detail=detail.strip())
    return _protocol_error(text)


def validate_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not MIN_PORT <= port <= MAX_PORT:
        raise ValueError(f"port must be an integer {MIN_PORT}..{MAX_PORT}, got {port!r}")
    return port


def build_receive_command(
    script_path: str | Path, name: str, size: int, port: int, allow_from: str | None = None
) -> str:
    """The shell command the plotter runs over SSH: ``<script> NAME SIZE PORT``, all quoted (pure).

    The name is validated first (PlotFileError) so a crafted file name is refused before it is
    ever near a shell; quoting every word anyway keeps the script path safe too.
    ``allow_from`` (an IP address) becomes ``--allow-from ADDR`` before NAME: the address the
    data will come from when that is not the SSH client's (a separate data network).
    """
    validate_plot_name(name)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive number of bytes, got {size!r}")
    validate_port(port)
    script = str(script_path)
    if not script or "\0" in script or "\n" in script:
        raise ValueError(f"bad receive script path {script_path!r}")
    words = [script]
    if allow_from is not None:
        words += ["--allow-from", str(ipaddress.ip_address(allow_from))]  # ValueError if not an IP
    words += [name, str(size), str(port)]
    return " ".join(shlex.quote(word) for word in words)


def pick_port(base: int, count: int, used: Collection[int]) -> int | None:
    """The first port in ``base .. base+count-1`` not in ``used``, or None when all are (pure).

    ``used`` holds ports the plotter is already sending on and ports a receiver refused with
    "port in use"; the retry loop in send_plot feeds refusals back in.
    """
    validate_port(base)
    if count < 1 or base + count - 1 > MAX_PORT:
        raise ValueError(f"port range {base}+{count} goes beyond {MAX_PORT}")
    for port in range(base, base + count):
        if port not in used:
            return port
    return None


# --------------------------------------------------------------------------------------------
# The data stream (plotter side)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamResult:
    """What went into the stream: byte count, xxh3-128 of those bytes, wall seconds."""

    size: int
    hexdigest: str
    seconds: float


ProgressCallback = Callable[[int, int], None]


def _set_pipe_size(fd: int, size: int = PIPE_SIZE) -> None:
    """Grow a pipe so nc and we wake each other 16x less often; harmless if refused."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)


def _kill_and_reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill one child we started (by its pid, via Popen) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _read_tail(handle: IO[bytes], limit: int = 2000) -> str:
    with contextlib.suppress(OSError, ValueError):
        handle.seek(0)
        return " ".join(handle.read()[-limit:].decode("utf-8", "replace").split())
    return ""


def source_address_towards(host: str, port: int) -> str | None:
    """The local address the kernel would use to reach ``host`` (None if it cannot tell).

    A UDP ``connect`` only picks a route, it sends nothing.  The receiver accepts the stream
    from the SSH client's address; when the data goes over another network (``data_host``)
    this is the address it will really come from, passed as ``--allow-from``.
    """
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.connect(address)
            return str(probe.getsockname()[0]).split("%", 1)[0]
    except (OSError, IndexError, UnicodeError):
        return None


def _check_host(host: str) -> str:
    if not host or host.startswith("-") or any(c.isspace() for c in host) or "\0" in host:
        raise ValueError(f"bad host {host!r}")
    return host


def stream_file(
    path: str | Path,
    host: str,
    port: int,
    progress_cb: ProgressCallback | None = None,
    chunk: int = DEFAULT_CHUNK,
    *,
    expected_size: int | None = None,
    idle_timeout: float = 120.0,
    nc: str | None = "nc",
) -> StreamResult:
    """Send the file at ``path`` to ``host:port`` through ``nc -N`` and hash it on the way.

    With ``nc=None`` the same bytes go over a plain TCP socket from this process instead (the
    stream on the wire is identical: the receiver cannot tell). bench/ measured the pipe hop
    into nc (which moves 16 KiB per wake-up) as the sender's bottleneck on a loaded 2-core
    machine: ~0.55x raw ``nc < file`` through nc, ~1x through the socket.

    Each chunk is read into one reusable buffer and hashed, then the same byte range is spliced
    from the file into nc's stdin (zero-copy from the page cache; plain ``write`` if the file
    system cannot splice).  Splicing measured ~5-10% faster and ~0.15 s/GB less CPU than
    writing the buffer into the pipe.  If the file changed between our read and the splice, the
    receiver's hash (of what arrived) differs from ours (of what we read) and the transfer
    fails: the proof still holds.

    Cost of keeping nc in the path (loopback, 2 cores shared by both ends): our sender used
    ~0.3-0.5 s/GB more CPU than a bare ``nc < file`` (the read copy, the hash, and one wake-up
    per 16 KiB that nc takes from the pipe).  A Python socket sender would be cheaper than nc;
    nc is kept because the design wants netcat in the data path and a real link (1-10 GbE) is
    far below what this side can push.

    ``nc -w idle_timeout`` bounds both the connect and any stall, so a dead receiver or link
    ends the stream instead of hanging.  ``progress_cb(sent, total)`` is called after every
    chunk.  Raises TransferError (nc failed, file shorter/longer than expected, I/O error).
    """
    _check_host(host)
    validate_port(port)
    if chunk <= 0:
        raise ValueError("chunk must be positive")
    started = time.monotonic()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        total = os.fstat(fd).st_size
        if expected_size is not None and total != expected_size:
            raise TransferError(f"{path} is {total} bytes, expected {expected_size}: it changed")
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        if nc is None:
            hexdigest = _stream_socket(fd, host, port, total, progress_cb, chunk, path, idle_timeout)
        else:
            hexdigest = _stream_nc(fd, host, port, total, progress_cb, chunk, path, idle_timeout, nc)
        if os.fstat(fd).st_size != total:
            raise TransferError(f"{path} changed size while it was being sent")
    finally:
        os.close(fd)
    return StreamResult(total, hexdigest, time.monotonic() - started)


def _stream_nc(
    fd: int,
    host: str,
    port: int,
    total: int,
    progress_cb: ProgressCallback | None,
    chunk: int,
    path: str | Path,
    idle_timeout: float,
    nc: str,
) -> str:
    """Send ``total`` bytes of ``fd`` through ``nc -N host port``; returns the hex digest.

    nc's status and the tail of its stderr become the TransferError when it fails.
    """
    with tempfile.TemporaryFile() as errors:
        argv = [nc, "-N", "-w", str(max(1, round(idle_timeout))), "--", host, str(port)]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
        except OSError as exc:
            raise TransferError(f"cannot start {nc}: {exc.strerror or exc}") from exc
        try:
            hexdigest = _pump(fd, proc, total, progress_cb, chunk, path)
            status = proc.wait(timeout=idle_timeout + 10)
        except subprocess.TimeoutExpired:
            raise TransferError(f"nc to {host}:{port} did not finish within {idle_timeout:.0f} s") from None
        except BrokenPipeError:
            # nc is gone (refused, reset, timed out): its status and stderr say why.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            tail = _read_tail(errors)
            raise TransferError(
                f"nc to {host}:{port} quit mid-stream (status {proc.returncode}){': ' + tail if tail else ''}"
            ) from None
        except OSError as exc:
            raise TransferError(f"reading {path}: {exc.strerror or exc}") from exc
        finally:
            _kill_and_reap(proc)
        if status != 0:
            tail = _read_tail(errors)
            raise TransferError(f"nc to {host}:{port} failed (status {status}){': ' + tail if tail else ''}")
    return hexdigest


def _pump(
    fd: int,
    proc: subprocess.Popen[bytes],
    total: int,
    progress_cb: ProgressCallback | None,
    chunk: int,
    path: str | Path,
) -> str:
    """Read, hash and hand ``total`` bytes of ``fd`` to nc's stdin; returns the hex digest."""
    assert proc.stdin is not None
    pipe = proc.stdin.fileno()
    _set_pipe_size(pipe)
    buffer = bytearray(min(chunk, max(total, 1)))
    view = memoryview(buffer)
    digest = xxhash.xxh3_128()
    offset = 0
    can_splice = hasattr(os, "splice")
    try:
        while offset < total:
            want = min(len(buffer), total - offset)
            got = os.preadv(fd, [view[:want]], offset)
            if got == 0:
                raise TransferError(f"{path} ended at byte {offset} of {total}: it shrank while being sent")
            digest.update(view[:got])
            end = offset + got
            if can_splice:
                try:
                    while offset < end:
                        moved = os.splice(fd, pipe, end - offset, offset_src=offset)
                        if moved == 0:
                            raise TransferError(f"{path} ended at byte {offset}: it shrank while being sent")
                        offset += moved
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
                        raise
                    can_splice = False  # this file system cannot splice: copy the rest
            if offset < end:
                _write_all(pipe, view[offset - (end - got) : got])
                offset = end
            if progress_cb is not None:
                progress_cb(offset, total)
    finally:
        proc.stdin.close()
    return digest.hexdigest()


def hash_fd(fd: int, chunk: int = DEFAULT_CHUNK) -> tuple[int, str]:
    """Size and xxh3-128 of what an open file holds (both ends use it for a plot already there)."""
    digest = xxhash.xxh3_128()
    size = 0
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    while got := os.readv(fd, [buffer]):
        digest.update(view[:got])
        size += got
    return size, digest.hexdigest()


def hash_file(path: str | Path, chunk: int = DEFAULT_CHUNK) -> tuple[int, str]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return hash_fd(fd, chunk)
    finally:
        os.close(fd)


def _stream_socket(
    fd: int,
    host: str,
    port: int,
    total: int,
    progress_cb: ProgressCallback | None,
    chunk: int,
    path: str | Path,
    idle_timeout: float,
) -> str:
    """Read, hash and send ``total`` bytes over one TCP connection; returns the hex digest.

    Ends like ``nc -N``: half-close after the last byte, then wait for the receiver to close,
    so the bytes are known to have left. Every connect, send and wait is bounded by
    ``idle_timeout``: a dropped link ends the stream instead of hanging.
    """
    buffer = bytearray(min(chunk, max(total, 1)))
    view = memoryview(buffer)
    digest = xxhash.xxh3_128()
    offset = 0
    try:
        with socket.create_connection((host, port), timeout=idle_timeout) as sock:
            while offset < total:
                got = os.preadv(fd, [view[: min(len(buffer), total - offset)]], offset)
                if got == 0:
                    raise TransferError(f"{path} ended at byte {offset} of {total}: it shrank while being sent")
                digest.update(view[:got])
                sock.sendall(view[:got])
                offset += got
                if progress_cb is not None:
                    progress_cb(offset, total)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
    except TimeoutError:
        raise TransferError(f"stream to {host}:{port} stalled: nothing moved for {idle_timeout:.0f} s") from None
    except OSError as exc:
        raise TransferError(f"stream to {host}:{port} failed at byte {offset}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


# --------------------------------------------------------------------------------------------
# Starting the receiver: the "exec" abstraction
# --------------------------------------------------------------------------------------------


class ReceiverProcess(Protocol):
    """A started receiver command whose stdin/stdout are the control channel.

    Production: an SSH exec channel (ParamikoExec); tests: a local process (LocalExec).
    """

    stdin: Any  # write(bytes), flush()
    stdout: Any  # readline(limit) -> bytes | str

    def close_stdin(self) -> None:
        """Send EOF: tells the receiver the plotter is gone (it then removes its part file)."""

    def wait(self, timeout: float) -> int | None:
        """Exit status, or None if still running after ``timeout`` seconds."""

    def kill(self) -> None:
        """Stop the command (kill our child / close the SSH channel)."""

    def stderr_text(self) -> str:
        """What the command wrote to stderr so far (for failure reasons)."""


ExecFn = Callable[[str], ReceiverProcess]


class LocalProcess:
    """A command run by ``/bin/sh -c`` here, as sshd would run it on the harvester."""

    def __init__(self, command: str, env: Mapping[str, str] | None = None) -> None:
        # Lives as long as this object: stderr for failure reasons, never a pipe that could fill.
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            env=dict(env) if env is not None else None,
        )
        self.pid = self.proc.pid
        self.stdin = self.proc.stdin
        self.stdout = self.proc.stdout

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        # Closing stdin as well reaches a receiver running under flock, whose pid is not ours.
        self.close_stdin()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.wait(10)

    def stderr_text(self) -> str:
        return _read_tail(self._errors)


class LocalExec:
    """ExecFn running the command locally (tests, or a harvester that is also the plotter)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = env
        self.started: list[LocalProcess] = []

    def __call__(self, command: str) -> LocalProcess:
        process = LocalProcess(command, self.env)
        self.started.append(process)
        return process


class ParamikoProcess:
    """A command on an SSH exec channel (paramiko); EOF and exit status come from the channel."""

    def __init__(self, client: Any, command: str, timeout: float | None = None) -> None:
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise TransferError("SSH connection is not open")
        self.channel = transport.open_session(timeout=timeout)
        self.channel.exec_command(command)
        self.stdin = self.channel.makefile_stdin("wb")
        self.stdout = self.channel.makefile("rb")

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self.channel.shutdown_write()

    def wait(self, timeout: float) -> int | None:
        if not self.channel.status_event.wait(timeout):
            return None
        return int(self.channel.recv_exit_status())

    def kill(self) -> None:
        self.channel.close()

    def stderr_text(self) -> str:
        chunks = []
        with contextlib.suppress(OSError, EOFError):
            while self.channel.recv_stderr_ready():
                chunks.append(self.channel.recv_stderr(65536))
        return " ".join(b"".join(chunks)[-2000:].decode("utf-8", "replace").split())


class ParamikoExec:
    """ExecFn over an open ``paramiko.SSHClient`` (host keys are checked by whoever opened it)."""

    def __init__(self, client: Any, timeout: float | None = 30.0) -> None:
        self.client = client
        self.timeout = timeout

    def __call__(self, command: str) -> ParamikoProcess:
        return ParamikoProcess(self.client, command, self.timeout)


class _LineReader:
    """Reads the receiver's stdout on a thread so every wait for a line can have a timeout.

    A blocking ``readline`` cannot time out, and select() on a buffered channel file lies; a
    reader thread works the same for a pipe and a paramiko channel.  Started by send_plot (not
    by a constructor) and ends by itself at EOF, which killing the receiver guarantees.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="receiver-stdout", daemon=True)

    def start(self) -> _LineReader:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while True:
                line = self._stream.readline(MAX_LINE)
                if not line:
                    break
                self._lines.put(_as_text(line).rstrip("\r\n"))
        except (OSError, ValueError, EOFError):
            pass
        finally:
            self._lines.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next line; None at (and after) EOF; raises TimeoutError if nothing came in time."""
        if self._ended:
            return None
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        self._ended = line is None
        return line


# --------------------------------------------------------------------------------------------
# The whole transfer (plotter side)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceIdentity:
    """Which file we sent: deletion re-checks all of it so a replaced or rewritten file stays."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: str | Path) -> SourceIdentity:
        info = os.stat(path)
        return cls(info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev)


@dataclass(frozen=True)
class TransferResult:
    """Outcome of send_plot.  ``ok`` means the receiver verified, fsynced and renamed the plot
    (``reason`` may still carry a note); otherwise ``reason`` says what failed and
    ``receiver_error`` is the receiver's ERROR kind, if it gave one."""

    ok: bool
    name: str
    reason: str = ""
    size: int = 0
    seconds: float = 0.0
    stream_seconds: float = 0.0
    hexdigest: str = ""
    port: int | None = None
    receiver_error: str = ""
    receiver_status: int | None = None
    source: SourceIdentity | None = None

    @property
    def mb_per_s(self) -> float:
        """Whole-transfer speed in MB/s (10**6), start of the receiver to its OK."""
        return self.size / self.seconds / 1e6 if self.ok and self.seconds > 0 else 0.0


def _finish(process: ReceiverProcess, timeout: float) -> int | None:
    """Close our side, give the receiver ``timeout`` to exit, else stop it; its exit status."""
    process.close_stdin()
    status = process.wait(timeout)
    if status is None:
        process.kill()
        status = process.wait(5)
    return status


def send_plot(
    exec_fn: ExecFn,
    script_path: str | Path,
    path: str | Path,
    host: str,
    port: int,
    *,
    port_count: int = 10,
    busy_ports: Collection[int] = (),
    ready_timeout: float = 60.0,
    verify_timeout: float = 900.0,
    idle_timeout: float = 120.0,
    chunk: int = DEFAULT_CHUNK,
    progress_cb: ProgressCallback | None = None,
    data_address: Callable[[str, int], tuple[str, int]] | None = None,
    nc: str | None = "nc",
    dest_name: str | None = None,
) -> TransferResult:
    """Send one plot: start the receiver, wait for READY, stream, VERIFY, wait for OK.

    ``dest_name`` is the plot's name on the harvester (e.g. with a ``portable.`` prefix);
    it defaults to the source's name and is validated like any plot name.

    ``exec_fn`` starts the receiver command (ParamikoExec in production, LocalExec in tests).
    Ports are tried from ``port`` upwards (``port_count`` of them, skipping ``busy_ports``)
    while receivers answer "port in use".  ``verify_timeout`` covers the receiver's fsync of a
    whole plot, which on a busy spinning disk can take minutes.  ``data_address`` maps the
    receiver's (host, port) to where nc connects (a port forward; tests put a proxy there).

    Never raises for a transfer problem and never touches the source: the result says ok or
    why not, and only delete_source_after_ok removes the source.
    """
    path = Path(path)
    name = dest_name or path.name
    started = time.monotonic()

    def failed(reason: str, **extra: Any) -> TransferResult:
        return TransferResult(False, name, reason, seconds=time.monotonic() - started, **extra)

    try:
        source = SourceIdentity.of(path)
        build_receive_command(script_path, name, source.size, validate_port(port))
        _check_host(host)
    except (PlotManagerError, ValueError, OSError) as exc:
        return failed(f"refused before starting: {exc}")

    source_address = source_address_towards(host, port)
    tried: set[int] = set(busy_ports)
    while True:
        try:
            current = pick_port(port, port_count, tried)
        except ValueError as exc:
            return failed(f"refused before starting: {exc}")
        if current is None:
            return failed(f"no free port in {port}..{port + port_count - 1}", source=source)
        tried.add(current)
        command = build_receive_command(script_path, name, source.size, current, source_address)
        result = _send_once(
            exec_fn, command, path, name, host, current, source, started,
            ready_timeout=ready_timeout, verify_timeout=verify_timeout, idle_timeout=idle_timeout,
            chunk=chunk, progress_cb=progress_cb, data_address=data_address, nc=nc,
        )  # fmt: skip
        if result.receiver_error != ERR_PORT_IN_USE:
            return result


def _send_once(
    exec_fn: ExecFn,
    command: str,
    path: Path,
    name: str,
    host: str,
    port: int,
    source: SourceIdentity,
    started: float,
    *,
    ready_timeout: float,
    verify_timeout: float,
    idle_timeout: float,
    chunk: int,
    progress_cb: ProgressCallback | None,
    data_address: Callable[[str, int], tuple[str, int]] | None,
    nc: str | None,
) -> TransferResult:
    def result(ok: bool, reason: str = "", **extra: Any) -> TransferResult:
        return TransferResult(ok, name, reason, seconds=time.monotonic() - started, port=port, source=source, **extra)

    def receiver_failed(
        process: ReceiverProcess, reader: _LineReader, what: str, reply: ReceiverReply | None, **extra: Any
    ) -> TransferResult:
        """Close the channel, collect the receiver's own reason if it has one, and report.

        Closing stdin first is what tells a receiver that is still waiting to give up and
        remove its part file; a receiver that already failed has its ERROR line queued.
        """
        process.close_stdin()
        if reply is None:
            with contextlib.suppress(TimeoutError):
                line = reader.next_line(timeout=10)
                reply = parse_receiver_line(line) if line is not None else None
        status = _finish(process, 10)
        reason = what
        if reply is not None and reply.is_error:
            reason = f"{what}: receiver says {reply.describe()}"
        elif reply is None:
            err = process.stderr_text()
            reason = f"{what} (receiver exit status {status}{'; ' + err if err else ''})"
        return result(
            False, reason, receiver_error=reply.reason if reply is not None and reply.is_error else "",
            receiver_status=status, **extra,
        )  # fmt: skip

    try:
        process = exec_fn(command)
    except Exception as exc:  # noqa: BLE001 - any failure to start is a failed transfer
        return result(False, f"cannot start receiver: {exc}")
    try:
        reader = _LineReader(process.stdout).start()
        # 1. READY
        try:
            line = reader.next_line(ready_timeout)
        except TimeoutError:
            return receiver_failed(process, reader, f"no READY within {ready_timeout:.0f} s", None)
        if line is None:
            return receiver_failed(process, reader, "receiver ended before READY", None)
        reply = parse_receiver_line(line)
        present = reply.kind == PRESENT and reply.size == source.size
        if not present and (reply.kind != READY or reply.port != port):
            what = "receiver refused" if reply.is_error else f"expected READY {port}"
            return receiver_failed(process, reader, what, reply if reply.is_error else _protocol_error(line))

        # 2. the stream, or (the plot is already there: an earlier OK was lost) only our hash
        if present:
            try:
                size, digest = hash_file(path, chunk)
            except OSError as exc:
                return receiver_failed(process, reader, f"cannot read {path}: {exc.strerror or exc}", None)
            streamed = StreamResult(size, digest, 0.0)
        else:
            target_host, target_port = data_address(host, port) if data_address else (host, port)
            try:
                streamed = stream_file(
                    path, target_host, target_port, progress_cb, chunk,
                    expected_size=source.size, idle_timeout=idle_timeout, nc=nc,
                )  # fmt: skip
            except (TransferError, OSError) as exc:
                # Closing stdin tells the receiver to give up and remove its part file.
                return receiver_failed(process, reader, f"stream failed: {exc}", None)

        # 3. VERIFY / OK
        try:
            process.stdin.write((format_verify(streamed.size, streamed.hexdigest) + "\n").encode())
            process.stdin.flush()
        except (OSError, ValueError, EOFError) as exc:
            return receiver_failed(process, reader, f"cannot send VERIFY: {exc}", None)
        try:
            line = reader.next_line(verify_timeout)
        except TimeoutError:
            return receiver_failed(process, reader, f"no answer to VERIFY within {verify_timeout:.0f} s", None)
        if line is None:
            return receiver_failed(process, reader, "receiver ended without answering VERIFY", None)
        reply = parse_receiver_line(line)
        extra = {"size": streamed.size, "stream_seconds": streamed.seconds, "hexdigest": streamed.hexdigest}
        if reply.kind != OK:
            what = "receiver rejected the plot" if reply.is_error else "unexpected answer to VERIFY"
            return receiver_failed(process, reader, what, reply, **extra)
        if reply.hexdigest != streamed.hexdigest:
            return receiver_failed(
                process, reader, f"receiver confirmed a different hash {reply.hexdigest}", None, **extra
            )
        # OK is printed only after fsync, rename and directory fsync: it is the proof.  An odd
        # exit status after it (an SSH session torn down right after the line) changes nothing
        # about the plot, so it is only noted; treating it as a failure would keep the source
        # and make every retry end in "exists".
        status = _finish(process, 30)
        note = "" if status == 0 else f"receiver exited with status {status} after OK"
        if present:
            note = "already on the harvester, identical (an earlier OK was lost)" + (f"; {note}" if note else "")
        return result(True, note, receiver_status=status, **extra)
    finally:
        with contextlib.suppress(Exception):
            if process.wait(0) is None:
                process.kill()


def delete_source_after_ok(path: str | Path, result: TransferResult) -> None:
    """Delete the plot we sent, only after OK and only if it is still the very file we sent.

    A plotter (or a farmer) may rewrite or replace a file with the same name while it is being
    sent; deleting that would lose a plot nobody has a copy of.  Raises TransferError and keeps
    the file if ``result`` is not ok or size, mtime, inode or device differ.
    """
    if not result.ok or result.source is None:
        raise TransferError(f"not deleting {path}: the transfer did not succeed ({result.reason})")
    try:
        now = SourceIdentity.of(path)
    except OSError as exc:
        raise TransferError(f"not deleting {path}: {exc.strerror or exc}") from exc
    if now != result.source or now.size != result.size:
        raise TransferError(f"not deleting {path}: it changed since it was sent ({result.source} -> {now})")
    os.unlink(path)
