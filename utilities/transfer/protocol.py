"""The plot-transfer protocol: its lines, error kinds and exit codes, defined once for both ends.

A plot is hours of compute, so the rules are: the harvester writes to a hidden ``.NAME.part``
(chia never sees half a plot), both ends hash the bytes as they pass (xxh3-128), and only when
the hashes and sizes agree does the receiver fsync, rename into place and answer ``OK``.  The
plotter deletes its copy only after that ``OK`` and only if the source is still the same file.

The control conversation, one line each way over the SSH channel (the receiver's stdin/stdout)::

    plotter runs:   receive_plot.sh NAME SIZE PORT      (built by build_receive_command)
    receiver:       READY <port>                        listening, disk space reserved
      or:           PRESENT <size>                      the plot is already here: prove it
    plotter:        (streams SIZE bytes to PORT: its own socket, or ``nc -N``; not after PRESENT)
    plotter:        VERIFY <size> <xxh3_128 hex>
    receiver:       OK <xxh3_128 hex>                   fsynced and renamed into place
    or at any step: ERROR <kind>: <detail>              nothing left behind, non-zero exit

A session (``receive_plot.sh [--allow-from ADDR] --session PORT``) takes several plots in turn
on one receiver process and one listening port, each plot still hashed, verified, fsynced and
renamed on its own; the fixed cost per plot falls to a round trip and a TCP connect::

    plotter:        PLOT <name> <size>                  (first line; again after each OK)
    receiver:       READY <port> | PRESENT <size> | ERROR ...    then as above, up to OK
    plotter:        PLOT <next name> <size>  ...  or EOF (closes stdin): the receiver exits 0
    after any ERROR the session is over (the receiver exits with that kind's status).

A resumable plot (protocol 3, issue 13: a dropped transfer goes on where it stopped) names the
source's identity as a fourth word; a receiver that journals answers RESUME instead of READY::

    plotter:        PLOT <name> <size> <source>
    receiver:       RESUME <port> <chunk> <count>       then <count> lines CHUNK <hex>: the
                                                        chunks its kept part holds (0 for none)
    plotter:        FROM <n>                            n <= count: its source's chunks 0..n-1
                                                        hash the same; streams bytes n*chunk..
    plotter:        VERIFY <size> <hex>                 hex = journal.chunked_digest of every
    receiver:       OK <hex>                            chunk of the whole file

A receiver without resume may still answer READY (the whole plot, the plain digest).  A dropped
resumable stream leaves the part and its journal (``journal.py``) for the next attempt.

With a receive set (``--drives``, written into the script by drive_manager.py) each receiver
claims one drive for its whole session (``claims.py``); when every drive of the set is claimed
it answers ``ERROR busy`` and the plotter sends that plot elsewhere or later, not as a failure.

The plotter's side is ``sender.py`` (with ``stream.py`` and ``channel.py``), the harvester's is
``receiver.py`` (with ``intake.py`` and ``landing.py``).  Everything here is pure (building and
parsing lines, choosing a port) so it is tested without processes, and light: the receiver
imports it and must start fast, so nothing here imports paramiko, xxhash or the config.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from utilities.errors import PlotManagerError
from utilities.plots import validate_plot_name

# -- the words ----------------------------------------------------------------------------------

READY = "READY"
PRESENT = "PRESENT"  # the final name already holds a file of this size: prove it is this plot
OK = "OK"
ERROR = "ERROR"
VERIFY = "VERIFY"
PLOT = "PLOT"  # session mode: the next plot of the session, "PLOT <name> <size> [<source>]"
RESUME = "RESUME"  # to a resumable PLOT: "RESUME <port> <chunk> <count>", then count CHUNK lines
CHUNK = "CHUNK"  # "CHUNK <xxh3_128 hex>": a chunk the kept part durably holds, in order
FROM = "FROM"  # the plotter's answer to RESUME: "FROM <n>", the first chunk it will stream
SESSION_OPTION = "--session"
FORGET_OPTION = "--forget"  # "receive_plot.sh --forget NAME": the plotter no longer has NAME's source
FORGET_NOTED = "FORGET-NOTED"  # the receiver's answer: the next minute pass removes NAME's kept part

MIN_PORT = 1024
MAX_PORT = 65535
# Longest control line either side accepts; a peer that sends more is not speaking the protocol.
MAX_LINE = 4096

# Error kinds: the word(s) after "ERROR " up to the colon.  The plotter decides on them (retry
# on another port, try another harvester, alert the farmer), so they are fixed strings.
ERR_USAGE = "usage"
ERR_BAD_NAME = "bad name"
ERR_BAD_DEST = "bad dest"
ERR_EXISTS = "exists"
ERR_BUSY = "busy"
ERR_NO_SPACE = "no space"
ERR_PORT_IN_USE = "port in use"
ERR_LISTEN = "listen"
ERR_TIMEOUT = "timeout"
ERR_STREAM = "stream"
ERR_MISMATCH = "mismatch"
ERR_ABORTED = "aborted"
ERR_IO = "io"
ERR_PROTOCOL = "protocol"  # a line that is not protocol (only produced by the parser)

# Receiver exit status per error kind: distinct so a log of exit codes alone says what failed.
# 75 (EX_TEMPFAIL) is taken by the refusing receive_plot.sh ("no drive has room").
RECEIVER_EXIT_CODES: dict[str, int] = {
    ERR_USAGE: 2,
    ERR_BAD_DEST: 3,
    ERR_BAD_NAME: 4,
    ERR_EXISTS: 5,
    ERR_BUSY: 6,
    ERR_NO_SPACE: 7,
    ERR_PORT_IN_USE: 8,
    ERR_LISTEN: 9,
    ERR_TIMEOUT: 10,
    ERR_STREAM: 11,
    ERR_MISMATCH: 12,
    ERR_ABORTED: 13,
    ERR_IO: 14,
    ERR_PROTOCOL: 15,
}
ERROR_KINDS = tuple(RECEIVER_EXIT_CODES)

_HEX128_RE = re.compile(r"[0-9a-f]{32}")
_DIGITS_RE = re.compile(r"[0-9]{1,20}")
_SOURCE_RE = re.compile(r"[0-9a-z-]{1,64}")
_SHOWN = 200  # longest stretch of a foreign line quoted back in a reason


# -- the two ends' failures ---------------------------------------------------------------------


class TransferError(PlotManagerError):
    """A transfer step failed on the plotter's side; the message says which and why (the
    source is never touched)."""

    exit_code = 5


class ReceiveFailure(Exception):
    """Why the receiver stops: ``kind`` (one of ERROR_KINDS) and ``detail`` become its
    ``ERROR kind: detail`` line and its exit status (RECEIVER_EXIT_CODES)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


