"""The minute pass's sweep for part files no writer holds any more.

A receiver or local move killed mid-plot (SIGKILL, OOM killer, power cut) leaves its
preallocated ``.NAME.part``. The next writer into that directory removes it, but on a drive the
part filled no writer ever comes back: the pass sees no free slot and moves the receive drive
on, and the slot (100 GiB on a real farm) is lost for good. So every cron pass checks the part
files of every plot directory of every mounted drive (offline ones too: a dead writer's part is
garbage whoever looks after the drive) by utilities/transfer/part_files.py's rules: a part whose flock
nobody holds is stale, checked under the directory's turn so a writer that is just creating
its part (and has not flocked it yet) is never taken for dead.

Cost, on 100 drives of thousands of plots every minute: the scan already stats each plot
directory; a directory is listed here (names only, no stat per file) only when its mtime
differs from the one recorded with its last listing for parts (creating or removing a part
changes it), so an unchanged farm lists nothing. The parts known from listings are checked
each pass (open, try a flock): a handful at most. A directory whose turn a writer holds is
left for the next pass.

The decisions (which directories to list, what to remember, the 24-hour tally) are pure; the
I/O (listing, the check-and-remove, re-measuring a drive) is kept to the functions below them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import psutil

from utilities.harvester.drives import DriveState
from utilities.harvester_export import PartsRemoved
from utilities.state import StateDB
from utilities.text import binary_size
from utilities.transfer import part_files
from utilities.transfer.journal import read_journal

log = logging.getLogger(__name__)

# {directory: [mtime_ns, [part names]]}: each plot directory's part files at its last listing.
LISTINGS_KEY = "part_file_listings"
# [{"at", "drive", "path", "bytes"}]: the stale parts removed within WINDOW_SECONDS.
REMOVED_KEY = "stale_parts_removed"
WINDOW_SECONDS = 24 * 3600
# {"files", "bytes"}: the parts kept for a resume (issue 13) at the last sweep, and what they hold.
RESUMABLE_KEY = "resumable_parts"
# Removals remembered at most (a runaway cannot grow the state database without bound).
MAX_REMEMBERED = 1000


class Listing(NamedTuple):
    """A plot directory's part files as listed when its mtime was ``mtime_ns``."""

    mtime_ns: int
    parts: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RemovedPart:
    """One stale part file a pass removed: where, and the bytes the drive got back."""

    drive: str
    path: str
    bytes: int
    at: float


# -- decisions (pure) -----------------------------------------------------------------------------


def parse_listings(raw: Any) -> dict[str, Listing]:
    """The recorded listings, from the state database; anything malformed is dropped (that
    directory is simply listed again)."""
    listings: dict[str, Listing] = {}
    for directory, value in (raw if isinstance(raw, dict) else {}).items():
        with contextlib.suppress(TypeError, ValueError):
            mtime_ns, parts = value
            listings[directory] = Listing(int(mtime_ns), tuple(str(p) for p in parts))
    return listings


def directories_to_list(listings: Mapping[str, Listing], mtimes: Mapping[str, int]) -> list[str]:
    """The scanned directories whose names may have changed since their last listing for parts.

    ``mtimes`` are the directories the scan just stat-ed (mounted drives only) with their mtime;
    creating, removing or renaming a file changes it, so an equal mtime means the same names.
    """
    return [d for d, mtime in mtimes.items() if d not in listings or listings[d].mtime_ns != mtime]


def next_listings(
    listings: Mapping[str, Listing], fresh: Mapping[str, tuple[str, ...]], mtimes: Mapping[str, int]
) -> dict[str, Listing]:
    """What to remember: this pass's listings with the mtime the scan saw before them, and the
    earlier ones of unchanged directories. A directory not scanned now (its drive unmounted) is
    forgotten, and one that could not be listed is not recorded: both are listed next time.

    The mtime is read before the listing, so a part created in between makes the next pass list
    again; so does our own removal of a stale part (it changes the mtime too).
    """
    kept = {d: listing for d, listing in listings.items() if d in mtimes and listing.mtime_ns == mtimes[d]}
    return {**kept, **{d: Listing(mtimes[d], names) for d, names in fresh.items() if d in mtimes}}


def listings_to_store(listings: Mapping[str, Listing]) -> dict[str, list[Any]]:
    return {d: [listing.mtime_ns, list(listing.parts)] for d, listing in sorted(listings.items())}


def parts_to_check(listings: Mapping[str, Listing]) -> dict[str, tuple[str, ...]]:
    """Directory -> part file names, for the directories that hold any."""
    return {d: listing.parts for d, listing in listings.items() if listing.parts}


def drives_by_directory(states: Iterable[DriveState]) -> dict[str, DriveState]:
    return {directory: state for state in states for directory in state.location.plot_dirs}


def recent_removals(records: Any, now: float, window: float = WINDOW_SECONDS) -> list[dict[str, Any]]:
    """The recorded removals within ``window`` before ``now`` (malformed ones dropped), oldest
    first, at most MAX_REMEMBERED."""
    kept = [
        r for r in (records if isinstance(records, list) else [])
        if isinstance(r, dict) and isinstance(r.get("at"), int | float) and now - window <= r["at"] <= now
        and isinstance(r.get("bytes"), int)
    ]
    return kept[-MAX_REMEMBERED:]


def tally(records: Sequence[Mapping[str, Any]]) -> PartsRemoved:
    return PartsRemoved(files=len(records), bytes=sum(int(r["bytes"]) for r in records))


def record(removed: RemovedPart) -> dict[str, Any]:
    return {"at": removed.at, "drive": removed.drive, "path": removed.path, "bytes": removed.bytes}


# -- I/O ------------------------------------------------------------------------------------------


