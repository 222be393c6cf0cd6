"""Turn a brand-new, empty disk into a mounted plot drive (the original tool's ``auto_drive``).

``prepare_drive`` refuses anything that looks used, asks before erasing, then: one GPT
partition over the whole disk, ``mkfs``, an fstab line by UUID, ``mount``, and optionally the
mountpoint in chia's ``harvester.plot_directories``.

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

import contextlib
import errno
import os
import re
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from utilities.durable import fsync_directory
from utilities.errors import DriveError
from utilities.harvester.reports import binary_size

FSTYPES = ("xfs", "ext4")

_MKFS: dict[str, list[str]] = {
    "xfs": ["mkfs.xfs", "-q", "-f"],
    # -m 0: no root-reserved blocks; a plot drive is not a system disk.
    "ext4": ["mkfs.ext4", "-q", "-F", "-m", "0"],
}

_DRIVE_DIR = re.compile(r"^drive(\d+)$")
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


def _unescape(field: str) -> str:
    r"""Decode the octal escapes (``\040``...) used in /proc/self/mounts and fstab."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _escape(field: str) -> str:
    """Escape whitespace and backslashes for an fstab field."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in field)


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
                out.append((os.path.realpath(_unescape(parts[0])), _unescape(parts[1])))
    return out


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file in the same dir, fsync, rename; keep mode/owner."""
    path = path.resolve()
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if st is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
                with contextlib.suppress(PermissionError):
                    os.fchown(f.fileno(), st.st_uid, st.st_gid)
            else:
                os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


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


# --- mountpoint & fstab ----------------------------------------------------------------------


def _fstab_entries(fstab: Path) -> list[tuple[str, str]]:
    """``(spec, mountpoint)`` of each non-comment fstab line; missing file = no entries."""
    try:
        text = fstab.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            out.append((_unescape(fields[0]), _unescape(fields[1])))
    return out


def next_free_mountpoint(layout_root: Path, fstab: Path | None = None) -> Path:
    """``layout_root/driveN`` with N one above the highest ``drive<digits>`` dir (or fstab entry) there."""
    layout_root = Path(layout_root)
    numbers = [0]
    if layout_root.is_dir():
        numbers += [int(m.group(1)) for p in layout_root.iterdir() if p.is_dir() and (m := _DRIVE_DIR.match(p.name))]
    if fstab is not None:
        for _, mp in _fstab_entries(fstab):
            p = Path(mp)
            if p.parent == layout_root and (m := _DRIVE_DIR.match(p.name)):
                numbers.append(int(m.group(1)))
    return layout_root / f"drive{max(numbers) + 1}"


def add_fstab_entry(fstab: Path, uuid: str, mountpoint: Path, fstype: str) -> bool:
    """Append ``UUID=<uuid> <mountpoint> <fstype> defaults,nofail 0 0`` unless already there.

    Returns True if the file was changed.  An existing line for the same UUID or mountpoint
    means "already done" and nothing is written.
    """
    for spec, mp in _fstab_entries(fstab):
        if spec == f"UUID={uuid}" or os.path.normpath(mp) == os.path.normpath(str(mountpoint)):
            return False
    try:
        data = fstab.read_bytes()
    except FileNotFoundError:
        data = b""
    if data and not data.endswith(b"\n"):
        data += b"\n"
    line = f"UUID={uuid} {_escape(str(mountpoint))} {fstype} defaults,nofail 0 0\n"
    _atomic_write(fstab, data + line.encode())
    return True


# --- chia config -----------------------------------------------------------------------------