# -- writing lines ------------------------------------------------------------------------------


def format_ready(port: int) -> str:
    return f"{READY} {port}"


def format_present(size: int) -> str:
    return f"{PRESENT} {size}"


def format_ok(hexdigest: str) -> str:
    return f"{OK} {hexdigest}"


def format_error(kind: str, detail: str = "") -> str:
    """One ``ERROR kind: detail`` line; newlines in the detail are flattened so it stays one line."""
    detail = " ".join(detail.split())
    return f"{ERROR} {kind}: {detail}" if detail else f"{ERROR} {kind}"


def format_verify(size: int, hexdigest: str) -> str:
    return f"{VERIFY} {size} {hexdigest}"


def format_plot(name: str, size: int, source: str | None = None) -> str:
    """``PLOT <name> <size> [<source>]``: the next plot of a session (the name is validated
    first); with ``source`` (journal.valid_source) the plot is resumable."""
    validate_plot_name(name)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive number of bytes, got {size!r}")
    if source is None:
        return f"{PLOT} {name} {size}"
    if not _SOURCE_RE.fullmatch(source):
        raise ValueError(f"bad source identity {source!r}")
    return f"{PLOT} {name} {size} {source}"


def format_resume(port: int, chunk: int, count: int) -> str:
    return f"{RESUME} {port} {chunk} {count}"


def format_chunk(hexdigest: str) -> str:
    return f"{CHUNK} {hexdigest}"


def format_from(index: int) -> str:
    return f"{FROM} {index}"


def parse_chunk_line(line: str | bytes) -> str | None:
    """``CHUNK <hex>`` -> the hex; else None (pure)."""
    parts = as_text(line).rstrip("\r\n").split(" ")
    if len(parts) != 2 or parts[0] != CHUNK or not _HEX128_RE.fullmatch(parts[1]):
        return None
    return parts[1]


