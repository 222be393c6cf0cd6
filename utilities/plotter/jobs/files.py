"""Which temporary files belong to a job, and deleting exactly those.

Several jobs share a temp directory, so "clean the temp directory" would destroy the others'
work. A job owns:
- files in its temp, temp2 and destination directories whose name carries its plot id (chia and
  madMAx name every temp file after the plot) and that are not a finished plot (``*.plot``);
- files it was seen holding open while it ran, if they are inside one of those directories
  and still not a finished plot;
- bladebit's temp files, whose names carry no id (``table_l_2.tmp``, ``y0.tmp``): ``*.tmp``
  files without any plot id in their name, only in the temp directories the caller names as
  used by this job alone (``anonymous_dirs``).
Nothing is followed through a symlink, nothing outside the job's directories is touched, and a
finished plot is never deleted here.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from utilities.plots import is_counted_plot_name

log = logging.getLogger(__name__)

_PLOT_ID_RE = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")


def _inside(path: Path, directories: Iterable[Path]) -> bool:
    return any(path.parent == d for d in directories)


def _files_matching(directory: Path, wanted: Callable[[str], bool]) -> list[Path]:
    """Regular files (never through a symlink) in ``directory`` whose name is ``wanted``; an
    unreadable directory has none (a vanished temp dir must not stop the clean-up of the rest)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    return [Path(e.path) for e in entries if wanted(e.name) and e.is_file(follow_symlinks=False)]


def owned_files(directories: Iterable[Path | None], plot_id: str | None, remembered: Iterable[Path],
                anonymous_dirs: Iterable[Path] = ()) -> list[Path]:
    """The job's temporary files that exist now (see the module docstring for the rules)."""
    dirs = [Path(os.path.normpath(d)) for d in directories if d is not None]
    found: set[Path] = set()
    for directory in anonymous_dirs:
        found.update(_files_matching(directory, lambda name: name.endswith(".tmp") and not _PLOT_ID_RE.search(name)))
    needle = plot_id.lower() if plot_id else None
    if needle and len(needle) >= 16:  # a real plot id is 64 hex digits; never match on a fragment
        for directory in dirs:
            found.update(_files_matching(
                directory, lambda name: needle in name.lower() and not is_counted_plot_name(name)))
    for path in remembered:
        path = Path(os.path.normpath(path))
        if _inside(path, dirs) and not is_counted_plot_name(path.name) and path.is_file() and not path.is_symlink():
            found.add(path)
    return sorted(found)


def plot_id_in_names(paths: Iterable[str]) -> str | None:
    """The plot id (64 hex digits) in the names of a job's open files, if they agree on one."""
    ids = {m.group(0).lower() for p in paths for m in [_PLOT_ID_RE.search(os.path.basename(p))] if m}
    return ids.pop() if len(ids) == 1 else None


def delete_files(paths: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """Delete each file; returns (deleted, problems) so one failure never stops the rest."""
    deleted: list[Path] = []
    problems: list[str] = []
    for path in paths:
        try:
            path.unlink()
            deleted.append(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror}")
    if deleted:
        log.info("deleted %d temporary file(s): %s", len(deleted), ", ".join(str(p) for p in deleted))
    return deleted, problems


def bytes_used(paths: Iterable[Path]) -> int:
    total = 0
    for path in paths:
        try:
            total += path.stat().st_blocks * 512
        except OSError:
            continue
    return total
