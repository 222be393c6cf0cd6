"""The receive set: which drive of the harvester takes the next plot, and the claim on it.

drive_manager.py writes the harvester's receive set into ``receive_plot.sh`` each minute
(``--drives``: the drives with room, in policy order, each with its own replace mode).  A
receiver claims one drive of the set for its whole session (``claims.py``: an flock that dies
with it), so several receivers at once each write onto their own drive:

* a plot already on some drive of the set (an earlier OK was lost) is proven there, not landed
  twice (``find_existing``);
* otherwise the drive the session holds is tried first, then the rest of the set in order: a
  drive whose every receive slot is claimed by other receivers is skipped (busy), a claimed
  drive that cannot take the plot (no room, even after replace mode; gone or read-only) is
  released and the next one tried (``Placement.place``);
* nothing took it: ``busy`` when a drive was skipped for other receivers (it may take the plot
  once their receive ends: the plotter tries later), else the drives' own refusal
  (``no_drive_failure``, pure).

``--dest DIR`` is a set of one drive without claims: exactly the receiver of one drive as before.
Only the standard library is imported here (the receiver starts fast).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from utilities.transfer.claims import DriveClaim, try_claim
from utilities.transfer.protocol import ERR_BAD_DEST, ERR_BUSY, ERR_IO, ERR_NO_SPACE, ReceiveFailure

# Refusals meaning "this drive cannot take the plot" (the next drive of the set may): no room
# (even after replace mode), the directory gone or read-only.  Anything else (an I/O error, the
# plot's own part file held by another receiver) ends the receive as it would on one drive.
MOVE_ON_KINDS = (ERR_NO_SPACE, ERR_BAD_DEST)
DRIVE_KEYS = ("name", "dir", "replace")
MAX_PER_DRIVE = 8


@dataclass(frozen=True)
class SetDrive:
    """One drive of the receive set: its name (as the claims and reports call it), the
    directory plots land in, and whether one old OG plot there may go to make room."""

    name: str
    dir: str
    replace: bool = False


def parse_drives(text: str) -> tuple[SetDrive, ...]:
    """``--drives`` JSON -> the set, in order (pure); ValueError naming the first problem.

    Strict, because the script is the only writer: a list of at least one object with exactly
    the keys name (non-empty text), dir (an absolute path) and replace (true or false); no name
    or directory twice.
    """
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(items, list) or not items:
        raise ValueError("not a non-empty JSON list of drives")
    drives: list[SetDrive] = []
    for number, item in enumerate(items, 1):
        where = f"drive {number}"
        if not isinstance(item, dict):
            raise ValueError(f"{where} is not an object")
        if set(item) != set(DRIVE_KEYS):
            raise ValueError(
                f"{where} must have exactly the keys {', '.join(DRIVE_KEYS)}, has {', '.join(sorted(item))}"
            )
        name, path, replace = item["name"], item["dir"], item["replace"]
        if not isinstance(name, str) or not name.strip() or "\0" in name or "\n" in name:
            raise ValueError(f"{where}: name must be non-empty text, got {name!r}")
        if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
            raise ValueError(f"{where} ({name}): dir must be an absolute path, got {path!r}")
        if not isinstance(replace, bool):
            raise ValueError(f"{where} ({name}): replace must be true or false, got {replace!r}")
        if any(d.name == name for d in drives):
            raise ValueError(f"drive name {name!r} is given twice")
        if any(os.path.normpath(d.dir) == os.path.normpath(path) for d in drives):
            raise ValueError(f"dir {path!r} is given twice")
        drives.append(SetDrive(name, path, replace))
    return tuple(drives)


def walk_order(drives: Sequence[SetDrive], held: str | None, prefer: str | None = None) -> list[SetDrive]:
    """The drives to try for the next plot (pure): ``prefer`` (the drive holding the plot's
    kept part, to resume it) first, then the one the session holds, then the rest in order."""
    first = [d for d in drives if d.name == prefer] + [d for d in drives if d.name == held and d.name != prefer]
    return first + [d for d in drives if d not in first]


def no_drive_failure(busy: Sequence[str], refusals: Sequence[tuple[str, ReceiveFailure]]) -> ReceiveFailure:
    """Why no drive of the set took the plot (pure).

    Busy wins: a drive claimed by other receivers may take the plot once their receive ends, so
    the plotter should try later (not count a failure).  Otherwise one drive's own refusal as it
    is (``--dest``: the single-drive messages), or all of them, of kind "no space" if any was.
    """
    if busy:
        if not refusals:
            return ReceiveFailure(
                ERR_BUSY, f"every drive of the receive set is being written by other receivers ({', '.join(busy)})"
            )
        return ReceiveFailure(
            ERR_BUSY,
            f"{', '.join(busy)} being written by other receivers; "
            + "; ".join(f"{name}: {failure.detail}" for name, failure in refusals),
        )
    if len(refusals) == 1:
        return refusals[0][1]
    kinds = [failure.kind for _, failure in refusals]
    kind = ERR_NO_SPACE if ERR_NO_SPACE in kinds or not kinds else kinds[0]
    return ReceiveFailure(
        kind, "no drive of the receive set can take it: " + "; ".join(f"{name}: {f.detail}" for name, f in refusals)
    )


Landed = TypeVar("Landed")


@dataclass(frozen=True)
class Placed(Generic[Landed]):
    drive: SetDrive
    landed: Landed


class Placement:
    """The session's receive set and the claim it holds (none with ``--dest``: no claims dir)."""

    def __init__(self, drives: Sequence[SetDrive], claims_dir: str | None, per_drive: int = 1) -> None:
        self.drives = tuple(drives)
        self.claims_dir = claims_dir
        self.per_drive = per_drive
        self.claim: DriveClaim | None = None

    def find_existing(self, name: str) -> SetDrive | None:
        """The first drive of the set whose directory holds something named ``name``."""
        for drive in self.drives:
            try:
                os.lstat(os.path.join(drive.dir, name))
            except OSError:
                continue
            return drive
        return None

    def place(self, land: Callable[[SetDrive], Landed], prefer: str | None = None) -> Placed[Landed]:
        """Claim a drive and ``land`` on it (which reserves the space, or raises ReceiveFailure),
        walking the set as the module notes say; the failure of ``no_drive_failure`` if none."""
        busy: list[str] = []
        refusals: list[tuple[str, ReceiveFailure]] = []
        for drive in walk_order(self.drives, self.claim.drive if self.claim else None, prefer):
            if self.claims_dir is not None and (self.claim is None or self.claim.drive != drive.name):
                self.release()
                self.claim = self._try_claim(drive)
                if self.claim is None:
                    busy.append(drive.name)
                    continue
            try:
                return Placed(drive, land(drive))
            except ReceiveFailure as failure:
                if failure.kind not in MOVE_ON_KINDS:
                    raise
                refusals.append((drive.name, failure))
                self.release()
        raise no_drive_failure(busy, refusals)

    def _try_claim(self, drive: SetDrive) -> DriveClaim | None:
        assert self.claims_dir is not None
        try:
            return try_claim(self.claims_dir, drive.name, self.per_drive)
        except OSError as exc:
            raise ReceiveFailure(
                ERR_IO, f"cannot claim {drive.name} in {self.claims_dir}: {exc.strerror or exc}"
            ) from None

    def record(self, plot: str, size: int, received: int, started_at: float, *, force: bool = False) -> None:
        """Progress of the plot being received, into the claim (rate-limited there)."""
        if self.claim is not None:
            self.claim.record(plot, size, received, started_at, force=force)

    def idle(self) -> None:
        """Between two plots: the session keeps its drive, receiving nothing."""
        if self.claim is not None:
            self.claim.idle()

    def release(self) -> None:
        if self.claim is not None:
            self.claim.release()
            self.claim = None
