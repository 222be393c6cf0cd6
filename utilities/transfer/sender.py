"""Sending a plot from the plotter to a harvester: the plotter's half of the protocol.

``send_plot`` starts the harvester's receiver for one plot through ``channel.py`` (SSH in
production); ``session.py`` keeps one receiver session for plot after plot.  Either way each
plot goes through ``exchange_plot`` here: wait for READY (or PRESENT: the plot is already
there, an earlier OK was lost), stream the bytes through ``stream.py``, send VERIFY and wait for
OK; the lines are ``protocol.py``'s.  Nothing here raises for a transfer problem or touches the
source: the result says ok or why not.  Only ``delete_source_after_ok`` removes the source, and
only if it is still the very file that was sent (``integrity.SourceIdentity``).  Nothing here
imports paramiko or the config.
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
from utilities.transfer.journal import ChunkHasher, chunk_count, chunked_digest, hash_chunks
from utilities.transfer.protocol import (
    ERR_PORT_IN_USE,
    OK,
    PRESENT,
    READY,
    RESUME,
    ReceiverReply,
    TransferError,
    build_receive_command,
    format_from,
    format_verify,
    parse_chunk_line,
    parse_receiver_line,
    pick_port,
    protocol_error,
    validate_port,
)
from utilities.transfer.stream import ProgressCallback, StreamResult, check_host, source_address_towards, stream_file

# The reason's start when the receiver could not even be started (the SSH connection is gone).
CANNOT_START = "cannot start receiver"


@dataclass(frozen=True)
class TransferResult:
    """Outcome of one plot's transfer.  ``ok`` means the receiver verified, fsynced and renamed
    the plot (``reason`` may still carry a note); otherwise ``reason`` says what failed and
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
    saved: int = 0  # bytes a resume did not send again (the receiver's kept part held them)

    @property
    def mb_per_s(self) -> float:
        """Whole-transfer speed in MB/s (10**6), start of the receiver to its OK, of the bytes
        really sent (a resume's kept bytes not counted)."""
        return (self.size - self.saved) / self.seconds / 1e6 if self.ok and self.seconds > 0 else 0.0


@dataclass(frozen=True)
class SendOptions:
    """How long to wait for each step, and how the bytes go (the same for every plot of a run).

    ``verify_timeout`` covers the receiver's fsync of a whole plot, which on a busy spinning
    disk can take minutes.  ``data_address`` maps the receiver's (host, port) to where the
    stream connects (a port forward; tests put a proxy there).  ``nc`` is the netcat to stream
    through, or None for the plotter's own socket.
    """

    ready_timeout: float = 60.0
    verify_timeout: float = 900.0
    idle_timeout: float = 120.0
    chunk: int = DEFAULT_CHUNK
    data_address: Callable[[str, int], tuple[str, int]] | None = None
    nc: str | None = "nc"
    resume: bool = False  # sessions name the source (PLOT ... <source>): a dropped send resumes


@dataclass(frozen=True)
class PlotJob:
    """One plot on its way: the file, its name over there, the identity it had when we began,
    where the stream goes, and when the send started (its ``seconds`` count from there)."""

    path: Path
    name: str
    source: SourceIdentity
    host: str
    port: int
    started: float
    progress_cb: ProgressCallback | None = None
    resumable: bool = False  # the PLOT line named the source: RESUME may come instead of READY

    def result(self, ok: bool, reason: str = "", **extra: Any) -> TransferResult:
        return TransferResult(
            ok, self.name, reason, seconds=time.monotonic() - self.started, port=self.port, source=self.source, **extra
        )


@dataclass
class Conversation:
    """A started receiver and the reader of its lines: one plot's or a whole session's."""

    process: ReceiverProcess
    reader: ReplyReader

    @classmethod
    def start(cls, exec_fn: ExecFn, command: str) -> Conversation:
        """Run ``command``; whatever ``exec_fn`` raises (SSH down, no shell) propagates."""
        process = exec_fn(command)
        return cls(process, ReplyReader(process.stdout).start())

    def say(self, line: str) -> None:
        """One line to the receiver; OSError/ValueError/EOFError if it is gone."""
        self.process.stdin.write((line + "\n").encode())
        self.process.stdin.flush()

    def finish(self, timeout: float) -> int | None:
        """Close our side, give the receiver ``timeout`` to exit, else stop it; its exit status."""
        self.process.close_stdin()
        status = self.process.wait(timeout)
        if status is None:
            self.process.kill()
            status = self.process.wait(5)
        return status

    def ended(self) -> bool:
        """Has the receiver exited (a session's receiver after its idle timeout)?"""
        try:
            return self.process.wait(0) is not None
        except Exception:  # noqa: BLE001 - a channel that cannot even say is as good as gone
            return True

    def kill_if_running(self) -> None:
        with contextlib.suppress(Exception):
            if self.process.wait(0) is None:
                self.process.kill()


