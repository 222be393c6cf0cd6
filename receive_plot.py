#!/usr/bin/env python3
"""Receive one plot from a plotter: the program ``receive_plot.sh`` runs on the harvester.

    receive_plot.py --config CFG --dest DIR [--replace-old-plots yes|no] [--idle-timeout S]
                    [--bind ADDR] [--allow-from ADDR] [--] NAME SIZE PORT

stdin/stdout are the SSH channel (any pipes when run by hand or in tests).  The protocol and its
lines are described in ``utilities/transfer/protocol.py``; in short::

    -> READY <port>      after checking everything and reserving SIZE bytes on the drive
    <- (SIZE bytes on a TCP connection to PORT, sent by ``nc -N``)
    <- VERIFY <size> <xxh3_128 hex>
    -> OK <hex>          fsynced, renamed to DIR/NAME, directory fsynced; exit 0
    -> ERROR <kind>: ... anything else; exit status per kind (RECEIVER_EXIT_CODES)

Safety rules, each for a plot-losing or farm-breaking failure seen in the wild:

* Nothing named ``*.plot`` appears unless its bytes were verified: data goes to the hidden
  ``DIR/.NAME.part`` and is renamed only after the plotter's hash and size match ours.
* On any failure, signal (SIGTERM, SIGHUP, SIGPIPE, SIGINT) or end of the control channel the
  part file is removed.  Only SIGKILL (or a power cut) can leave it, and every later receiver
  on that directory removes part files no living receiver holds (an ``flock`` on the part file
  marks it alive; the kernel drops the lock when its process dies).  These part-file rules
  live in ``utilities/transfer/part_files.py``: move_local_plots.py writes into the same directories.
* The drive's space is reserved up front (``fallocate``) so a full disk fails in a second, not
  after 90 GiB; a dropped link ends in ``--idle-timeout`` seconds instead of hanging forever.
* Only a connection from the plotter's address is accepted: ``SSH_CLIENT``, plus the
  ``--allow-from`` address send_plot passes when the data takes another network than SSH
  (the listener is on every address for that reason).  This is one reason the receiving
  side is a Python socket rather than ``nc -l``, which takes the first connection from anyone.
  The other is speed (loopback, 2 GiB, fed by a bare ``nc -N < file``): hashing as it goes it
  received ~1.9x as fast as ``nc -l > file`` and ~1.1x as fast as ``nc -l`` into a
  preallocated file, at the same CPU per GB; ``nc -l | python`` (hash and write in Python)
  managed only ~0.9x of ``nc -l > file`` and used ~1.5x the CPU (nc hands over 16 KiB at a
  time through a pipe).

``--config`` is accepted (the script always passes it) but not read: nothing here needs a
setting, and skipping pydantic/YAML keeps the start-up under 0.1 s.  ``--replace-old-plots yes``
(written into the script by drive_manager.py in replace mode) lets the receiver delete exactly
one old OG plot when the incoming plot does not fit (utilities/replace.py decides which).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import select
import signal
import socket
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_REPO = os.path.dirname(os.path.abspath(__file__))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import xxhash  # noqa: E402

from utilities.errors import PlotFileError  # noqa: E402
from utilities.plots import validate_plot_name  # noqa: E402
from utilities.transfer import part_files  # noqa: E402
from utilities.transfer import protocol as proto  # noqa: E402
from utilities.transfer.integrity import DEFAULT_CHUNK, hash_fd  # noqa: E402
from utilities.transfer.part_files import SPACE_MARGIN, part_name  # noqa: E402

DEFAULT_IDLE_TIMEOUT = 120.0
# While data flows the receiver only reads the socket; when it stalls, this often (seconds) it
# looks at stdin (plotter gone?) and at the idle clock.
CHECK_INTERVAL = 1.0
# SO_RCVLOWAT while streaming: one wake-up per 256 KiB instead of per arriving segment.
RECV_LOW_WATER = 256 * 1024
_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGINT)


class Failure(Exception):
    """A reason to stop: ``kind`` is one of utilities.transfer.protocol.ERROR_KINDS."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class Aborted(BaseException):
    """Raised from a signal handler so every ``finally`` runs and the part file goes."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, _frame: object) -> None:
    raise Aborted(signum)


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------

_OPTIONS = ("--config", "--dest", "--idle-timeout", "--bind", "--allow-from", "--replace-old-plots")


@dataclass(frozen=True)
class Options:
    dest: str
    name: str
    size: int
    port: int
    idle_timeout: float
    bind: str | None
    allow_from: str | None
    replace_old_plots: bool = False


def parse_args(argv: list[str]) -> Options:
    """Strict parsing: each option once, as ``--opt value``, then exactly NAME SIZE PORT.

    The script appends the plotter's words after its own options; a plotter sending
    ``--dest`` (or ``--dest=/x``) as a name must not be able to move the destination, so a
    repeated option is an error and anything unknown is a positional (then fails validation).
    """
    values: dict[str, str] = {}
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            index += 1
            break
        if word not in _OPTIONS:
            break
        if word in values:
            raise Failure(proto.ERR_USAGE, f"{word} given twice")
        if index + 1 >= len(argv):
            raise Failure(proto.ERR_USAGE, f"{word} needs a value")
        values[word] = argv[index + 1]
        index += 2
    rest = argv[index:]
    if len(rest) != 3:
        raise Failure(proto.ERR_USAGE, f"expected NAME SIZE PORT, got {len(rest)} argument(s)")
    name, size_text, port_text = rest
    try:
        validate_plot_name(name)
    except PlotFileError as exc:
        raise Failure(proto.ERR_BAD_NAME, str(exc)) from None
    size = proto.parse_int_field(size_text, 1, 2**63 - 1)
    if size is None:
        raise Failure(proto.ERR_USAGE, f"SIZE must be a positive number of bytes, got {size_text!r}")
    port = proto.parse_int_field(port_text, proto.MIN_PORT, proto.MAX_PORT)
    if port is None:
        raise Failure(proto.ERR_USAGE, f"PORT must be {proto.MIN_PORT}..{proto.MAX_PORT}, got {port_text!r}")
    if "--dest" not in values:
        raise Failure(proto.ERR_USAGE, "--dest is required")
    try:
        idle = float(values.get("--idle-timeout", DEFAULT_IDLE_TIMEOUT))
    except ValueError:
        idle = -1.0
    if not 0 < idle <= 86400:
        raise Failure(proto.ERR_USAGE, f"--idle-timeout must be 0 < seconds <= 86400, got {values['--idle-timeout']!r}")
    replace = values.get("--replace-old-plots", "no")
    if replace not in ("yes", "no"):
        raise Failure(proto.ERR_USAGE, f"--replace-old-plots must be yes or no, got {replace!r}")
    return Options(
        values["--dest"], name, size, port, idle, values.get("--bind"), values.get("--allow-from"), replace == "yes"
    )


def _ssh_field(variable: str, index: int) -> str | None:
    fields = os.environ.get(variable, "").split()
    return fields[index] if len(fields) > index else None


def _normal_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# --------------------------------------------------------------------------------------------
# Output and the control channel
# --------------------------------------------------------------------------------------------


def reply(line: str) -> None:
    """One protocol line on stdout, unbuffered: the plotter waits for it."""
    data = (line + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


def note(message: str) -> None:
    """Diagnostics go to stderr, never to the protocol channel."""
    with contextlib.suppress(OSError):
        os.write(2, f"receive_plot: {message}\n".encode(errors="replace"))


class Control:
    """stdin, read without blocking: the VERIFY line, and EOF meaning "the plotter is gone"."""

    FD = 0

    def __init__(self) -> None:
        self.buffer = b""
        self.eof = False

    def read_available(self) -> None:
        data = os.read(self.FD, 4096)
        if not data:
            self.eof = True
        self.buffer += data
        if len(self.buffer) > proto.MAX_LINE and b"\n" not in self.buffer:
            raise Failure(proto.ERR_PROTOCOL, "control line too long")

    def line(self) -> str | None:
        head, newline, _rest = self.buffer.partition(b"\n")
        return head.decode("utf-8", "replace") if newline else None

    def check_alive(self) -> None:
        """Fail if stdin ended without a complete line: nobody will ever send VERIFY."""
        if self.eof and self.line() is None:
            raise Failure(proto.ERR_ABORTED, "control channel closed (plotter or SSH session gone)")


# --------------------------------------------------------------------------------------------
# The receiver
# --------------------------------------------------------------------------------------------


class Receiver:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.part = part_name(options.name)
        self.control = Control()
        self.dir_fd: int | None = None
        self.part_fd: int | None = None
        self.part_inode: int | None = None
        self.listener: socket.socket | None = None
        self.conn: socket.socket | None = None
        self.committed = False
        self.allowed: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address] = frozenset()

    # -- checks before anything is created ------------------------------------------------

    def open_dest(self) -> None:
        """Open DIR once; every later step is relative to this fd, so it is the same directory
        even if the path is remounted or replaced while we run."""
        try:
            self.dir_fd = part_files.open_directory(self.options.dest)
        except OSError as exc:
            raise Failure(proto.ERR_BAD_DEST, f"{self.options.dest}: {exc.strerror}") from None

    def check_final_free(self) -> bool:
        """True when the final name is free. A file of the announced size already there may be
        this very plot from an earlier run whose OK got lost: the caller then proves it by hash.
        Anything else under that name is an error."""
        try:
            st = os.stat(self.options.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        except OSError as exc:
            raise Failure(proto.ERR_IO, f"cannot check {self.options.name}: {exc.strerror}") from None
        if stat.S_ISREG(st.st_mode) and st.st_size == self.options.size:
            return False
        raise Failure(proto.ERR_EXISTS, f"{self.options.name} already exists in {self.options.dest}")

    def confirm_present(self) -> str:
        """The plot is already here: hash it and answer OK only if it is the plotter's plot.

        Nothing is written or deleted here; a different file of the same name stays as it is.
        """
        try:
            reply(proto.format_present(self.options.size))
        except OSError:
            raise Failure(proto.ERR_ABORTED, "control channel closed before PRESENT") from None
        size, expected = self.wait_verify()
        try:
            fd = os.open(self.options.name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.dir_fd)
        except OSError as exc:
            raise Failure(proto.ERR_IO, f"cannot open {self.options.name}: {exc.strerror}") from None
        try:
            have_size, have = hash_fd(fd)
        except OSError as exc:
            raise Failure(proto.ERR_IO, f"cannot read {self.options.name}: {exc.strerror}") from None
        finally:
            os.close(fd)
        if (have_size, have) != (size, expected):
            raise Failure(proto.ERR_EXISTS, f"{self.options.name} already exists in {self.options.dest} with different content")
        self.committed = True
        return have

    def check_space(self) -> None:
        assert self.dir_fd is not None
        free = part_files.free_bytes(self.dir_fd)
        if not part_files.has_room(free, self.options.size):
            raise Failure(
                proto.ERR_NO_SPACE,
                f"{self.options.size} bytes needed, {free} free in {self.options.dest}",
            )

    # -- part files -------------------------------------------------------------------------

    def clean_stale_parts(self) -> None:
        """Remove part files left by dead receivers or local moves: each is a preallocated,
        wasted plot slot (the rules are utilities/transfer/part_files.py's, shared with local moves)."""
        assert self.dir_fd is not None
        try:
            entries = part_files.stale_part_candidates(self.dir_fd)
        except OSError as exc:
            raise Failure(proto.ERR_IO, f"cannot list {self.options.dest}: {exc.strerror}") from None
        for entry in entries:
            check = part_files.remove_if_stale(self.dir_fd, entry)
            if check.unreadable:
                note(f"cannot open {entry} to check it: {check.unreadable}")
            if check.removed:
                note(f"removed stale {entry} left by a writer that died")
            if not check.gone and entry == self.part:
                raise Failure(proto.ERR_BUSY, f"another receiver is receiving {self.options.name}")

    def create_part(self) -> None:
        assert self.dir_fd is not None
        try:
            self.part_fd, self.part_inode = part_files.create_part(self.dir_fd, self.part)
        except FileExistsError:
            raise Failure(proto.ERR_BUSY, f"another receiver is receiving {self.options.name}") from None
        except part_files.LostRace:
            raise Failure(proto.ERR_BUSY, f"lost a race for {self.part}; try again") from None
        except OSError as exc:
            kind = proto.ERR_BAD_DEST if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else proto.ERR_IO
            raise Failure(kind, f"cannot create {self.part} in {self.options.dest}: {exc.strerror}") from None

    def preallocate(self) -> None:
        assert self.part_fd is not None
        try:
            reserved = part_files.preallocate(self.part_fd, self.options.size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise Failure(proto.ERR_NO_SPACE, f"cannot reserve {self.options.size} bytes: {exc.strerror}") from None
            if exc.errno == errno.EFBIG:
                raise Failure(proto.ERR_NO_SPACE, f"file system cannot hold a {self.options.size}-byte file") from None
            raise Failure(proto.ERR_IO, f"cannot reserve space: {exc.strerror}") from None
        if not reserved:
            note("no fallocate on this file system; relying on the free-space check")

    # -- network --------------------------------------------------------------------------

    def listen(self) -> None:
        """Listen on PORT on every address (``--bind`` narrows it).

        Every address, because the plotter may send the data over another network than SSH
        (its ``data_host``); who may connect is decided in accept().  IPv4 and IPv6 share one
        dual-stack socket where the kernel has IPv6.
        """
        port = self.options.port
        if self.options.bind:
            candidates = [(socket.AF_INET6 if ":" in self.options.bind else socket.AF_INET, self.options.bind)]
        else:
            candidates = [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")]
        for family, address in candidates:
            try:
                listener = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                if family == socket.AF_INET6 and not self.options.bind:
                    continue  # no IPv6 in this kernel: plain IPv4
                raise Failure(proto.ERR_LISTEN, f"cannot open a socket: {exc.strerror}") from None
            self.listener = listener
            try:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and address == "::":
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                listener.bind((address, port))
                listener.listen(1)
            except OSError as exc:
                listener.close()
                self.listener = None
                if exc.errno == errno.EADDRINUSE:
                    raise Failure(proto.ERR_PORT_IN_USE, f"port {port} ({address})") from None
                if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) and address == "::":
                    continue
                raise Failure(proto.ERR_LISTEN, f"cannot listen on {address} port {port}: {exc.strerror}") from None
            listener.setblocking(False)
            return
        raise Failure(proto.ERR_LISTEN, f"cannot listen on port {port}")

    def _wait(self, sock: socket.socket | None, deadline: float, what: str) -> bool:
        """Wait until ``sock`` is readable or stdin has news; False when only stdin had news.

        Raises Failure(timeout) at ``deadline`` and Failure(aborted) when stdin ends with no
        complete line in it.
        """
        poller = select.poll()
        if sock is not None:
            poller.register(sock, select.POLLIN)
        if not self.control.eof:
            poller.register(Control.FD, select.POLLIN)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Failure(proto.ERR_TIMEOUT, what)
        events = poller.poll(remaining * 1000)
        if not events:
            raise Failure(proto.ERR_TIMEOUT, what)
        sock_ready = False
        for fd, _event in events:
            if fd == Control.FD:
                self.control.read_available()
                self.control.check_alive()
            else:
                sock_ready = True
        return sock_ready

    def accept(self) -> None:
        """Accept the plotter's data connection; connections from other addresses are closed."""
        assert self.listener is not None
        allowed = self.allowed
        idle = self.options.idle_timeout
        deadline = time.monotonic() + idle
        while True:
            if not self._wait(self.listener, deadline, f"no connection within {idle:g} s"):
                continue
            try:
                conn, peer = self.listener.accept()
            except BlockingIOError:
                continue
            if not allowed or _normal_ip(peer[0]) in allowed:
                break
            note(
                f"refused a data connection from {peer[0]} (expecting {', '.join(map(str, sorted(allowed, key=str)))})"
            )
            conn.close()
        self.listener.close()
        self.listener = None
        conn.setblocking(False)
        self.conn = conn

    def receive(self, chunk: int = DEFAULT_CHUNK) -> str:
        """Read exactly SIZE bytes into the part file, hashing as they arrive; the hex digest.

        The socket blocks (in C) for at most CHECK_INTERVAL per read: a busy stream costs no
        Python-level polling (measured markedly slower), and a stalled one
        still notices within a second that stdin ended or the idle timeout passed.
        """
        assert self.conn is not None and self.part_fd is not None
        conn = self.conn
        size = self.options.size
        idle = self.options.idle_timeout
        buffer = bytearray(min(chunk, size))
        view = memoryview(buffer)
        digest = xxhash.xxh3_128()
        got = 0
        last_data = time.monotonic()
        conn.settimeout(min(CHECK_INTERVAL, idle))
        low_water = self._set_low_water(conn, min(RECV_LOW_WATER, size))
        while got < size:
            if size - got < low_water:
                low_water = self._set_low_water(conn, size - got)
            try:
                count = conn.recv_into(view, min(len(buffer), size - got))
            except TimeoutError:
                self._check_control()
                if time.monotonic() - last_data >= idle:
                    raise Failure(proto.ERR_TIMEOUT, f"no data for {idle:g} s after {got} of {size} bytes") from None
                continue
            except OSError as exc:
                raise Failure(
                    proto.ERR_STREAM, f"connection lost after {got} of {size} bytes: {exc.strerror}"
                ) from None
            if count == 0:
                raise Failure(proto.ERR_STREAM, f"stream ended after {got} of {size} bytes")
            digest.update(view[:count])
            self._write(view[:count], got)
            got += count
            last_data = time.monotonic()
        conn.setblocking(False)
        return digest.hexdigest()

    @staticmethod
    def _set_low_water(conn: socket.socket, size: int) -> int:
        """Wake only when ``size`` bytes are waiting (or the stream ended): measured ~15% less
        CPU than waking for every segment; lowered at the end so the last bytes never wait."""
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, max(1, size))
        return size

    def _check_control(self) -> None:
        """Non-blocking look at stdin: fails at once if the plotter's channel has ended."""
        if self.control.eof:
            return
        poller = select.poll()
        poller.register(Control.FD, select.POLLIN)
        if poller.poll(0):
            self.control.read_available()
            self.control.check_alive()

    def _write(self, data: memoryview, offset: int) -> None:
        assert self.part_fd is not None
        try:
            while data:
                data = data[os.write(self.part_fd, data) :]
        except OSError as exc:
            kind = proto.ERR_NO_SPACE if exc.errno in (errno.ENOSPC, errno.EDQUOT) else proto.ERR_IO
            raise Failure(kind, f"writing {self.part} at byte {offset}: {exc.strerror}") from None

    def wait_verify(self) -> tuple[int, str]:
        """After SIZE bytes: the connection must end (or stay quiet) and VERIFY must come."""
        idle = self.options.idle_timeout
        deadline = time.monotonic() + idle
        while self.control.line() is None:
            self.control.check_alive()
            if self.conn is None:
                self._wait(None, deadline, f"no VERIFY within {idle:g} s")
                continue
            try:
                extra = self.conn.recv(1)
            except BlockingIOError:
                self._wait(self.conn, deadline, f"no VERIFY within {idle:g} s")
                continue
            except OSError:
                extra = b""  # a reset after all bytes arrived: VERIFY decides
            if extra:
                raise Failure(proto.ERR_STREAM, f"more than the announced {self.options.size} bytes arrived")
            self.conn.close()
            self.conn = None
        line = self.control.line() or ""
        parsed = proto.parse_verify_line(line)
        if parsed is None:
            shown = line if len(line) <= 200 else line[:200] + "..."
            raise Failure(proto.ERR_PROTOCOL, f"expected VERIFY <size> <hex>, got {shown!r}")
        return parsed

    def commit(self) -> None:
        """fsync the data, give it its final name (never over an existing file), fsync the dir."""
        assert self.part_fd is not None and self.dir_fd is not None
        name = self.options.name
        try:
            os.fsync(self.part_fd)
            ours = part_files.is_ours(self.dir_fd, self.part, self.part_inode)
        except OSError as exc:
            raise Failure(proto.ERR_IO, f"cannot flush {self.part}: {exc.strerror}") from None
        if not ours:
            raise Failure(proto.ERR_IO, f"{self.part} was replaced while receiving")
        try:
            linked = part_files.link_into_place(self.dir_fd, self.part, name)
        except FileExistsError:
            raise Failure(proto.ERR_EXISTS, f"{name} appeared in {self.options.dest} while receiving") from None
        except OSError as exc:
            raise Failure(proto.ERR_IO, f"cannot rename {self.part} to {name}: {exc.strerror}") from None
        self.committed = True
        if linked:
            try:
                os.unlink(self.part, dir_fd=self.dir_fd)
            except OSError as exc:
                note(f"plot is in place but {self.part} stays: {exc.strerror}")
        try:
            os.fsync(self.dir_fd)
        except OSError as exc:
            raise Failure(proto.ERR_IO, f"cannot flush directory {self.options.dest}: {exc.strerror}") from None

    def resolve_peer(self) -> None:
        """Whom to accept the stream from: the SSH client's address and ``--allow-from`` (the
        plotter's address on a separate data network, which send_plot passes)."""
        allowed = set()
        for text in (_ssh_field("SSH_CLIENT", 0), self.options.allow_from):
            if text:
                address = _normal_ip(text)
                if address is None:
                    raise Failure(proto.ERR_USAGE, f"not an IP address to accept from: {text!r}")
                allowed.add(address)
        self.allowed = frozenset(allowed)
        if not allowed:
            note("no SSH_CLIENT or --allow-from: accepting a connection from any address")

    def make_room(self) -> None:
        """Replace mode (``--replace-old-plots yes``, set by drive_manager.py): if the plot does
        not fit, delete exactly one old OG plot (utilities.replace decides, by header)."""
        from utilities.errors import PlotManagerError
        from utilities.replace import make_room_for

        try:
            deleted = make_room_for(Path(self.options.dest), self.options.size + SPACE_MARGIN)
        except (PlotManagerError, OSError) as exc:
            raise Failure(proto.ERR_NO_SPACE, f"replace mode: {exc}") from None
        if deleted is not None:
            note(f"replace mode: deleted old OG plot {deleted} to make room for {self.options.name}")

    def reserve(self) -> None:
        """Check for room and take it, as one step per directory.

        The directory's flock makes concurrent receivers on one drive take turns, so two plots
        that fit one at a time never both pass the free-space check, and replace mode never
        deletes two OG plots for what one would have made room for.
        """
        assert self.dir_fd is not None
        with part_files.directory_turn(self.dir_fd):
            self.clean_stale_parts()
            if self.options.replace_old_plots:
                self.make_room()
            self.check_space()
            self.create_part()
            self.preallocate()

    def run(self) -> str:
        self.resolve_peer()
        self.open_dest()
        if not self.check_final_free():
            return self.confirm_present()
        self.reserve()
        self.listen()
        try:
            reply(proto.format_ready(self.options.port))
        except OSError:
            raise Failure(proto.ERR_ABORTED, "control channel closed before READY") from None
        self.accept()
        hexdigest = self.receive()
        size, expected = self.wait_verify()
        if size != self.options.size or expected != hexdigest:
            raise Failure(
                proto.ERR_MISMATCH,
                f"received {self.options.size} bytes xxh3_128 {hexdigest}, plotter sent {size} bytes {expected}",
            )
        self.commit()
        return hexdigest

    def cleanup(self) -> None:
        """Close everything; remove our part file unless it became the plot."""
        for sock in (self.conn, self.listener):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self.conn = self.listener = None
        if self.part_fd is not None:
            if not self.committed:
                try:
                    part_files.remove_own_part(self.dir_fd, self.part, self.part_inode)
                except OSError as exc:
                    note(f"cannot remove {self.part}: {exc.strerror}")
            os.close(self.part_fd)
            self.part_fd = None
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None


def main(argv: list[str] | None = None) -> int:
    for signum in _SIGNALS:
        signal.signal(signum, _on_signal)
    receiver: Receiver | None = None
    outcome: str | None = None
    status = 0
    try:
        receiver = Receiver(parse_args(sys.argv[1:] if argv is None else argv))
        outcome = proto.format_ok(receiver.run())
    except Failure as failure:
        outcome = proto.format_error(failure.kind, failure.detail)
        status = proto.RECEIVER_EXIT_CODES[failure.kind]
    except (Aborted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Aborted) else signal.SIGINT
        outcome = proto.format_error(proto.ERR_ABORTED, f"signal {signal.Signals(signum).name}")
        status = proto.RECEIVER_EXIT_CODES[proto.ERR_ABORTED]
    except BrokenPipeError:
        outcome = None
        status = proto.RECEIVER_EXIT_CODES[proto.ERR_ABORTED]
    except Exception as exc:  # noqa: BLE001 - anything unexpected still ends in cleanup + ERROR
        outcome = proto.format_error(proto.ERR_IO, f"unexpected {type(exc).__name__}: {exc}")
        status = proto.RECEIVER_EXIT_CODES[proto.ERR_IO]
    finally:
        # A second signal must not interrupt the clean-up half way.
        for signum in _SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        if receiver is not None:
            receiver.cleanup()
    if status != 0 and outcome:
        note(outcome)
    if outcome:
        # If the plotter is gone the exit status and stderr still say what happened.
        with contextlib.suppress(OSError):
            reply(outcome)
    return status


if __name__ == "__main__":
    sys.exit(main())
