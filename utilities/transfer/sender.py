"""Sending one plot from the plotter to a harvester: the plotter's half of the protocol.

``send_plot`` starts the harvester's receiver through ``channel.py`` (SSH in production),
waits for READY (or PRESENT: the plot is already there, an earlier OK was lost), streams the
bytes through ``stream.py``, sends VERIFY and waits for OK; the lines are ``protocol.py``'s.  It
never raises for a transfer problem and never touches the source: the result says ok or why
not.  Only ``delete_source_after_ok`` removes the source, and only if it is still the very file
that was sent (``integrity.SourceIdentity``).  Nothing here imports paramiko or the config.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utilities.errors import PlotManagerError
from utilities.transfer.channel import ExecFn, ReceiverProcess, ReplyReader
from utilities.transfer.integrity import DEFAULT_CHUNK, SourceIdentity, hash_file
from utilities.transfer.protocol import (
    ERR_PORT_IN_USE,
    OK,
    PRESENT,
    READY,
    ReceiverReply,
    TransferError,
    build_receive_command,
    format_verify,
    parse_receiver_line,
    pick_port,
    protocol_error,
    validate_port,
)
from utilities.transfer.stream import ProgressCallback, StreamResult, check_host, source_address_towards, stream_file


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
        check_host(host)
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
        process: ReceiverProcess, reader: ReplyReader, what: str, reply: ReceiverReply | None, **extra: Any
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
        reader = ReplyReader(process.stdout).start()
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
            return receiver_failed(process, reader, what, reply if reply.is_error else protocol_error(line))

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
