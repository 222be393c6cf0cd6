"""Drives with an HDD-like write speed for benchmarks: each one its own throttled RAM disk.

Why: loop drives on this machine all sit on one virtual disk, so eight of them are one disk
eight times, and nothing tells a drive's speed from the machine's. A benchmark of a harvester
that writes several plots at once, each onto its own drive, needs drives that are each slow on
their own. So every drive here is:

    nbdkit memory SIZE --filter=rate rate=BITS burstiness=0.2   (a RAM disk with a write limit)
      -> nbdfuse <fuse dir>/disk --unix SOCKET                  (exposed as a file)
      -> losetup --direct-io=on                                 (a block device, no second page cache)
      -> mkfs.ext4 -m 0 (inode tables and journal written now)  -> mount <mountpoint>

Facts measured here (Debian 12, kernel 6.18, nbdkit 1.32.5, nbdfuse 1.14.2, 2 vCPUs) that the
code relies on:

* The rate filter counts BITS per second of NBD payload, read and write apart: ``rate=320M``
  (M = 2^20 there) gave 42.0 MB/s for ``dd bs=1M conv=fsync`` of 320 MiB onto the ext4; a rate
  given as a plain number of bits (320000000) is exactly 40 MB/s of payload.
* ``burstiness`` (the bucket, in seconds at the rate) defaults to 2 s: an idle drive then takes
  2 s worth of data at memory speed, which flatters every short or few-drive run. 0.2 s keeps
  the first seconds honest.
* mkfs.ext4 by default leaves inode tables and the journal to a background thread
  (``lazy_itable_init``) that would write for minutes, at the drive's rate, while we measure;
  ``lazy_itable_init=0,lazy_journal_init=0`` does it in mkfs. Zeroing reaches nbdkit as
  WRITE_ZEROES/TRIM, which the rate filter does not count, so this costs 0.08 s.
* A loop device on the nbdfuse file accepts ``--direct-io=on``. ``fstrim`` on the ext4 would
  reach the memory plugin as TRIM and free its RAM, but a freed page is slow to write again
  (see ALLOCATOR), so a drive is written full once (``prefill``) and never trimmed: each drive
  costs its size in RAM while it exists.
* A mount namespace made while a drive is mounted (any ``ip netns exec`` or ``unshare -m`` on
  this shared machine, e.g. another test run's sshd) holds a copy of its ext4 mount; with ``/``
  private here our unmount does not reach that copy, so the loop device (and through it the
  FUSE file) stays busy until that namespace ends. Seen: ``fusermount3 -u`` "Device or
  resource busy" after a clean umount, while another run's farm was up. So each root is first
  bound on itself and made shared (as NetnsFarm does with its root) unless it already sits on
  a shared mount: such copies are then slaves, and our unmounts propagate into them.
* ``losetup -d`` of a device still open only marks it to detach when the last user closes it,
  so ``fusermount3 -u`` right after it may fail busy for a moment: it is retried.
* nbdkit started with ``--exit-with-parent`` dies with the benchmark even on SIGKILL; the
  FUSE mount, loop device and ext4 mount do not, so ``close`` undoes them in reverse order
  (and the atexit backstop of tests/support/loopdrives.py calls ``close`` on a normal exit).

Set-up on Debian: ``apt-get install nbdkit libnbd-bin fuse3`` (``missing_tools()`` says what
is missing). Everything this class makes is its own: the nbdkit and nbdfuse processes (by
pid, through their Popen), the loop devices it attached, the mounts it made.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from tests.support.loopdrives import (
    CleanupError,
    _Cleanable,
    _run,
    _syncfs,
    mounted_at,
    umount,
    unregister_active,
)
from tests.support.waiting import DEADLINE

#: Debian packages giving the tools, for the set-up message.
PACKAGES = {"nbdkit": "nbdkit", "nbdfuse": "libnbd-bin", "fusermount3": "fuse3",
            "losetup": "mount", "mkfs.ext4": "e2fsprogs"}
#: The file ``prefill`` writes (no plot suffix: no scan takes it for a plot).
FILLER = ".throttled-drives-prefill"
#: The rate filter's bucket in seconds at the rate (its default of 2 s lets an idle drive burst).
BURSTINESS = 0.2
#: How nbdkit keeps a drive's bytes. A sparse array allocates on first write, which made a
#: fresh drive slower (4 drives: 112 MB/s fresh, 142 MB/s once written), so ``prefill`` writes
#: every drive full once; ``allocator=malloc,mlock=true`` (all of it allocated up front) gave
#: only 107 MB/s here.
ALLOCATOR: tuple[str, ...] = ()
_MKFS = ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0"]


def missing_tools() -> list[str]:
    """The tools this needs that are not installed, each with its Debian package."""
    return [f"{tool} (apt-get install {pkg})" for tool, pkg in PACKAGES.items() if shutil.which(tool) is None]


def rate_bits(bytes_per_second: float) -> int:
    """The rate filter's ``rate=`` for a payload speed in bytes per second (it counts bits)."""
    return int(bytes_per_second * 8)


