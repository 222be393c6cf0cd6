"""bladebit (ramplot, diskplot, cudaplot): its log lines moved onto a ProgressBuilder.

The line shapes come from bladebit's ``src/main.cpp``, ``cuda/CudaPlotter.cu`` and the RAM/disk
plotters' phases. Stages mapped onto four phases:
  RAM / disk: bladebit's own "Running Phase 1..4" (disk has three; its final write is 4).
  CUDA: 1 = F1 + forward propagation, 2 = pruning, 3 = compression, 4 = writing the plot
  after "Completed Phase 3".
"""

from __future__ import annotations

import re

from utilities.plotter.jobs.progress_model import (
    LAST_PHASE,
    NUMBER,
    ProgressBuilder,
    strip_dir,
)

#: A line only this program prints: ``progress.detect_program`` tells the plotter by it.
SIGNATURE = re.compile(
    r"Bladebit|\[Global Plotting Config\]|^Generating plot \d+ / \d+:|^Forward propagating to table"
    r"|^Running Phase [1-4]|^(?:Completed|Finished) Phase [1-4] in"
)

_BB_GENERATING_RE = re.compile(r"^Generating plot \d+ / \d+: ([0-9a-fA-F]{64})")
_BB_OUTPUT_RE = re.compile(r"^\s*Output path\s*: (.+)$")
_BB_TEMP_RE = re.compile(r"^\s*Temp[12] path\s*: (.+)$")
_BB_RUNNING_RE = re.compile(r"^Running Phase ([1-4])")
_BB_PHASE_DONE_RE = re.compile(rf"^(?:Finished|Completed) Phase ([1-4]) in {NUMBER} seconds")
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
_BB_CUDA_PLOT_DONE_RE = re.compile(rf"^Completed Plot \d+ in {NUMBER} seconds")
_BB_FINISHED_RE = re.compile(rf"^Finished plotting in {NUMBER} seconds")


def read_line(b: ProgressBuilder, line: str) -> None:
    """One line of bladebit's output (timestamp prefix and noise already removed)."""
    if m := _BB_GENERATING_RE.match(line):
        b.new_plot()
        b.plot_id = m.group(1).lower()
    elif m := _BB_OUTPUT_RE.match(line):
        b.final_dir = strip_dir(m.group(1))
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
