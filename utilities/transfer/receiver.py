"""Receiving plots on the harvester: the receiver's half of the protocol, step by step.

``receive_plot.py`` (what ``receive_plot.sh`` runs) parses its arguments into ``Options`` and
hands them to ``run_receiver``; the conversation is ``protocol.py``'s, for one plot named on the
command line or, in a session (``--session PORT``), for each ``PLOT <name> <size>`` line in turn::

    -> READY <port>      after checking everything and reserving SIZE bytes on a drive
    <- (SIZE bytes on a TCP connection of their own to PORT)
    <- VERIFY <size> <xxh3_128 hex>
    -> OK <hex>          fsynced, renamed to DIR/NAME, directory fsynced
    -> ERROR <kind>: ... anything else; exit status per kind (RECEIVER_EXIT_CODES)

A single plot exits 0 after its OK; a session waits for the next PLOT line and exits 0 when
stdin ends or none comes within ``--idle-timeout`` (nothing is in flight then).  After any
ERROR the receiver is done.  The network side (listening, accepting only the plotter, reading
the stream, stdin) is ``intake.py``; the disk side (the part file, the reservation, writing, the
commit) is ``landing.py``, shared with local copies; which drive of the receive set takes the
plot, and the claim on it, is ``receive_set.py``.  Safety rules, each for a plot-losing or
farm-breaking failure seen in the wild:

* Nothing named ``*.plot`` appears unless its bytes were verified: data goes to the hidden
  ``DIR/.NAME.part`` and is renamed only after the plotter's hash and size match ours.
* On any failure, signal (SIGTERM, SIGHUP, SIGPIPE, SIGINT) or end of the control channel the
  part file is removed.  Only SIGKILL (or a power cut) can leave it, and every later writer
  into that directory (and the harvester's minute pass) removes part files no living writer
  holds (``part_files.py``).
* Except a resumable plot's (issue 13: ``PLOT <name> <size> <source>``): its part is kept with
  a journal of the chunks it durably holds (``journal.py``) once it holds one, so the next
  attempt streams only the rest (``stream_resumable``); the sweeps leave such a part alone
  until it expires, and a part whose journal is missing, torn or of another plot is removed.
* The drive's space is reserved up front (``fallocate``) so a full disk fails in a second, not
  after 90 GiB; a dropped link ends in ``--idle-timeout`` seconds instead of hanging forever.
* Only a connection from the plotter's address is accepted (``intake.py``).
* Each receiver writes onto a drive it has claimed (``claims.py``), so two receivers never
  share a drive beyond ``--per-drive``; the claim dies with the receiver, however it ends.
* The drive keeps writing while the plot streams (``writeback.py``: each finished window's
  write-back started, the one before waited for), so memory stays flat per receiver and the
  final fsync is short.

No setting is read and nothing heavy is imported (pydantic, YAML, paramiko): the receiver
starts in under 0.1 s.  Replace mode (``--replace-old-plots yes``, or a drive's ``replace`` in
``--drives``, written into the script by drive_manager.py) lets it delete exactly one old OG plot
on that drive when the incoming plot does not fit (utilities/replace.py decides which, imported
only then).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from utilities.errors import PlotFileError
from utilities.plots import validate_plot_name
from utilities.transfer import journal as journal_module
from utilities.transfer.forget import request_forget
from utilities.transfer.intake import Intake, allowed_peers, note, reply
from utilities.transfer.landing import FinalName, Landing, Problem, Wording
from utilities.transfer.part_files import SPACE_MARGIN, StaleCheck, part_name
from utilities.transfer.protocol import (
    ERR_ABORTED,
    ERR_BAD_DEST,
    ERR_BAD_NAME,
    ERR_BUSY,
    ERR_EXISTS,
    ERR_IO,
    ERR_MISMATCH,
    ERR_NO_SPACE,
    ERR_PROTOCOL,
    ERR_USAGE,
    FORGET_NOTED,
    PLOT,
    RECEIVER_EXIT_CODES,
    ReceiveFailure,
    format_chunk,
    format_error,
    format_ok,
    format_present,
    format_ready,
    format_resume,
    parse_from_line,
    parse_plot_request,
    shown,
)
from utilities.transfer.receive_set import Placement, SetDrive
from utilities.transfer.writeback import StreamWriter, SyncRange, load_sync_file_range

DEFAULT_IDLE_TIMEOUT = 120.0
SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGINT)

# What each landing problem means on the wire: the ERROR kind the plotter decides on, and words.
WORDING: Wording = {
    Problem.OPEN_DIR: (ERR_BAD_DEST, "{dest}: {reason}"),
    Problem.CHECK_FINAL: (ERR_IO, "cannot check {name}: {reason}"),
    Problem.FINAL_TAKEN: (ERR_EXISTS, "{name} already exists in {dest}"),
    Problem.OPEN_FINAL: (ERR_IO, "cannot open {name}: {reason}"),
    Problem.READ_FINAL: (ERR_IO, "cannot read {name}: {reason}"),
    Problem.FINAL_DIFFERS: (ERR_EXISTS, "{name} already exists in {dest} with different content"),
    Problem.LIST_DIR: (ERR_IO, "cannot list {dest}: {reason}"),
    Problem.PART_BUSY: (ERR_BUSY, "another receiver is receiving {name}"),
    Problem.LOST_RACE: (ERR_BUSY, "lost a race for {part}; try again"),
    Problem.CREATE_DENIED: (ERR_BAD_DEST, "cannot create {part} in {dest}: {reason}"),
    Problem.CREATE_FAILED: (ERR_IO, "cannot create {part} in {dest}: {reason}"),
    Problem.NO_ROOM: (ERR_NO_SPACE, "{size} bytes needed, {free} free in {dest}"),
    Problem.RESERVE_NO_SPACE: (ERR_NO_SPACE, "cannot reserve {size} bytes: {reason}"),
    Problem.RESERVE_TOO_BIG: (ERR_NO_SPACE, "file system cannot hold a {size}-byte file"),
    Problem.RESERVE_FAILED: (ERR_IO, "cannot reserve space: {reason}"),
    Problem.WRITE_NO_SPACE: (ERR_NO_SPACE, "writing {part} at byte {offset}: {reason}"),
    Problem.WRITE_FAILED: (ERR_IO, "writing {part} at byte {offset}: {reason}"),
    Problem.FLUSH: (ERR_IO, "cannot flush {part}: {reason}"),
    Problem.CHECK_PART: (ERR_IO, "cannot flush {part}: {reason}"),
    Problem.PART_REPLACED: (ERR_IO, "{part} was replaced while receiving"),
    Problem.FINAL_APPEARED: (ERR_EXISTS, "{name} appeared in {dest} while receiving"),
    Problem.RENAME: (ERR_IO, "cannot rename {part} to {name}: {reason}"),
    Problem.FLUSH_DIR: (ERR_IO, "cannot flush directory {dest}: {reason}"),
}


@dataclass(frozen=True)
class Options:
    """What receive_plot.py's command line asks for: where plots may land (the receive set;
    ``--dest`` is a set of one drive without claims), how to listen, and the one plot
    (``plot``: NAME, SIZE) or, when None, a session of plots named by PLOT lines."""

    drives: tuple[SetDrive, ...]
    port: int
    idle_timeout: float
    bind: str | None = None
    allow_from: str | None = None
    plot: tuple[str, int] | None = None
    claims_dir: str | None = None
    per_drive: int = 1
    resume: bool = True  # journal resumable plots (PLOT with a source) and resume their parts
    resume_chunk: int = journal_module.DEFAULT_CHUNK
    resume_keep_seconds: float = journal_module.DEFAULT_KEEP_SECONDS
    forget: str | None = None  # --forget NAME: note that NAME's kept part may go, and exit


class Aborted(BaseException):
    """Raised from a signal handler so every ``finally`` runs and the part file goes."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, _frame: object) -> None:
    raise Aborted(signum)


