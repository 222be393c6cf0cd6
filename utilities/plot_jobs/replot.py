"""Replotting: a job bound for a replot drive frees the room for its plot by deleting one old
OG plot, at the moment it enters its final phase.

Farmers replotting a full drive for pools (or for compression) keep farming the old plots
until the new ones exist: each new plot replaces exactly one old one, and only when it is
nearly done, so the farm never loses more than one plot's worth of farming per running job.
The rules are those of ``utilities/replace.py`` (which does the deletion): only a plot whose
*header* says OG, never a pool plot or an unreadable file, the oldest first, one per incoming
plot and only if the drive cannot take the plot otherwise.  Added here for plot jobs:

* other jobs may already be heading for the same drive with their final phase started; the
  room they were promised (``pending_bytes``) is not free for this one, or two jobs would
  share the one freed slot and the second copy would fail for lack of space;
* one decision per job (``job_id``): the manager runs every minute and sees the same job in
  its final phase many times, but only the first look may delete anything;
* decisions on one drive are serialised (a lock next to the state database), because cron
  runs and a ``--loop`` manager may look at the same moment;
* every deletion is recorded in the state database (``replaced_plots``).

``plan_replot`` is the pure decision (also used to show what would happen); ``make_room_for_job``
acts on it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from utilities.errors import DriveError
from utilities.locking import exclusive_lock
from utilities.plots import is_finished_plot_name
from utilities.replace import OgPlot, make_room_for, needs_room, og_plots
from utilities.state import StateDB

log = logging.getLogger(__name__)

ACTION_NONE = "none"  # the drive has room already
ACTION_DELETE = "delete"  # delete ``victim`` (the oldest OG plot)
ACTION_IMPOSSIBLE = "impossible"  # no OG plot, or one deletion would not be enough

_HANDLED_KEY = "replot.handled.{job}"
_LOCK_NAME = "replot.lock"


@dataclass(frozen=True)
class ReplotPlan:
    action: str
    victim: OgPlot | None
    reason: str


def plan_replot(free_bytes: int, incoming_bytes: int, pending_bytes: int, candidates: Sequence[OgPlot]) -> ReplotPlan:
    """Pure: what to do on a drive with ``free_bytes`` free for a plot of ``incoming_bytes``.

    ``pending_bytes`` is room already promised to other jobs bound for this drive; ``candidates``
    are its OG plots oldest first (``replace.og_plots``).  Deleting one plot must be enough:
    never a second one for the same incoming plot.
    """
    if incoming_bytes <= 0:
        raise ValueError(f"incoming plot size must be positive, got {incoming_bytes}")
    if pending_bytes < 0:
        raise ValueError(f"pending bytes cannot be negative, got {pending_bytes}")
    needed = incoming_bytes + pending_bytes
    if not needs_room(free_bytes, needed):
        return ReplotPlan(ACTION_NONE, None, f"{free_bytes} bytes free, {needed} needed")
    if not candidates:
        return ReplotPlan(
            ACTION_IMPOSSIBLE, None, f"{free_bytes} bytes free, {needed} needed and no old OG plot to replace"
        )
    victim = candidates[0]
    if needs_room(free_bytes + victim.size, needed):
        return ReplotPlan(
            ACTION_IMPOSSIBLE,
            None,
            f"{free_bytes} bytes free, {needed} needed: deleting one OG plot ({victim.size} bytes) is not enough "
            "and no more than one is ever deleted",
        )
    return ReplotPlan(ACTION_DELETE, victim, f"{free_bytes} bytes free, {needed} needed: replace {victim.path.name}")


def free_bytes_of(directory: Path) -> int:
    try:
        st = os.statvfs(directory)
    except OSError as exc:
        raise DriveError(f"cannot read free space of {directory}: {exc.strerror}") from None
    return st.f_bavail * st.f_frsize


def bytes_already_written(dest_dir: Path, plot_id: str) -> int:
    """Disk space the job's own unfinished file(s) in ``dest_dir`` already take.

    bladebit writes ``<name>.plot.tmp`` straight into the destination, and a chia or madMAx copy
    in progress leaves ``.2.tmp`` / ``.plot.tmp`` there: that space is already off the drive's
    free figure, so counting the whole plot again would delete an OG plot for nothing.
    Allocated blocks, not the apparent size, because that is what free space reflects.
    """
    plot_id = plot_id.lower()
    total = 0
    try:
        entries = list(os.scandir(dest_dir))
    except OSError as exc:
        raise DriveError(f"cannot list {dest_dir}: {exc.strerror}") from None
    for entry in entries:
        name = entry.name.lower()
        if plot_id in name and not is_finished_plot_name(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total


def make_room_for_job(
    dest_dir: Path,
    incoming_bytes: int,
    db: StateDB,
    *,
    pending_bytes: int = 0,
    job_id: str | None = None,
    plot_id: str | None = None,
) -> Path | None:
    """Delete the oldest OG plot in ``dest_dir`` if (and only if) the job's plot would not fit.

    Returns the deleted plot's path, or None when no deletion was needed (or ``job_id`` was
    already handled).  ``incoming_bytes`` is the plot's size; with ``plot_id`` the part the job
    has already written into ``dest_dir`` is subtracted (``bytes_already_written``).  Raises
    DriveError when room is needed but one OG plot cannot provide it; nothing is deleted then.
    """
    handled_key = _HANDLED_KEY.format(job=job_id) if job_id else None
    with exclusive_lock(db.path.parent / _LOCK_NAME, "replot decision", wait=True):
        if handled_key and db.get(handled_key) is not None:
            return None
        if plot_id:
            incoming_bytes -= bytes_already_written(dest_dir, plot_id)
        if incoming_bytes <= 0:
            if handled_key:
                db.set(handled_key, "")
            return None
        plan = plan_replot(free_bytes_of(dest_dir), incoming_bytes, pending_bytes, og_plots(dest_dir))
        log.debug("replot plan for %s: %s", dest_dir, plan.reason)
        if plan.action == ACTION_IMPOSSIBLE:
            raise DriveError(f"{dest_dir}: {plan.reason}")
        deleted = None
        if plan.action == ACTION_DELETE:
            # replace.make_room_for decides again on fresh numbers and re-reads the header right
            # before unlinking, so a file changed since the plan is never deleted by mistake.
            deleted = make_room_for(dest_dir, incoming_bytes + pending_bytes)
            if deleted is not None:
                detail = f" for job {job_id}" if job_id else ""
                db.record_replaced(str(deleted), f"replot: room for a {incoming_bytes}-byte plot{detail}")
        if handled_key:
            db.set(handled_key, str(deleted) if deleted else "")
        return deleted