def refused(name: str, started: float, reason: str, source: SourceIdentity | None = None) -> TransferResult:
    """A send that never reached a receiver (bad input, no port left)."""
    return TransferResult(False, name, reason, seconds=time.monotonic() - started, source=source)


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
    """Send one plot on a receiver of its own (single-plot mode, what every harvester takes):
    start the receiver, wait for READY, stream, VERIFY, wait for OK.

    ``dest_name`` is the plot's name on the harvester (e.g. with a ``portable.`` prefix);
    it defaults to the source's name and is validated like any plot name.

    ``exec_fn`` starts the receiver command (ParamikoExec in production, LocalExec in tests).
    Ports are tried from ``port`` upwards (``port_count`` of them, skipping ``busy_ports``)
    while receivers answer "port in use".  The timeouts, ``chunk``, ``data_address`` and ``nc``
    are SendOptions'.

    Never raises for a transfer problem and never touches the source: the result says ok or
    why not, and only delete_source_after_ok removes the source.
    """
    path = Path(path)
    name = dest_name or path.name
    started = time.monotonic()
    options = SendOptions(ready_timeout, verify_timeout, idle_timeout, chunk, data_address, nc)
    try:
        source = SourceIdentity.of(path)
        build_receive_command(script_path, name, source.size, validate_port(port))
        check_host(host)
    except (PlotManagerError, ValueError, OSError) as exc:
        return refused(name, started, f"refused before starting: {exc}")

    source_address = source_address_towards(host, port)
    tried: set[int] = set(busy_ports)
    while True:
        try:
            current = pick_port(port, port_count, tried)
        except ValueError as exc:
            return refused(name, started, f"refused before starting: {exc}")
        if current is None:
            return refused(name, started, f"no free port in {port}..{port + port_count - 1}", source)
        tried.add(current)
        job = PlotJob(path, name, source, host, current, started, progress_cb)
        command = build_receive_command(script_path, name, source.size, current, source_address)
        result = _send_once(exec_fn, command, job, options)
        if result.receiver_error != ERR_PORT_IN_USE:
            return result


def _send_once(exec_fn: ExecFn, command: str, job: PlotJob, options: SendOptions) -> TransferResult:
    """One receiver for one plot: the exchange, then the receiver's exit."""
    try:
        talk = Conversation.start(exec_fn, command)
    except Exception as exc:  # noqa: BLE001 - any failure to start is a failed transfer
        return job.result(False, f"{CANNOT_START}: {exc}")
    try:
        result = exchange_plot(talk, job, options)
        if not result.ok:
            return result
        # OK is printed only after fsync, rename and directory fsync: it is the proof.  An odd
        # exit status after it (an SSH session torn down right after the line) changes nothing
        # about the plot, so it is only noted; treating it as a failure would keep the source
        # and make every retry end in "exists".
        status = talk.finish(30)
        note = "" if status == 0 else f"receiver exited with status {status} after OK"
        reason = "; ".join(part for part in (result.reason, note) if part)
        return job.result(
            True, reason, receiver_status=status, size=result.size, stream_seconds=result.stream_seconds,
            hexdigest=result.hexdigest,
        )  # fmt: skip
    finally:
        talk.kill_if_running()


