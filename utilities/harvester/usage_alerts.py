"""Disk usage alerts for plotting temp and output directories, with hysteresis.

A plotting disk hovers around any single threshold as temp files come and go, and a plain
"above the mark" alert would then mail the farmer every few minutes. So an alert is sent when
usage reaches the critical mark and is not sent again until usage has fallen below a lower
clear mark first. ``usage_alert_active`` decides that (pure); ``measure_usage`` does the I/O.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class DirectoryUsage:
    """One filesystem holding some of the watched directories (each filesystem counted once)."""

    directory: str  # the first watched directory found on it
    role: str  # "temp" or "output"
    total_bytes: int
    free_bytes: int

    @property
    def used_percent(self) -> float:
        if self.total_bytes <= 0:
            return 0.0
        return 100.0 * (self.total_bytes - self.free_bytes) / self.total_bytes

    @property
    def alert_key(self) -> str:
        return f"disk_usage:{self.directory}"


def usage_alert_active(was_active: bool, used_percent: float, critical_percent: float, clear_percent: float) -> bool:
    """Pure hysteresis: whether the alert condition holds now.

    Inactive -> active at ``critical_percent`` or above; active stays active until usage is
    below ``clear_percent``. Between the two marks the previous state holds, so a disk that
    hovers around the critical mark alerts once, not on every crossing.
    """
    if was_active:
        return used_percent >= clear_percent
    return used_percent >= critical_percent


def measure_usage(temp_patterns: Iterable[str], output_patterns: Iterable[str]) -> list[DirectoryUsage]:
    """Usage of every filesystem holding a watched directory (globs); missing ones are skipped.

    Free space is what an unprivileged plotter can use (``f_bavail``), like ``df``'s.
    """
    found: list[DirectoryUsage] = []
    seen_devices: set[int] = set()
    for role, patterns in (("temp", temp_patterns), ("output", output_patterns)):
        for pattern in patterns:
            for directory in sorted(glob.glob(os.path.expanduser(pattern))):
                try:
                    st = os.stat(directory)
                    if st.st_dev in seen_devices or not stat.S_ISDIR(st.st_mode):
                        continue
                    info = os.statvfs(directory)
                except OSError:
                    continue
                seen_devices.add(st.st_dev)
                total = info.f_blocks * info.f_frsize
                used = (info.f_blocks - info.f_bfree) * info.f_frsize
                # df's rule: usage counts against what non-root users can have (used + avail).
                usable_total = used + info.f_bavail * info.f_frsize
                found.append(DirectoryUsage(os.path.abspath(directory), role, usable_total or total,
                                            info.f_bavail * info.f_frsize))
    return found
