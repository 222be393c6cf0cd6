"""Move one finished plot onto a plot drive of this machine, as safely as a network transfer.

The guarantees are the network receiver's, because a lost plot is hours of compute:

* chia never sees half a plot: bytes go to the hidden ``DIR/.NAME.part``, which holds an
  ``flock`` while it is written (so receivers and later runs know it is alive), and which is
  removed on every failure; only SIGKILL or a power cut can leave it, and the next run (or
  any receiver on that directory) removes part files that no living process holds.
* the copy is proven identical before the source goes: the bytes are hashed (xxh3-128) as they
  are read from the source; after ``fsync`` the copy is dropped from the page cache and read
  back from the disk, and its hash must match.
* rename into place without ever replacing a file (``link`` + ``unlink``), fsync the directory,
  and only then delete the source, and only if its size, mtime and inode are unchanged.
* room is checked and reserved (``fallocate``) under the directory's ``flock`` (the same lock
  receivers take), so a receiver and a local move sharing a drive never both take the last
  slot, and replace mode deletes at most one old OG plot per incoming pool plot.
* a read or write that never returns (a dying disk, a hung USB bridge) is a stall after
  ``stall_seconds`` without a byte, which aborts the move instead of hanging every later cron
  run.

The plot lands on the drive through ``landing.py``, the very code the network receiver lands
through (the part file's name, lock and stale clean-up, the reservation in the directory's turn,
the final link and directory fsync), so the two cannot drift apart; only the words differ
(``WORDING``: move results instead of protocol errors).  The copy itself (the worker thread and
its stall watch, the write-back in windows, the read-back verify) is ``copy_worker.py``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from utilities.durable import fsync_directory
from utilities.errors import PlotManagerError
from utilities.plots import KIND_POOL
from utilities.replace import make_room_for
from utilities.transfer import part_files
from utilities.transfer.copy_worker import Copier, CopyFailed, Progress, Reader, pread_into, watch
from utilities.transfer.integrity import DEFAULT_CHUNK, SourceIdentity, hash_file
from utilities.transfer.landing import FinalName, Landing, Problem, Wording
from utilities.transfer.part_files import SPACE_MARGIN, StaleCheck, free_bytes, has_room

log = logging.getLogger(__name__)

# Moves end in one of these; only FAILED counts against the plot (and may hold it back):
# no room and a missing drive are the drive's state, not the plot's fault.
MOVED = "moved"
FAILED = "failed"
NO_ROOM = "no room"
DRIVE_GONE = "drive gone"


@dataclass(frozen=True)
class MoveResult:
    """What happened to one plot. ``status`` is MOVED, FAILED, NO_ROOM or DRIVE_GONE."""

    status: str
    name: str
    destination: Path | None = None
    size: int = 0
    seconds: float = 0.0
    hexdigest: str = ""
    reason: str = ""
    stalled: bool = False
    source_deleted: bool = False
    replaced: Path | None = None

    @property
    def ok(self) -> bool:
        return self.status == MOVED

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / 1e6 if self.ok and self.seconds > 0 else 0.0


class _Stop(Exception):
    """Ends a move early with a result (raised inside move_plot only)."""

    def __init__(self, status: str, reason: str, stalled: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.stalled = stalled


# -- stale part files --------------------------------------------------------------------------


def _report_stale(entry: str, check: StaleCheck) -> None:
    if check.unreadable:
        log.warning("cannot open %s to check it: %s", entry, check.unreadable)
    if check.removed:
        log.info("removed stale %s left by a copy that died", entry)


def remove_stale_part(dir_fd: int, entry: str) -> bool:
    """Remove part file ``entry`` unless a living writer holds its flock; True when it is gone.

    The rule the network receiver applies too (utilities/transfer/part_files.py), so either side
    cleans up after the other.
    """
    check = part_files.remove_if_stale(dir_fd, entry)
    _report_stale(entry, check)
    return check.gone


def remove_stale_part_path(path: Path) -> bool:
    """``remove_stale_part`` by full path (parts recorded by an earlier run); True when gone."""
    try:
        dir_fd = part_files.open_directory(path.parent)
    except FileNotFoundError:
        return True  # the directory (or the drive) is gone, and the part with it
    except OSError:
        return False
    try:
        return remove_stale_part(dir_fd, path.name)
    finally:
        os.close(dir_fd)


# -- one move -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MoveOptions:
    stall_seconds: float
    verify: bool = True
    bytes_per_second: float = 0.0
    may_replace_og: bool = False  # replace mode on the destination (pool plots only)
    chunk: int = DEFAULT_CHUNK


# What each landing problem means for a local move: which result, and the words for the log.
WORDING: Wording = {
    Problem.OPEN_DIR: (DRIVE_GONE, "cannot open {dest}: {reason}"),
    Problem.CHECK_FINAL: (DRIVE_GONE, "cannot check {final}: {reason}"),
    Problem.FINAL_TAKEN: (FAILED, "{final} already exists and is a different file"),
    Problem.OPEN_FINAL: (FAILED, "cannot compare with {final}: {reason}"),
    Problem.READ_FINAL: (FAILED, "cannot compare with {final}: {reason}"),
    Problem.FINAL_DIFFERS: (FAILED, "{final} already exists with different content"),
    Problem.LIST_DIR: (DRIVE_GONE, "cannot list the destination: {reason}"),
    Problem.PART_BUSY: (FAILED, "{part} is being written by another process"),
    Problem.LOST_RACE: (FAILED, "lost a race for {part}; trying again next run"),
    Problem.CREATE_DENIED: (DRIVE_GONE, "cannot create {part}: {reason}"),
    Problem.CREATE_FAILED: (DRIVE_GONE, "cannot create {part}: {reason}"),
    Problem.NO_ROOM: (NO_ROOM, "{dest} has {free} bytes free, the plot needs {needed}"),
    Problem.RESERVE_NO_SPACE: (NO_ROOM, "cannot reserve {size} bytes in {dest}: {reason}"),
    Problem.RESERVE_TOO_BIG: (NO_ROOM, "cannot reserve {size} bytes in {dest}: {reason}"),
    Problem.RESERVE_FAILED: (FAILED, "cannot reserve space in {dest}: {reason}"),
    # The copier writes and fsyncs itself (copy_worker.py); these three would come only from
    # Landing.write and Landing.commit(flush=True), which a local move does not use.
    Problem.WRITE_NO_SPACE: (NO_ROOM, "{dest} ran out of space while copying"),
    Problem.WRITE_FAILED: (FAILED, "copy failed: {reason}"),
    Problem.FLUSH: (FAILED, "copy failed: {reason}"),
    Problem.CHECK_PART: (FAILED, "{part} vanished before it could be renamed: {reason}"),
    Problem.PART_REPLACED: (FAILED, "{part} was replaced while copying"),
    Problem.FINAL_APPEARED: (FAILED, "{name} appeared in {dest} while copying"),
    Problem.RENAME: (FAILED, "cannot rename {part} to {name}: {reason}"),
    Problem.FLUSH_DIR: (FAILED, "{reason}"),
}


def _reserve(landing: Landing, dest_dir: Path, size: int, replace_og: bool) -> Path | None:
    """Clean stale parts, make room (replace mode), check space, create and preallocate the
    part: one step under the directory's flock, as receivers do. Returns a deleted OG plot."""
    replaced: Path | None = None

    def make_room() -> None:
        nonlocal replaced
        assert landing.dir_fd is not None
        if not has_room(free_bytes(landing.dir_fd), size):
            try:
                replaced = make_room_for(dest_dir, size + SPACE_MARGIN)
            except (PlotManagerError, OSError) as exc:
                raise _Stop(NO_ROOM, f"replace mode: {exc}") from None

    landing.reserve(make_room if replace_og else None)
    return replaced


