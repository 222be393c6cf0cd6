"""Old-plot replacement: make room for one pool plot by deleting exactly one old OG plot.

Farmers moving to pools replace their OG plots one by one, so the farm loses at most one plot's
worth of farming at any moment. The rules are strict because a deletion cannot be undone:
- only a plot whose *header* says OG (128-byte memo) is ever deleted, never a pool plot, never a
  file whose header cannot be read (the name proves nothing);
- only an old-format plot (chiapos/madMAx v1 or bladebit v2 header): a new proof-of-space
  ``.plot2`` is never OG (plots.py), and a plot group (``.gplot``) is never even looked at;
- at most one per incoming plot, and only when the drive has no room for that plot already;
- the oldest OG plot on the drive goes first, and every deletion is logged and recorded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from utilities.durable import fsync_directory
from utilities.errors import DriveError, PlotFileError
from utilities.plots import FORMAT_V1, FORMAT_V2, KIND_OG, PlotHeader, is_finished_plot_name, read_plot_header

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OgPlot:
    path: Path
    size: int
    mtime: float


def is_old_og(header: PlotHeader) -> bool:
    """Pure: the header is an old OG plot's, the only kind replace mode may delete."""
    return header.kind == KIND_OG and header.format in (FORMAT_V1, FORMAT_V2)


def og_plots(directory: Path) -> list[OgPlot]:
    """OG plots in ``directory`` by their headers, oldest first (unreadable files are skipped)."""
    found = []
    try:
        entries = list(os.scandir(directory))
    except OSError as exc:
        raise DriveError(f"cannot list {directory}: {exc.strerror}") from None
    for entry in entries:
        if not is_finished_plot_name(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            header = read_plot_header(entry.path)
            st = entry.stat(follow_symlinks=False)
        except (PlotFileError, OSError):
            continue
        if is_old_og(header):
            found.append(OgPlot(Path(entry.path), st.st_size, st.st_mtime))
    return sorted(found, key=lambda p: (p.mtime, p.path.name))


def needs_room(free_bytes: int, incoming_bytes: int) -> bool:
    """Pure: True when the drive cannot take the incoming plot without a deletion."""
    return free_bytes < incoming_bytes


def make_room_for(directory: Path, incoming_bytes: int) -> Path | None:
    """Delete the oldest OG plot in ``directory`` if (and only if) the incoming plot does not fit.

    Returns the deleted plot's path, or None when no deletion was needed. Raises DriveError when
    room is needed and there is no OG plot to delete, or one deletion would still not be enough
    (we never delete a second plot for one incoming plot).
    """
    free = os.statvfs(directory)
    free_bytes = free.f_bavail * free.f_frsize
    if not needs_room(free_bytes, incoming_bytes):
        return None
    candidates = og_plots(directory)
    if not candidates:
        raise DriveError(f"{directory} has no room for {incoming_bytes} bytes and no old OG plot to replace")
    victim = candidates[0]
    if free_bytes + victim.size < incoming_bytes:
        raise DriveError(
            f"{directory}: deleting one OG plot ({victim.size} bytes) would still not make room for "
            f"{incoming_bytes} bytes; refusing to delete more than one"
        )
    # Re-read the header right before deleting: the file must still be an OG plot.
    if not is_old_og(read_plot_header(victim.path)):
        raise DriveError(f"{victim.path} is no longer an OG plot; nothing deleted")
    victim.path.unlink()
    fsync_directory(directory)
    log.warning("replaced old OG plot: deleted %s (%d bytes) to make room for a pool plot", victim.path, victim.size)
    return victim.path
