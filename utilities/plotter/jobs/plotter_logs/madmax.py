"""madMAx (``chia_plot``): its log lines moved onto a ProgressBuilder.

The line shapes come from madMAx's ``chia_plot.cpp``. madMAx names no phase start: a phase
begins when the one before it reports its time.
"""

from __future__ import annotations

import re

from utilities.plotter.jobs.progress_model import (
    LAST_PHASE,
    NUMBER,
    STATE_ABORTED,
    STATE_COMPLETED,
    STATE_COPYING,
    STATE_RUNNING,
    ProgressBuilder,
    strip_dir,
)

#: A line only this program prints: ``progress.detect_program`` tells the plotter by it.
SIGNATURE = re.compile(r"Multi-threaded pipelined Chia|^\[P[1-4](?:-[12])?\] |^Crafting plot \d+ out of")

_MM_CRAFTING_RE = re.compile(r"^Crafting plot (\d+) out of (\d+)")
_MM_WORKDIR_RE = re.compile(r"^Working Directory(?: 2)?:\s+(.+)$")
_MM_FINAL_DIR_RE = re.compile(r"^Final Directory:\s+(.+)$")
_MM_NAME_RE = re.compile(r"^Plot Name: (\S+)")
_MM_P1_RE = re.compile(r"^\[P1\] Table ([1-7]) took")
_MM_P2_RE = re.compile(r"^\[P2\] Table ([2-7]) (?:scan|rewrite) took")
_MM_P3_RE = re.compile(r"^\[P3-[12]\] Table ([2-7]) took")
_MM_PHASE_TIME_RE = re.compile(rf"^Phase ([1-4]) took {NUMBER} sec")
_MM_TOTAL_RE = re.compile(rf"^Total plot creation time was {NUMBER} sec")
_MM_COPY_START_RE = re.compile(r"^Started copy to (.+)$")
_MM_COPY_DONE_RE = re.compile(r"^Copy to (.+?) finished, took")
_MM_RENAMED_RE = re.compile(r"^Renamed final plot to (.+)$")


def read_line(b: ProgressBuilder, line: str) -> None:
    """One line of madMAx's output (timestamp prefix and noise already removed)."""
    if _MM_CRAFTING_RE.match(line):
        b.new_plot()
    elif m := _MM_WORKDIR_RE.match(line):
        b.add_temp(m.group(1))
    elif m := _MM_FINAL_DIR_RE.match(line):
        b.final_dir = strip_dir(m.group(1))
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
