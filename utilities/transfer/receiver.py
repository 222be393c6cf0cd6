"""Receiving one plot on the harvester: the receiver's half of the protocol, step by step.

``receive_plot.py`` (what ``receive_plot.sh`` runs for every incoming plot) parses its arguments
into ``Options`` and hands them to ``run_receiver``; the conversation is ``protocol.py``'s::

    -> READY <port>      after checking everything and reserving SIZE bytes on the drive
    <- (SIZE bytes on a TCP connection to PORT)
    <- VERIFY <size> <xxh3_128 hex>
    -> OK <hex>          fsynced, renamed to DIR/NAME, directory fsynced; exit 0
    -> ERROR <kind>: ... anything else; exit status per kind (RECEIVER_EXIT_CODES)

The network side (listening, accepting only the plotter, reading the stream, stdin) is
``intake.py``; the disk side (the part file, the reservation, writing, the commit) is
``landing.py``, shared with local copies.  Safety rules, each for a plot-losing or
farm-breaking failure seen in the wild:

* Nothing named ``*.plot`` appears unless its bytes were verified: data goes to the hidden
  ``DIR/.NAME.part`` and is renamed only after the plotter's hash and size match ours.
* On any failure, signal (SIGTERM, SIGHUP, SIGPIPE, SIGINT) or end of the control channel the
  part file is removed.  Only SIGKILL (or a power cut) can leave it, and every later writer
  into that directory (and the harvester's minute pass) removes part files no living writer
  holds (``part_files.py``).
* The drive's space is reserved up front (``fallocate``) so a full disk fails in a second, not
  after 90 GiB; a dropped link ends in ``--idle-timeout`` seconds instead of hanging forever.
* Only a connection from the plotter's address is accepted (``intake.py``).

No setting is read and nothing heavy is imported (pydantic, YAML, paramiko): the receiver runs
for every plot and starts in under 0.1 s.  Replace mode (``--replace-old-plots yes``, written
into the script by drive_manager.py) lets it delete exactly one old OG plot when the incoming
plot does not fit (utilities/replace.py decides which, imported only then).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from utilities.transfer.intake import Intake, allowed_peers, note, reply
from utilities.transfer.landing import FinalName, Landing, Problem, Wording
from utilities.transfer.part_files import SPACE_MARGIN, StaleCheck
from utilities.transfer.protocol import (
    ERR_ABORTED,
    ERR_BAD_DEST,
    ERR_BUSY,
    ERR_EXISTS,
    ERR_IO,
    ERR_MISMATCH,
    ERR_NO_SPACE,
    RECEIVER_EXIT_CODES,
    ReceiveFailure,
    format_error,
    format_ok,
    format_present,
    format_ready,
)

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
    """One receive, as receive_plot.py's command line gives it."""

    dest: str
    name: str
    size: int
    port: int
    idle_timeout: float
    bind: str | None
    allow_from: str | None
    replace_old_plots: bool = False


class Aborted(BaseException):
    """Raised from a signal handler so every ``finally`` runs and the part file goes."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, _frame: object) -> None:
    raise Aborted(signum)


def _report_stale(entry: str, check: StaleCheck) -> None:
    if check.unreadable:
        note(f"cannot open {entry} to check it: {check.unreadable}")
    if check.removed:
        note(f"removed stale {entry} left by a writer that died")


class Receiver:
    """One plot: the network side (``intake``) and the disk side (``landing``) in protocol order."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.intake = Intake(options.port, options.size, options.idle_timeout, options.bind)
        self.landing = Landing(
            options.dest, options.name, options.size,
            wording=WORDING, fail=ReceiveFailure, on_stale=_report_stale, note=note,
        )  # fmt: skip

    def run(self) -> str:
        """Receive the plot (or prove the one already there); the hex digest for OK."""
        self.intake.allowed = allowed_peers(self.options.allow_from)
        self.landing.open()
        if self.landing.final_name() is FinalName.SAME_SIZE:
            return self.confirm_present()
        reserved = self.landing.reserve(self.make_room if self.options.replace_old_plots else None)
        if not reserved:
            note("no fallocate on this file system; relying on the free-space check")
        self.intake.listen()
        try:
            reply(format_ready(self.options.port))
        except OSError:
            raise ReceiveFailure(ERR_ABORTED, "control channel closed before READY") from None
        self.intake.accept()
        hexdigest = self.intake.receive(self.landing.write)
        size, expected = self.intake.wait_verify()
        if size != self.options.size or expected != hexdigest:
            raise ReceiveFailure(
                ERR_MISMATCH,
                f"received {self.options.size} bytes xxh3_128 {hexdigest}, plotter sent {size} bytes {expected}",
            )
        self.landing.commit()
        return hexdigest

    def confirm_present(self) -> str:
        """A file of the plot's size already holds its name: maybe this very plot from an
        earlier run whose OK got lost.  Answer PRESENT, and OK only if its hash is the plotter's.

        Nothing is written or deleted here; a different file of the same name stays as it is.
        """
        try:
            reply(format_present(self.options.size))
        except OSError:
            raise ReceiveFailure(ERR_ABORTED, "control channel closed before PRESENT") from None
        size, expected = self.intake.wait_verify()
        return self.landing.prove_final(size, expected)

    def make_room(self) -> None:
        """Replace mode (``--replace-old-plots yes``, set by drive_manager.py): if the plot does
        not fit, delete exactly one old OG plot (utilities.replace decides, by header)."""
        from utilities.errors import PlotManagerError
        from utilities.replace import make_room_for

        try:
            deleted = make_room_for(Path(self.options.dest), self.options.size + SPACE_MARGIN)
        except (PlotManagerError, OSError) as exc:
            raise ReceiveFailure(ERR_NO_SPACE, f"replace mode: {exc}") from None
        if deleted is not None:
            note(f"replace mode: deleted old OG plot {deleted} to make room for {self.options.name}")

    def cleanup(self) -> None:
        """Close everything; remove our part file unless it became the plot."""
        self.intake.close()
        self.landing.close()


def run_receiver(read_options: Callable[[], Options]) -> int:
    """One whole receive: the exit status; the outcome (OK or ERROR) is the last line on stdout.

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
        outcome = format_ok(receiver.run())
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
