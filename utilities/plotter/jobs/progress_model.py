"""JobProgress, the one value every plotter's log is folded into, and the builder that folds it.

``utilities/plotter/jobs/plotter_logs/`` has one line reader per plotter program; each moves a
``ProgressBuilder`` along (enter a phase, a sub-step, a plot name seen, completed, aborted) and
``progress.parse_progress`` freezes it into a ``JobProgress``. The builder's rules are the same
for every program: a completed or aborted job stays so, a new plot in the same log starts over
but keeps the directories, a missed phase time stays visible as 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

STATE_STARTING = "starting"
STATE_RUNNING = "running"
STATE_COPYING = "copying"
STATE_COMPLETED = "completed"
STATE_ABORTED = "aborted"

LAST_PHASE = 4


@dataclass(frozen=True)
class JobProgress:
    """Where one plot job is, as its plotter's output tells."""

    program: str  # "chia" | "madmax" | "bladebit"
    phase: int | None  # 1..4 (bladebit's stages mapped onto 1..4), None before start
    subphase: str  # "1.3", "4.1", "" ...
    state: str  # "starting" | "running" | "copying" | "completed" | "aborted"
    plot_id: str | None
    plot_name: str | None  # final file name when known
    temp_dirs: tuple[str, ...]
    final_path: str | None  # where the finished plot ended up, when the log says so
    phase_seconds: tuple[float, ...]  # per finished phase
    total_seconds: float | None


_PLOT_NAME_RE = re.compile(
    r"plot-k\d{2}(?:-c\d{1,2})?-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-(?P<id>[0-9a-fA-F]{64})(?:\.plot)?"
)
#: A number as the plotters print times: ``16211.904``, ``42``.
NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def strip_dir(path: str) -> str:
    """Temp directories are printed with and without a trailing slash; keep one spelling."""
    path = path.strip().strip('"')
    return path.rstrip("/") or path


def unquote(path: str) -> str:
    return path.strip().strip('"')


def _name_from_path(path: str) -> str:
    return PurePosixPath(path.replace("\\", "/")).name


@dataclass
class ProgressBuilder:
    """Mutable progress while lines are read; frozen into a JobProgress at the end."""

    program: str
    phase: int | None = None
    subphase: str = ""
    state: str = STATE_STARTING
    plot_id: str | None = None
    plot_name: str | None = None
    temp_dirs: list[str] = field(default_factory=list)
    final_path: str | None = None
    final_dir: str | None = None
    phase_seconds: list[float] = field(default_factory=list)
    total_seconds: float | None = None

    def new_plot(self) -> None:
        """A plotter making several plots starts over in the same log; report the latest."""
        temp_dirs, final_dir = self.temp_dirs, self.final_dir
        self.__init__(self.program)  # type: ignore[misc]
        self.temp_dirs, self.final_dir = temp_dirs, final_dir

    def add_temp(self, path: str) -> None:
        path = strip_dir(path)
        if path and path not in self.temp_dirs:
            self.temp_dirs.append(path)

    def enter(self, phase: int, subphase: str = "") -> None:
        if self.state in (STATE_COMPLETED, STATE_ABORTED):
            return
        self.phase = phase
        self.subphase = subphase or f"{phase}.0"
        self.state = STATE_RUNNING

    def sub(self, phase: int, step: int) -> None:
        """A sub-step inside ``phase`` (also enters the phase when its start line was missed)."""
        if self.state in (STATE_COMPLETED, STATE_ABORTED):
            return
        self.phase = phase
        self.subphase = f"{phase}.{step}"
        self.state = STATE_RUNNING

    def finish_phase(self, phase: int, seconds: float) -> None:
        while len(self.phase_seconds) < phase - 1:  # a missed earlier phase time stays visible as 0
            self.phase_seconds.append(0.0)
        if len(self.phase_seconds) >= phase:
            self.phase_seconds[phase - 1] = seconds
        else:
            self.phase_seconds.append(seconds)

    def name_seen(self, text: str) -> None:
        match = _PLOT_NAME_RE.search(text)
        if match is None:
            return
        name = match.group(0)
        if not name.endswith(".plot"):
            name += ".plot"
        if self.plot_name is None:
            self.plot_name = name
        if self.plot_id is None:
            self.plot_id = match.group("id").lower()

    def complete(self, final_path: str | None) -> None:
        if self.state == STATE_ABORTED:
            return
        self.state = STATE_COMPLETED
        if final_path:
            self.final_path = final_path
            self.plot_name = _name_from_path(final_path)
        if self.phase is None or self.phase < LAST_PHASE:
            self.phase = LAST_PHASE
        self.subphase = ""

    def abort(self) -> None:
        if self.state != STATE_COMPLETED:
            self.state = STATE_ABORTED

    def freeze(self) -> JobProgress:
        return JobProgress(
            program=self.program,
            phase=self.phase,
            subphase=self.subphase,
            state=self.state,
            plot_id=self.plot_id,
            plot_name=self.plot_name,
            temp_dirs=tuple(self.temp_dirs),
            final_path=self.final_path,
            phase_seconds=tuple(self.phase_seconds),
            total_seconds=self.total_seconds,
        )
