#!/usr/bin/env python3
"""Receive plots from a plotter: the program ``receive_plot.sh`` runs on the harvester.

    receive_plot.py --config CFG (--dest DIR [--replace-old-plots yes|no]
                                  | --drives JSON --claims DIR [--per-drive K])
                    [--idle-timeout S] [--bind ADDR] [--allow-from ADDR]
                    [--resume yes|no] [--resume-chunk BYTES] [--resume-keep-hours H]
                    ([--] NAME SIZE PORT | --session PORT | --forget NAME)

stdin/stdout are the SSH channel (any pipes when run by hand or in tests).  This file only reads
the command line; the receive itself (READY, the stream, VERIFY, OK or ERROR, and the safety
rules) is ``utilities/transfer/receiver.py``, the protocol ``utilities/transfer/protocol.py``.
``NAME SIZE PORT`` receives one plot; ``--session PORT`` receives plot after plot, each named
by a ``PLOT <name> <size>`` line, until the plotter closes stdin.

Where plots land: ``--dest DIR`` (one drive; ``--replace-old-plots yes`` lets the receiver
delete exactly one old OG plot there when the incoming plot does not fit), or ``--drives`` the
receive set drive_manager.py chose, in order, as a JSON list of
``{"name": ..., "dir": ..., "replace": true|false}``: the receiver claims one drive at a time
in ``--claims DIR`` (at most ``--per-drive K`` receivers per drive, 1..8, default 1).

A session's plot named with its source (``PLOT <name> <size> <source>``) is resumable: a dropped
stream leaves its part and journal, and the next attempt streams only what is missing
(``--resume no`` turns that off; ``--resume-chunk``: the journal's chunk, default 1 GiB;
``--resume-keep-hours``: how long another plot's kept part is left alone, default 24).

``--forget NAME`` (the plotter no longer has NAME's source) asks the next minute pass to remove
NAME's kept part; it needs the receive set's ``--claims``.

``--config`` is accepted (the script always passes it) but not read: nothing here needs a
setting, and skipping pydantic/YAML keeps the start-up under 0.1 s.
"""

from __future__ import annotations

import os
import sys

_REPO = os.path.dirname(os.path.abspath(__file__))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from utilities.errors import PlotFileError  # noqa: E402
from utilities.plots import validate_plot_name  # noqa: E402
from utilities.transfer.journal import DEFAULT_CHUNK, DEFAULT_KEEP_SECONDS  # noqa: E402
from utilities.transfer.protocol import (  # noqa: E402
    ERR_BAD_NAME,
    ERR_USAGE,
    FORGET_OPTION,
    MAX_PORT,
    MIN_PORT,
    SESSION_OPTION,
    ReceiveFailure,
    parse_int_field,
)
from utilities.transfer.receive_set import MAX_PER_DRIVE, SetDrive, parse_drives  # noqa: E402
from utilities.transfer.receiver import DEFAULT_IDLE_TIMEOUT, Options, run_receiver  # noqa: E402

_OPTIONS = (
    "--config", "--dest", "--idle-timeout", "--bind", "--allow-from", "--replace-old-plots",
    "--drives", "--claims", "--per-drive", "--resume", "--resume-chunk", "--resume-keep-hours", SESSION_OPTION,
    FORGET_OPTION,
)  # fmt: skip
MIN_RESUME_CHUNK = 4096


def parse_args(argv: list[str]) -> Options:
    """Strict parsing: each option once, as ``--opt value``, then exactly NAME SIZE PORT, or
    nothing after ``--session PORT``.

    The script appends the plotter's words after its own options; a plotter sending
    ``--dest`` (or ``--dest=/x``) as a name must not be able to move the destination, so a
    repeated option is an error, ``--dest`` and ``--drives`` exclude each other, and anything
    unknown is a positional (then fails validation).
    """
    values: dict[str, str] = {}
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            index += 1
            break
        if word not in _OPTIONS:
            break
        if word in values:
            raise ReceiveFailure(ERR_USAGE, f"{word} given twice")
        if index + 1 >= len(argv):
            raise ReceiveFailure(ERR_USAGE, f"{word} needs a value")
        values[word] = argv[index + 1]
        index += 2
    plot, port = _plot_and_port(values, argv[index:])
    try:
        idle = float(values.get("--idle-timeout", DEFAULT_IDLE_TIMEOUT))
    except ValueError:
        idle = -1.0
    if not 0 < idle <= 86400:
        raise ReceiveFailure(
            ERR_USAGE, f"--idle-timeout must be 0 < seconds <= 86400, got {values['--idle-timeout']!r}"
        )
    drives, claims, per_drive = _where(values)
    resume = values.get("--resume", "yes")
    if resume not in ("yes", "no"):
        raise ReceiveFailure(ERR_USAGE, f"--resume must be yes or no, got {resume!r}")
    chunk = parse_int_field(values.get("--resume-chunk", str(DEFAULT_CHUNK)), MIN_RESUME_CHUNK, 2**40)
    if chunk is None:
        raise ReceiveFailure(
            ERR_USAGE, f"--resume-chunk must be {MIN_RESUME_CHUNK}..{2**40} bytes, got {values['--resume-chunk']!r}"
        )
    try:
        keep_hours = float(values.get("--resume-keep-hours", DEFAULT_KEEP_SECONDS / 3600))
    except ValueError:
        keep_hours = -1.0
    if not 0 < keep_hours <= 24 * 365:
        raise ReceiveFailure(
            ERR_USAGE, f"--resume-keep-hours must be 0 < hours <= 8760, got {values['--resume-keep-hours']!r}"
        )
    return Options(
        drives, port, idle, values.get("--bind"), values.get("--allow-from"), plot, claims, per_drive,
        resume == "yes", chunk, keep_hours * 3600, values.get(FORGET_OPTION),
    )  # fmt: skip


