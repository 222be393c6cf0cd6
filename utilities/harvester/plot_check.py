"""Plot checks (``drive_manager.py --check-plots``): the pure rules, apart from chiapos and the disks.

A plot can go bad after it was written (a copy that flipped bits, a disk growing bad sectors,
chia-blockchain #9358) and the harvester then quietly finds no proofs in it. ``chia plots
check`` finds such plots but reads every plot on every run, at full priority. Here a cron entry
works through the farm a budget at a time, so the rules that matter are pure and tested alone:

* which plots a run checks, in which order (``plan_checks``): plots never checked first (or
  changed since their check: same path, other size or mtime), then the oldest checks; plots
  checked within ``recheck_days`` are left out unless the farmer named their drive;
* what a plot's answers mean (``classify``): proofs found and verified is ok; no proof in all
  the challenges, an error from chiapos, or a proof that does not verify is a failing plot;
* which plots cannot be checked at all (``cannot_check_reason``): chiapos reads v1 plots
  (chiapos, madMAx) and uncompressed bladebit plots; a compressed plot needs the decompressor
  (not verified with this chiapos build, see the README), and ``.plot2`` / ``.gplot`` files
  are new proof-of-space formats chiapos cannot open. Those are reported "cannot check", never
  as bad: a farmer must not delete a good plot because our checker is older than it.

Challenges are chia's own (``chia/plotting/check_plots.py``: sha256 of ``i`` as 32 big-endian
bytes), so a plot's proof count here matches what ``chia plots check`` prints for it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from utilities.plots import PLOT_GROUP_SUFFIX

OK = "ok"
NO_PROOFS = "no_proofs"
READ_ERROR = "read_error"
CANNOT_CHECK = "cannot_check"
RESULTS = (OK, NO_PROOFS, READ_ERROR, CANNOT_CHECK)
FAILING = frozenset({NO_PROOFS, READ_ERROR})

# What a person reads for each result (per plot lines, -pr, the alert).
RESULT_LABELS = {OK: "ok", NO_PROOFS: "no proofs", READ_ERROR: "read error", CANNOT_CHECK: "cannot check"}

DAY_SECONDS = 24 * 3600


def challenge(index: int) -> bytes:
    """The ``index``-th challenge, the one ``chia plots check`` uses (same proofs count)."""
    return hashlib.sha256(index.to_bytes(32, "big")).digest()


@dataclass(frozen=True)
class PlotFile:
    """A plot file found on a drive: what a check is remembered by (path, size, mtime)."""

    path: str
    drive: str
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclass(frozen=True)
class CheckOutcome:
    """What checking one plot found."""

    result: str
    proofs: int = 0  # qualities found over all challenges
    challenges: int = 0
    seconds: float = 0.0
    error: str | None = None
    bad_proofs: int = 0  # full proofs that did not verify
    read_bytes: int | None = None  # from the disk (/proc io read_bytes), None when not measured


@dataclass(frozen=True)
class CheckRecord:
    """A plot's last check, as the state database keeps it."""

    path: str
    plot: str
    drive: str
    size: int
    mtime_ns: int
    result: str
    proofs: int
    challenges: int
    seconds: float
    checked_at: float
    error: str | None = None
    read_bytes: int | None = None

    @property
    def failing(self) -> bool:
        return self.result in FAILING

    def matches(self, plot: PlotFile) -> bool:
        """True when the record is about this very file (not one since replaced under its name)."""
        return self.size == plot.size and self.mtime_ns == plot.mtime_ns

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "plot": self.plot, "drive": self.drive, "size": self.size,
            "result": self.result, "proofs": self.proofs, "challenges": self.challenges,
            "seconds": round(self.seconds, 3), "checked_at": self.checked_at, "error": self.error,
            "read_bytes": self.read_bytes,
        }


