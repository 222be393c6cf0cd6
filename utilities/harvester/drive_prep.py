"""Turn a brand-new, empty disk into a mounted plot drive (the original tool's ``auto_drive``).

``prepare_drive`` refuses anything that looks used, asks before erasing, then: one GPT
partition over the whole disk, ``mkfs``, an fstab line by UUID, ``mount``, and optionally the
mountpoint in chia's ``harvester.plot_directories``. This module does the device work; the
mountpoint choice and the fstab and chia config edits are ``drive_registration.py``'s.

Every check that can refuse runs *before* the disk is touched (including planning the fstab and
chia config edits), so a refusal leaves the disk, fstab and config exactly as they were.

Facts measured on the development machine (Debian 12, kernel 6.18, util-linux 2.38.1, parted
3.5, no udev, ``/dev`` is devtmpfs):

* ``parted`` re-reads the table itself (BLKPG), even on a loop device attached without ``-P``;
  the kernel then creates ``/dev/loopNp1`` in devtmpfs.  ``partx -u`` is still run to be sure.
  Without udev nothing else creates nodes, so if devtmpfs is absent (a static ``/dev``) the
  node is made with ``mknod`` from ``/sys/class/block/<part>/dev``; a node whose major:minor
  does not match sysfs is never used.
* ``parted ... 0% 100%`` on a small loop device starts at sector 34 and warns about alignment;
  ``1MiB 100%`` is aligned everywhere and loses nothing that matters.
* ``wipefs --no-act --noheadings`` prints nothing and ``blkid -p`` exits 2 on an all-zero disk.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from utilities.errors import DriveError
from utilities.harvester.drive_registration import (
    add_fstab_entry,
    add_plot_directory,
    next_free_mountpoint,
    plan_plot_directory_edit,
    unescape_field,
)
from utilities.text import binary_size

FSTYPES = ("xfs", "ext4")

_MKFS: dict[str, list[str]] = {
    "xfs": ["mkfs.xfs", "-q", "-f"],
    # -m 0: no root-reserved blocks; a plot drive is not a system disk.
    "ext4": ["mkfs.ext4", "-q", "-F", "-m", "0"],
}

_PARTITION_WAIT_S = 10.0

Runner = Callable[..., subprocess.CompletedProcess]


@dataclass(frozen=True)
class PreparedDrive:
    """What ``prepare_drive`` made: the whole-disk device, its partition, and where it lives."""

    device: str
    partition: str
    uuid: str
    fstype: str
    mountpoint: Path


# --- small helpers ---------------------------------------------------------------------------


def _cmd(run: Runner, device: str, args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = run(list(args), capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise DriveError(f"{device}: cannot run {args[0]} ({exc.strerror}); is it installed?") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip().replace("\n", "; ")
        raise DriveError(f"{device}: {' '.join(args)} failed (exit {proc.returncode}): {detail}")
    return proc


def _sysfs(device: str) -> Path:
    return Path("/sys/class/block") / Path(os.path.realpath(device)).name


def _partitions(device: str) -> list[str]:
    """Kernel names of the partitions of ``device`` (from sysfs), e.g. ``["loop8p1"]``."""
    base = _sysfs(device)
    try:
        return sorted(p.name for p in base.iterdir() if (p / "partition").is_file())
    except OSError:
        return []


def _size_bytes(device: str) -> int:
    try:
        return int((_sysfs(device) / "size").read_text().strip()) * 512
    except (OSError, ValueError):
        return 0


def _mount_sources() -> list[tuple[str, str]]:
    """``(real source path, mountpoint)`` for every mount of this process's namespace."""
    out: list[tuple[str, str]] = []
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].startswith("/"):
                out.append((os.path.realpath(unescape_field(parts[0])), unescape_field(parts[1])))
    return out


# --- refusal checks --------------------------------------------------------------------------


