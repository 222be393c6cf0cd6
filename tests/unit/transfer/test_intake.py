"""Whom the receiver accepts the data connection from, and its control lines read one by one."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator

import pytest

from tests.support.waiting import DEADLINE
from utilities.transfer.intake import Control, Intake, allowed_peers, normal_ip
from utilities.transfer.protocol import ERR_USAGE, ReceiveFailure


def test_addresses_compare_as_the_kernel_reports_peers() -> None:
    assert normal_ip("::ffff:10.0.0.7") == ipaddress.ip_address("10.0.0.7")
    assert normal_ip("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert normal_ip("not an address") is None


def test_the_ssh_client_and_allow_from_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_CLIENT", "10.0.0.7 40022 22")
    assert allowed_peers(None) == {ipaddress.ip_address("10.0.0.7")}
    assert allowed_peers("10.1.0.7") == {ipaddress.ip_address("10.0.0.7"), ipaddress.ip_address("10.1.0.7")}
    with pytest.raises(ReceiveFailure) as bad:
        allowed_peers("10.1.0.7; reboot")
    assert bad.value.kind == ERR_USAGE


def test_without_ssh_client_anyone_may_connect_and_it_is_said(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SSH_CLIENT", raising=False)
    assert allowed_peers(None) == frozenset()
    assert "accepting a connection from any address" in capfd.readouterr().err


@pytest.fixture
def control_pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A real pipe standing in for the SSH channel's stdin: the write end is the plotter."""
    read_end, write_end = os.pipe()
    monkeypatch.setattr(Control, "FD", read_end)
    yield write_end
    os.close(read_end)
    with contextlib.suppress(OSError):
        os.close(write_end)


def test_a_session_reads_its_lines_one_by_one(control_pipe: int) -> None:
    intake = Intake(4000, idle_timeout=DEADLINE, bind=None)
    os.write(control_pipe, b"PLOT a 1\nPLOT b 2\nPLO")
    assert intake.next_line() == "PLOT a 1"
    assert intake.next_line() == "PLOT b 2"  # already read with the first: kept, not lost
    os.write(control_pipe, b"T c 3\n")
    assert intake.next_line() == "PLOT c 3"
    os.write(control_pipe, b"PLOT d")
    os.close(control_pipe)
    assert intake.next_line() is None  # the plotter ended the session (half a line is nothing)


def test_a_session_with_no_next_line_ends_after_its_idle_timeout(control_pipe: int) -> None:
    intake = Intake(4000, idle_timeout=0.05, bind=None)
    assert intake.next_line() is None


def test_verify_is_used_up_so_the_next_plot_line_follows(control_pipe: int) -> None:
    intake = Intake(4000, idle_timeout=DEADLINE, bind=None)
    digest = "ab" * 16
    os.write(control_pipe, f"VERIFY 5 {digest}\nPLOT next 7\n".encode())
    assert intake.wait_verify(5) == (5, digest)
    assert intake.next_line() == "PLOT next 7"


def test_a_stream_that_stops_below_the_low_water_mark_is_still_taken_before_giving_up(control_pipe: int) -> None:
    """The receiver wakes for RECV_LOW_WATER bytes at a time; when the stream stops (a pulled
    link) and the plotter's channel then ends, the bytes already in the socket below that mark
    must still reach the writer: they may complete a chunk the resume journal keeps."""
    import socket

    from utilities.transfer.intake import RECV_LOW_WATER

    intake = Intake(4000, idle_timeout=DEADLINE, bind=None)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname())
        intake.conn, _peer = listener.accept()
    written: list[bytes] = []
    try:
        sender.sendall(b"x" * 1000)  # far below the mark, and nothing follows
        os.close(control_pipe)  # the plotter is gone
        with pytest.raises(ReceiveFailure):
            intake.receive(4 * RECV_LOW_WATER, lambda data, _offset: written.append(bytes(data)))
    finally:
        sender.close()
        intake.conn.close()
    assert b"".join(written) == b"x" * 1000
