"""Plot after plot through one receiver session: the plotter's side of session mode.

Starting a receiver costs an SSH channel, a shell and a Python start-up, and a listening port:
tenths of a second, as much as the data of a small (proof-of-space v2) plot.  A session starts
the receiver once (``receive_plot.sh --session PORT``) and sends every plot as ``PLOT <name>
<size>``; each plot still gets its own READY, stream (a new TCP connection to the same port),
VERIFY and OK, through ``sender.exchange_plot``, exactly as in single-plot mode.

After any failure the receiver has ended the session (protocol: it exits after an ERROR) or we
ended it (closing stdin is how a waiting receiver learns to give up), so the next plot starts a
new session.  So does a plot after the receiver's idle timeout ran out between two plots.  The
first plot of a session that hears "port in use" moves to the next port with a new session, as
send_plot does.  ``send`` never raises for a transfer problem and never touches the source.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from utilities.errors import PlotManagerError
from utilities.transfer.channel import ExecFn
from utilities.transfer.integrity import SourceIdentity
from utilities.transfer.journal import source_token
from utilities.transfer.protocol import ERR_PORT_IN_USE, build_session_command, format_plot, pick_port, validate_port
from utilities.transfer.sender import (
    CANNOT_START,
    Conversation,
    PlotJob,
    SendOptions,
    TransferResult,
    exchange_plot,
    refused,
    send_plot,
)
from utilities.transfer.stream import ProgressCallback, check_host, source_address_towards


class PlotChannel(Protocol):
    """Where a sending worker puts plot after plot: a ReceiverSession, or SinglePlots for an
    older harvester."""

    def send(
        self, path: str | Path, *, dest_name: str | None = None, progress_cb: ProgressCallback | None = None
    ) -> TransferResult: ...

    def close(self, timeout: float = 30.0) -> int | None: ...


class ReceiverSession:
    """One harvester's receiver session, used by one thread; opened at the first ``send``.

    ``exec_fn`` starts the session command (ParamikoExec over the run's one SSH connection to
    that harvester in production, LocalExec in tests).  Ports are tried from ``port`` upwards
    (``port_count`` of them, skipping ``busy_ports``) while new sessions answer "port in use".
    Call ``close`` when done (or use it as a context manager): the receiver then exits 0.
    """

    def __init__(
        self,
        exec_fn: ExecFn,
        script_path: str | Path,
        host: str,
        port: int,
        *,
        port_count: int = 10,
        busy_ports: Collection[int] = (),
        options: SendOptions | None = None,
    ) -> None:
        self.exec_fn = exec_fn
        self.script_path = script_path
        self.host = host
        self.port = validate_port(port)
        self.port_count = port_count
        self.busy_ports = frozenset(busy_ports)
        self.options = options or SendOptions()
        self._talk: Conversation | None = None
        self._port: int | None = None  # the live session's port
        self.sessions_started = 0  # receivers started, for logs and the tests

    @property
    def is_open(self) -> bool:
        """A receiver session is running and waits for our next PLOT."""
        return self._talk is not None

    def send(
        self, path: str | Path, *, dest_name: str | None = None, progress_cb: ProgressCallback | None = None
    ) -> TransferResult:
        """Send one plot through the session (opening one when none is open).

        The result is send_plot's: ok only after the receiver's OK; the reason otherwise, with
        the receiver's ERROR kind in ``receiver_error`` (``busy``: the caller may try elsewhere).
        """
        path = Path(path)
        name = dest_name or path.name
        started = time.monotonic()
        try:
            source = SourceIdentity.of(path)
            token = source_token(source.size, source.mtime_ns, source.inode, source.device)
            plot_line = format_plot(name, source.size, token if self.options.resume else None)
            check_host(self.host)
        except (PlotManagerError, ValueError, OSError) as exc:
            return refused(name, started, f"refused before starting: {exc}")

        if self._talk is not None:
            if self._talk.ended():  # its idle timeout ran out: nothing was in flight
                self._drop()
            else:
                result = self._through(self._talk, self._port or self.port, plot_line, path, name, source,
                                       started, progress_cb)
                # A receiver that exits 0 without answering timed out idle as our line went out.
                if result.ok or not _ended_idle(result):
                    return result
        return self._open_and_send(plot_line, path, name, source, started, progress_cb)

    def _open_and_send(
        self, plot_line: str, path: Path, name: str, source: SourceIdentity, started: float,
        progress_cb: ProgressCallback | None,
    ) -> TransferResult:  # fmt: skip
        """Start a new session for this plot, moving up a port while the answer is "port in use"."""
        source_address = source_address_towards(self.host, self.port)
        tried: set[int] = set(self.busy_ports)
        preferred = self._port
        while True:
            current = preferred if preferred is not None and preferred not in tried else None
            if current is None:
                try:
                    current = pick_port(self.port, self.port_count, tried)
                except ValueError as exc:
                    return refused(name, started, f"refused before starting: {exc}")
            if current is None:
                return refused(name, started, f"no free port in {self.port}..{self.port + self.port_count - 1}",
                               source)
            tried.add(current)
            job = PlotJob(path, name, source, self.host, current, started, progress_cb, self.options.resume)
            try:
                talk = Conversation.start(self.exec_fn, build_session_command(self.script_path, current, source_address))
            except Exception as exc:  # noqa: BLE001 - any failure to start is a failed transfer
                return job.result(False, f"{CANNOT_START}: {exc}")
            self.sessions_started += 1
            result = self._through(talk, current, plot_line, path, name, source, started, progress_cb)
            if result.receiver_error != ERR_PORT_IN_USE:
                return result

    def _through(
        self, talk: Conversation, port: int, plot_line: str, path: Path, name: str, source: SourceIdentity,
        started: float, progress_cb: ProgressCallback | None,
    ) -> TransferResult:  # fmt: skip
        """``PLOT`` on ``talk``, then the plot's exchange; the session stays open only after OK."""
        job = PlotJob(path, name, source, self.host, port, started, progress_cb, self.options.resume)
        # A receiver that is already gone cannot take the line: the exchange collects its reason.
        with contextlib.suppress(OSError, ValueError, EOFError):
            talk.say(plot_line)
        result = exchange_plot(talk, job, self.options)
        if result.ok:
            self._talk, self._port = talk, port
        else:
            talk.kill_if_running()  # exchange_plot has finished it; this only makes sure
            if self._talk is talk:
                self._talk = None
        return result

    def _drop(self) -> None:
        if self._talk is not None:
            self._talk.kill_if_running()
        self._talk = None

    def close(self, timeout: float = 30.0) -> int | None:
        """End the session: EOF tells the receiver there is no next plot, and it exits 0.

        Returns its exit status (None when no session was open)."""
        talk, self._talk = self._talk, None
        if talk is None:
            return None
        try:
            return talk.finish(timeout)
        finally:
            talk.kill_if_running()

    def __enter__(self) -> ReceiverSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ended_idle(result: TransferResult) -> bool:
    """A session receiver that left quietly (exit 0, no ERROR) before answering our PLOT."""
    return not result.ok and result.receiver_status == 0 and not result.receiver_error and result.size == 0


class SinglePlots:
    """The session's interface for a harvester whose receiver takes one plot per process (an
    export without ``receive_protocol`` 2): ``send_plot`` for each plot, nothing to close."""

    def __init__(
        self,
        exec_fn: ExecFn,
        script_path: str | Path,
        host: str,
        port: int,
        *,
        port_count: int = 10,
        options: SendOptions | None = None,
    ) -> None:
        self.exec_fn = exec_fn
        self.script_path = script_path
        self.host = host
        self.port = port
        self.port_count = port_count
        self.options = options or SendOptions()

    def send(
        self, path: str | Path, *, dest_name: str | None = None, progress_cb: ProgressCallback | None = None
    ) -> TransferResult:
        o = self.options
        return send_plot(
            self.exec_fn, self.script_path, path, self.host, self.port, port_count=self.port_count,
            ready_timeout=o.ready_timeout, verify_timeout=o.verify_timeout, idle_timeout=o.idle_timeout,
            chunk=o.chunk, progress_cb=progress_cb, data_address=o.data_address, nc=o.nc, dest_name=dest_name,
        )  # fmt: skip

    def close(self, timeout: float = 30.0) -> int | None:
        return None