def parse_from_line(line: str | bytes, count: int) -> int | None:
    """``FROM <n>`` with 0 <= n <= count -> n; else None (pure)."""
    parts = as_text(line).rstrip("\r\n").split(" ")
    if len(parts) != 2 or parts[0] != FROM:
        return None
    return parse_int_field(parts[1], 0, count)


# -- reading lines ------------------------------------------------------------------------------


def as_text(line: str | bytes) -> str:
    """A line as text, whatever the channel handed over (undecodable bytes replaced)."""
    if isinstance(line, bytes):
        return line.decode("utf-8", "replace")
    return line


def shown(line: str) -> str:
    """A foreign line as quoted in a reason: cut at 200 characters."""
    return line if len(line) <= _SHOWN else line[:_SHOWN] + "..."


def parse_int_field(text: str, low: int, high: int) -> int | None:
    """A plain decimal in [low, high] (no sign, no spaces, no ``1_000``), else None."""
    if not _DIGITS_RE.fullmatch(text):
        return None
    value = int(text)
    return value if low <= value <= high else None


def parse_verify_line(line: str | bytes) -> tuple[int, str] | None:
    """``VERIFY <size> <hex>`` -> (size, lower-case hex); anything else -> None (pure)."""
    parts = as_text(line).strip().split(" ")
    if len(parts) != 3 or parts[0] != VERIFY:
        return None
    size = parse_int_field(parts[1], 0, 2**63 - 1)
    digest = parts[2].lower()
    if size is None or not _HEX128_RE.fullmatch(digest):
        return None
    return size, digest


def parse_plot_line(line: str | bytes) -> tuple[str, int] | None:
    """``PLOT <name> <size>`` -> (name, size) with a valid plot name; anything else -> None."""
    request = parse_plot_request(line)
    return request[:2] if request is not None and request[2] is None else None


def parse_plot_request(line: str | bytes) -> tuple[str, int, str | None] | None:
    """``PLOT <name> <size> [<source>]`` -> (name, size, source or None); else None (pure)."""
    parts = as_text(line).rstrip("\r\n").split(" ")
    if len(parts) not in (3, 4) or parts[0] != PLOT:
        return None
    size = parse_int_field(parts[2], 1, 2**63 - 1)
    if size is None:
        return None
    source = parts[3] if len(parts) == 4 else None
    if source is not None and not _SOURCE_RE.fullmatch(source):
        return None
    try:
        validate_plot_name(parts[1])
    except PlotManagerError:
        return None
    return parts[1], size, source


@dataclass(frozen=True)
class ReceiverReply:
    """One line from the receiver.  ``kind`` is READY, PRESENT, OK or ERROR; ``reason`` is the
    error kind (one of ERROR_KINDS, "protocol" for a line that is not protocol at all)."""

    kind: str
    port: int | None = None
    hexdigest: str | None = None
    reason: str = ""
    detail: str = ""
    size: int | None = None  # with PRESENT: the size of the file already there
    chunk: int | None = None  # with RESUME: the chunk size, and ``count`` chunks held
    count: int | None = None

    @property
    def is_error(self) -> bool:
        return self.kind == ERROR

    def describe(self) -> str:
        if self.kind == ERROR:
            return f"{self.reason}: {self.detail}" if self.detail else self.reason
        return f"{self.kind} {self.port if self.kind == READY else self.hexdigest}"


def protocol_error(line: str) -> ReceiverReply:
    """The reply standing for a line that is not protocol: an ERROR of kind "protocol"."""
    return ReceiverReply(ERROR, reason=ERR_PROTOCOL, detail=f"unexpected line from receiver: {shown(line)!r}")