@functools.cache
def _sync_file_range() -> SyncRange | None:
    """sync_file_range, loaded once, when the first plot streams in."""
    return load_sync_file_range()


def _report_stale(entry: str, check: StaleCheck) -> None:
    if check.unreadable:
        note(f"cannot open {entry} to check it: {check.unreadable}")
    if check.removed:
        note(f"removed stale {entry} left by a writer that died")


class Receiver:
    """The receive (one plot, or a session of them) in protocol order over ``intake`` (the
    network), ``placement`` (the drive and its claim) and a ``Landing`` per plot (the disk)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.session = options.plot is None
        self.intake = Intake(options.port, options.idle_timeout, options.bind)
        self.placement = Placement(options.drives, options.claims_dir, options.per_drive)
        self.landing: Landing | None = None
        self.journal_off = False  # this plot's journal could not be written: no resume for it

    def run(self) -> str | None:
        """The single plot's hex digest (its OK is the receiver's last line), or None after a
        session (each plot's OK already sent)."""
        if self.options.forget is not None:
            return self.forget(self.options.forget)
        self.intake.allowed = allowed_peers(self.options.allow_from)
        if self.options.plot is not None:
            return self.receive(*self.options.plot)
        while (plot := self.next_plot()) is not None:
            reply(format_ok(self.receive(*plot)))
        return None

    def forget(self, name: str) -> None:
        """``--forget NAME``: the plotter no longer has NAME's source, so its kept part (if any)
        is asked to go at the next minute pass (``transfer/forget.py``); nothing is removed here."""
        if self.options.claims_dir is None:
            raise ReceiveFailure(ERR_USAGE, "--forget needs the receive set (--drives and --claims)")
        try:
            request_forget(self.options.claims_dir, name)
        except PlotFileError as exc:
            raise ReceiveFailure(ERR_BAD_NAME, str(exc)) from None
        except OSError as exc:
            raise ReceiveFailure(ERR_IO, f"cannot note the request to forget {name}: {exc.strerror or exc}") from None
        reply(f"{FORGET_NOTED} {name}")

    def next_plot(self) -> tuple[str, int, str | None] | None:
        """The next PLOT line's (name, size, source or None); None when the plotter ends the session."""
        line = self.intake.next_line()
        if line is None:
            return None
        parsed = parse_plot_request(line)
        if parsed is not None:
            return parsed
        words = line.split(" ")
        if len(words) in (3, 4) and words[0] == PLOT:
            try:
                validate_plot_name(words[1])
            except PlotFileError as exc:
                raise ReceiveFailure(ERR_BAD_NAME, str(exc)) from None
        raise ReceiveFailure(ERR_PROTOCOL, f"expected PLOT <name> <size> [<source>], got {shown(line)!r}")

    def receive(self, name: str, size: int, source: str | None = None) -> str:
        """One plot, up to its commit (or the proof that it is already here): its hex digest."""
        self.journal_off = False
        try:
            existing = self.placement.find_existing(name)
            present = self.land(existing, name, size, reserve=False) if existing is not None else None
            if present is None and source is not None and self.options.resume:
                holder = self.placement.find_existing(journal_module.journal_name(part_name(name)))
                placed = self.placement.place(
                    lambda drive: self.land_resumable(drive, name, size, source),
                    prefer=holder.name if holder is not None else None,
                ).landed
                if placed is True:
                    return self.confirm_present(size)
                assert isinstance(placed, journal_module.Journal)
                return self.stream_resumable(placed)
            if present is None:  # nowhere in the set (or gone again since it was seen)
                present = self.placement.place(lambda drive: self.land(drive, name, size)).landed
            if present:
                return self.confirm_present(size)
            return self.stream_in(name, size)
        finally:
            if self.landing is not None:
                self.landing.close()
                self.landing = None
            self.intake.end_plot()

    @contextlib.contextmanager
    def _landing_on(self, drive: SetDrive, name: str, size: int) -> Iterator[Landing]:
        """The plot's landing on ``drive``, opened, as ``self.landing``; closed again (nothing
        left behind) when what the caller does with it fails."""
        self.landing = landing = Landing(
            drive.dir, name, size, wording=WORDING, fail=ReceiveFailure, on_stale=_report_stale, note=note,
            keep_seconds=self.options.resume_keep_seconds,
        )  # fmt: skip
        try:
            landing.open()
            yield landing
        except BaseException:
            landing.close()
            self.landing = None
            raise

    def _reserve(self, landing: Landing, drive: SetDrive, name: str, size: int) -> None:
        """The plot's space, replace mode making room first."""
        if not landing.reserve((lambda: self.make_room(drive, name, size)) if drive.replace else None):
            note(f"no fallocate in {drive.dir}; relying on the free-space check")

    def land(self, drive: SetDrive, name: str, size: int, *, reserve: bool = True) -> bool | None:
        """The plot's landing on ``drive`` (``self.landing``): True when its name there holds a
        file of its size (to be proven by hash), False when its space is reserved (replace mode
        making room first), None when the name is free and ``reserve`` is False.  Another file
        under the name is refused; nothing stays behind on failure."""
        with self._landing_on(drive, name, size) as landing:
            if landing.final_name() is FinalName.SAME_SIZE:
                return True
            if not reserve:
                landing.close()
                self.landing = None
                return None
            self._reserve(landing, drive, name, size)
        return False

    def land_resumable(
        self, drive: SetDrive, name: str, size: int, source: str
    ) -> bool | journal_module.Journal:
        """A resumable plot's landing on ``drive``: True when its final name holds a file of its
        size (proven by hash), else the journal of what its part holds: the kept part of this
        very plot if there is one, else a new reserved part holding nothing yet."""
        chunk = self.options.resume_chunk
        with self._landing_on(drive, name, size) as landing:
            if landing.final_name() is FinalName.SAME_SIZE:
                return True
            kept = landing.resume_existing(source, chunk)
            if kept is not None:
                return kept
            self._reserve(landing, drive, name, size)
        return journal_module.Journal(name, size, source, chunk)

    def stream_resumable(self, journal: journal_module.Journal) -> str:
        """RESUME with the chunks the part holds (each re-read from the drive and checked against
        the journal), FROM, the rest of the stream journaled chunk by chunk, VERIFY over every
        chunk, the commit: the digest (``journal.chunked_digest``)."""
        landing = self.landing
        assert landing is not None and landing.part_fd is not None and landing.dir_fd is not None
        name, size, chunk = journal.name, journal.size, journal.chunk
        fd, part = landing.part_fd, landing.part
        if journal.chunks:
            try:
                held = journal_module.hash_chunks(fd, chunk, len(journal.chunks), journal.chunks)
            except OSError as exc:
                raise landing.failure(Problem.CHECK_PART, exc) from None
            if len(held) < len(journal.chunks):
                note(f"{part}: chunk {len(held)} differs from its journal on the drive; resuming from it")
            journal.chunks = held
        landing.keep_part = bool(journal.chunks)
        started_at = time.time()
        self.placement.record(name, size, journal.held, started_at, force=True)
        if self.intake.listener is None:
            self.intake.listen()
        try:
            reply(format_resume(self.options.port, chunk, len(journal.chunks)))
            for hexdigest in journal.chunks:
                reply(format_chunk(hexdigest))
        except OSError:
            raise ReceiveFailure(ERR_ABORTED, "control channel closed before RESUME") from None
        line = self.intake.next_line()
        if line is None:
            raise ReceiveFailure(ERR_ABORTED, "no FROM line after RESUME (plotter gone or silent)")
        start = parse_from_line(line, len(journal.chunks))
        if start is None:
            raise ReceiveFailure(ERR_PROTOCOL, f"expected FROM <0..{len(journal.chunks)}>, got {shown(line)!r}")
        if start < len(journal.chunks):
            journal.chunks = journal.chunks[:start]
            self._write_journal(journal)
            landing.keep_part = bool(journal.chunks) and not self.journal_off
        offset = min(start * chunk, size)  # every chunk held: nothing left to stream
        if offset:
            note(f"resuming {name} at byte {offset} of {size} (chunk {start})")
        self.intake.accept(keep_listening=self.session)
        os.lseek(fd, offset, os.SEEK_SET)
        writer = self._stream_writer(landing, name, size, started_at)
        writer.window_start, writer.window_end = offset, offset + writer.window
        hasher = journal_module.ChunkHasher(chunk, size, offset)

        def write(data: memoryview, got: int) -> None:
            writer.write(data, offset + got)
            for _index, hexdigest in hasher.update(data):
                try:
                    os.fdatasync(fd)  # the chunk is on the drive before the journal says so
                except OSError as exc:
                    raise landing.failure(Problem.FLUSH, exc) from None
                journal.chunks.append(hexdigest)
                self._write_journal(journal)
                landing.keep_part = not self.journal_off

        self.intake.receive(size - offset, write, whole_digest=False)
        return self._verify_and_commit(landing, writer, size, journal_module.chunked_digest(journal.chunks), "chunk digest")

    def _write_journal(self, journal: journal_module.Journal) -> None:
        """Record the chunks the part durably holds.  The journal only buys a faster retry: when
        it cannot be written (a drive filled up by something else, a read-only remount) the plot
        goes on without it, no longer resumable (its part goes if the stream ends early), rather
        than failing a transfer whose own space is reserved."""
        landing = self.landing
        assert landing is not None and landing.dir_fd is not None
        if self.journal_off:
            return
        try:
            if journal.chunks:
                journal_module.write_journal(landing.dir_fd, landing.part, journal)
            else:
                journal_module.remove_journal(landing.dir_fd, landing.part)
        except OSError as exc:
            note(f"cannot write the journal of {landing.part} ({exc.strerror or exc}); going on without a resume")
            self.journal_off = True
            landing.keep_part = False
            with contextlib.suppress(OSError):
                journal_module.remove_journal(landing.dir_fd, landing.part)

    def _stream_writer(self, landing: Landing, name: str, size: int, started_at: float) -> StreamWriter:
        """The writer of the stream into the part (write-back per window), whose failures name
        the landing's problem and whose progress goes into the drive claim (the first window at
        once, so a report sees the plot moving; then rate-limited)."""
        assert landing.part_fd is not None

        def failed(exc: OSError, offset: int) -> BaseException:
            problem = Problem.WRITE_NO_SPACE if exc.errno in (errno.ENOSPC, errno.EDQUOT) else Problem.WRITE_FAILED
            return landing.failure(problem, exc, offset=offset)

        def progress(received: int, first: bool) -> None:
            self.placement.record(name, size, received, started_at, force=first)

        return StreamWriter(landing.part_fd, _sync_file_range(), failed, progress)

    def stream_in(self, name: str, size: int) -> str:
        """READY, the stream into the reserved part file, VERIFY, the commit: the hex digest."""
        landing = self.landing
        assert landing is not None
        started_at = time.time()
        self.placement.record(name, size, 0, started_at, force=True)
        if self.intake.listener is None:
            self.intake.listen()
        try:
            reply(format_ready(self.options.port))
        except OSError:
            raise ReceiveFailure(ERR_ABORTED, "control channel closed before READY") from None
        self.intake.accept(keep_listening=self.session)
        writer = self._stream_writer(landing, name, size, started_at)
        return self._verify_and_commit(landing, writer, size, self.intake.receive(size, writer.write), "xxh3_128")

    def _verify_and_commit(self, landing: Landing, writer: StreamWriter, size: int, hexdigest: str, what: str) -> str:
        """The plotter's VERIFY against what arrived (``what``: how ``hexdigest`` was made), then
        the commit (fsync, link into place): the digest."""
        sent_size, expected = self.intake.wait_verify(size)
        if sent_size != size or expected != hexdigest:
            raise ReceiveFailure(
                ERR_MISMATCH, f"received {size} bytes {what} {hexdigest}, plotter sent {sent_size} bytes {expected}"
            )
        landing.commit()
        writer.behind.drop_all()
        self.placement.idle()
        return hexdigest

    def confirm_present(self, size: int) -> str:
        """A file of the plot's size already holds its name: maybe this very plot from an
        earlier run whose OK got lost.  Answer PRESENT, and OK only if its hash is the plotter's.

        Nothing is written or deleted here; a different file of the same name stays as it is.
        """
        assert self.landing is not None
        try:
            reply(format_present(size))
        except OSError:
            raise ReceiveFailure(ERR_ABORTED, "control channel closed before PRESENT") from None
        sent_size, expected = self.intake.wait_verify(size)
        return self.landing.prove_final(sent_size, expected)

    def make_room(self, drive: SetDrive, name: str, size: int) -> None:
        """Replace mode (set per drive by drive_manager.py): if the plot does not fit, delete
        exactly one old OG plot on this drive (utilities.replace decides, by header)."""
        from utilities.errors import PlotManagerError
        from utilities.replace import make_room_for

        try:
            deleted = make_room_for(Path(drive.dir), size + SPACE_MARGIN)
        except (PlotManagerError, OSError) as exc:
            raise ReceiveFailure(ERR_NO_SPACE, f"replace mode: {exc}") from None
        if deleted is not None:
            note(f"replace mode: deleted old OG plot {deleted} to make room for {name}")

    def cleanup(self) -> None:
        """Close everything; remove a part file that did not become a plot; give up the claim."""
        if self.landing is not None:
            self.landing.close()
            self.landing = None
        self.intake.close()
        self.placement.release()


def run_receiver(read_options: Callable[[], Options]) -> int:
    """One whole receive (a plot, or a session): the exit status.  The outcome is the last line
    on stdout: a single plot's OK, or an ERROR; a session that ends well says nothing more after
    its last plot's OK.

    ``read_options`` (the command line) is read inside, so a usage error is answered as an ERROR
    line like any other failure, and the signal handlers are in place before anything else.
    """
    for signum in SIGNALS:
        signal.signal(signum, _on_signal)
    receiver: Receiver | None = None
    outcome: str | None = None
    status = 0
    try:
        receiver = Receiver(read_options())
        hexdigest = receiver.run()
        outcome = format_ok(hexdigest) if hexdigest is not None else None
    except ReceiveFailure as failure:
        outcome = format_error(failure.kind, failure.detail)
        status = RECEIVER_EXIT_CODES[failure.kind]
    except (Aborted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Aborted) else signal.SIGINT
        outcome = format_error(ERR_ABORTED, f"signal {signal.Signals(signum).name}")
        status = RECEIVER_EXIT_CODES[ERR_ABORTED]
    except BrokenPipeError:
        outcome = None
        status = RECEIVER_EXIT_CODES[ERR_ABORTED]
    except Exception as exc:  # noqa: BLE001 - anything unexpected still ends in cleanup + ERROR
        outcome = format_error(ERR_IO, f"unexpected {type(exc).__name__}: {exc}")
        status = RECEIVER_EXIT_CODES[ERR_IO]
    finally:
        # A second signal must not interrupt the clean-up half way.
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        if receiver is not None:
            receiver.cleanup()
    if status != 0 and outcome:
        note(outcome)
    if outcome:
        # If the plotter is gone the exit status and stderr still say what happened.
        with contextlib.suppress(OSError):
            reply(outcome)
    return status
