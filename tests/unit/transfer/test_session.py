"""A receiver session from the plotter's side: the real receive_plot.py (run as sshd would run
receive_plot.sh, by a local shell) on loopback, plot after plot through one process.

What must hold: each plot of a session is verified and lands intact on its own; a session that
ends (an ERROR, a killed receiver, its idle timeout) never loses a plot and the next one opens a
new session; "port in use" on a session's first plot moves to the next port; the client never
touches a source.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.hashing import xxh3
from tests.support.plotmaker import plot_name
from tests.support.smtp_server import free_port
from tests.support.waiting import DEADLINE, wait_until
from utilities.transfer.channel import LocalExec
from utilities.transfer.protocol import ERR_EXISTS
from utilities.transfer.sender import SendOptions
from utilities.transfer.session import ReceiverSession, SinglePlots

REPO = Path(__file__).resolve().parents[3]
SSH_ENV = {"SSH_CLIENT": "127.0.0.1 40022 22", "SSH_CONNECTION": "127.0.0.1 40022 127.0.0.1 22"}
# Deadlines for steps that must succeed: they only end a hung test.
OPTIONS = SendOptions(ready_timeout=DEADLINE, verify_timeout=DEADLINE, idle_timeout=DEADLINE, nc=None)


def random_plot(directory: Path, size: int = 1 << 20) -> Path:
    path = directory / plot_name(32, os.urandom(32))
    path.write_bytes(os.urandom(size))
    return path


class Sink:
    """A receive directory and a script that runs the real receiver into it."""

    def __init__(self, root: Path, idle_timeout: float = DEADLINE) -> None:
        self.dest = root / "drive0"
        self.dest.mkdir()
        self.script = root / "receive_plot.sh"
        self.script.write_text(
            f"#!/bin/sh\nexec {sys.executable} {REPO / 'receive_plot.py'} --config /nonexistent --dest {self.dest}"
            f' --idle-timeout {idle_timeout:g} "$@"\n'
        )
        self.script.chmod(0o755)
        self.exec = LocalExec(env={**os.environ, **SSH_ENV})

    def session(self, port: int | None = None) -> ReceiverSession:
        return ReceiverSession(self.exec, self.script, "127.0.0.1", port or free_port(), options=OPTIONS)

    def close(self) -> None:
        for process in self.exec.started:
            process.kill()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    made = Sink(tmp_path)
    yield made
    made.close()


@pytest.fixture
def plots(tmp_path: Path) -> Path:
    path = tmp_path / "plotter"
    path.mkdir()
    return path


def test_plots_go_one_after_another_through_one_receiver(sink: Sink, plots: Path) -> None:
    sources = [random_plot(plots, size) for size in (1 << 20, 3 << 20, 12345)]
    hashes = {p.name: xxh3(p) for p in sources}
    with sink.session() as session:
        results = [session.send(p) for p in sources]
        assert session.is_open
    assert [r.ok for r in results] == [True] * 3, [r.reason for r in results]
    assert len({r.port for r in results}) == 1
    assert len(sink.exec.started) == 1
    assert sink.exec.started[0].wait(DEADLINE) == 0  # EOF after the last plot: a quiet exit
    assert {p.name: xxh3(p) for p in sink.dest.iterdir()} == hashes
    assert all(p.exists() for p in sources)  # the client never touches a source
    assert all(r.source is not None and r.size == r.source.size for r in results)


def test_an_error_ends_the_session_and_the_next_plot_opens_a_new_one(sink: Sink, plots: Path) -> None:
    first = random_plot(plots)
    with sink.session() as session:
        assert session.send(first).ok
        # Another file under the same name, of another size: the receiver refuses and ends.
        clash = plots / "other" / first.name
        clash.parent.mkdir()
        clash.write_bytes(b"x" * 1000)
        refused = session.send(clash)
        assert not refused.ok and refused.receiver_error == ERR_EXISTS
        assert not session.is_open
        assert session.send(random_plot(plots)).ok
    assert len(sink.exec.started) == 2
    assert clash.exists() and len(list(sink.dest.iterdir())) == 2


def test_a_killed_receiver_loses_nothing_and_the_next_plot_gets_a_new_session(sink: Sink, plots: Path) -> None:
    victim = random_plot(plots, 8 << 20)  # eight chunks: the kill comes before the end

    def kill_receiver(sent: int, total: int) -> None:
        """Mid-stream: SIGKILL the receive_plot.py this test started (under sh -c, by pid)."""
        shell = psutil.Process(sink.exec.started[-1].pid)
        for child in shell.children(recursive=True):
            if str(REPO / "receive_plot.py") in child.cmdline():
                child.send_signal(signal.SIGKILL)

    with sink.session() as session:
        assert session.send(random_plot(plots)).ok
        result = session.send(victim, progress_cb=kill_receiver)  # killed at the first chunk
        assert not result.ok
        assert session.send(victim).ok  # the same plot, whole, through a new session
    assert len(sink.exec.started) == 2
    assert xxh3(sink.dest / victim.name) == xxh3(victim)
    assert not [p for p in sink.dest.iterdir() if p.name.endswith(".part")]


def test_a_session_that_timed_out_idle_is_replaced_quietly(tmp_path: Path, plots: Path) -> None:
    sink = Sink(tmp_path, idle_timeout=0.5)
    try:
        with sink.session() as session:
            assert session.send(random_plot(plots)).ok
            wait_until("the idle receiver to exit", lambda: sink.exec.started[0].proc.poll() is not None)
            assert sink.exec.started[0].proc.returncode == 0
            assert session.send(random_plot(plots)).ok
        assert len(sink.exec.started) == 2
    finally:
        sink.close()


def test_port_in_use_on_the_first_plot_moves_to_the_next_port(sink: Sink, plots: Path) -> None:
    port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("0.0.0.0", port))
        blocker.listen()
        with sink.session(port) as session:
            result = session.send(random_plot(plots))
            assert result.ok and result.port == port + 1
            assert session.send(random_plot(plots)).port == port + 1
    assert [p.wait(DEADLINE) for p in sink.exec.started] == [8, 0]  # "port in use", then a quiet end


def test_a_plot_already_there_is_proved_by_hash_within_the_session(sink: Sink, plots: Path) -> None:
    plot = random_plot(plots)
    with sink.session() as session:
        assert session.send(plot).ok
        again = session.send(plot)
        assert again.ok and "already on the harvester" in again.reason
        assert session.is_open


def test_bad_input_is_refused_before_any_receiver_starts(sink: Sink, plots: Path) -> None:
    bad = plots / "not a plot; rm -rf x"
    bad.write_bytes(b"x")
    with sink.session() as session:
        result = session.send(bad)
        assert not result.ok and result.reason.startswith("refused before starting")
        assert not session.send(plots / "missing.plot").ok
    assert sink.exec.started == []


def test_single_plots_start_one_receiver_per_plot(sink: Sink, plots: Path) -> None:
    channel = SinglePlots(sink.exec, sink.script, "127.0.0.1", free_port(), options=OPTIONS)
    assert all(channel.send(random_plot(plots)).ok for _ in range(2))
    assert channel.close() is None
    assert len(sink.exec.started) == 2