def exchange_plot(talk: Conversation, job: PlotJob, options: SendOptions) -> TransferResult:
    """One plot's exchange, from the receiver's first answer (to its command line, or to our
    ``PLOT`` line in a session) to its ``OK``: READY or PRESENT, the stream, VERIFY, OK.

    On success the receiver is left running (a session goes on; send_plot then collects the
    exit status).  On any failure the receiver is finished here: closing stdin tells one that
    still waits to give up and remove its part file, and its ERROR line, if it gave one, is the
    reason.  Never raises for a transfer problem.
    """
    source = job.source

    def failed(what: str, reply: ReceiverReply | None, **extra: Any) -> TransferResult:
        """Close the channel, collect the receiver's own reason if it has one, and report.

        A receiver that already failed has its ERROR line queued; one that is still waiting
        gives up when stdin closes.
        """
        talk.process.close_stdin()
        if reply is None:
            with contextlib.suppress(TimeoutError):
                line = talk.reader.next_line(timeout=10)
                reply = parse_receiver_line(line) if line is not None else None
        status = talk.finish(10)
        reason = what
        if reply is not None and reply.is_error:
            reason = f"{what}: receiver says {reply.describe()}"
        elif reply is None:
            err = talk.process.stderr_text()
            reason = f"{what} (receiver exit status {status}{'; ' + err if err else ''})"
        return job.result(
            False, reason, receiver_error=reply.reason if reply is not None and reply.is_error else "",
            receiver_status=status, **extra,
        )  # fmt: skip

    # 1. READY (a receiver resuming re-reads its kept part first: as long as a final fsync)
    first_wait = max(options.ready_timeout, options.verify_timeout) if job.resumable else options.ready_timeout
    try:
        line = talk.reader.next_line(first_wait)
    except TimeoutError:
        return failed(f"no READY within {first_wait:.0f} s", None)
    if line is None:
        return failed("receiver ended before READY", None)
    reply = parse_receiver_line(line)
    present = reply.kind == PRESENT and reply.size == source.size
    saved = 0
    if job.resumable and reply.kind == RESUME and reply.port == job.port:
        resumed = _resume(talk, job, options, reply)
        if isinstance(resumed, str):
            return failed(resumed, None)
        streamed, saved = resumed
    elif not present and (reply.kind != READY or reply.port != job.port):
        what = "receiver refused" if reply.is_error else f"expected READY {job.port}"
        return failed(what, reply if reply.is_error else protocol_error(line))

    # 2. the stream, or (the plot is already there: an earlier OK was lost) only our hash
    if reply.kind == RESUME:
        pass
    elif present:
        try:
            size, digest = hash_file(job.path, options.chunk)
        except OSError as exc:
            return failed(f"cannot read {job.path}: {exc.strerror or exc}", None)
        streamed = StreamResult(size, digest, 0.0)
    else:
        target = options.data_address(job.host, job.port) if options.data_address else (job.host, job.port)
        try:
            streamed = stream_file(
                job.path, target[0], target[1], job.progress_cb, options.chunk,
                expected_size=source.size, idle_timeout=options.idle_timeout, nc=options.nc,
            )  # fmt: skip
        except (TransferError, OSError) as exc:
            # Closing stdin tells the receiver to give up and remove its part file.
            return failed(f"stream failed: {exc}", None)

    # 3. VERIFY / OK
    try:
        talk.say(format_verify(streamed.size, streamed.hexdigest))
    except (OSError, ValueError, EOFError) as exc:
        return failed(f"cannot send VERIFY: {exc}", None)
    try:
        line = talk.reader.next_line(options.verify_timeout)
    except TimeoutError:
        return failed(f"no answer to VERIFY within {options.verify_timeout:.0f} s", None)
    if line is None:
        return failed("receiver ended without answering VERIFY", None)
    reply = parse_receiver_line(line)
    extra = {"size": streamed.size, "stream_seconds": streamed.seconds, "hexdigest": streamed.hexdigest}
    if reply.kind != OK:
        what = "receiver rejected the plot" if reply.is_error else "unexpected answer to VERIFY"
        return failed(what, reply, **extra)
    if reply.hexdigest != streamed.hexdigest:
        return failed(f"receiver confirmed a different hash {reply.hexdigest}", None, **extra)
    note = "already on the harvester, identical (an earlier OK was lost)" if present else ""
    if saved:
        note = f"resumed: {saved} bytes kept on the harvester were not sent again"
    return job.result(True, note, saved=saved, **extra)


def _resume(
    talk: Conversation, job: PlotJob, options: SendOptions, reply: ReceiverReply
) -> tuple[StreamResult, int] | str:
    """After ``RESUME <port> <chunk> <count>``: read the receiver's chunk digests, check them
    against the source chunk by chunk, answer ``FROM <first differing chunk>``, stream the rest.
    The StreamResult has the whole plot's size and its chunked digest (what VERIFY carries), and
    the bytes not sent; a string says why it failed."""
    size = job.source.size
    chunk, count = reply.chunk or 0, reply.count or 0
    if count > chunk_count(size, chunk):
        return f"receiver offers {count} chunks of {chunk} bytes for a {size}-byte plot"
    held: list[str] = []
    for _ in range(count):
        try:
            line = talk.reader.next_line(options.ready_timeout)
        except TimeoutError:
            return f"no CHUNK line within {options.ready_timeout:.0f} s"
        hexdigest = parse_chunk_line(line) if line is not None else None
        if hexdigest is None:
            return f"expected CHUNK <hex>, got {line!r}"
        held.append(hexdigest)
    try:
        fd = os.open(job.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            same = hash_chunks(fd, chunk, count, held)
        finally:
            os.close(fd)
    except OSError as exc:
        return f"cannot read {job.path}: {exc.strerror or exc}"
    start = min(len(same) * chunk, size)  # every chunk held (the last one short): send nothing
    try:
        talk.say(format_from(len(same)))
    except (OSError, ValueError, EOFError) as exc:
        return f"cannot send FROM: {exc}"
    hasher = ChunkHasher(chunk, size, start)
    target = options.data_address(job.host, job.port) if options.data_address else (job.host, job.port)
    try:
        streamed = stream_file(
            job.path, target[0], target[1], job.progress_cb, options.chunk, expected_size=size,
            idle_timeout=options.idle_timeout, nc=options.nc, start=start, tap=hasher.update,
        )  # fmt: skip
    except (TransferError, OSError) as exc:
        return f"stream failed: {exc}"
    if hasher.offset != size:
        return f"sent up to byte {hasher.offset} of {size}"
    return StreamResult(size, chunked_digest(same + hasher.digests), streamed.seconds), start


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
