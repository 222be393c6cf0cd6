"""Progress of a long byte copy: a tqdm bar on a terminal, a log line per quarter from cron.

The plotter's sends (``plot_manager.py --send``) and the harvester's local moves
(``move_local_plots.py``) both copy plots of ~100 GiB and report ``(done, total)`` bytes as
they go; a local move does it once per phase (copy, then the read-back verify). Each role
module words its own log line and bar label; the shapes are here. tqdm is imported only when
a bar is drawn, so a cron run never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: ``(done, total)`` bytes.
ByteProgress = Callable[[int, int], None]
#: ``(phase, done, total)`` bytes, for a copy made in phases ("copy", "verify").
PhaseProgress = Callable[[str, int, int], None]
#: Called with ``(percent, done, total)`` as a copy passes 25, 50, 75 and 100 %.
QuarterReport = Callable[[int, int, int], None]


class TerminalBar:
    """A tqdm bar in bytes (1024-based units) that closes itself when ``done`` reaches ``total``."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm import tqdm

        self._bar: Any = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc)

    def __call__(self, done: int, total: int) -> None:
        self._bar.update(done - self._bar.n)
        if done >= total:
            self._bar.close()

    def close(self) -> None:
        self._bar.close()


def quarter_marks(report: QuarterReport) -> ByteProgress:
    """Calls ``report`` once for each quarter the copy has passed, so a stall shows in the log."""
    marks = {"next": 25}

    def update(done: int, total: int) -> None:
        percent = done * 100 // total if total else 100
        while percent >= marks["next"] <= 100:
            report(marks["next"], done, total)
            marks["next"] += 25

    return update


def bar_per_phase(desc: Callable[[str], str]) -> PhaseProgress:
    """A ``TerminalBar`` for each phase, drawn at the phase's first report (sized by its
    total); a new phase closes the bars before it."""
    bars: dict[str, TerminalBar] = {}

    def update(phase: str, done: int, total: int) -> None:
        bar = bars.get(phase)
        if bar is None:
            for old in bars.values():
                old.close()
            bar = bars[phase] = TerminalBar(total, desc(phase))
        bar(done, total)

    return update


def quarter_marks_per_phase(report: Callable[[str, int, int, int], None]) -> PhaseProgress:
    """``quarter_marks`` counted for each phase on its own: ``report(phase, percent, done, total)``."""
    phases: dict[str, ByteProgress] = {}

    def update(phase: str, done: int, total: int) -> None:
        marks = phases.get(phase)
        if marks is None:
            marks = phases[phase] = quarter_marks(lambda percent, d, t: report(phase, percent, d, t))
        marks(done, total)

    return update