def cannot_check_reason(name: str, header_format: str | None, compression: int) -> str | None:
    """Why chiapos cannot check this plot (None when it can).

    Decided from the name and header only, before chiapos opens anything: opening a format it
    does not know raises just like a corrupt plot does, and must never be reported as one.
    """
    if name.endswith(PLOT_GROUP_SUFFIX) or header_format == "gplot":
        return "a plot group (.gplot): chiapos cannot read new proof-of-space plots"
    if name.endswith(".plot2") or header_format == "plot2":
        return "a new proof-of-space plot (.plot2): chiapos cannot read it"
    if compression > 0:
        return f"compressed (C{compression}): needs chiapos' decompressor, not verified with this build"
    return None


def classify(proofs: int, bad_proofs: int, error: str | None) -> tuple[str, str | None]:
    """(result, error text) from what chiapos answered for one plot.

    The same rule as ``chia plots check``: an exception or a proof that does not verify makes
    the plot bad, and so does finding no proof at all (a sound plot finds about one per
    challenge, so none in 30 is practically impossible for a good one).
    """
    if error is not None:
        return READ_ERROR, error
    if bad_proofs:
        return READ_ERROR, f"{bad_proofs} proof(s) did not verify"
    if proofs == 0:
        return NO_PROOFS, None
    return OK, None


def plan_checks(
    plots: Iterable[PlotFile],
    records: Mapping[str, CheckRecord],
    now: float,
    recheck_days: float,
    named: bool,
) -> list[PlotFile]:
    """The plots a run should check, in order; the budget then cuts the list short.

    Never-checked plots (or ones changed since their check) come first, in the order found
    (natural drive order), then the oldest checks. Unless ``named`` (the farmer named the
    drive), a plot checked less than ``recheck_days`` ago is left out, so a daily cron entry
    walks through the farm once per period and then does nearly nothing.
    """
    fresh_after = now - recheck_days * DAY_SECONDS
    never: list[PlotFile] = []
    done: list[tuple[float, int, PlotFile]] = []
    for position, plot in enumerate(plots):
        record = records.get(plot.path)
        if record is None or not record.matches(plot):
            never.append(plot)
        elif named or record.checked_at <= fresh_after:
            done.append((record.checked_at, position, plot))
    done.sort(key=lambda item: (item[0], item[1]))
    return never + [plot for _, _, plot in done]


def budget_allows(elapsed: float, budget_seconds: float, checked: int) -> bool:
    """Whether a run may start another plot: while within budget, and always for its first plot.

    The budget only stops new plots (a plot is never abandoned halfway). A run that checked
    nothing would leave the next run where it started, so the first plot is always checked.
    """
    return checked == 0 or elapsed < budget_seconds


def summarise(outcomes: Sequence[tuple[PlotFile, CheckOutcome]], elapsed: float, left: int) -> dict[str, Any]:
    """The run's totals: counts per result, plots per minute, bytes read per plot.

    ``left`` is how many planned plots the budget left for the next run. Bytes read per plot is
    over the plots that were measured and actually opened (a "cannot check" reads nothing).
    """
    counts = {r: 0 for r in RESULTS}
    for _, outcome in outcomes:
        counts[outcome.result] += 1
    opened = [o for _, o in outcomes if o.result != CANNOT_CHECK and o.read_bytes is not None]
    read = sum(o.read_bytes or 0 for o in opened)
    checked = len(outcomes)
    return {
        "plots_checked": checked,
        "ok": counts[OK],
        "failing": counts[NO_PROOFS] + counts[READ_ERROR],
        "no_proofs": counts[NO_PROOFS],
        "read_error": counts[READ_ERROR],
        "cannot_check": counts[CANNOT_CHECK],
        "seconds": round(elapsed, 3),
        "plots_per_minute": round(checked / elapsed * 60, 1) if elapsed > 0 else None,
        "bytes_read": read if opened else None,
        "bytes_read_per_plot": round(read / len(opened)) if opened else None,
        "left_for_next_run": left,
    }