def _plot_and_port(values: dict[str, str], rest: list[str]) -> tuple[tuple[str, int] | None, int]:
    """(NAME, SIZE) and PORT of a single plot, or (None, PORT) for ``--session PORT``
    (``--forget NAME`` takes neither: (None, 0))."""
    if FORGET_OPTION in values:
        if rest or SESSION_OPTION in values:
            raise ReceiveFailure(ERR_USAGE, f"{FORGET_OPTION} NAME takes no PORT, NAME SIZE PORT or {SESSION_OPTION}")
        try:
            validate_plot_name(values[FORGET_OPTION])
        except PlotFileError as exc:
            raise ReceiveFailure(ERR_BAD_NAME, str(exc)) from None
        return None, 0
    if SESSION_OPTION in values:
        if rest:
            raise ReceiveFailure(
                ERR_USAGE, f"{SESSION_OPTION} takes no NAME SIZE PORT, got {len(rest)} more argument(s)"
            )
        return None, _port(values[SESSION_OPTION])
    if len(rest) != 3:
        raise ReceiveFailure(ERR_USAGE, f"expected NAME SIZE PORT, got {len(rest)} argument(s)")
    name, size_text, port_text = rest
    try:
        validate_plot_name(name)
    except PlotFileError as exc:
        raise ReceiveFailure(ERR_BAD_NAME, str(exc)) from None
    size = parse_int_field(size_text, 1, 2**63 - 1)
    if size is None:
        raise ReceiveFailure(ERR_USAGE, f"SIZE must be a positive number of bytes, got {size_text!r}")
    return (name, size), _port(port_text)


def _port(text: str) -> int:
    port = parse_int_field(text, MIN_PORT, MAX_PORT)
    if port is None:
        raise ReceiveFailure(ERR_USAGE, f"PORT must be {MIN_PORT}..{MAX_PORT}, got {text!r}")
    return port


def _where(values: dict[str, str]) -> tuple[tuple[SetDrive, ...], str | None, int]:
    """The receive set, the claims directory and receives per drive: ``--dest`` is a set of
    one drive without claims; ``--drives`` needs ``--claims``."""
    if "--drives" not in values:
        if "--dest" not in values:
            raise ReceiveFailure(ERR_USAGE, "--dest or --drives is required")
        for option in ("--claims", "--per-drive"):
            if option in values:
                raise ReceiveFailure(ERR_USAGE, f"{option} goes with --drives, not --dest")
        replace = values.get("--replace-old-plots", "no")
        if replace not in ("yes", "no"):
            raise ReceiveFailure(ERR_USAGE, f"--replace-old-plots must be yes or no, got {replace!r}")
        dest = values["--dest"]
        return (SetDrive(dest, dest, replace == "yes"),), None, 1
    for option in ("--dest", "--replace-old-plots"):
        if option in values:
            raise ReceiveFailure(
                ERR_USAGE, f"--drives and {option} exclude each other (replace is per drive in --drives)"
            )
    try:
        drives = parse_drives(values["--drives"])
    except ValueError as exc:
        raise ReceiveFailure(ERR_USAGE, f"--drives: {exc}") from None
    claims = values.get("--claims")
    if claims is None:
        raise ReceiveFailure(ERR_USAGE, "--drives needs --claims DIR")
    if not os.path.isabs(claims) or "\0" in claims:
        raise ReceiveFailure(ERR_USAGE, f"--claims must be an absolute path, got {claims!r}")
    per_drive = parse_int_field(values.get("--per-drive", "1"), 1, MAX_PER_DRIVE)
    if per_drive is None:
        raise ReceiveFailure(ERR_USAGE, f"--per-drive must be 1..{MAX_PER_DRIVE}, got {values['--per-drive']!r}")
    return drives, claims, per_drive


def main(argv: list[str] | None = None) -> int:
    return run_receiver(lambda: parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