def list_parts(directory: str) -> tuple[str, ...] | None:
    """The part file names in ``directory``, and the journals whose part is not there (names
    only: no stat per entry); None when it cannot be listed now."""
    try:
        dir_fd = part_files.open_directory(directory)
    except OSError:
        return None
    try:
        entries = [entry.name for entry in os.scandir(dir_fd)]
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    parts = [e for e in entries if part_files.is_part_name(e)]
    return tuple(sorted(parts + part_files.orphan_journal_candidates(entries)))


def sweep_directory(
    directory: str, names: Sequence[str], resumable: list[tuple[str, int]] | None = None,
    keep_seconds: float = part_files.DEFAULT_KEEP_SECONDS, forget: Collection[str] = (),
) -> list[tuple[str, int]]:
    """Remove the stale ones of ``names`` in ``directory``: (name, bytes freed) per removal.
    A part nobody holds whose journal keeps it for a resume (younger than ``keep_seconds``)
    stays, and goes into ``resumable`` as (name, bytes its journal says it holds), unless its
    plot is in ``forget`` (its plotter no longer has the source).  A journal whose part is gone
    is removed too.

    Under the directory's turn, taken without waiting: a writer holding it is creating its part
    (not yet flocked) and cleans the directory's stale parts itself; the next pass comes back.
    """
    try:
        dir_fd = part_files.open_directory(directory)
    except OSError as exc:
        log.debug("cannot open %s to check its part files: %s", directory, exc.strerror)
        return []
    removed: list[tuple[str, int]] = []
    try:
        with part_files.try_directory_turn(dir_fd) as ours:
            if not ours:
                log.debug("a writer is taking its turn in %s; its part files are checked next pass", directory)
                return []
            for name in names:
                if part_files.journal_part(name) is not None:
                    with contextlib.suppress(OSError):
                        if part_files.remove_orphan_journal(dir_fd, name):
                            log.info("removed %s in %s: the journal of a part that is gone", name, directory)
                    continue
                try:
                    check, freed = part_files.reclaim_if_stale(
                        dir_fd, name, keep_seconds, forgotten=part_files.plot_of_part(name) in forget
                    )
                except OSError as exc:
                    log.warning("cannot remove stale part file %s in %s: %s", name, directory, exc.strerror)
                    continue
                if check.unreadable:
                    log.warning("cannot open part file %s in %s to check it: %s", name, directory, check.unreadable)
                if check.removed:
                    removed.append((name, freed))
                if check.resumable and resumable is not None:
                    kept, _age = read_journal(dir_fd, name)
                    resumable.append((name, kept.held if kept is not None else 0))
    finally:
        os.close(dir_fd)
    return removed


def remeasure(state: DriveState) -> DriveState:
    """The drive's space read again, after removals: the pass's slots and its receive-drive
    choice must see the room just won back. The old figures if it cannot be read now."""
    try:
        usage = psutil.disk_usage(state.location.mountpoint)
    except OSError:
        return state
    return dataclasses.replace(state, total_bytes=usage.total, used_bytes=usage.used, free_bytes=usage.free)


def sweep_stale_parts(
    states: Sequence[DriveState], mtimes: Mapping[str, int], db: StateDB, now: float,
    keep_seconds: float = part_files.DEFAULT_KEEP_SECONDS, forget: Collection[str] = (),
) -> tuple[list[DriveState], list[RemovedPart]]:
    """Find and remove the stale part files of every scanned plot directory; the drives with
    the space re-measured where something was removed, and what was removed (logged, and
    recorded for the 24-hour figures of -pr and the export).

    ``mtimes`` are the scan's directory mtimes (``ScanResult.dir_mtimes``): the directories of
    mounted drives that could be stat-ed, with offline drives among them.  ``forget``: plots
    whose kept parts go now although their journals would keep them (``transfer/forget.py``).
    """
    stored_before = db.get(LISTINGS_KEY)
    listings = parse_listings(stored_before)
    fresh = {d: names for d in directories_to_list(listings, mtimes) if (names := list_parts(d)) is not None}
    remembered = next_listings(listings, fresh, mtimes)
    drive_of = drives_by_directory(states)
    removed: list[RemovedPart] = []
    resumable: list[tuple[str, int]] = []
    for directory, names in parts_to_check(remembered).items():
        drive = drive_of.get(directory)
        for name, freed in sweep_directory(directory, names, resumable, keep_seconds, forget):
            path = os.path.join(directory, name)
            drive_name = drive.name if drive else "?"
            removed.append(RemovedPart(drive_name, path, freed, now))
            log.info("removed stale part file %s on %s: %s freed (the receiver or local move writing it died)",
                     path, drive_name, binary_size(freed))
    kept = {"files": len(resumable), "bytes": sum(held for _, held in resumable)}
    if db.get(RESUMABLE_KEY) != kept:
        db.set(RESUMABLE_KEY, kept)
    stored = listings_to_store(remembered)
    if stored != stored_before:
        db.set(LISTINGS_KEY, stored)
    if not removed:
        return list(states), []
    db.set(REMOVED_KEY, recent_removals([*(db.get(REMOVED_KEY) or []), *map(record, removed)], now))
    touched = {r.drive for r in removed}
    return [remeasure(s) if s.name in touched else s for s in states], removed


def resumable_parts(db: StateDB) -> PartsRemoved:
    """The parts waiting for a resume at the last sweep, and the bytes they hold (-pr, export)."""
    try:
        return PartsRemoved.from_dict(db.get(RESUMABLE_KEY))
    except (TypeError, ValueError):
        return PartsRemoved()


def removed_last_day(db: StateDB, now: float) -> PartsRemoved:
    """What the passes removed in the last 24 hours (for -pr and the export)."""
    return tally(recent_removals(db.get(REMOVED_KEY), now))
