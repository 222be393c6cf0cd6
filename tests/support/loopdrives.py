"""Real loop-mounted filesystems for tests of drive discovery, laid out like a farmer's JBOD.

Drive discovery, free-space checks and "drive went away" handling are only worth testing
against what the kernel really reports: a mock of ``psutil.disk_partitions`` cannot tell us
whether a mountpoint shows up with its ``/dev/loopN`` device, whether ext4's reserved clusters
shrink the usable space, or what happens when a drive is unmounted while we look at it.  So
``LoopDrives`` makes real filesystems on sparse image files, attaches them to loop devices
and mounts them at e.g. ``<root>/enclosure0/front/column0/drive0``.

Facts measured on this machine (Debian 12, kernel 6.18, util-linux 2.38.1, e2fsprogs 1.47.0,
xfsprogs 6.1.0, psutil 7.2.2) that the code relies on:

* ``psutil.disk_partitions()`` (``all=False``) lists every mount here with
  ``device='/dev/loopN'``, the resolved mountpoint and ``fstype='ext4'``/``'xfs'``: those
  types are in ``/proc/filesystems`` without ``nodev``, which is psutil's filter.
* Minimum image sizes: journalled ext4 works from 2 MiB (1 MiB still formats, but without a
  journal, which is not what a real drive has).  xfsprogs >= 5.19 refuses filesystems smaller
  than 300 MiB ("Filesystem must be larger than 300MB"; 299 MiB fails, 300 MiB works), so xfs
  defaults to 300 MiB here.  See ``MIN_SIZE_MB`` / ``DEFAULT_SIZE_MB``.
* mke2fs picks 1 KiB blocks below 512 MiB, so a 64 MiB ext4 drive has 1024-byte blocks; xfs
  uses 4 KiB.  Even with ``-m 0`` ext4 keeps "reserved clusters" (about 2 % of small
  filesystems) that statfs subtracts from ``f_bavail``; ``fill`` works on ``f_bavail``, i.e. on
  ``psutil.disk_usage(mountpoint).free``, which is what the plot manager sees.
* There is no udev in this container: ``/dev/disk/by-uuid`` does not exist, so the UUID comes
  from ``blkid -p`` (low-level probe, no cache that could be stale after a loop device is
  reused).  Code under test must not depend on ``/dev/disk/by-*`` either.
* ``losetup -f --show`` creates ``/dev/loop8``, ``/dev/loop9``... on demand, so more than the
  8 pre-made loop devices are available.  Other processes on this shared machine use loop
  devices too; everything here acts only on the exact devices, mountpoints and files this
  object created.

Cleanup guarantees: leaving the ``with`` block (normally, by exception, or when setup fails
half way) unmounts, detaches and deletes what was made; an ``atexit`` hook is the backstop
for anything still attached when the process exits (not for SIGKILL or ``os._exit``).
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

import pytest

log = logging.getLogger(__name__)

FsType = Literal["ext4", "xfs"]

#: Smallest image per filesystem type that mkfs accepts and gives a journalled filesystem.
MIN_SIZE_MB: dict[str, int] = {"ext4": 2, "xfs": 300}
#: Used when ``size_mb`` is not given.
DEFAULT_SIZE_MB: dict[str, int] = {"ext4": 64, "xfs": 300}

#: Name of the file ``fill`` uses to eat space; hidden and without ``.plot`` so that plot
#: scans do not pick it up.
FILLER_NAME = ".loopdrives-filler"

_MKFS: dict[str, list[str]] = {
    # -m 0: no root-reserved blocks, so everything statfs reports as free is usable by root
    # and by everyone else alike (farmers format plot drives this way too).
    "ext4": ["mkfs.ext4", "-q", "-F", "-m", "0"],
    "xfs": ["mkfs.xfs", "-q", "-f"],
}

_UMOUNT_ATTEMPTS = 5
#: ``fill(drive, 0)`` may stop this many blocks short of completely full (see ``fill``).
_FULL_SLACK_BLOCKS = 64


class CleanupError(RuntimeError):
    """Something this helper created could not be removed; the message lists what leaked."""


def _run(cmd: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command without a shell, capturing output so failures carry their stderr."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed with exit status {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def _unescape_mount_field(field: str) -> str:
    r"""Decode the octal escapes (``\040`` for space...) the kernel uses in /proc/self/mounts."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        digits = field[i + 1 : i + 4]
        if field[i] == "\\" and len(digits) == 3 and digits.isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[tuple[str, str, str]]:
    """Return ``(source, mountpoint, fstype)`` for every line of /proc/self/mounts.

    Read fresh each time: the whole point of these helpers is that the table changes.
    """
    entries: list[tuple[str, str, str]] = []
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                entries.append(
                    (
                        _unescape_mount_field(parts[0]),
                        _unescape_mount_field(parts[1]),
                        parts[2],
                    )
                )
    return entries