_KEY_LINE = re.compile(r"^(?P<indent>[ ]*)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*?)(?P<nl>\r?\n)?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_blank_or_comment(line: str) -> bool:
    s = line.strip()
    return not s or s.startswith("#")


def plan_plot_directory_edit(text: str, mountpoint: str) -> str | None:
    """Return ``text`` with ``- mountpoint`` added to ``harvester.plot_directories``, or None if present.

    Only a minimal textual insertion is made (comments, anchors, order stay byte for byte); the
    result is re-parsed and must equal the original with just that item appended, otherwise
    ``DriveError`` is raised and the caller must not write anything.
    """
    how = f"add '- {mountpoint}' under harvester: plot_directories: by hand"
    try:
        before = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DriveError(f"chia config does not parse ({exc}); {how}") from exc
    harvester = before.get("harvester") if isinstance(before, dict) else None
    if not isinstance(harvester, dict) or "plot_directories" not in harvester:
        raise DriveError(f"chia config has no harvester.plot_directories key; {how}")
    current = harvester["plot_directories"]
    if current is None:
        current = []
    if not isinstance(current, list):
        raise DriveError(f"chia config harvester.plot_directories is not a list; {how}")
    if mountpoint in current:
        return None

    lines = text.splitlines(keepends=True)
    # The top-level "harvester:" line (block mapping, nothing after the colon but a comment).
    starts = [i for i, ln in enumerate(lines) if re.match(r"^harvester:[ \t]*(#.*)?\r?\n?$", ln)]
    if len(starts) != 1:
        raise DriveError(f"chia config: cannot find a single block-style 'harvester:' line; {how}")
    h = starts[0]
    end = len(lines)
    for j in range(h + 1, len(lines)):
        if not _is_blank_or_comment(lines[j]) and _indent(lines[j]) == 0:
            end = j
            break
    body = [j for j in range(h + 1, end) if not _is_blank_or_comment(lines[j])]
    if not body:
        raise DriveError(f"chia config: empty harvester section; {how}")
    child_indent = _indent(lines[body[0]])
    keys = []
    for j in body:
        m = _KEY_LINE.match(lines[j])
        if m and m.group("key") == "plot_directories" and len(m.group("indent")) == child_indent:
            keys.append((j, m))
    if len(keys) != 1:
        raise DriveError(f"chia config: cannot find plot_directories directly under harvester; {how}")
    k, m = keys[0]
    nl = m.group("nl") or "\n"
    rest = m.group("rest").strip()
    item = yaml.safe_dump([mountpoint], default_flow_style=False, width=float("inf")).rstrip("\n")
    if "\n" in item:
        raise DriveError(f"chia config: mountpoint {mountpoint!r} needs multi-line YAML; {how}")

    if re.fullmatch(r"\[\s*\](\s+#.*)?", rest):
        # Empty flow list (chia's initial config): turn it into a one-item block list.
        comment = rest[rest.index("]") + 1 :]
        new_lines = (
            lines[:k]
            + [f"{' ' * child_indent}plot_directories:{comment}{nl}", f"{' ' * child_indent}{item}{nl}"]
            + lines[k + 1 :]
        )
    elif rest and not rest.startswith("#"):
        raise DriveError(f"chia config: plot_directories is written in flow style or with an anchor ({rest!r}); {how}")
    else:
        # Block list: items are lines indented >= the key ("- x" at the key's own indent is
        # PyYAML's default).  Insert after the last such non-comment line.
        last = k
        item_indent: int | None = None
        for j in range(k + 1, end):
            ln = lines[j]
            if _is_blank_or_comment(ln):
                continue
            ind = _indent(ln)
            if ind > child_indent or (ind == child_indent and ln.lstrip(" ").startswith("- ")):
                if item_indent is None and ln.lstrip(" ").startswith("-"):
                    item_indent = ind
                last = j
            else:
                break
        if item_indent is None:
            item_indent = child_indent
        if not lines[last].endswith("\n"):
            lines[last] += nl
        new_lines = lines[: last + 1] + [f"{' ' * item_indent}{item}{nl}"] + lines[last + 1 :]

    new_text = "".join(new_lines)
    try:
        after = yaml.safe_load(new_text)
    except yaml.YAMLError as exc:
        raise DriveError(f"chia config: automatic edit would not parse; {how}") from exc
    harvester["plot_directories"] = [*current, mountpoint]  # ``before`` is now what the edit must give
    if after != before:
        raise DriveError(f"chia config: automatic edit changed more than plot_directories; {how}")
    return new_text


def add_plot_directory(chia_config: Path, mountpoint: Path | str) -> bool:
    """Add ``mountpoint`` to chia's ``harvester.plot_directories``; True if the file changed."""
    chia_config = Path(chia_config)
    try:
        raw = chia_config.read_bytes()
    except OSError as exc:
        raise DriveError(f"cannot read chia config {chia_config}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DriveError(f"chia config {chia_config} is not UTF-8") from exc
    new_text = plan_plot_directory_edit(text, str(mountpoint))
    if new_text is None:
        return False
    _atomic_write(chia_config, new_text.encode("utf-8"))
    return True


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
