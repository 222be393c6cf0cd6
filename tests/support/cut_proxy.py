"""A TCP proxy that counts the bytes of a plot stream and can cut it (or flip a byte) on demand.

It listens on one loopback port and forwards each connection to a target port it is told per
connection (``target``), counting the client-to-server bytes it forwarded (``forwarded``: the
bytes on the wire).  With ``cut_at`` set it forwards exactly that many bytes of the next
connection and then closes both sides: the link going down mid-plot.  With ``flip_at`` it
inverts that byte of the stream.  Threads are daemons; the listener closes on exit.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

from tests.support.waiting import DEADLINE


class CutProxy:
    def __init__(self, address: str = "127.0.0.1") -> None:
        self.address = address
        self.target: int | None = None
        self.cut_at: int | None = None
        self.flip_at: int | None = None
        self.hold_at: int | None = None  # forward this many bytes, then wait for ``release``
        self.held = threading.Event()  # the stream waits at hold_at
        self.release = threading.Event()
        self.forwarded = 0  # bytes forwarded client -> server, all connections
        self.connections = 0
        self.done = threading.Event()  # set when a connection's forwarding ended
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._stop = threading.Event()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def data_address(self, _host: str, port: int) -> tuple[str, int]:
        """SendOptions.data_address: the stream goes through us to the receiver's ``port``."""
        self.target = port
        return self.address, self.port

    def __enter__(self) -> CutProxy:
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.address, 0))
        self._listener.listen(4)
        self._listener.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            assert self.target is not None
            try:
                upstream = socket.create_connection((self.address, self.target), timeout=DEADLINE)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            cut, flip, hold = self.cut_at, self.flip_at, self.hold_at
            self.cut_at = self.flip_at = self.hold_at = None
            self.done.clear()
            threading.Thread(target=self._pipe, args=(client, upstream, cut, flip, hold), daemon=True).start()

    def _pipe(
        self, client: socket.socket, upstream: socket.socket, cut: int | None, flip: int | None, hold: int | None
    ) -> None:
        offset = 0
        try:
            while cut is None or offset < cut:
                if hold is not None and offset >= hold:
                    self.held.set()
                    self.release.wait(DEADLINE)
                    hold = None
                limit = min(x for x in (cut, hold) if x is not None) if cut is not None or hold is not None else None
                want = 1 << 16 if limit is None else max(1, min(1 << 16, limit - offset))
                data = client.recv(want)
                if not data:
                    upstream.shutdown(socket.SHUT_WR)
                    while upstream.recv(4096):  # the receiver closes when it has all: pass it on
                        pass
                    break
                if flip is not None and offset <= flip < offset + len(data):
                    index = flip - offset
                    data = data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]
                upstream.sendall(data)
                offset += len(data)
                self.forwarded += len(data)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.done.set()
