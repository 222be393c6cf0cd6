"""What the harvester's receivers do during a benchmark run: memory per receiver, drives in use.

Why: the plot sink's claims are "one receiver per drive, several drives at once, memory flat
per receiver". Throughput alone does not show them, so a thread polls /proc every 0.1 s for
the processes in the harvester's network namespace and records, per process, its peak RSS
(VmHWM) and, per poll, which drive each one has a file open on. Sampling can miss a process
that lives less than a poll, and the drive count is of files open at that instant; both are
good enough to show "N drives written at once" and "no drive with two writers".
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def process_label(pid: int) -> str | None:
    """``receive_plot.py`` for a Python script, else the program's name; None when gone."""
    raw = _read(f"/proc/{pid}/cmdline")
    if not raw:
        return None
    argv = [a for a in raw.split("\0") if a]
    if not argv:
        return None
    prog = os.path.basename(argv[0])
    if prog.startswith("python"):
        script = next((a for a in argv[1:] if not a.startswith("-")), "")
        return os.path.basename(script) or prog
    return prog.split(":")[0]  # "sshd: root@notty" -> "sshd"


def vm_hwm_kib(pid: int) -> int | None:
    status = _read(f"/proc/{pid}/status")
    if status is None:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


@dataclass
class WatchResult:
    peak_kib: dict[int, tuple[str, int]]  # pid -> (label, VmHWM)
    max_drives_at_once: int  # distinct drives with a file open for a receiver at one poll
    max_writers_per_drive: int  # most processes with a file open on one drive at one poll
    drives_used: set[str]

    def peaks_of(self, label: str) -> list[int]:
        """VmHWM in KiB of every process with this label, biggest first."""
        return sorted((kib for lab, kib in self.peak_kib.values() if lab == label), reverse=True)


@dataclass
class ReceiverWatch:
    """Start before a run, ``stop()`` after it. ``netns`` is (st_dev, st_ino) of the namespace."""

    netns: tuple[int, int]
    drives: dict[str, Path]  # name -> mountpoint
    exclude: set[int] = field(default_factory=set)
    interval: float = 0.1
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _peaks: dict[int, tuple[str, int]] = field(default_factory=dict)
    _max_drives: int = 0
    _max_writers: int = 0
    _used: set[str] = field(default_factory=set)

    def start(self) -> ReceiverWatch:
        # Processes of the namespace that exist now (its sshd) are not receivers of this run.
        self.exclude |= set(self._pids_in_netns())
        self._thread = threading.Thread(target=self._loop, name="receiver-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> WatchResult:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return WatchResult(dict(self._peaks), self._max_drives, self._max_writers, set(self._used))

    def _loop(self) -> None:
        while True:
            self.tick()
            if self._stop.wait(self.interval):
                self.tick()
                return

    def _pids_in_netns(self) -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == self.netns:
                found.append(int(entry))
        return found

    def _drive_of(self, target: str) -> str | None:
        for name, mountpoint in self.drives.items():
            if target.startswith(f"{mountpoint}/"):
                return name
        return None

    def tick(self) -> None:
        writers: dict[str, int] = {}
        for pid in self._pids_in_netns():
            if pid in self.exclude:
                continue
            label, hwm = process_label(pid), vm_hwm_kib(pid)
            if label is None or hwm is None:
                continue
            old = self._peaks.get(pid)
            if old is None or old[0] != label or hwm > old[1]:
                self._peaks[pid] = (label, hwm)
            on: set[str] = set()
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    drive = self._drive_of(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except OSError:
                    continue
                if drive is not None:
                    on.add(drive)
            for drive in on:
                writers[drive] = writers.get(drive, 0) + 1
        self._used |= set(writers)
        self._max_drives = max(self._max_drives, len(writers))
        self._max_writers = max(self._max_writers, max(writers.values(), default=0))


def mib(kib: int) -> float:
    return kib / 1024


def peak_summary(peaks: Sequence[int]) -> str:
    """``"18.4 (x4)"``: the biggest receiver's VmHWM in MiB and how many receivers were seen."""
    return f"{mib(peaks[0]):.1f} (x{len(peaks)})" if peaks else "-"
