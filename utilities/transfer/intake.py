"""The receiver's network side: the control channel (stdin/stdout/stderr) and the data connection.

stdin/stdout are the plotter's SSH channel: protocol lines go out on stdout (``reply``) and the
VERIFY line comes in on stdin, where EOF means the plotter or its SSH session is gone
(``Control``); diagnostics go to stderr (``note``), never into the protocol.  Each plot's bytes
come on a TCP connection of their own to PORT (``Intake``); a session keeps listening on PORT
from its first plot to its end, so a plot after the first costs the plotter only a connect.

Only a connection from the plotter's address is accepted: ``SSH_CLIENT``, plus the
``--allow-from`` address send_plot passes when the data takes another network than SSH (the
listener is on every address for that reason).  This is one reason the receiving side is a
Python socket rather than ``nc -l``, which takes the first connection from anyone.  The other is
speed (loopback, 2 GiB, fed by a bare ``nc -N < file``): hashing as it goes it received ~1.9x
as fast as ``nc -l > file`` and ~1.1x as fast as ``nc -l`` into a preallocated file, at the same
CPU per GB; ``nc -l | python`` (hash and write in Python) managed only ~0.9x of
``nc -l > file`` and used ~1.5x the CPU (nc hands over 16 KiB at a time through a pipe).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import select
import socket
import time
from collections.abc import Callable

import xxhash

from utilities.transfer.integrity import DEFAULT_CHUNK
from utilities.transfer.protocol import (
    ERR_ABORTED,
    ERR_LISTEN,
    ERR_PORT_IN_USE,
    ERR_PROTOCOL,
    ERR_STREAM,
    ERR_TIMEOUT,
    ERR_USAGE,
    MAX_LINE,
    ReceiveFailure,
    parse_verify_line,
    shown,
)

# While data flows the receiver only reads the socket; when it stalls, this often (seconds) it
# looks at stdin (plotter gone?) and at the idle clock.
CHECK_INTERVAL = 1.0
# SO_RCVLOWAT while streaming: one wake-up per 256 KiB instead of per arriving segment.
RECV_LOW_WATER = 256 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# -- the control channel ------------------------------------------------------------------------


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
        if len(self.buffer) > MAX_LINE and b"\n" not in self.buffer:
            raise ReceiveFailure(ERR_PROTOCOL, "control line too long")

    def line(self) -> str | None:
        head, newline, _rest = self.buffer.partition(b"\n")
        return head.decode("utf-8", "replace") if newline else None

    def take_line(self) -> str | None:
        """The next complete line, removed from the buffer (a session reads line after line)."""
        head, newline, rest = self.buffer.partition(b"\n")
        if not newline:
            return None
        self.buffer = rest
        return head.decode("utf-8", "replace")

    def check_alive(self) -> None:
        """Fail if stdin ended without a complete line: nobody will ever send VERIFY."""
        if self.eof and self.line() is None:
            raise ReceiveFailure(ERR_ABORTED, "control channel closed (plotter or SSH session gone)")


# -- whom to accept the data from ---------------------------------------------------------------


def _ssh_field(variable: str, index: int) -> str | None:
    fields = os.environ.get(variable, "").split()
    return fields[index] if len(fields) > index else None


def normal_ip(text: str) -> IPAddress | None:
    """An address as compared with a peer's: no ``%zone``, IPv4-mapped IPv6 as plain IPv4."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def allowed_peers(allow_from: str | None) -> frozenset[IPAddress]:
    """Whom to accept the stream from: the SSH client's address and ``--allow-from`` (the
    plotter's address on a separate data network, which send_plot passes).  Empty: anyone."""
    allowed = set()
    for text in (_ssh_field("SSH_CLIENT", 0), allow_from):
        if text:
            address = normal_ip(text)
            if address is None:
                raise ReceiveFailure(ERR_USAGE, f"not an IP address to accept from: {text!r}")
            allowed.add(address)
    if not allowed:
        note("no SSH_CLIENT or --allow-from: accepting a connection from any address")
    return frozenset(allowed)


# -- the data connection ------------------------------------------------------------------------


