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
* one decision per job: the manager runs every minute and sees the same job in its final
  phase many times, but only the first look may delete anything (the caller claims the job's
  one replot in the job store, ``JobStore.claim_replot``, before calling here);
* decisions on one drive are serialised (a lock next to the state database), because cron
  runs and a ``--loop`` manager may look at the same moment;
* every deletion is recorded in the state database (``replaced_plots``).

The decision and the deletion itself are ``replace.make_room_for``'s; ``make_room_for_job``
only adds the job's view (promised room, its own partial file, once per job, the lock, the record).
"""

from __future__ import annotations

from pathlib import Path

from utilities.locking import exclusive_lock
from utilities.plotter.jobs import files as job_files
from utilities.replace import make_room_for
from utilities.state import StateDB

_LOCK_NAME = "replot.lock"


def bytes_already_written(dest_dir: Path, plot_id: str) -> int:
    """Disk space the job's own unfinished file(s) in ``dest_dir`` already take.

    bladebit writes ``<name>.plot.tmp`` straight into the destination, and a chia or madMAx copy
    in progress leaves ``.2.tmp`` / ``.plot.tmp`` there: that space is already off the drive's
    free figure, so counting the whole plot again would delete an OG plot for nothing.
    Allocated blocks, not the apparent size, because that is what free space reflects.
    """
    return job_files.bytes_used(job_files.owned_files([dest_dir], plot_id, ()))


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

    Returns the deleted plot's path, or None when no deletion was needed.  ``incoming_bytes`` is
    the plot's size; with ``plot_id`` the part the job has already written into ``dest_dir`` is
    subtracted (``bytes_already_written``).  Raises DriveError when room is needed but one OG
    plot cannot provide it; nothing is deleted then.  ``job_id`` only labels the record.
    """
    with exclusive_lock(db.path.parent / _LOCK_NAME, "replot decision", wait=True):
        if plot_id:
            incoming_bytes -= bytes_already_written(dest_dir, plot_id)
        if incoming_bytes <= 0:
            return None
        # replace.make_room_for decides (the oldest OG plot by header, one at most, only when the
        # drive lacks room) and raises DriveError, deleting nothing, when one plot is not enough.
        deleted = make_room_for(dest_dir, incoming_bytes + pending_bytes)
        if deleted is not None:
            detail = f" for job {job_id}" if job_id else ""
            db.record_replaced(str(deleted), f"replot: room for a {incoming_bytes}-byte plot{detail}")
        return deleted
