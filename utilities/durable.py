"""Making a directory entry change (create, rename, unlink) survive a power cut.

A rename or unlink is only durable once the directory itself is fsynced; every writer that
replaces or deletes a file (exports, metrics, fstab, replaced plots, moved plots) needs the same
three lines, so they live here once.
"""

from __future__ import annotations

import os


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """fsync the directory ``path``; OSError as ``os.open``/``os.fsync`` raise it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