class Intake:
    """Listens on PORT, takes the plotter's connection, reads a plot's bytes, waits for VERIFY;
    in a session, plot after plot (and the PLOT line before each)."""

    def __init__(self, port: int, idle_timeout: float, bind: str | None) -> None:
        self.port = port
        self.idle_timeout = idle_timeout
        self.bind = bind
        self.control = Control()
        self.allowed: frozenset[IPAddress] = frozenset()
        self.listener: socket.socket | None = None
        self.conn: socket.socket | None = None

    def listen(self) -> None:
        """Listen on PORT on every address (``--bind`` narrows it).

        Every address, because the plotter may send the data over another network than SSH
        (its ``data_host``); who may connect is decided in accept().  IPv4 and IPv6 share one
        dual-stack socket where the kernel has IPv6.
        """
        port = self.port
        if self.bind:
            candidates = [(socket.AF_INET6 if ":" in self.bind else socket.AF_INET, self.bind)]
        else:
            candidates = [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")]
        for family, address in candidates:
            try:
                listener = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                if family == socket.AF_INET6 and not self.bind:
                    continue  # no IPv6 in this kernel: plain IPv4
                raise ReceiveFailure(ERR_LISTEN, f"cannot open a socket: {exc.strerror}") from None
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
                    raise ReceiveFailure(ERR_PORT_IN_USE, f"port {port} ({address})") from None
                if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) and address == "::":
                    continue
                raise ReceiveFailure(ERR_LISTEN, f"cannot listen on {address} port {port}: {exc.strerror}") from None
            listener.setblocking(False)
            return
        raise ReceiveFailure(ERR_LISTEN, f"cannot listen on port {port}")

    def _wait(self, sock: socket.socket | None, deadline: float, what: str) -> bool:
        """Wait until ``sock`` is readable or stdin has news; False when only stdin had news.

        Raises ReceiveFailure(timeout) at ``deadline`` and ReceiveFailure(aborted) when stdin
        ends with no complete line in it.
        """
        poller = select.poll()
        if sock is not None:
            poller.register(sock, select.POLLIN)
        if not self.control.eof:
            poller.register(Control.FD, select.POLLIN)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ReceiveFailure(ERR_TIMEOUT, what)
        # stdin over with no line in it: only what the socket already holds is still taken (a
        # plotter whose stream was cut may close stdin before we accepted the bytes it sent,
        # and a resumable receive keeps every whole chunk of them).
        gone = self.control.eof and self.control.line() is None
        events = poller.poll(0 if gone else remaining * 1000)
        if not events:
            self.control.check_alive()
            raise ReceiveFailure(ERR_TIMEOUT, what)
        sock_ready = False
        for fd, _event in events:
            if fd == Control.FD:
                self.control.read_available()
            else:
                sock_ready = True
        if not sock_ready:
            self.control.check_alive()
        return sock_ready

    def accept(self, keep_listening: bool = False) -> None:
        """Accept the plotter's data connection; connections from other addresses are closed.

        The listener closes behind a single plot's connection (``keep_listening`` False: nobody
        else may connect) and stays open through a session for the plots to come."""
        assert self.listener is not None
        allowed = self.allowed
        idle = self.idle_timeout
        deadline = time.monotonic() + idle
        while True:
            if not self._wait(self.listener, deadline, f"no connection within {idle:g} s"):
                continue
            try:
                conn, peer = self.listener.accept()
            except BlockingIOError:
                continue
            if not allowed or normal_ip(peer[0]) in allowed:
                break
            note(
                f"refused a data connection from {peer[0]} (expecting {', '.join(map(str, sorted(allowed, key=str)))})"
            )
            conn.close()
        if not keep_listening:
            self.listener.close()
            self.listener = None
        conn.setblocking(False)
        self.conn = conn

    def receive(
        self, size: int, write: Callable[[memoryview, int], None], chunk: int = DEFAULT_CHUNK, *, whole_digest: bool = True
    ) -> str:
        """Read exactly ``size`` bytes, hashing them as they arrive and handing each piece to
        ``write(data, offset)``; the hex digest.  Without ``whole_digest`` (a resumable stream,
        whose proof is the digest over its chunk digests, hashed by ``write``) nothing is hashed
        here and the result is empty: the bytes are not hashed twice.

        The socket blocks (in C) for at most CHECK_INTERVAL per read: a busy stream costs no
        Python-level polling (measured markedly slower), and a stalled one
        still notices within a second that stdin ended or the idle timeout passed.
        """
        assert self.conn is not None
        conn = self.conn
        idle = self.idle_timeout
        buffer = bytearray(min(chunk, size))
        view = memoryview(buffer)
        digest = xxhash.xxh3_128() if whole_digest else None
        got = 0
        last_data = time.monotonic()
        interval = min(CHECK_INTERVAL, idle)
        conn.settimeout(interval)
        low_water = self._set_low_water(conn, min(RECV_LOW_WATER, size))
        while got < size:
            if size - got < low_water:
                low_water = self._set_low_water(conn, size - got)
            stalled = False
            try:
                count = conn.recv_into(view, min(len(buffer), size - got))
            except TimeoutError:
                # A stream that stops (a pulled link, a gone plotter) may leave bytes below the
                # low-water mark in the socket: they are taken (and written) before the
                # plotter's channel is looked at, so a resumable part keeps every chunk that
                # arrived whole.
                taken = self._take_waiting(conn, view, min(len(buffer), size - got), interval)
                low_water = self._set_low_water(conn, low_water)
                if taken is None:
                    self._check_control()
                    if time.monotonic() - last_data >= idle:
                        raise ReceiveFailure(ERR_TIMEOUT, f"no data for {idle:g} s after {got} of {size} bytes") from None
                    continue
                count, stalled = taken, True
            except OSError as exc:
                raise ReceiveFailure(
                    ERR_STREAM, f"connection lost after {got} of {size} bytes: {exc.strerror}"
                ) from None
            if count == 0:
                raise ReceiveFailure(ERR_STREAM, f"stream ended after {got} of {size} bytes")
            if digest is not None:
                digest.update(view[:count])
            write(view[:count], got)
            got += count
            last_data = time.monotonic()
            if stalled:
                self._check_control()  # as after any stall: a trickle must not hide a gone plotter
        conn.setblocking(False)
        return digest.hexdigest() if digest is not None else ""

    @staticmethod
    def _take_waiting(conn: socket.socket, view: memoryview, limit: int, interval: float) -> int | None:
        """The bytes already in the socket, whatever the low-water mark, without waiting: their
        count (0 at the end of the stream), or None when there are none."""
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        conn.setblocking(False)
        try:
            return conn.recv_into(view, limit)
        except BlockingIOError:
            return None
        finally:
            conn.settimeout(interval)

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

    def wait_verify(self, size: int) -> tuple[int, str]:
        """After ``size`` bytes (or none, for a plot already there): the connection must end (or
        stay quiet) and VERIFY must come; its (size, hex digest).  The line is used up."""
        idle = self.idle_timeout
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
                raise ReceiveFailure(ERR_STREAM, f"more than the announced {size} bytes arrived")
            self.conn.close()
            self.conn = None
        line = self.control.take_line() or ""
        parsed = parse_verify_line(line)
        if parsed is None:
            raise ReceiveFailure(ERR_PROTOCOL, f"expected VERIFY <size> <hex>, got {shown(line)!r}")
        return parsed

    def next_line(self) -> str | None:
        """A session's next control line (PLOT), waiting at most the idle timeout; None when
        stdin ends or nothing comes in time: the session is over, with nothing in flight."""
        deadline = time.monotonic() + self.idle_timeout
        while (line := self.control.take_line()) is None:
            if self.control.eof:
                return None
            try:
                self._wait(None, deadline, "no PLOT line")
            except ReceiveFailure as failure:
                if failure.kind in (ERR_TIMEOUT, ERR_ABORTED):  # nothing came, or stdin ended mid-line
                    return None
                raise
        return line

    def end_plot(self) -> None:
        """This plot's connection is done with (the listener, if any, stays)."""
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
            self.conn = None

    def close(self) -> None:
        for sock in (self.conn, self.listener):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self.conn = self.listener = None
