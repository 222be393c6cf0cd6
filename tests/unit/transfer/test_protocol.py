"""The protocol's pure pieces: the receiver's command line, the lines both ends write and parse, the port choice."""

from __future__ import annotations

import pytest

from utilities.errors import PlotFileError
from utilities.transfer.protocol import (
    ERR_NO_SPACE,
    ERR_PORT_IN_USE,
    ERR_PROTOCOL,
    ERROR_KINDS,
    PRESENT,
    RECEIVER_EXIT_CODES,
    build_receive_command,
    format_error,
    format_verify,
    parse_receiver_line,
    parse_verify_line,
    pick_port,
)

PLOT = "plot-k32-2026-01-02-03-04-" + "ab" * 32 + ".plot"


def test_receive_command_line() -> None:
    assert build_receive_command("/opt/pm/receive_plot.sh", PLOT, 108_000_000_000, 45000) == (
        f"/opt/pm/receive_plot.sh {PLOT} 108000000000 45000"
    )
    assert build_receive_command("/my dir/receive plot.sh", PLOT, 1, 45000).startswith("'/my dir/receive plot.sh' ")
    assert (
        build_receive_command("/r.sh", PLOT, 1, 45000, allow_from="10.0.0.7")
        == f"/r.sh --allow-from 10.0.0.7 {PLOT} 1 45000"
    )
    with pytest.raises(ValueError):
        build_receive_command("/r.sh", PLOT, 1, 45000, allow_from="10.0.0.7; reboot")
    for size, port in ((0, 45000), (-1, 45000), (True, 45000), (1, 80), (1, 70000)):
        with pytest.raises(ValueError):
            build_receive_command("/r.sh", PLOT, size, port)
    with pytest.raises(PlotFileError):
        build_receive_command("/r.sh", "$(reboot).plot", 1, 45000)


def test_receiver_lines() -> None:
    assert parse_receiver_line("READY 45000\n").port == 45000
    ok = parse_receiver_line("OK " + "0f" * 16)
    assert (ok.kind, ok.hexdigest) == ("OK", "0f" * 16)
    err = parse_receiver_line("ERROR no space: 5 bytes needed, 3 free in /x")
    assert (err.kind, err.reason, err.detail) == ("ERROR", ERR_NO_SPACE, "5 bytes needed, 3 free in /x")
    assert parse_receiver_line("ERROR port in use").reason == ERR_PORT_IN_USE
    for garbage in ("", "hello", "READY", "READY 80", "READY x", "OK zz", "ERROR", b"\xff\xfe", "x" * 10000):
        reply = parse_receiver_line(garbage)
        assert reply.is_error and reply.reason == ERR_PROTOCOL, garbage


def test_present_line_parsing() -> None:
    assert parse_receiver_line("PRESENT 3860015\n").size == 3860015
    assert parse_receiver_line("PRESENT 3860015").kind == PRESENT
    assert parse_receiver_line("PRESENT -1").reason == "protocol"
    assert parse_receiver_line("PRESENT").reason == "protocol"


def test_verify_line() -> None:
    digest = "ab" * 16
    assert parse_verify_line(format_verify(12, digest) + "\n") == (12, digest)
    for bad in ("VERIFY 12", "VERIFY -1 " + digest, "VERIFY 12 xyz", "verify 12 " + digest, "VERIFY 1_0 " + digest):
        assert parse_verify_line(bad) is None


def test_error_lines_stay_one_line_and_every_kind_has_its_own_exit_status() -> None:
    assert format_error(ERR_NO_SPACE, "5 bytes\nneeded") == "ERROR no space: 5 bytes needed"
    assert format_error(ERR_NO_SPACE) == "ERROR no space"
    assert parse_receiver_line(format_error(ERR_NO_SPACE, "x")).reason == ERR_NO_SPACE
    assert len(set(RECEIVER_EXIT_CODES.values())) == len(ERROR_KINDS)
    assert 0 not in RECEIVER_EXIT_CODES.values() and 75 not in RECEIVER_EXIT_CODES.values()


def test_pick_port() -> None:
    assert pick_port(45000, 3, set()) == 45000
    assert pick_port(45000, 3, {45000, 45001}) == 45002
    assert pick_port(45000, 3, {45000, 45001, 45002}) is None
    with pytest.raises(ValueError):
        pick_port(65535, 2, set())
