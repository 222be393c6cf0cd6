"""Writes that survive a power cut: the one atomic file write, and the directory fsync.

A reader (a plotter fetching the export, node_exporter, sshd running ``receive_plot.sh``,
``mount -a`` reading fstab) must see the old file or the new one, never a part, and after a
power cut the new file must still be there: a rename or unlink is only durable once the
directory itself is fsynced. Every writer that replaces or deletes a file (exports, metrics,
the receive script, fstab, chia's config, replaced plots, moved plots) goes through here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

#: What ``fsync`` on a directory says on a filesystem that cannot do it (PostgreSQL ignores the
#: same there); the rename has happened by then, so the write stands.
_DIRECTORY_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EOPNOTSUPP})


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """fsync the directory ``path``; OSError as ``os.open``/``os.fsync`` raise it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, *, mode: int | None = None, make_parents: bool = False) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8): old or new, never a part.

    A hidden temporary file in the same directory is written, fsynced and renamed over
    ``path``, then the directory is fsynced. ``mode`` sets the file's mode; without it the file
    keeps the mode and owner of the one it replaces (0644 for a new file). ``path`` itself is
    replaced: resolve it first to write through a symlink. ``make_parents`` creates missing
    directories. On any failure the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    previous: os.stat_result | None = None
    if mode is None:
        with contextlib.suppress(FileNotFoundError):
            previous = path.stat()
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            elif previous is not None:
                os.fchmod(handle.fileno(), stat.S_IMODE(previous.st_mode))
                with contextlib.suppress(PermissionError):
                    os.fchown(handle.fileno(), previous.st_uid, previous.st_gid)
            else:
                os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:
        fsync_directory(path.parent)
    except OSError as exc:
        if exc.errno not in _DIRECTORY_FSYNC_UNSUPPORTED:
            raise
