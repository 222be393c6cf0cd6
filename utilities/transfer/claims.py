"""Drive claims: which receiver is writing onto which drive of the receive set, and how far it is.

A harvester takes several plots at once, each onto its own drive (one HDD writing two streams
makes both slower).  Each receiver claims one drive of the receive set for its whole session
with an ``flock`` on a small claim file in the harvester's state directory::

    <state>/receiving/<drive>.<n>.claim        n = 0 .. receives_per_drive - 1

The kernel drops the lock when the receiver dies (even by SIGKILL), so a claim can never outlive
its holder, and nobody has to clean up.  While it writes, the receiver keeps one JSON line in its
claim file (plot, size, bytes received, start time), which the minute pass, ``-pr`` and the
metrics read to show what is being received where, and at what speed.

Readers do not take the lock themselves (a reader's brief shared lock would make a receiver
looking for a free drive skip one): they ask the kernel which files are locked
(``/proc/locks``) and read only the claim files held now.  Only where that list cannot say
(no /proc; btrfs, whose stat() device numbers are not the list's) is the lock itself asked.
Only the standard library is imported: the receiver imports this and must start fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from urllib.parse import quote, unquote

CLAIMS_DIRNAME = "receiving"
CLAIM_SUFFIX = ".claim"
# How often (seconds) a receiver rewrites its progress line: cheap, and fine enough for -pr.
RECORD_INTERVAL = 2.0


def claim_file_name(drive: str, index: int) -> str:
    """The claim file of the ``index``-th receive slot of ``drive`` (any drive name is made
    one safe file name: a drive named by its whole mountpoint has slashes)."""
    return f"{quote(drive, safe='')}.{index}{CLAIM_SUFFIX}"


def drive_of_claim_file(file_name: str) -> str | None:
    """The drive a claim file belongs to, or None for a name that is not a claim file."""
    if not file_name.endswith(CLAIM_SUFFIX):
        return None
    stem, dot, index = file_name[: -len(CLAIM_SUFFIX)].rpartition(".")
    if not dot or not stem or not index.isdigit():
        return None
    return unquote(stem)


@dataclass(frozen=True)
class ReceiveInFlight:
    """One receive in progress, as its receiver last recorded it.

    ``plot`` is empty while a session holds its drive between two plots.  Times are the
    receiver's wall clock (``time.time()``): shown to people and compared with each other, never
    with another machine's clock.
    """

    drive: str
    plot: str = ""
    size: int = 0
    received: int = 0
    started_at: float = 0.0
    updated_at: float = 0.0
    pid: int = 0

    @property
    def bytes_per_second(self) -> float:
        """Average speed of this plot so far (0 before the first bytes)."""
        elapsed = self.updated_at - self.started_at
        return self.received / elapsed if self.received and elapsed > 0 else 0.0

    @property
    def fraction(self) -> float:
        return self.received / self.size if self.size else 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> ReceiveInFlight:
        """Parse one exported or recorded receive; TypeError/ValueError for anything else."""
        if not isinstance(data, dict):
            raise TypeError("a receive in flight is not an object")
        drive, plot = data.get("drive"), data.get("plot", "")
        if not isinstance(drive, str) or not drive or not isinstance(plot, str):
            raise ValueError("a receive in flight needs a drive name")
        numbers = {}
        for key in ("size", "received", "pid"):
            value = data.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"receive in flight: {key} is not a whole number")
            numbers[key] = value
        times = {}
        for key in ("started_at", "updated_at"):
            value = data.get(key, 0.0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"receive in flight: {key} is not a number")
            times[key] = float(value)
        return cls(drive=drive, plot=plot, **numbers, **times)


class DriveClaim:
    """A receive slot on one drive, held (flock) until ``release`` or the receiver's death."""

    def __init__(self, fd: int, drive: str, index: int) -> None:
        self.fd = fd
        self.drive = drive
        self.index = index
        self._last_record = 0.0

    def record(self, plot: str, size: int, received: int, started_at: float, *, force: bool = False) -> None:
        """Write the progress line (at most every RECORD_INTERVAL unless ``force``).

        One small pwrite into a file in the page cache: never fsynced (it means nothing after a
        crash, when the lock is gone anyway) and never a reason to fail a receive.
        """
        now = time.time()
        if not force and now - self._last_record < RECORD_INTERVAL:
            return
        self._last_record = now
        line = ReceiveInFlight(self.drive, plot, size, received, started_at, now, os.getpid())
        data = (json.dumps(line.to_dict(), separators=(",", ":")) + "\n").encode()
        with contextlib.suppress(OSError):
            os.pwrite(self.fd, data, 0)
            os.ftruncate(self.fd, len(data))

    def idle(self) -> None:
        """Between two plots of a session: still held, no plot."""
        self.record("", 0, 0, time.time(), force=True)

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing the only fd drops the flock
        self.fd = -1