def mounted_at(mountpoint: Path) -> list[tuple[str, str]]:
    """Return ``(source, fstype)`` of every mount stacked on ``mountpoint`` (usually 0 or 1)."""
    target = str(mountpoint)
    return [(src, fstype) for src, mp, fstype in mounts() if mp == target]


def umount(mountpoint: Path, what: str) -> None:
    """Unmount ``mountpoint``, retrying while busy; lazy unmount only as the last resort.

    A busy mount is usually a transient holder (a just-closed file being written back, a
    scanner thread still inside the directory), so a few patient retries normally succeed.
    ``umount -l`` detaches the mount from the tree even if something still holds it, which
    keeps the test from leaking a visible mount, but the holder keeps the filesystem alive:
    that is worth a warning, because it means some code under test did not let go.
    """
    last_err = ""
    for attempt in range(_UMOUNT_ATTEMPTS):
        if not mounted_at(mountpoint):
            return
        proc = _run(["umount", str(mountpoint)], check=False)
        if proc.returncode == 0:
            return
        last_err = proc.stderr.strip()
        time.sleep(0.1 * (attempt + 1))
    if not mounted_at(mountpoint):
        return
    log.warning(
        "%s: umount %s kept failing (%s); falling back to lazy unmount (umount -l)",
        what,
        mountpoint,
        last_err,
    )
    _run(["umount", "-l", str(mountpoint)])


def _syncfs(path: Path) -> None:
    """Flush one filesystem so statfs numbers settle (delayed allocation, xfs preallocation).

    Uses syncfs(2) on that filesystem only instead of sync(2), which would flush every
    filesystem of this shared machine.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def free_bytes(path: Path) -> int:
    """Bytes available to an unprivileged user, exactly what ``psutil.disk_usage().free`` says."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def block_size(path: Path) -> int:
    """Allocation unit of the filesystem holding ``path`` (the precision of ``fill``)."""
    return os.statvfs(path).f_frsize


