#!/usr/bin/env python3
"""Receive one plot from a plotter: the program ``receive_plot.sh`` runs on the harvester.

    receive_plot.py --config CFG --dest DIR [--replace-old-plots yes|no] [--idle-timeout S]
                    [--bind ADDR] [--allow-from ADDR] [--] NAME SIZE PORT

stdin/stdout are the SSH channel (any pipes when run by hand or in tests).  This file only reads
the command line; the receive itself (READY, the stream, VERIFY, OK or ERROR, and the safety
rules) is ``utilities/transfer/receiver.py``, the protocol ``utilities/transfer/protocol.py``.

``--config`` is accepted (the script always passes it) but not read: nothing here needs a
setting, and skipping pydantic/YAML keeps the start-up under 0.1 s.  ``--replace-old-plots yes``
(written into the script by drive_manager.py in replace mode) lets the receiver delete exactly
one old OG plot when the incoming plot does not fit.
"""

from __future__ import annotations

import os
import sys

_REPO = os.path.dirname(os.path.abspath(__file__))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from utilities.errors import PlotFileError  # noqa: E402
from utilities.plots import validate_plot_name  # noqa: E402
from utilities.transfer.protocol import (  # noqa: E402
    ERR_BAD_NAME,
    ERR_USAGE,
    MAX_PORT,
    MIN_PORT,
    ReceiveFailure,
    parse_int_field,
)
from utilities.transfer.receiver import DEFAULT_IDLE_TIMEOUT, Options, run_receiver  # noqa: E402

_OPTIONS = ("--config", "--dest", "--idle-timeout", "--bind", "--allow-from", "--replace-old-plots")


def parse_args(argv: list[str]) -> Options:
    """Strict parsing: each option once, as ``--opt value``, then exactly NAME SIZE PORT.

    The script appends the plotter's words after its own options; a plotter sending
    ``--dest`` (or ``--dest=/x``) as a name must not be able to move the destination, so a
    repeated option is an error and anything unknown is a positional (then fails validation).
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
    rest = argv[index:]
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
    port = parse_int_field(port_text, MIN_PORT, MAX_PORT)
    if port is None:
        raise ReceiveFailure(ERR_USAGE, f"PORT must be {MIN_PORT}..{MAX_PORT}, got {port_text!r}")
    if "--dest" not in values:
        raise ReceiveFailure(ERR_USAGE, "--dest is required")
    try:
        idle = float(values.get("--idle-timeout", DEFAULT_IDLE_TIMEOUT))
    except ValueError:
        idle = -1.0
    if not 0 < idle <= 86400:
        raise ReceiveFailure(
            ERR_USAGE, f"--idle-timeout must be 0 < seconds <= 86400, got {values['--idle-timeout']!r}"
        )
    replace = values.get("--replace-old-plots", "no")
    if replace not in ("yes", "no"):
        raise ReceiveFailure(ERR_USAGE, f"--replace-old-plots must be yes or no, got {replace!r}")
    return Options(
        values["--dest"], name, size, port, idle, values.get("--bind"), values.get("--allow-from"), replace == "yes"
    )


def main(argv: list[str] | None = None) -> int:
    return run_receiver(lambda: parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
