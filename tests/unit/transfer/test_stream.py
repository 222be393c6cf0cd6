"""The data stream over the built-in socket, into a listener on loopback."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
import xxhash

from utilities.transfer.protocol import TransferError
from utilities.transfer.stream import check_host, source_address_towards, stream_file

LONG = 30.0  # only ends a hung test


class Sink:
    """Accepts one connection and keeps what arrives."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            while data := conn.recv(1 << 16):
                self.received += data

    def close(self) -> bytes:
        self.thread.join(LONG)
        self.server.close()
        return bytes(self.received)


def test_socket_stream_sends_and_hashes_every_byte(tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 3)
    path = tmp_path / "plot"
    path.write_bytes(data)
    sink = Sink()
    progress: list[tuple[int, int]] = []
    result = stream_file(path, "127.0.0.1", sink.port, lambda sent, total: progress.append((sent, total)),
                         chunk=1 << 20, expected_size=len(data), idle_timeout=LONG, nc=None)
    assert sink.close() == data
    assert (result.size, result.hexdigest) == (len(data), xxhash.xxh3_128(data).hexdigest())
    assert progress[-1] == (len(data), len(data))


def test_a_file_of_another_size_than_announced_is_not_sent(tmp_path: Path) -> None:
    path = tmp_path / "plot"
    path.write_bytes(b"x" * 10)
    with pytest.raises(TransferError, match="it changed"):
        stream_file(path, "127.0.0.1", 45000, expected_size=11, nc=None)


def test_hosts_that_could_be_options_are_refused() -> None:
    for host in ("", "-oProxyCommand=x", "a b", "a\0b"):
        with pytest.raises(ValueError):
            check_host(host)
    assert check_host("harvester-1") == "harvester-1"
    assert source_address_towards("127.0.0.1", 45000) == "127.0.0.1"
