"""Where a plot job is, read from the plotter's own output.

The manager may not have started a job (or may have been restarted since), so the only record
of a job's progress it can trust is what the plotter printed.  Each program prints different
lines; this module turns any of them into one ``JobProgress``: phase 1..4 and a sub-phase,
whether it is still plotting, copying the finished file, completed or aborted, the plot id and
name, its temporary directories, where the plot ended up, and the phase times.

Everything here is pure (lines in, value out) so it can be tested on recorded logs and run on
logs fetched from remote plotters.  Lines may carry a timestamp prefix (chia's logger, ``ts``
from moreutils); the last line may be cut off mid-way because the plotter is still writing it.

The line shapes come from the programs' sources and published logs:
chia / chiapos ``src/plotter_disk.hpp`` (and a real chiapos run), madMAx ``chia_plot.cpp``,
bladebit ``src/main.cpp``, ``cuda/CudaPlotter.cu`` and the RAM/disk plotters' phases.

Sub-phases number the work inside a phase: ``1.3`` = phase 1 working on table 3, ``2.2`` = the
second table of back-propagation, ``3.4`` = compressing tables 4 and 5, ``4.1``/``4.2`` = the
checkpoint tables.  They are for people reading ``--jobs``, not for decisions; decisions use
``phase`` and ``state``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

# Executable / command names people write in configs, mapped to the log dialect they print.
PROGRAM_ALIASES = {
    "chia": "chia",
    "chiapos": "chia",
    "madmax": "madmax",
    "chia_plot": "madmax",
    "bladebit": "bladebit",
    "bladebit_cuda": "bladebit",
}

STATE_STARTING = "starting"
STATE_RUNNING = "running"
STATE_COPYING = "copying"
STATE_COMPLETED = "completed"
STATE_ABORTED = "aborted"

LAST_PHASE = 4


@dataclass(frozen=True)
class JobProgress:
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


# ---------------------------------------------------------------------------------------------
# Line clean-up shared by all programs
# ---------------------------------------------------------------------------------------------

# Timestamps that wrappers put in front of plotter lines: ISO (chia's logger, `ts -s %FT%T`),
# `ts`'s default "Nov 23 04:02:41", and bracketed forms.
_PREFIX_RE = re.compile(
    r"^\s*(?:\[?\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\]?"
    r"|\[?[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}\]?)\s+"
)
_PLOT_NAME_RE = re.compile(
    r"plot-k\d{2}(?:-c\d{1,2})?-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-(?P<id>[0-9a-fA-F]{64})(?:\.plot)?"
)
_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"

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


def _strip_dir(path: str) -> str:
    """Temp directories are printed with and without a trailing slash; keep one spelling."""
    path = path.strip().strip('"')
    return path.rstrip("/") or path


def _unquote(path: str) -> str:
    return path.strip().strip('"')


def _name_from_path(path: str) -> str:
    return PurePosixPath(path.replace("\\", "/")).name


@dataclass
class _Builder:
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
        path = _strip_dir(path)
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


# ---------------------------------------------------------------------------------------------
# chia plots create (chiapos)
# ---------------------------------------------------------------------------------------------

_CHIA_TEMP_RE = re.compile(r"Starting plotting progress into temporary dirs: (.+) and (.+)$")
_CHIA_ID_RE = re.compile(r"^ID: ([0-9a-fA-F]{64})\s*$")
_CHIA_FINAL_DIR_RE = re.compile(r"^Final Directory is: (.+)$")
_CHIA_PHASE_RE = re.compile(r"Starting phase ([1-4])/4")
_CHIA_PHASE_TIME_RE = re.compile(rf"^Time for phase ([1-4]) = {_NUMBER} seconds")
_CHIA_TOTAL_RE = re.compile(rf"^Total time = {_NUMBER} seconds")
_CHIA_TABLE_RE = re.compile(r"^Computing table ([1-7])\s*$")
_CHIA_BACKPROP_RE = re.compile(r"^Backpropagating on table ([2-7])\s*$")
_CHIA_COMPRESS_RE = re.compile(r"^Compressing tables ([1-6]) and [2-7]\s*$")
_CHIA_COPIED_RE = re.compile(r'^Copied final file from "?(.+?)"? to "?(.+?)"?\s*$')
_CHIA_RENAMED_RE = re.compile(r'^Renamed final file from "?(.+?)"? to "?(.+?)"?\s*$')


def _chia_line(b: _Builder, line: str) -> None:
    if m := _CHIA_TEMP_RE.search(line):
        b.new_plot()
        b.temp_dirs = []
        b.add_temp(m.group(1))
        b.add_temp(m.group(2))
    elif m := _CHIA_ID_RE.match(line):
        b.plot_id = m.group(1).lower()
    elif m := _CHIA_FINAL_DIR_RE.match(line):
        b.final_dir = _strip_dir(m.group(1))
    elif m := _CHIA_PHASE_RE.search(line):
        b.enter(int(m.group(1)))
        b.name_seen(line)  # phases 3 and 4 name the final file: ".../plot-k32-....plot.2.tmp"
    elif m := _CHIA_TABLE_RE.match(line):
        b.sub(1, int(m.group(1)))
    elif m := _CHIA_BACKPROP_RE.match(line):
        b.sub(2, 8 - int(m.group(1)))
    elif m := _CHIA_COMPRESS_RE.match(line):
        b.sub(3, int(m.group(1)))
    elif line.strip() == "Starting to write C1 and C3 tables":
        b.sub(4, 1)
    elif line.strip() == "Writing C2 table":
        b.sub(4, 2)
    elif m := _CHIA_PHASE_TIME_RE.match(line):
        b.finish_phase(int(m.group(1)), float(m.group(2)))
    elif m := _CHIA_TOTAL_RE.match(line):
        b.total_seconds = float(m.group(1))
        if b.state == STATE_RUNNING:
            b.state = STATE_COPYING
            b.subphase = ""
    elif m := _CHIA_COPIED_RE.match(line):
        if b.state != STATE_ABORTED:
            b.state = STATE_COPYING
            b.subphase = ""
    elif m := _CHIA_RENAMED_RE.match(line):
        b.complete(_unquote(m.group(2)))


# ---------------------------------------------------------------------------------------------
# madMAx chia_plot
# ---------------------------------------------------------------------------------------------

_MM_CRAFTING_RE = re.compile(r"^Crafting plot (\d+) out of (\d+)")
_MM_WORKDIR_RE = re.compile(r"^Working Directory(?: 2)?:\s+(.+)$")
_MM_FINAL_DIR_RE = re.compile(r"^Final Directory:\s+(.+)$")
_MM_NAME_RE = re.compile(r"^Plot Name: (\S+)")
_MM_P1_RE = re.compile(r"^\[P1\] Table ([1-7]) took")
_MM_P2_RE = re.compile(r"^\[P2\] Table ([2-7]) (?:scan|rewrite) took")
_MM_P3_RE = re.compile(r"^\[P3-[12]\] Table ([2-7]) took")
_MM_PHASE_TIME_RE = re.compile(rf"^Phase ([1-4]) took {_NUMBER} sec")
_MM_TOTAL_RE = re.compile(rf"^Total plot creation time was {_NUMBER} sec")
_MM_COPY_START_RE = re.compile(r"^Started copy to (.+)$")
_MM_COPY_DONE_RE = re.compile(r"^Copy to (.+?) finished, took")
_MM_RENAMED_RE = re.compile(r"^Renamed final plot to (.+)$")


def _madmax_line(b: _Builder, line: str) -> None:
    if _MM_CRAFTING_RE.match(line):
        b.new_plot()
    elif m := _MM_WORKDIR_RE.match(line):
        b.add_temp(m.group(1))
    elif m := _MM_FINAL_DIR_RE.match(line):
        b.final_dir = _strip_dir(m.group(1))
    elif m := _MM_NAME_RE.match(line):
        b.name_seen(m.group(1))
        # madMAx starts phase 1 right after naming the plot, without a line of its own.
        b.enter(1, "1.1")
    elif m := _MM_P1_RE.match(line):
        b.sub(1, min(int(m.group(1)) + 1, 7))
    elif m := _MM_P2_RE.match(line):
        b.sub(2, 8 - int(m.group(1)))
    elif m := _MM_P3_RE.match(line):
        b.sub(3, int(m.group(1)) - 1)
    elif line.startswith("[P4] Starting to write C1 and C3"):
        b.sub(4, 1)
    elif line.startswith("[P4] Writing C2 table"):
        b.sub(4, 2)
    elif m := _MM_PHASE_TIME_RE.match(line):
        phase = int(m.group(1))
        b.finish_phase(phase, float(m.group(2)))
        if phase < LAST_PHASE:
            b.enter(phase + 1)
    elif m := _MM_TOTAL_RE.match(line):
        b.total_seconds = float(m.group(1))
        if b.state == STATE_RUNNING:
            b.state = STATE_COPYING
            b.subphase = ""
    elif m := _MM_COPY_START_RE.match(line):
        b.name_seen(m.group(1))
        if b.state not in (STATE_ABORTED, STATE_COMPLETED):
            b.state = STATE_COPYING
            b.subphase = ""
    elif (m := _MM_COPY_DONE_RE.match(line)) or (m := _MM_RENAMED_RE.match(line)):
        b.complete(m.group(1).strip())


# ---------------------------------------------------------------------------------------------
# bladebit (ramplot, diskplot, cudaplot)
# ---------------------------------------------------------------------------------------------
#
# Stages mapped onto four phases:
#   RAM / disk: bladebit's own "Running Phase 1..4" (disk has three; its final write is 4).
#   CUDA: 1 = F1 + forward propagation, 2 = pruning, 3 = compression, 4 = writing the plot
#   after "Completed Phase 3".

_BB_GENERATING_RE = re.compile(r"^Generating plot \d+ / \d+: ([0-9a-fA-F]{64})")
_BB_OUTPUT_RE = re.compile(r"^\s*Output path\s*: (.+)$")
_BB_TEMP_RE = re.compile(r"^\s*Temp[12] path\s*: (.+)$")
_BB_RUNNING_RE = re.compile(r"^Running Phase ([1-4])")
_BB_PHASE_DONE_RE = re.compile(rf"^(?:Finished|Completed) Phase ([1-4]) in {_NUMBER} seconds")
_BB_FP_RE = re.compile(r"^Forward propagating to table ([2-7])")
_BB_CUDA_TABLE_RE = re.compile(r"^Table ([2-7]) completed in")
_BB_DISK_TABLE_RE = re.compile(r"^(?:Table ([2-7])|Completed table ([2-7]) in)\s*")
_BB_PRUNE_RE = re.compile(r"^\s*(?:Prunning|Pruning|Finished marking) table ([2-6])")
_BB_COMPRESS_RE = re.compile(r"^\s*Compressing tables ([1-6]) and [2-7]")
_BB_P4_STEPS = (("Writing P7", 1), ("Writing C1 table", 2), ("Writing C2 table", 3), ("Writing C3 table", 4))
_BB_FINAL_WRITE_RE = re.compile(
    r"^(?:Writing final plot tables to disk|Waiting for plot file to complete pending writes)"
)
_BB_PLOT_DONE_RE = re.compile(r"^Plot (.+\.plot) finished writing to disk")
_BB_CUDA_PLOT_DONE_RE = re.compile(rf"^Completed Plot \d+ in {_NUMBER} seconds")
_BB_FINISHED_RE = re.compile(rf"^Finished plotting in {_NUMBER} seconds")


def _bladebit_line(b: _Builder, line: str) -> None:
    if m := _BB_GENERATING_RE.match(line):
        b.new_plot()
        b.plot_id = m.group(1).lower()
    elif m := _BB_OUTPUT_RE.match(line):
        b.final_dir = _strip_dir(m.group(1))
    elif m := _BB_TEMP_RE.match(line):
        b.add_temp(m.group(1))
    elif m := _BB_RUNNING_RE.match(line):
        b.enter(int(m.group(1)))
    elif line.startswith(("Generating F1", "Generating f1")):
        b.sub(1, 1)
    elif (m := _BB_FP_RE.match(line)) or (m := _BB_CUDA_TABLE_RE.match(line)):
        b.sub(1, int(m.group(1)))
    elif b.phase in (None, 1) and (m := _BB_DISK_TABLE_RE.match(line)) and "I/O" not in line:
        b.sub(1, int(m.group(1) or m.group(2)))
    elif m := _BB_PRUNE_RE.match(line):
        b.sub(2, 7 - int(m.group(1)))
    elif m := _BB_COMPRESS_RE.match(line):
        b.sub(3, int(m.group(1)))
    elif m := _BB_PHASE_DONE_RE.match(line):
        phase = int(m.group(1))
        b.finish_phase(phase, float(m.group(2)))
        if phase < LAST_PHASE:
            # CUDA prints no "Running Phase" lines; the next phase starts when one ends.
            b.enter(phase + 1)
    elif _BB_FINAL_WRITE_RE.match(line) or _BB_CUDA_PLOT_DONE_RE.match(line):
        b.sub(LAST_PHASE, 5)
    elif m := _BB_PLOT_DONE_RE.match(line):
        b.name_seen(m.group(1))
        b.final_path = m.group(1).strip()
    elif m := _BB_FINISHED_RE.match(line):
        b.total_seconds = float(m.group(1))
        final = b.final_path
        if final is None and b.plot_name and b.final_dir:
            final = f"{b.final_dir}/{b.plot_name}"
        b.complete(final)
    else:
        for text, step in _BB_P4_STEPS:
            if line.strip().startswith(text):
                b.sub(LAST_PHASE, step)
                return
        if "plot-k" in line:
            b.name_seen(line)


_LINE_HANDLERS = {"chia": _chia_line, "madmax": _madmax_line, "bladebit": _bladebit_line}


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
    builder = _Builder(dialect)
    for raw in lines:
        line = _clean(raw)
        if not line or line.startswith(_NOISE):
            continue
        if _ABORT_RE.search(line):
            builder.abort()
            continue
        handler(builder, line)
    return builder.freeze()


_DETECT = (
    ("madmax", re.compile(r"Multi-threaded pipelined Chia|^\[P[1-4](?:-[12])?\] |^Crafting plot \d+ out of")),
    (
        "bladebit",
        re.compile(
            r"Bladebit|\[Global Plotting Config\]|^Generating plot \d+ / \d+:|^Forward propagating to table"
            r"|^Running Phase [1-4]|^(?:Completed|Finished) Phase [1-4] in"
        ),
    ),
    (
        "chia",
        re.compile(
            r"Starting plotting progress into temporary dirs|chia\.plotting\.create_plots|Starting phase [1-4]/4"
            r"|^Computing table [1-7]|^Backpropagating on table"
        ),
    ),
)


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
