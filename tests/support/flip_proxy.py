"""A TCP proxy that flips one byte of what passes through it: corruption on the wire, on demand.

It listens on a range of ports of one address and forwards each connection to the same port of
a target address, inverting the byte at ``flip_at`` of the client-to-server stream. Threads
are daemons and the listening sockets are closed on exit; it talks only to the addresses given.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from tests.support.waiting import DEADLINE


class FlipProxy:
    def __init__(self, listen_address: str, target_address: str, ports: range, flip_at: int) -> None:
        self.listen_address = listen_address
        self.target_address = target_address
        self.ports = ports
        self.flip_at = flip_at
        self.connections = 0
        self.flipped = threading.Event()
        self._listeners: list[socket.socket] = []
        self._stop = threading.Event()

    def __enter__(self) -> FlipProxy:
        try:
            for port in self.ports:
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((self.listen_address, port))
                listener.listen(4)
                listener.settimeout(0.2)
                self._listeners.append(listener)
                threading.Thread(target=self._accept, args=(listener, port), daemon=True).start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        for listener in self._listeners:
            listener.close()

    def _accept(self, listener: socket.socket, port: int) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            try:
                upstream = socket.create_connection((self.target_address, port), timeout=DEADLINE)
            except OSError:
                client.close()
                continue
            # No timeout may stay on either socket: the receiver says nothing on the data
            # connection for the whole transfer, and a recv timing out would cut it.
            client.settimeout(None)
            upstream.settimeout(None)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, corrupt: bool) -> None:
        offset = 0
        try:
            while data := source.recv(1 << 16):
                if corrupt and offset <= self.flip_at < offset + len(data):
                    index = self.flip_at - offset
                    data = data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]
                    self.flipped.set()
                offset += len(data)
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            if not corrupt:  # the data direction's socket is closed by the reply direction
                source.close()
