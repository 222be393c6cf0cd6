"""chia's own plotter (``chia plots create``, chiapos): its log lines moved onto a ProgressBuilder.

The line shapes come from chiapos ``src/plotter_disk.hpp`` and a real chiapos run. Sub-phases:
``1.3`` = phase 1 computing table 3, ``2.2`` = the second table of back-propagation, ``3.4`` =
compressing tables 4 and 5, ``4.1``/``4.2`` = the checkpoint tables.
"""

from __future__ import annotations

import re

from utilities.plotter.jobs.progress_model import (
    NUMBER,
    STATE_ABORTED,
    STATE_COPYING,
    STATE_RUNNING,
    ProgressBuilder,
    strip_dir,
    unquote,
)

#: A line only this program prints: ``progress.detect_program`` tells the plotter by it.
SIGNATURE = re.compile(
    r"Starting plotting progress into temporary dirs|chia\.plotting\.create_plots|Starting phase [1-4]/4"
    r"|^Computing table [1-7]|^Backpropagating on table"
)

_CHIA_TEMP_RE = re.compile(r"Starting plotting progress into temporary dirs: (.+) and (.+)$")
_CHIA_ID_RE = re.compile(r"^ID: ([0-9a-fA-F]{64})\s*$")
_CHIA_FINAL_DIR_RE = re.compile(r"^Final Directory is: (.+)$")
_CHIA_PHASE_RE = re.compile(r"Starting phase ([1-4])/4")
_CHIA_PHASE_TIME_RE = re.compile(rf"^Time for phase ([1-4]) = {NUMBER} seconds")
_CHIA_TOTAL_RE = re.compile(rf"^Total time = {NUMBER} seconds")
_CHIA_TABLE_RE = re.compile(r"^Computing table ([1-7])\s*$")
_CHIA_BACKPROP_RE = re.compile(r"^Backpropagating on table ([2-7])\s*$")
_CHIA_COMPRESS_RE = re.compile(r"^Compressing tables ([1-6]) and [2-7]\s*$")
_CHIA_COPIED_RE = re.compile(r'^Copied final file from "?(.+?)"? to "?(.+?)"?\s*$')
_CHIA_RENAMED_RE = re.compile(r'^Renamed final file from "?(.+?)"? to "?(.+?)"?\s*$')


def read_line(b: ProgressBuilder, line: str) -> None:
    """One line of chia's output (timestamp prefix and noise already removed)."""
    if m := _CHIA_TEMP_RE.search(line):
        b.new_plot()
        b.temp_dirs = []
        b.add_temp(m.group(1))
        b.add_temp(m.group(2))
    elif m := _CHIA_ID_RE.match(line):
        b.plot_id = m.group(1).lower()
    elif m := _CHIA_FINAL_DIR_RE.match(line):
        b.final_dir = strip_dir(m.group(1))
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
        b.complete(unquote(m.group(2)))
