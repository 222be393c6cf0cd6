"""Hundreds of huge, nearly free "drives" for benchmarks of a big harvester.

Loop drives (``loopdrives.py``) are real block devices but capped at what the image files
can hold; a benchmark of a harvester with hundreds of 20 TB drives and ~30,000 plots needs
something that *reports* farm-sized capacity while costing nothing.  A tmpfs mounted with
``-o size=20T`` does: the size is only a cap (it may exceed RAM), and a sparse file (a small
header written, then ``truncate`` to ~100 GB) occupies one page, so ``df`` shows only the
pages actually written.

psutil 7.2.2 and tmpfs (measured here, and read from ``psutil/_pslinux.py``):

* ``psutil.disk_partitions(all=False)`` does **not** list these mounts.  psutil keeps only
  mounts whose fstype appears in ``/proc/filesystems`` *without* the ``nodev`` flag (plus
  zfs), and whose device is not empty/"none"; tmpfs is ``nodev``.
* ``psutil.disk_partitions(all=True)`` lists them as
  ``sdiskpart(device='tmpfs', mountpoint='<resolved path>', fstype='tmpfs', opts='rw,relatime,size=...k')``.
  ``device`` is whatever source string was given to mount (``TmpfsDrives(source=...)``,
  default ``"tmpfs"``) and is the same for every such mount, so it cannot identify a drive:
  the mountpoint must.
* ``psutil.disk_usage(mountpoint)`` reports the ``size=`` cap as total and ``cap - written``
  as free, like a real drive.

So drive discovery that must work in these benchmarks has to call
``disk_partitions(all=True)`` and then filter on its own (e.g. by configured mountpoint
prefixes), or accept tmpfs explicitly; ``all=False`` sees no drives at all.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pytest

from tests.support.loopdrives import (
    CleanupError,
    _check_relative,
    _Cleanable,
    _mkdirs,
    _rmdirs,
    _run,
    mounted_at,
    umount,
    unregister_active,
)


def _probe_tmpfs() -> str | None:
    """Return why tmpfs drives cannot be mounted here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root to mount tmpfs"
    missing = [t for t in ("mount", "umount") if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    return None


TMPFS_UNAVAILABLE_REASON: str | None = _probe_tmpfs()

#: Put on benchmarks/tests that need tmpfs drives.
requires_root_and_tmpfs = pytest.mark.skipif(
    TMPFS_UNAVAILABLE_REASON is not None,
    reason=f"tmpfs drives unavailable: {TMPFS_UNAVAILABLE_REASON}",
)


@dataclass(frozen=True)
class TmpfsDrive:
    """One mounted tmpfs "drive"; ``mountpoint`` is resolved, as in /proc/self/mounts."""

    source: str
    mountpoint: Path
    size: str


def make_sparse_file(path: Path, apparent_size: int, header: bytes = b"") -> None:
    """Create ``path`` with ``header`` at the start and ``apparent_size`` bytes in total.

    Only the header's pages are allocated, so a 100 GB "plot" costs 4 KiB of RAM on tmpfs;
    code that reads plot headers or stats sizes sees what it would on a real farm.
    """
    if len(header) > apparent_size:
        raise ValueError("header is longer than the file")
    with open(path, "xb") as f:
        f.write(header)
        f.truncate(apparent_size)


class TmpfsDrives(_Cleanable):
    """Context manager mounting one tmpfs per mountpoint (relative to ``root``).

    ``with TmpfsDrives(tmp_path, [f"enc{e}/drive{d}" ...], size="20T") as td:`` gives
    ``td.drives``.  Contents vanish on unmount, which is all a benchmark needs.
    """

    def __init__(
        self,
        root: Path,
        mountpoints: list[str],
        size: str = "20T",
        source: str = "tmpfs",
    ) -> None:
        rels = [_check_relative(m) for m in mountpoints]
        if len(set(rels)) != len(rels):
            raise ValueError(f"duplicate mountpoints in {mountpoints!r}")
        if not source or any(c.isspace() for c in source):
            raise ValueError(f"source must be a non-empty word, not {source!r}")
        self.root = Path(root).resolve()
        self.size = size
        self.source = source
        self._rels = rels
        self._drives: list[TmpfsDrive] = []
        self._mounted: dict[Path, bool] = {}
        self._created_dirs: list[Path] = []
        self._closed = True

    def __repr__(self) -> str:
        return f"TmpfsDrives(root={str(self.root)!r}, n={len(self._rels)}, size={self.size})"

    @property
    def drives(self) -> list[TmpfsDrive]:
        """The drives, in the order their mountpoints were given."""
        return list(self._drives)

    def __enter__(self) -> Self:
        self._activate()
        return self

    def _setup(self) -> None:
        for rel in self._rels:
            mountpoint = self.root / rel
            self._created_dirs.extend(_mkdirs(mountpoint))
            # Spelled as the kernel will list it, even if part of root is a symlink.
            mountpoint = mountpoint.resolve()
            if mounted_at(mountpoint):
                raise RuntimeError(f"{mountpoint} is already a mountpoint; refusing to stack")
            self._mount(mountpoint)
            self._drives.append(TmpfsDrive(self.source, mountpoint, self.size))

    def _mount(self, mountpoint: Path) -> None:
        # Recorded before mount returns: if we are interrupted right after the mount
        # syscall, close() still checks the kernel's table for our source at this path.
        self._mounted[mountpoint] = True
        try:
            _run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", self.source, str(mountpoint)])
        except BaseException:
            self._mounted[mountpoint] = self._ours_at(mountpoint)
            raise

    def _ours_at(self, mountpoint: Path) -> bool:
        """Whether a tmpfs with our source is mounted at ``mountpoint``."""
        return (self.source, "tmpfs") in mounted_at(mountpoint)

    def close(self) -> None:
        """Unmount everything mounted here and remove the directories made; idempotent."""
        if self._closed:
            return
        problems: list[str] = []
        for mountpoint, mounted in reversed(list(self._mounted.items())):
            if mounted and self._ours_at(mountpoint):
                try:
                    umount(mountpoint, repr(self))
                except Exception as exc:
                    problems.append(f"umount {mountpoint}: {exc}")
                    continue
            self._mounted[mountpoint] = False
        _rmdirs(self._created_dirs)
        if problems:
            # Stay registered: the atexit backstop gets another try at what is left.
            raise CleanupError(f"{self!r} leaked: " + "; ".join(problems))
        self._closed = True
        unregister_active(self)

    def _drive(self, drive: TmpfsDrive) -> Path:
        if drive not in self._drives:
            raise ValueError(f"{drive} does not belong to {self!r}")
        return drive.mountpoint

    def unmount(self, drive: TmpfsDrive) -> None:
        """Unmount ``drive`` mid-benchmark (its files are gone for good)."""
        mountpoint = self._drive(drive)
        umount(mountpoint, repr(self))
        self._mounted[mountpoint] = False

    def remount(self, drive: TmpfsDrive) -> None:
        """Mount a fresh, empty tmpfs at ``drive``'s mountpoint again."""
        mountpoint = self._drive(drive)
        if mounted_at(mountpoint):
            raise RuntimeError(f"{mountpoint} is still mounted")
        self._mount(mountpoint)