@dataclass
class _Slot:
    """One drive's set-up progress, so clean-up undoes exactly the steps that happened."""

    name: str
    mountpoint: Path
    fuse_dir: Path
    socket: Path
    nbdkit: subprocess.Popen[bytes] | None = None
    nbdfuse: subprocess.Popen[bytes] | None = None
    device: str | None = None
    mounted: bool = False
    log: Path | None = None


@dataclass(frozen=True)
class ThrottledDrive:
    name: str
    mountpoint: Path
    device: str  # /dev/loopN: what drive discovery sees
    nbdkit_pid: int


@dataclass
class ThrottledDrives(_Cleanable):
    """``with ThrottledDrives(mount_root, fuse_root, ["drive0", ...], size, 40e6) as td:``.

    Mounts ext4 drives at ``mount_root/<name>`` (which may be inside a NetnsFarm root, so the
    harvester namespaces see them); the FUSE files live under ``fuse_root`` (outside it).
    """

    mount_root: Path
    fuse_root: Path
    names: Sequence[str]
    size_bytes: int
    bytes_per_second: float
    burstiness: float = BURSTINESS
    drives: list[ThrottledDrive] = field(default_factory=list)
    _slots: list[_Slot] = field(default_factory=list)
    _bound: list[Path] = field(default_factory=list)
    _closed: bool = True
    _owner_pid: int = 0

    def __enter__(self) -> Self:
        self._activate()
        return self

    # -- set-up -------------------------------------------------------------------------

    def _setup(self) -> None:
        for root in (self.mount_root, self.fuse_root):
            root.mkdir(parents=True, exist_ok=True)
            if not on_shared_mount(root):
                _run(["mount", "--bind", str(root), str(root)])
                self._bound.append(root)
                _run(["mount", "--make-shared", str(root)])
        for name in self.names:
            slot = _Slot(name, self.mount_root / name, self.fuse_root / name, self.fuse_root / f"{name}.sock",
                         log=self.fuse_root / f"{name}.log")
            self._slots.append(slot)
            self._start_server(slot)
        for slot in self._slots:
            self._wait_socket(slot)
            self._start_fuse(slot)
        for slot in self._slots:
            self._wait_fuse(slot)
            self._attach_and_mount(slot)
            assert slot.nbdkit is not None and slot.device is not None
            self.drives.append(ThrottledDrive(slot.name, slot.mountpoint.resolve(), slot.device, slot.nbdkit.pid))

    def _popen(self, slot: _Slot, argv: list[str]) -> subprocess.Popen[bytes]:
        assert slot.log is not None
        with open(slot.log, "ab") as log:
            # Own session: a Ctrl-C at the terminal reaches the benchmark, which unmounts first.
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def _start_server(self, slot: _Slot) -> None:
        slot.nbdkit = self._popen(slot, [
            "nbdkit", "--foreground", "--exit-with-parent", "--unix", str(slot.socket), "--filter=rate",
            "memory", f"size={self.size_bytes}", *ALLOCATOR, f"rate={rate_bits(self.bytes_per_second)}",
            f"burstiness={self.burstiness}",
        ])

    def _wait_socket(self, slot: _Slot) -> None:
        assert slot.nbdkit is not None
        self._wait(slot, slot.nbdkit, slot.socket.exists, "nbdkit socket")

    def _start_fuse(self, slot: _Slot) -> None:
        slot.fuse_dir.mkdir()
        slot.nbdfuse = self._popen(slot, ["nbdfuse", str(slot.fuse_dir / "disk"), "--unix", str(slot.socket)])

    def _wait_fuse(self, slot: _Slot) -> None:
        assert slot.nbdfuse is not None
        disk = slot.fuse_dir / "disk"

        def ready() -> bool:
            if not mounted_at(slot.fuse_dir):
                return False
            with contextlib.suppress(OSError):
                return disk.stat().st_size == self.size_bytes
            return False

        self._wait(slot, slot.nbdfuse, ready, "nbdfuse file")

    def _wait(self, slot: _Slot, proc: subprocess.Popen[bytes], ready: Any, what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not ready():
            if proc.poll() is not None:
                raise RuntimeError(f"{slot.name}: {what}: {proc.args[0]} exited {proc.returncode}: {self._log(slot)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{slot.name}: no {what} after {DEADLINE} s: {self._log(slot)}")
            time.sleep(0.01)

    @staticmethod
    def _log(slot: _Slot) -> str:
        try:
            return (slot.log.read_text(errors="replace").strip() if slot.log else "") or "(no output)"
        except OSError:
            return "(no log)"

    def _attach_and_mount(self, slot: _Slot) -> None:
        slot.device = _run(["losetup", "-f", "--show", str(slot.fuse_dir / "disk")]).stdout.strip()
        _run(["losetup", "--direct-io=on", slot.device])
        _run([*_MKFS, slot.device])
        slot.mountpoint.mkdir(parents=True, exist_ok=True)
        _run(["mount", slot.device, str(slot.mountpoint)])
        slot.mounted = True

    def prefill(self) -> None:
        """Write every drive full once, at once, and delete that: nbdkit has allocated its RAM.

        Untimed set-up: afterwards a write costs the same wherever ext4 puts it.
        """
        procs = [subprocess.Popen(["dd", "if=/dev/zero", f"of={drive.mountpoint / FILLER}", "bs=4M", "conv=fsync"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for drive in self.drives]
        for proc in procs:
            proc.communicate()  # ends with "No space left on device", which is the point
        for drive in self.drives:
            (drive.mountpoint / FILLER).unlink(missing_ok=True)
            _syncfs(drive.mountpoint)

    # -- between runs -------------------------------------------------------------------

    def sync(self) -> None:
        """Flush every drive (syncfs), so one run's write-back does not land in the next."""
        for drive in self.drives:
            _syncfs(drive.mountpoint)

    def memory_kib(self) -> int:
        """RAM the nbdkit servers hold now (sum of VmRSS), to show what the drives cost."""
        total = 0
        for slot in self._slots:
            if slot.nbdkit is None:
                continue
            with contextlib.suppress(OSError), open(f"/proc/{slot.nbdkit.pid}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        return total

    # -- clean-up -----------------------------------------------------------------------

    def close(self) -> None:
        """Unmount, detach, unmount the FUSE file, stop nbdfuse and nbdkit; every step runs."""
        if self._closed:
            return
        problems: list[str] = []
        for slot in reversed(self._slots):
            self._close_slot(slot, problems)
        if not problems:
            self._slots.clear()
            for root in reversed(self._bound):
                try:
                    umount(root, "throttled drives' shared bind")
                except Exception as exc:  # noqa: BLE001 - reported below
                    problems.append(f"umount {root}: {exc}")
            self._bound = [root for root in self._bound if mounted_at(root)]
        if problems:
            raise CleanupError(f"throttled drives leaked: {'; '.join(problems)}")
        self.drives.clear()
        self._closed = True
        unregister_active(self)

    def _close_slot(self, slot: _Slot, problems: list[str]) -> None:
        if slot.mounted:
            try:
                umount(slot.mountpoint, f"throttled drive {slot.name}")
                slot.mounted = False
            except Exception as exc:  # noqa: BLE001 - keep going, report all at the end
                problems.append(f"umount {slot.mountpoint}: {exc}")
                return  # the loop device and the FUSE file are still in use
        if slot.device is not None:
            proc = _run(["losetup", "-d", slot.device], check=False)
            if proc.returncode != 0:
                problems.append(f"losetup -d {slot.device}: {proc.stderr.strip()}")
                return
            slot.device = None
        problem = _fuse_unmount(slot.fuse_dir)
        if problem:
            problems.append(problem)
            return
        for proc in (slot.nbdfuse, slot.nbdkit):
            if proc is not None and not _stop(proc):
                problems.append(f"{proc.args[0]} pid {proc.pid} survived SIGKILL")
        slot.nbdfuse = slot.nbdkit = None
        with contextlib.suppress(OSError):
            slot.fuse_dir.rmdir()
        slot.socket.unlink(missing_ok=True)


def on_shared_mount(path: Path) -> bool:
    """Whether the mount holding ``path`` propagates (``shared:N`` in /proc/self/mountinfo)."""
    target = str(path.resolve())
    best, shared = "", False
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            mountpoint = fields[4].replace("\\040", " ")
            inside = target == mountpoint or target.startswith(mountpoint.rstrip("/") + "/")
            if inside and len(mountpoint) >= len(best):
                best = mountpoint
                shared = any(x.startswith("shared:") for x in fields[6:fields.index("-")])
    return shared


def _fuse_unmount(fuse_dir: Path) -> str | None:
    """``fusermount3 -u``, retried while the just-detached loop device still holds the file."""
    deadline = time.monotonic() + DEADLINE
    delay = 0.05
    while mounted_at(fuse_dir):
        proc = _run(["fusermount3", "-u", str(fuse_dir)], check=False)
        if proc.returncode == 0 or not mounted_at(fuse_dir):
            return None
        if time.monotonic() > deadline:
            return f"fusermount3 -u {fuse_dir}: {proc.stderr.strip()}"
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    return None


def _stop(proc: subprocess.Popen[bytes]) -> bool:
    """Let ``proc`` exit by itself (nbdfuse does once unmounted), else SIGTERM, then SIGKILL."""
    for action, grace in ((None, 2.0), (proc.terminate, 5.0), (proc.kill, DEADLINE)):
        if proc.poll() is not None:
            return True
        if action is not None:
            with contextlib.suppress(ProcessLookupError):
                action()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    return proc.poll() is not None