def try_claim(claims_dir: str | os.PathLike[str], drive: str, per_drive: int = 1) -> DriveClaim | None:
    """Take a free receive slot of ``drive`` (non-blocking), or None when all ``per_drive`` are
    held.  OSError when the claims directory cannot be made or a claim file opened."""
    os.makedirs(claims_dir, mode=0o755, exist_ok=True)
    for index in range(max(1, per_drive)):
        path = os.path.join(claims_dir, claim_file_name(drive, index))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        claim = DriveClaim(fd, drive, index)
        claim.idle()
        return claim
    return None


# -- reading, for reports and the minute pass ---------------------------------------------------


def _locked_files(proc_locks: str = "/proc/locks") -> set[tuple[int, int, int]] | None:
    """(major, minor, inode) of every file with a FLOCK held now; None if the kernel won't say.

    A line looks like ``1: FLOCK  ADVISORY  WRITE 32585 fe:00:2146305 0 EOF`` (device numbers
    in hex); blocked waiters (``->``) hold nothing and are skipped.
    """
    try:
        with open(proc_locks, encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    held = set()
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or "->" in fields or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            held.add((int(major, 16), int(minor, 16), int(inode)))
        except ValueError:
            continue
    return held


def _probe_held(path: str) -> bool:
    """Ask the lock itself, with a shared lock given back at once (a receiver looking for a free
    slot at that very instant may skip this one, so only when /proc/locks cannot say)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _is_held(path: str, st: os.stat_result, held: set[tuple[int, int, int]] | None) -> bool:
    if held is None:  # no /proc/locks
        return _probe_held(path)
    if (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in held:
        return True
    # btrfs reports another device number to stat() than the kernel's lock list uses (util-linux
    # lsfd/lslocks and lsof hit the same): a lock on this inode number under another device may
    # be ours, so only then the lock itself is asked.
    if any(inode == st.st_ino for _major, _minor, inode in held):
        return _probe_held(path)
    return False


def receives_in_flight(claims_dir: str | os.PathLike[str]) -> list[ReceiveInFlight]:
    """Every claim held now (a receive, or a session between plots), by drive name and slot.

    A claim file nobody holds is an old one: ignored.  A held one whose line is not readable yet
    (the receiver has just claimed it) still counts, with no plot.
    """
    try:
        entries = sorted(os.scandir(claims_dir), key=lambda e: e.name)
    except OSError:
        return []
    held = _locked_files()
    found = []
    for entry in entries:
        drive = drive_of_claim_file(entry.name)
        if drive is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not _is_held(entry.path, st, held):
            continue
        try:
            with open(entry.path, encoding="utf-8") as handle:
                line = ReceiveInFlight.from_dict(json.loads(handle.readline()))
            found.append(line if line.drive == drive else ReceiveInFlight(drive))
        except (OSError, ValueError, TypeError):
            found.append(ReceiveInFlight(drive))
    return found


def claims_per_drive(receives: Iterable[ReceiveInFlight]) -> dict[str, int]:
    """Pure: how many receive slots each drive has taken now."""
    counts: dict[str, int] = {}
    for receive in receives:
        counts[receive.drive] = counts.get(receive.drive, 0) + 1
    return counts
