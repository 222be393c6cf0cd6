"""Where a plot job is, read from the plotter's own output.

The manager may not have started a job (or may have been restarted since), so the only record
of a job's progress it can trust is what the plotter printed.  Each program prints different
lines; this module turns any of them into one ``JobProgress`` (``progress_model.py``): phase
1..4 and a sub-phase, whether it is still plotting, copying the finished file, completed or
aborted, the plot id and name, its temporary directories, where the plot ended up, and the
phase times.  What each program's lines mean is in ``plotter_logs/`` (chia, madMAx, bladebit);
here is what they share: the program names, the line clean-up, the lines that mean a failure,
and telling the program from its lines.

Everything here is pure (lines in, value out) so it can be tested on recorded logs and run on
logs fetched from remote plotters.  Lines may carry a timestamp prefix (chia's logger, ``ts``
from moreutils); the last line may be cut off mid-way because the plotter is still writing it.

Sub-phases number the work inside a phase: ``1.3`` = phase 1 working on table 3, ``2.2`` = the
second table of back-propagation, ``3.4`` = compressing tables 4 and 5, ``4.1``/``4.2`` = the
checkpoint tables.  They are for people reading ``--jobs``, not for decisions; decisions use
``phase`` and ``state``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from utilities.plotter.jobs.plotter_logs import bladebit, chia, madmax
from utilities.plotter.jobs.progress_model import (
    LAST_PHASE,
    STATE_ABORTED,
    STATE_COMPLETED,
    JobProgress,
    ProgressBuilder,
)

# Executable / command names people write in configs, mapped to the log dialect they print.
PROGRAM_ALIASES = {
    "chia": "chia",
    "chiapos": "chia",
    "madmax": "madmax",
    "chia_plot": "madmax",
    "bladebit": "bladebit",
    "bladebit_cuda": "bladebit",
}


# ---------------------------------------------------------------------------------------------
# Line clean-up shared by all programs
# ---------------------------------------------------------------------------------------------

# Timestamps that wrappers put in front of plotter lines: ISO (chia's logger, `ts -s %FT%T`),
# `ts`'s default "Nov 23 04:02:41", and bracketed forms.
_PREFIX_RE = re.compile(
    r"^\s*(?:\[?\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\]?"
    r"|\[?[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}\]?)\s+"
)

# Lines that mean the plotter itself failed (a dead process without them is for the caller
# to judge: the log alone cannot tell "killed" from "still running").
_ABORT_RE = re.compile(
    r"Traceback \(most recent call last\)|Caught plotting error|terminate called after throwing"
    r"|std::exception|Segmentation fault|Bus error|\bFatal\b|^\s*\[?Error\]?[: ]|^Exception: |Killed$",
)


# The bulk of a chia log (128 bucket lines per table) says nothing about progress.
_NOISE = ("\tBucket ", "Progress update: ", "\tTotal matches", "  Table ", "Table 1 I/O", "\tP")


def _clean(line: str) -> str:
    line = line.rstrip("\r\n").rstrip()
    return _PREFIX_RE.sub("", line, count=1)


_LINE_HANDLERS = {"chia": chia.read_line, "madmax": madmax.read_line, "bladebit": bladebit.read_line}


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def normalize_program(program: str) -> str:
    """ "chia_plot" -> "madmax", "bladebit_cuda" -> "bladebit"...; ValueError for unknown names."""
    try:
        return PROGRAM_ALIASES[program.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown plotter program {program!r}; expected one of {', '.join(PROGRAM_ALIASES)}") from None


def parse_progress(program: str, lines: Iterable[str]) -> JobProgress:
    """Fold a plotter's output lines into where the job is now.

    Never raises on content: unknown, truncated or garbled lines are skipped.  ``state`` is
    "aborted" only when the log itself shows a failure; a log that simply stops (process
    killed) still reads "running" here, and the caller, who knows whether the process is
    alive, decides (see ``with_process_state``).
    """
    dialect = normalize_program(program)
    handler = _LINE_HANDLERS[dialect]
    builder = ProgressBuilder(dialect)
    for raw in lines:
        line = _clean(raw)
        if not line or line.startswith(_NOISE):
            continue
        if _ABORT_RE.search(line):
            builder.abort()
            continue
        handler(builder, line)
    return builder.freeze()


_DETECT = (("madmax", madmax.SIGNATURE), ("bladebit", bladebit.SIGNATURE), ("chia", chia.SIGNATURE))


def detect_program(lines: Iterable[str]) -> str | None:
    """Which plotter wrote these lines ("chia", "madmax", "bladebit"), or None if unknown.

    Used for jobs the manager did not start (found in the process list with a log file), where
    the command line may be a wrapper script.  The first line typical of one program decides.
    """
    for raw in lines:
        line = _clean(raw)
        for program, pattern in _DETECT:
            if pattern.search(line):
                return program
    return None


def is_final_phase(p: JobProgress) -> bool:
    """True once the job has entered its last phase (replotting frees space at this point).

    Copying and completed count too: the plot is then about to land (or has landed) on its
    destination.  An aborted job never does.
    """
    return p.state != STATE_ABORTED and p.phase is not None and p.phase >= LAST_PHASE


def with_process_state(p: JobProgress, alive: bool) -> JobProgress:
    """The caller's knowledge of the process folded in: a dead plotter whose log never said it
    finished was aborted (killed, crashed without a message, machine rebooted)."""
    if alive or p.state in (STATE_COMPLETED, STATE_ABORTED):
        return p
    return replace(p, state=STATE_ABORTED)