def parse_receiver_line(line: str | bytes) -> ReceiverReply:
    """Parse one receiver line (pure); never raises: garbage becomes an ERROR "protocol" reply.

    Whatever a broken or foreign program prints on the channel must turn into a failed transfer
    with the line in the reason, not into an exception in the middle of the plotter's loop.
    """
    text = as_text(line).rstrip("\r\n")
    word, _, rest = text.partition(" ")
    if word == READY:
        port = parse_int_field(rest, MIN_PORT, MAX_PORT)
        return ReceiverReply(READY, port=port) if port is not None else protocol_error(text)
    if word == RESUME:
        fields = rest.split(" ")
        if len(fields) == 3:
            port = parse_int_field(fields[0], MIN_PORT, MAX_PORT)
            chunk = parse_int_field(fields[1], 1, 2**63 - 1)
            count = parse_int_field(fields[2], 0, 2**63 - 1)
            if port is not None and chunk is not None and count is not None:
                return ReceiverReply(RESUME, port=port, chunk=chunk, count=count)
        return protocol_error(text)
    if word == PRESENT:
        size = parse_int_field(rest, 0, 2**63 - 1)
        return ReceiverReply(PRESENT, port=None, size=size) if size is not None else protocol_error(text)
    if word == OK:
        digest = rest.strip().lower()
        return ReceiverReply(OK, hexdigest=digest) if _HEX128_RE.fullmatch(digest) else protocol_error(text)
    if word == ERROR and rest.strip():
        kind, _, detail = rest.partition(":")
        kind = kind.strip()
        if kind not in ERROR_KINDS:
            return ReceiverReply(ERROR, reason="unknown", detail=rest.strip())
        return ReceiverReply(ERROR, reason=kind, detail=detail.strip())
    return protocol_error(text)


# -- the receiver's command line and its port ---------------------------------------------------


def validate_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not MIN_PORT <= port <= MAX_PORT:
        raise ValueError(f"port must be an integer {MIN_PORT}..{MAX_PORT}, got {port!r}")
    return port


def build_receive_command(
    script_path: str | Path, name: str, size: int, port: int, allow_from: str | None = None
) -> str:
    """The shell command the plotter runs over SSH: ``<script> NAME SIZE PORT``, all quoted (pure).

    The name is validated first (PlotFileError) so a crafted file name is refused before it is
    ever near a shell; quoting every word anyway keeps the script path safe too.
    ``allow_from`` (an IP address) becomes ``--allow-from ADDR`` before NAME: the address the
    data will come from when that is not the SSH client's (a separate data network).
    """
    validate_plot_name(name)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive number of bytes, got {size!r}")
    validate_port(port)
    script = str(script_path)
    if not script or "\0" in script or "\n" in script:
        raise ValueError(f"bad receive script path {script_path!r}")
    words = [script]
    if allow_from is not None:
        words += ["--allow-from", str(ipaddress.ip_address(allow_from))]  # ValueError if not an IP
    words += [name, str(size), str(port)]
    return " ".join(shlex.quote(word) for word in words)


def build_session_command(script_path: str | Path, port: int, allow_from: str | None = None) -> str:
    """The shell command that starts a receiver session: ``<script> [--allow-from ADDR]
    --session PORT``, every word quoted (pure)."""
    validate_port(port)
    script = str(script_path)
    if not script or "\0" in script or "\n" in script:
        raise ValueError(f"bad receive script path {script_path!r}")
    words = [script]
    if allow_from is not None:
        words += ["--allow-from", str(ipaddress.ip_address(allow_from))]  # ValueError if not an IP
    words += [SESSION_OPTION, str(port)]
    return " ".join(shlex.quote(word) for word in words)


def build_forget_command(script_path: str | Path, name: str) -> str:
    """The shell command asking a harvester to drop ``name``'s kept part: ``<script> --forget
    NAME``, every word quoted (pure; the name is validated)."""
    validate_plot_name(name)
    script = str(script_path)
    if not script or "\0" in script or "\n" in script:
        raise ValueError(f"bad receive script path {script_path!r}")
    return " ".join(shlex.quote(word) for word in (script, FORGET_OPTION, name))


def pick_port(base: int, count: int, used: Collection[int]) -> int | None:
    """The first port in ``base .. base+count-1`` not in ``used``, or None when all are (pure).

    ``used`` holds ports the plotter is already sending on and ports a receiver refused with
    "port in use"; the retry loop in send_plot feeds refusals back in.
    """
    validate_port(base)
    if count < 1 or base + count - 1 > MAX_PORT:
        raise ValueError(f"port range {base}+{count} goes beyond {MAX_PORT}")
    for port in range(base, base + count):
        if port not in used:
            return port
    return None