def check_blank_device(device: str, *, protected: Sequence[str] = (), run: Runner = subprocess.run) -> None:
    """Raise ``DriveError`` unless ``device`` is an unused, unpartitioned, signature-free whole disk."""
    real = os.path.realpath(device)
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        raise DriveError(f"{device}: refusing: cannot stat it ({exc.strerror})") from exc
    if not stat.S_ISBLK(mode):
        raise DriveError(f"{device}: refusing: not a block device")
    if real in {os.path.realpath(p) for p in protected}:
        raise DriveError(f"{device}: refusing: it is in the protected list")
    if (_sysfs(real) / "partition").exists():
        raise DriveError(f"{device}: refusing: it is a partition, not a whole disk")
    if _size_bytes(real) == 0:
        raise DriveError(f"{device}: refusing: it has size 0 (no medium / detached loop device)")

    parts = _partitions(real)
    ours = {real} | {f"/dev/{p}" for p in parts}
    for src, mp in _mount_sources():
        if src in ours:
            raise DriveError(f"{device}: refusing: {src} is mounted at {mp}")
    holders = _sysfs(real) / "holders"
    if holders.is_dir() and any(holders.iterdir()):
        names = ", ".join(sorted(h.name for h in holders.iterdir()))
        raise DriveError(f"{device}: refusing: held by {names} (device-mapper/RAID/LVM)")
    if parts:
        raise DriveError(f"{device}: refusing: it already has partitions ({', '.join(parts)})")

    proc = _cmd(run, device, ["wipefs", "--no-act", "--noheadings", real], check=False)
    if proc.returncode != 0:
        raise DriveError(f"{device}: refusing: wipefs could not probe it: {(proc.stderr or '').strip()}")
    if proc.stdout.strip():
        kinds = sorted({line.split()[-1] for line in proc.stdout.splitlines() if line.split()})
        raise DriveError(
            f"{device}: refusing: it has signatures ({', '.join(kinds)}); wipe it yourself if it is unwanted"
        )
    proc = _cmd(run, device, ["blkid", "-p", real], check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        raise DriveError(f"{device}: refusing: blkid finds {proc.stdout.strip()}")
    if proc.returncode not in (0, 2):
        raise DriveError(f"{device}: refusing: blkid could not probe it (exit {proc.returncode})")
    proc = _cmd(run, device, ["lsblk", "-n", "-o", "NAME", real], check=False)
    if proc.returncode == 0 and len([ln for ln in proc.stdout.splitlines() if ln.strip()]) > 1:
        raise DriveError(f"{device}: refusing: lsblk shows children")

    try:
        fd = os.open(real, os.O_RDONLY | os.O_EXCL)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise DriveError(f"{device}: refusing: it is in use (exclusive open: device busy)") from exc
        raise DriveError(f"{device}: refusing: cannot open it ({exc.strerror})") from exc
    os.close(fd)


# --- partition node --------------------------------------------------------------------------


def _wait_partition_node(device: str, run: Runner) -> str:
    """Return ``/dev/<part1>`` once the kernel knows partition 1 and its node matches sysfs."""
    _cmd(run, device, ["partx", "-u", device], check=False)
    deadline = time.monotonic() + _PARTITION_WAIT_S
    base = _sysfs(device)
    while True:
        for name in _partitions(device):
            if (base / name / "partition").read_text().strip() != "1":
                continue
            major, minor = (int(x) for x in (base / name / "dev").read_text().strip().split(":"))
            node = Path("/dev") / name
            try:
                st = node.stat()
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(major, minor):
                return str(node)
            if st is None and time.monotonic() > deadline - _PARTITION_WAIT_S / 2:
                # No udev here and no devtmpfs entry after a while: make the node ourselves.
                os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(major, minor))
                continue
        if time.monotonic() > deadline:
            raise DriveError(f"{device}: partition 1 did not appear (no matching node in /dev after partx -u)")
        time.sleep(0.1)


# --- the whole thing -------------------------------------------------------------------------


def prepare_drive(
    device: str,
    *,
    layout_root: Path,
    fstype: str,
    confirm: Callable[[str], bool],
    fstab: Path = Path("/etc/fstab"),
    protected: Sequence[str] = (),
    chia_config: Path | None = None,
    run: Runner = subprocess.run,
) -> PreparedDrive:
    """Partition, format, fstab and mount a blank disk at the next free ``layout_root/driveN``.

    Raises ``DriveError`` (one line naming the device) and changes nothing if the device is not
    a blank, unused whole disk, if ``confirm`` says no, or if the fstab/chia config edits could
    not be made.  ``confirm`` receives the prompt; pass ``lambda _: True`` for ``--yes``.
    """
    if fstype not in FSTYPES:
        raise DriveError(f"{device}: unsupported filesystem type {fstype!r} (use one of {', '.join(FSTYPES)})")
    layout_root = Path(layout_root).resolve()
    fstab = Path(fstab)
    check_blank_device(device, protected=protected, run=run)
    real = os.path.realpath(device)
    mountpoint = next_free_mountpoint(layout_root, fstab)
    if mountpoint.exists():
        raise DriveError(f"{device}: refusing: mountpoint {mountpoint} already exists")
    if chia_config is not None:
        # Fail on an unexpected config layout now, before anything is erased.
        add_text = Path(chia_config).read_text(encoding="utf-8") if Path(chia_config).exists() else None
        if add_text is None:
            raise DriveError(f"{device}: chia config {chia_config} does not exist")
        try:
            plan_plot_directory_edit(add_text, str(mountpoint))
        except DriveError as exc:
            raise DriveError(f"{device}: refusing before erasing: {exc}") from exc

    size = binary_size(_size_bytes(real))
    prompt = (
        f"This will ERASE {device} ({size}): new GPT partition table, {fstype} filesystem, "
        f"mounted at {mountpoint}. Type yes to continue"
    )
    if not confirm(prompt):
        raise DriveError(f"{device}: not confirmed; nothing was changed")

    _cmd(run, device, ["parted", "-s", real, "mklabel", "gpt", "mkpart", "primary", "1MiB", "100%"])
    try:
        partition = _wait_partition_node(real, run)
        _cmd(run, device, [*_MKFS[fstype], partition])
        uuid = _cmd(run, device, ["blkid", "-p", "-s", "UUID", "-o", "value", partition]).stdout.strip()
        if not uuid:
            raise DriveError(f"{device}: blkid found no UUID on {partition} after mkfs")
        mountpoint.mkdir(parents=True, exist_ok=False)
        add_fstab_entry(fstab, uuid, mountpoint, fstype)
        # Explicit source and type: "mount MOUNTPOINT" would consult /etc/fstab, not ``fstab``.
        _cmd(run, device, ["mount", "-t", fstype, "-o", "defaults,nofail", partition, str(mountpoint)])
        if chia_config is not None:
            add_plot_directory(Path(chia_config), mountpoint)
    except DriveError as exc:
        raise DriveError(
            f"{exc} (stopped part way: {device} now has a GPT partition table; check fstab and mounts)"
        ) from exc
    except OSError as exc:
        raise DriveError(f"{device}: {exc} (stopped part way: {device} now has a GPT partition table)") from exc
    return PreparedDrive(device=device, partition=partition, uuid=uuid, fstype=fstype, mountpoint=mountpoint)