def delete_source(source: Path, identity: SourceIdentity) -> str:
    """Delete the source if it is still the file we copied; '' or the reason it was kept."""
    try:
        now = SourceIdentity.of(source)
    except OSError as exc:
        return f"cannot check the source again: {exc.strerror or exc}"
    if now != identity:
        return f"the source changed after it was copied ({identity} -> {now})"
    os.unlink(source)
    with contextlib.suppress(OSError):
        fsync_directory(source.parent)
    return ""


def _already_there(landing: Landing, source: Path) -> str:
    """The final name holds a file of the source's size: its digest when it holds exactly the
    source's bytes (a run stopped after its rename, before deleting the source); raises _Stop
    for anything else."""
    try:
        size, digest = hash_file(source)
    except OSError as exc:
        raise _Stop(FAILED, f"cannot compare with {Path(landing.dest) / landing.name}: {exc.strerror}") from None
    return landing.prove_final(size, digest)


def move_plot(
    source: Path,
    dest_dir: Path,
    options: MoveOptions,
    *,
    kind: str | None = None,
    progress_cb: Progress | None = None,
    on_part: Callable[[Path | None], None] | None = None,
    read: Reader = pread_into,
) -> MoveResult:
    """Move ``source`` into ``dest_dir`` (see the module notes). Never raises for a move
    problem: the result says what happened. ``kind`` is the plot's header kind (replace mode
    only makes room for pool plots); ``on_part`` is told the part path when it exists and None
    when it is gone, so a caller can record it for cleanup after a SIGKILL; ``read`` replaces
    ``pread`` (tests use a reader they can hold still)."""
    name = source.name
    started = time.monotonic()

    def result(status: str, reason: str = "", **extra: object) -> MoveResult:
        return MoveResult(status, name, seconds=time.monotonic() - started, reason=reason, **extra)  # type: ignore[arg-type]

    try:
        identity = SourceIdentity.of(source)
    except OSError as exc:
        return result(FAILED, f"cannot read {source}: {exc.strerror or exc}")
    landing = Landing(dest_dir, name, identity.size, wording=WORDING, fail=_Stop, on_stale=_report_stale,
                      note=log.warning)
    copier: Copier | None = None
    replaced: Path | None = None
    registered = False
    try:
        landing.open()
        if landing.final_name() is FinalName.SAME_SIZE:
            digest = _already_there(landing, source)
            kept = delete_source(source, identity)
            return result(MOVED, kept or "already on the drive, identical (an earlier run stopped before deleting the source)",
                          destination=dest_dir / name, size=identity.size, hexdigest=digest, source_deleted=not kept)
        replaced = _reserve(landing, dest_dir, identity.size, options.may_replace_og and kind == KIND_POOL)
        if on_part is not None:
            on_part(dest_dir / landing.part)
            registered = True
        try:
            src_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _Stop(FAILED, f"cannot open {source}: {exc.strerror}") from None
        assert landing.part_fd is not None
        copier = Copier(src_fd, landing.part_fd, identity.size, chunk=options.chunk, read=read, verify=options.verify,
                         bytes_per_second=options.bytes_per_second).start()
        landing.hand_over_part_fd()  # the copier closes it now (see copy_worker.Copier), even after a stall
        if not watch(copier, options.stall_seconds, progress_cb):
            # Said before the clean-up: removing the part file may itself wait for a hung disk.
            log.info("%s: stalled at byte %d of %d (%s phase); aborting and removing %s", name, copier.progress,
                     identity.size, copier.phase, landing.part)
            raise _Stop(FAILED, f"stalled: no byte {'copied' if copier.phase == 'copy' else 'read back'} for "
                                f"{options.stall_seconds:g} s (at byte {copier.progress} of {identity.size})",
                        stalled=True)
        if copier.error is not None:
            error = copier.error
            if isinstance(error, CopyFailed):
                raise _Stop(FAILED, str(error))
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _Stop(NO_ROOM, f"{dest_dir} ran out of space while copying")
            raise _Stop(FAILED, f"copy failed: {getattr(error, 'strerror', None) or error}")
        if SourceIdentity.of(source) != identity:
            raise _Stop(FAILED, f"{source} changed while it was being copied")
        if options.verify and copier.verified_hexdigest != copier.hexdigest:
            raise _Stop(FAILED, f"the copy on the drive differs from the source (read back {copier.verified_hexdigest}, "
                                f"source {copier.hexdigest})")
        landing.commit(flush=False)  # the copier's write-back fsynced the part already
        kept = delete_source(source, identity)
        if kept:
            log.warning("moved %s to %s but kept the source: %s", name, dest_dir, kept)
        return result(MOVED, kept, destination=dest_dir / name, size=identity.size, hexdigest=copier.hexdigest,
                      source_deleted=not kept, replaced=replaced)
    except _Stop as stop:
        return result(stop.status, stop.reason, stalled=stop.stalled, replaced=replaced)
    except OSError as exc:
        return result(FAILED, f"{exc.strerror or exc}", replaced=replaced)
    finally:
        if copier is not None:
            copier.abandon()  # closes the descriptors now, or when a stuck read or write returns
        landing.close()  # removes the part file unless it became the plot
        if registered and on_part is not None:
            on_part(None)