def _check_relative(rel: str) -> Path:
    """Refuse absolute or ``..`` mountpoints: everything must stay under the given root."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"mountpoint {rel!r} must be a relative path without '..'")
    return p


def _mkdirs(path: Path) -> list[Path]:
    """``mkdir -p`` that returns the directories it actually created, outermost first.

    Cleanup removes exactly these (when empty) and never a directory that existed before.
    """
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _rmdirs(created: Iterable[Path]) -> None:
    """Remove directories we created, deepest first; leave any that are not empty."""
    for d in sorted(created, key=lambda p: len(p.parts), reverse=True):
        try:
            if not os.path.ismount(d):
                d.rmdir()
        except OSError:
            pass


# --- atexit backstop -------------------------------------------------------------------


class _Cleanable:
    """Something holding mounts/devices that the atexit backstop may have to release.

    ``_activate`` is the one way in: set up, and on any failure (Ctrl-C included) release
    whatever the half-done set-up made before re-raising, so no fixture ever leaks a mount.
    """

    _owner_pid: int
    _closed: bool

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _setup(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _activate(self) -> None:
        if not self._closed:
            raise RuntimeError(f"{self!r} is already active")
        self._closed = False
        register_active(self)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_active_lock = threading.Lock()
_active: dict[int, _Cleanable] = {}


def register_active(obj: _Cleanable) -> None:
    """Remember ``obj`` until it is closed, so process exit can still release it."""
    obj._owner_pid = os.getpid()
    with _active_lock:
        _active[id(obj)] = obj


def unregister_active(obj: _Cleanable) -> None:
    """Forget ``obj`` once it has cleaned up after itself."""
    with _active_lock:
        _active.pop(id(obj), None)


def _atexit_cleanup() -> None:
    """Release whatever is still attached when this process exits.

    Only objects created by this very process are touched: a forked child (multiprocessing
    in code under test) inherits the registry, and its exit must not unmount the parent's
    drives.
    """
    with _active_lock:
        leftovers = [o for o in _active.values() if o._owner_pid == os.getpid()]
    for obj in leftovers:
        log.warning("atexit: releasing %r that was never closed", obj)
        try:
            obj.close()
        except Exception:
            log.exception("atexit cleanup of %r failed", obj)


atexit.register(_atexit_cleanup)


# --- skip helper ---------------------------------------------------------------------------


def _probe_loop() -> str | None:
    """Return why real loop drives cannot be used here, or None if they can.

    Attaching and detaching a 1 MiB image is the only reliable test: /dev/loop-control may
    exist yet be forbidden inside a container.
    """
    if os.geteuid() != 0:
        return "needs root to attach loop devices and mount filesystems"
    missing = [tool for tool in ("losetup", "mkfs.ext4", "mount", "umount", "blkid") if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    tmpdir = tempfile.mkdtemp(prefix="loopdrives-probe-")
    image = Path(tmpdir) / "probe.img"
    try:
        with open(image, "wb") as f:
            f.truncate(1 << 20)
        proc = _run(["losetup", "-f", "--show", str(image)], check=False)
        if proc.returncode != 0:
            return f"cannot create loop devices: {proc.stderr.strip()}"
        device = proc.stdout.strip()
        _run(["losetup", "-d", device], check=False)
        return None
    except OSError as exc:
        return f"cannot create loop devices: {exc}"
    finally:
        image.unlink(missing_ok=True)
        os.rmdir(tmpdir)


LOOP_UNAVAILABLE_REASON: str | None = _probe_loop()

#: Put on tests (or ``pytestmark``) that need real loop drives.
requires_root_and_loop = pytest.mark.skipif(
    LOOP_UNAVAILABLE_REASON is not None,
    reason=f"real loop drives unavailable: {LOOP_UNAVAILABLE_REASON}",
)


def xfs_unavailable_reason() -> str | None:
    """Return why xfs loop drives cannot be made here (no mkfs.xfs, no kernel xfs), or None."""
    if LOOP_UNAVAILABLE_REASON is not None:
        return LOOP_UNAVAILABLE_REASON
    if shutil.which("mkfs.xfs") is None:
        return "mkfs.xfs missing (apt-get install xfsprogs)"
    try:
        with open("/proc/filesystems", encoding="ascii") as f:
            if not any(line.split()[-1:] == ["xfs"] for line in f):
                return "kernel has no xfs support (not in /proc/filesystems)"
    except OSError as exc:
        return f"cannot read /proc/filesystems: {exc}"
    return None


requires_xfs = pytest.mark.skipif(
    xfs_unavailable_reason() is not None,
    reason=f"xfs loop drives unavailable: {xfs_unavailable_reason()}",
)


# --- the drives --------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopDrive:
    """One mounted test drive: what discovery code should find for it.

    ``mountpoint`` is fully resolved, i.e. spelled exactly as in /proc/self/mounts and
    ``psutil.disk_partitions()``.
    """

    device: str
    mountpoint: Path
    uuid: str
    fstype: str
    image: Path


@dataclass
class _Slot:
    """Setup progress of one drive, so cleanup undoes exactly the steps that happened."""

    mountpoint: Path
    image: Path
    created_dirs: list[Path]
    device: str | None = None
    mounted: bool = False
    drive: LoopDrive | None = None


class LoopDrives(_Cleanable):
    """Context manager making one real, mounted loop-device filesystem per mountpoint.

    ``with LoopDrives(tmp_path, ["enclosure0/front/column0/drive0", ...]) as ld:`` gives
    ``ld.drives`` (a list of ``LoopDrive`` in the order given).  Images are sparse, so a
    64 MiB drive costs only what is written to it.
    """

    def __init__(
        self,
        root: Path,
        mountpoints: list[str],
        size_mb: int | None = None,
        fstype: FsType = "ext4",
        image_dir: Path | None = None,
    ) -> None:
        if fstype not in _MKFS:
            raise ValueError(f"fstype must be one of {sorted(_MKFS)}, not {fstype!r}")
        if size_mb is None:
            size_mb = DEFAULT_SIZE_MB[fstype]
        if size_mb < MIN_SIZE_MB[fstype]:
            raise ValueError(f"{fstype} needs at least {MIN_SIZE_MB[fstype]} MiB per drive, got {size_mb}")
        rels = [_check_relative(m) for m in mountpoints]
        if len(set(rels)) != len(rels):
            raise ValueError(f"duplicate mountpoints in {mountpoints!r}")
        self.root = Path(root).resolve()
        self.size_mb = size_mb
        self.fstype: str = fstype
        self._rels = rels
        self._image_dir_arg = image_dir
        self._image_dir: Path | None = None
        self._slots: list[_Slot] = []
        self._closed = True

    def __repr__(self) -> str:
        return f"LoopDrives(root={str(self.root)!r}, n={len(self._rels)}, fstype={self.fstype})"

    @property
    def drives(self) -> list[LoopDrive]:
        """The drives, in the order their mountpoints were given."""
        return [s.drive for s in self._slots if s.drive is not None]

    # -- setup ------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._activate()
        return self

    def _setup(self) -> None:
        # Images live in their own temporary directory, never under root: a drive-discovery
        # scan of root must not trip over image files, and an image must never sit inside
        # one of the filesystems it backs.
        self._image_dir = Path(
            tempfile.mkdtemp(
                prefix="loopdrives-img-",
                dir=str(self._image_dir_arg) if self._image_dir_arg is not None else None,
            )
        ).resolve()
        if self._image_dir.is_relative_to(self.root):
            raise ValueError(f"image_dir {self._image_dir} must not be under root {self.root}")
        for i, rel in enumerate(self._rels):
            mountpoint = self.root / rel
            image = self._image_dir / f"drive{i}.img"
            with open(image, "xb") as f:
                f.truncate(self.size_mb * 1024 * 1024)
            slot = _Slot(mountpoint=mountpoint, image=image, created_dirs=[])
            self._slots.append(slot)
            proc = _run(["losetup", "-f", "--show", str(image)])
            slot.device = proc.stdout.strip()
            if not slot.device.startswith("/dev/loop"):
                raise RuntimeError(f"losetup printed an unexpected device: {slot.device!r}")
            _run([*_MKFS[self.fstype], slot.device])
            uuid = _run(["blkid", "-p", "-s", "UUID", "-o", "value", slot.device]).stdout.strip()
            if not uuid:
                raise RuntimeError(f"blkid found no UUID on freshly made {slot.device}")
            slot.created_dirs = _mkdirs(mountpoint)
            # Spelled as the kernel will list it, even if part of root is a symlink.
            slot.mountpoint = mountpoint = mountpoint.resolve()
            if mounted_at(mountpoint):
                raise RuntimeError(f"{mountpoint} is already a mountpoint; refusing to stack")
            _run(["mount", "-t", self.fstype, slot.device, str(mountpoint)])
            slot.mounted = True
            slot.drive = LoopDrive(
                device=slot.device,
                mountpoint=mountpoint,
                uuid=uuid,
                fstype=self.fstype,
                image=image,
            )

    # -- cleanup --------------------------------------------------------------------------

    def close(self) -> None:
        """Unmount, detach and delete everything this object made; safe to call twice.

        Every step runs even if an earlier one failed, so one stuck mount does not leak the
        other drives; what could not be released is raised at the end as ``CleanupError``.
        """
        if self._closed:
            return
        problems: list[str] = []
        for slot in reversed(self._slots):
            # Asks the kernel rather than trusting ``slot.mounted``: setup may have been
            # interrupted right after mount(8) succeeded, and a test may have unmounted the
            # drive behind our back.  Only our own device at that path is unmounted.
            if slot.device is not None and self._mounted_here(slot):
                try:
                    umount(slot.mountpoint, repr(self))
                except Exception as exc:
                    problems.append(f"umount {slot.mountpoint}: {exc}")
                    continue
            slot.mounted = False
            if slot.device is not None:
                # Detach only while the device is still bound to our image: once it is free,
                # another process on this machine may already have attached its own file.
                # A device still held by a lazily unmounted filesystem is not detached at
                # once; the kernel marks it autoclear and frees it when the last user lets go.
                if self._attached_to(slot.device, slot.image):
                    proc = _run(["losetup", "-d", slot.device], check=False)
                    if proc.returncode != 0 and self._attached_to(slot.device, slot.image):
                        problems.append(f"losetup -d {slot.device}: {proc.stderr.strip()}")
                        continue
                slot.device = None
            try:
                slot.image.unlink(missing_ok=True)
            except OSError as exc:
                problems.append(f"rm {slot.image}: {exc}")
            _rmdirs(slot.created_dirs)
        if self._image_dir is not None:
            try:
                self._image_dir.rmdir()
                self._image_dir = None
            except OSError as exc:
                problems.append(f"rmdir {self._image_dir}: {exc}")
        if problems:
            # Stay registered: the atexit backstop gets another try at what is left.
            raise CleanupError(f"{self!r} leaked: " + "; ".join(problems))
        self._closed = True
        unregister_active(self)

    def _mounted_here(self, slot: _Slot) -> bool:
        """Whether our device (and not someone else's) is mounted at the slot's mountpoint."""
        return any(src == slot.device for src, _ in mounted_at(slot.mountpoint))

    @staticmethod
    def _attached_to(device: str, image: Path) -> bool:
        """Whether ``device`` is still bound to our image (it may be someone else's by now)."""
        proc = _run(["losetup", "-n", "-O", "BACK-FILE", device], check=False)
        back = proc.stdout.strip()
        return proc.returncode == 0 and back.removesuffix(" (deleted)") == str(image)

    # -- manipulation during a test -------------------------------------------------------

    def _slot(self, drive: LoopDrive) -> _Slot:
        for slot in self._slots:
            if slot.drive == drive:
                return slot
        raise ValueError(f"{drive} does not belong to {self!r}")

    def is_mounted(self, drive: LoopDrive) -> bool:
        """Whether ``drive`` is currently mounted (asks the kernel, not our bookkeeping)."""
        return self._mounted_here(self._slot(drive))

    def unmount(self, drive: LoopDrive) -> None:
        """Unmount ``drive`` mid-test, as when a disk is pulled or unmounted by the farmer.

        The loop device stays attached so ``remount`` brings back the same filesystem, UUID
        and files.  The mountpoint directory stays too (empty), like a stale fstab target.
        """
        slot = self._slot(drive)
        umount(slot.mountpoint, repr(self))
        slot.mounted = False

    def remount(self, drive: LoopDrive) -> None:
        """Mount ``drive`` again at its mountpoint after ``unmount``."""
        slot = self._slot(drive)
        if self._mounted_here(slot):
            raise RuntimeError(f"{drive.mountpoint} is still mounted")
        if mounted_at(slot.mountpoint):
            raise RuntimeError(f"something else is mounted at {slot.mountpoint}")
        _run(["mount", "-t", self.fstype, drive.device, str(slot.mountpoint)])
        slot.mounted = True

    def free_bytes(self, drive: LoopDrive) -> int:
        """Free bytes as the plot manager sees them (``psutil.disk_usage(...).free``)."""
        return free_bytes(drive.mountpoint)

    def fill(self, drive: LoopDrive, leave_bytes: int) -> int:
        """Eat space with a preallocated filler file until exactly ``leave_bytes`` stay free.

        "Exactly" means ``leave_bytes <= free < leave_bytes + block size`` as reported by
        statfs (``f_bavail``), i.e. ``free`` is ``leave_bytes`` rounded up to a whole block.
        The filler is grown/shrunk in a loop and remeasured each time, because its own extent
        tree blocks and ext4's reserved clusters make a one-shot size calculation drift by a
        few blocks.  Calling ``fill`` again adjusts the same filler, in either direction.

        Free space as statfs reports it is not quite "room for files": writing a file also
        allocates a few metadata blocks (extent tree), so for "room for exactly N plots of
        size S" use ``fill_for_plots``, which leaves half a plot of slack.

        Returns the free bytes actually left.
        """
        if leave_bytes < 0:
            raise ValueError("leave_bytes must be >= 0")
        slot = self._slot(drive)
        if not self._mounted_here(slot):
            raise RuntimeError(f"{drive.mountpoint} is not mounted")
        filler = drive.mountpoint / FILLER_NAME
        bs = block_size(drive.mountpoint)
        fd = os.open(filler, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            for _ in range(64):
                free = self._settled_free(fd, drive)
                if leave_bytes <= free < leave_bytes + bs:
                    return free
                size = os.fstat(fd).st_size
                if free > leave_bytes:
                    if not self._grow(fd, size, (free - leave_bytes) // bs * bs, bs):
                        # Not even one more block fits: the rest is held back for the
                        # filler's own metadata (xfs reserves worst-case extent-tree
                        # space per fallocate).  Only reachable when asking for (nearly)
                        # zero free space, where a few blocks do not matter.
                        if free - leave_bytes <= _FULL_SLACK_BLOCKS * bs:
                            return free
                        raise RuntimeError(f"cannot fill {drive.mountpoint} below {free} bytes free")
                else:
                    shrink = -(-(leave_bytes - free) // bs) * bs
                    if size == 0:
                        # Truncating also frees blocks a failed fallocate may have left
                        # past end of file; if that does not help, the drive is too small.
                        os.ftruncate(fd, 0)
                        if self._settled_free(fd, drive) < leave_bytes:
                            raise ValueError(
                                f"{drive.mountpoint} has only {free} bytes free, cannot leave {leave_bytes}"
                            )
                        continue
                    os.ftruncate(fd, max(0, size - shrink))
            raise RuntimeError(
                f"fill({drive.mountpoint}, {leave_bytes}) did not converge: {free_bytes(drive.mountpoint)} bytes free"
            )
        finally:
            os.close(fd)

    @staticmethod
    def _settled_free(fd: int, drive: LoopDrive) -> int:
        """Flush the filler and its filesystem, then read free bytes that will not drift."""
        os.fsync(fd)
        _syncfs(drive.mountpoint)
        return free_bytes(drive.mountpoint)

    @staticmethod
    def _grow(fd: int, size: int, grow: int, bs: int) -> bool:
        """Preallocate up to ``grow`` bytes after ``size``, halving on ENOSPC.

        The filesystem wants room for the new extents' metadata on top of the data, so the
        exact remaining free space often does not fit in one fallocate; the caller remeasures
        and comes back for the rest.  Returns False when not even one block fits.
        """
        step = grow
        while step >= bs:
            try:
                os.posix_fallocate(fd, size, step)
                return True
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                step = step // 2 // bs * bs
        return False

    def fill_for_plots(self, drive: LoopDrive, count: int, plot_size: int) -> int:
        """Leave room for exactly ``count`` files of ``plot_size`` bytes, not one more.

        Leaves ``count * plot_size + plot_size // 2``: the half plot absorbs the metadata
        blocks that writing ``count`` files needs, and is still too small for another one.
        Needs ``plot_size`` well above the metadata cost (>= 64 KiB is plenty).
        """
        return self.fill(drive, count * plot_size + plot_size // 2)

    def unfill(self, drive: LoopDrive) -> None:
        """Remove the filler file again, giving back all the space ``fill`` took."""
        (drive.mountpoint / FILLER_NAME).unlink(missing_ok=True)
