"""Finished plots on a plotter: which files are safe to send, oldest first.

A plot is only sent when everything says it is finished: the name ends exactly in .plot/.plot2
(plotters write .tmp names and rename at the end), the header parses, the size fits its k and
compression, and no process still has the file open for writing. Anything else waits for a
later run; nothing here deletes or moves a file. A plot group (``.gplot``) is listed among the
skipped files with its reason, never sent or moved: chia has not settled its format.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from utilities.errors import PlotFileError
from utilities.plots import (
    PlotHeader,
    is_counted_plot_name,
    is_plot_group_name,
    plot_size_fits,
    read_plot_header,
    validate_plot_name,
)

log = logging.getLogger(__name__)

_ACCESS_MODE = os.O_ACCMODE
_WRITE_MODES = (os.O_WRONLY, os.O_RDWR)
PLOT_GROUP_SKIP_REASON = (
    "a plot group (.gplot): counted on the drives but never sent or moved until chia settles its format"
)


@dataclass(frozen=True)
class FinishedPlot:
    path: Path
    size: int
    mtime: float
    header: PlotHeader

    @property
    def name(self) -> str:
        return self.path.name


def open_for_writing(paths: Iterable[str], proc: str = "/proc") -> set[str]:
    """Which of ``paths`` some process has open with write access (from /proc/PID/fd + fdinfo).

    Cheaper and more precise than psutil's open_files(): we only readlink descriptors and read
    the flags of those that point at a candidate.
    """
    wanted = set(paths)
    busy: set[str] = set()
    if not wanted:
        return busy
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return busy
    for pid in pids:
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target not in wanted:
                continue
            try:
                with open(f"{proc}/{pid}/fdinfo/{fd}", encoding="ascii") as info:
                    flags = next((int(line.split()[1], 8) for line in info if line.startswith("flags:")), 0)
            except (OSError, ValueError):
                flags = os.O_RDWR  # unknown: assume the worst, wait for a later run
            if flags & _ACCESS_MODE in _WRITE_MODES:
                busy.add(target)
    return busy


def candidate_files(patterns: Sequence[str]) -> dict[str, Path]:
    """Files with a finished plot or plot group name in the plot directories (globs), each
    once, keyed by real path: that is the name /proc shows for a descriptor, so a plot
    directory reached through a symlink is still checked for writers. Plot groups are here
    only so the caller can say why they stay."""
    seen: dict[str, Path] = {}
    for pattern in patterns:
        for directory in sorted(glob.glob(os.path.expanduser(pattern))):
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if is_counted_plot_name(entry.name) and entry.is_file(follow_symlinks=False):
                    seen.setdefault(os.path.realpath(entry.path), Path(entry.path))
    return seen


def finished_plots(patterns: Sequence[str]) -> tuple[list[FinishedPlot], list[str]]:
    """Plots ready to send, oldest first, and one line per file skipped with the reason."""
    skipped: list[str] = []
    candidates = candidate_files(patterns)
    writing = open_for_writing(candidates)
    ready: list[FinishedPlot] = []
    for real_path, path in candidates.items():
        if is_plot_group_name(path.name):
            skipped.append(f"{path}: {PLOT_GROUP_SKIP_REASON}")
            continue
        try:
            validate_plot_name(path.name)
            st = path.stat()
            header = read_plot_header(path)
        except (PlotFileError, OSError) as exc:
            skipped.append(f"{path}: {exc}")
            continue
        if real_path in writing:
            skipped.append(f"{path}: still open for writing by another process")
            continue
        if header.k is not None and header.format != "plot2" and not plot_size_fits(st.st_size, header.k, header.compression):
            skipped.append(f"{path}: size {st.st_size} does not fit a k{header.k} C{header.compression} plot")
            continue
        ready.append(FinishedPlot(path, st.st_size, st.st_mtime, header))
    ready.sort(key=lambda p: (p.mtime, p.name))
    return ready, skipped
