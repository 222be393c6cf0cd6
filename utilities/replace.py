"""Old-plot replacement: make room for one pool plot by deleting exactly one old OG plot.

Farmers moving to pools replace their OG plots one by one, so the farm loses at most one plot's
worth of farming at any moment. The rules are strict because a deletion cannot be undone:
- only a plot whose *header* says OG (128-byte memo) is ever deleted, never a pool plot, never a
  file whose header cannot be read (the name proves nothing);
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
from utilities.plots import KIND_OG, is_finished_plot_name, read_plot_header

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OgPlot:
    path: Path
    size: int
    mtime: float


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
        if header.kind == KIND_OG:
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
    if read_plot_header(victim.path).kind != KIND_OG:
        raise DriveError(f"{victim.path} is no longer an OG plot; nothing deleted")
    victim.path.unlink()
    fsync_directory(directory)
    log.warning("replaced old OG plot: deleted %s (%d bytes) to make room for a pool plot", victim.path, victim.size)
    return victim.path
