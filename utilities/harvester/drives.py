"""Plot drives: find them, name them, and count what is on them.

Pure helpers first, so the rules can be tested without disks: ``select_plot_mounts`` picks
the mounts that are plot drives, ``mount_of`` finds the mount holding a directory,
``assign_names`` gives drives their short names and ``find_drive`` resolves a user's drive
argument. Then the I/O: ``discover_drives`` asks psutil, the filesystem and udev (or blkid)
which drives exist, and ``scan_drives`` counts plot files on them, reading a plot's header only
when the state database has not seen that file (same path, size and mtime) before: a big
harvester has tens of thousands of plots and the minute job must stay well under a second.
Plot groups (``.gplot``) are counted too (they hold plots that farm), as plots of unknown kind
unless their header is a layout already seen (``plots.parse_plot_group_header``).
Which drive receives the next plot is decided in ``drive_choice.py``, over the scanned drives.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import psutil
from natsort import natsorted

from utilities.errors import DriveError, PlotFileError, UsageError
from utilities.plots import (
    FORMAT_PLOT_GROUP,
    is_counted_plot_name,
    is_plot_group_name,
    plot_id_from_name,
    read_plot_header,
)
from utilities.settings.harvester import DriveDiscoverySettings
from utilities.state import CachedHeader

DAY_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Mount:
    """One line of the mount table, as psutil reports it."""

    device: str
    mountpoint: str
    fstype: str


@dataclass(frozen=True)
class DriveLocation:
    """A plot drive: one filesystem, and the directories on it that hold plots."""

    name: str  # short name used by -off/-on and in reports ("drive6")
    mountpoint: str
    device: str
    fstype: str
    plot_dirs: tuple[str, ...]
    uuid: str | None = None

    @property
    def receive_dir(self) -> str:
        """Where incoming plots are written: the first plot directory of the drive."""
        return self.plot_dirs[0]


@dataclass(frozen=True)
class DriveState:
    """A drive after scanning: space and plot counts, the data every decision and report uses."""

    location: DriveLocation
    total_bytes: int
    used_bytes: int
    free_bytes: int
    plots_og: int = 0
    plots_pool: int = 0
    plots_unknown: int = 0
    plot_bytes: int = 0
    plots_last_24h: int = 0
    mounted: bool = True
    # The plot id (hex) of each counted plot, None where unknown: the export's compact id
    # list (utilities/harvester/plot_ids.py) that -fr finds duplicates in.
    plot_ids: tuple[str | None, ...] = ()

    @property
    def name(self) -> str:
        return self.location.name

    @property
    def plot_count(self) -> int:
        return self.plots_og + self.plots_pool + self.plots_unknown

    def free_slots(self, plot_size: int, reserve_slots: int = 0) -> int:
        return max(0, self.free_bytes // plot_size - reserve_slots)


@dataclass
class ScanResult:
    drives: list[DriveState]
    header_upserts: dict[str, CachedHeader] = field(default_factory=dict)
    header_deletes: list[str] = field(default_factory=list)
    headers_read: int = 0
    seen_paths: set[str] = field(default_factory=set)
    dir_mtimes: dict[str, int] = field(default_factory=dict)


# -- pure: which mounts are plot drives, and their names ----------------------------------------


def select_plot_mounts(mounts: Iterable[Mount], discovery: DriveDiscoverySettings) -> list[Mount]:
    """Mounts whose device and mountpoint both match a configured pattern, natural-sorted.

    Device names are not unique (every tmpfs is "tmpfs"), so this does not de-duplicate:
    ``discover_drives`` takes each filesystem once by its ``st_dev`` (bind mounts count once).
    """
    return natsorted(
        (
            m
            for m in mounts
            if m.fstype not in discovery.exclude_fstypes
            and any(fnmatch.fnmatchcase(m.device, p) for p in discovery.device_patterns)
            and any(fnmatch.fnmatchcase(m.mountpoint, p) for p in discovery.mountpoint_patterns)
        ),
        key=lambda m: m.mountpoint,
    )


def mount_of(path: str, mounts: Sequence[Mount]) -> Mount | None:
    """The mount holding ``path``: the longest mountpoint that is a prefix of it."""
    best: Mount | None = None
    for mount in mounts:
        mp = mount.mountpoint.rstrip("/") or "/"
        inside = path == mp or path.startswith(mp + "/") or mp == "/"
        if inside and (best is None or len(mp) > len(best.mountpoint.rstrip("/") or "/")):
            best = mount
    return best


def assign_names(mountpoints: Sequence[str]) -> dict[str, str]:
    """Short drive names: the last path component ("drive6"), or the whole path if not unique."""
    counts: dict[str, int] = {}
    for mp in mountpoints:
        base = os.path.basename(mp.rstrip("/")) or mp
        counts[base] = counts.get(base, 0) + 1
    return {
        mp: (base if counts[base] == 1 else mp)
        for mp in mountpoints
        for base in [os.path.basename(mp.rstrip("/")) or mp]
    }


def find_drive(drives: Sequence[DriveLocation], wanted: str) -> DriveLocation:
    """Resolve the user's drive argument (short name or mountpoint) or raise DriveError.

    A blank name is refused before matching: stripped of its slashes, a drive mounted at ``/``
    would otherwise match it, and ``-off ''`` would take that drive offline.
    """
    if not wanted.strip():
        raise UsageError("a drive name must not be empty")
    cleaned = wanted.rstrip("/") or wanted
    for drive in drives:
        if cleaned in (drive.name, drive.mountpoint.rstrip("/"), os.path.basename(drive.mountpoint)):
            return drive
    known = ", ".join(d.name for d in drives) or "none found"
    raise DriveError(f"drive {wanted!r} is not a mounted plot drive on this harvester (plot drives: {known})")


# -- discovery (I/O) ----------------------------------------------------------------------------


def current_mounts() -> list[Mount]:
    return [Mount(p.device, p.mountpoint, p.fstype) for p in psutil.disk_partitions(all=True)]


def uuid_by_device(by_uuid_dir: str = "/dev/disk/by-uuid") -> dict[str, str]:
    """Map real device paths to filesystem UUIDs from udev's symlinks (no disk I/O, no root)."""
    result: dict[str, str] = {}
    try:
        names = os.listdir(by_uuid_dir)
    except OSError:
        return result
    for uuid in names:
        try:
            result[os.path.realpath(os.path.join(by_uuid_dir, uuid))] = uuid
        except OSError:
            continue
    return result


def probe_uuids(devices: Sequence[str]) -> dict[str, str]:
    """Ask blkid for the UUIDs of ``devices`` in one call (for machines without udev links).

    Probing reads superblocks, so callers cache the answer: a mounted filesystem keeps its UUID.
    """
    if not devices:
        return {}
    try:
        out = subprocess.run(
            ["blkid", "-s", "UUID", "-o", "export", *devices],
            capture_output=True, text=True, timeout=30, check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    result: dict[str, str] = {}
    device = None
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key == "DEVNAME":
            device = os.path.realpath(value)
        elif key == "UUID" and device:
            result[device] = value
    return result


UuidLookup = Callable[[Sequence[str]], dict[str, str]]


def discover_drives(
    discovery: DriveDiscoverySettings,
    mounts: Sequence[Mount] | None = None,
    uuid_lookup: UuidLookup | None = None,
) -> list[DriveLocation]:
    """Every plot drive: pattern-matched mounts plus filesystems holding globbed plot dirs."""
    mounts = list(mounts) if mounts is not None else current_mounts()
    by_key: dict[tuple[str, int | str], tuple[Mount, list[str]]] = {}

    def fs_key(path: str, fallback: str) -> tuple[str, int | str]:
        try:
            return ("dev", os.stat(path).st_dev)
        except OSError:
            return ("path", fallback)

    for mount in select_plot_mounts(mounts, discovery):
        key = fs_key(mount.mountpoint, mount.mountpoint)
        if key not in by_key:  # a second mountpoint of one filesystem (bind mount) is skipped
            by_key[key] = (mount, [mount.mountpoint])

    for pattern in discovery.plot_directories:
        for directory in natsorted(glob.glob(os.path.expanduser(pattern))):
            directory = os.path.abspath(directory)
            if not os.path.isdir(directory):
                continue
            mount = mount_of(directory, mounts) or Mount("unknown", directory, "unknown")
            entry = by_key.setdefault(fs_key(directory, directory), (mount, []))
            if directory not in entry[1]:
                entry[1].append(directory)

    ordered = natsorted(by_key.values(), key=lambda item: item[1][0])
    labels = [mount.mountpoint if mount.device != "unknown" else dirs[0] for mount, dirs in ordered]
    names = assign_names(labels)
    real = {m.device: os.path.realpath(m.device) for m, _ in ordered if m.device.startswith("/dev/")}
    uuids = uuid_by_device()
    unknown = sorted({r for r in real.values() if r not in uuids})
    if unknown and uuid_lookup is not None:
        uuids.update(uuid_lookup(unknown))
    locations = []
    for (mount, dirs), label in zip(ordered, labels, strict=False):
        locations.append(
            DriveLocation(
                name=names[label],
                mountpoint=mount.mountpoint,
                device=mount.device,
                fstype=mount.fstype,
                plot_dirs=tuple(dirs),
                uuid=uuids.get(real.get(mount.device, mount.device)),
            )
        )
    return locations


# -- scanning (I/O) -----------------------------------------------------------------------------


def _header_for(path: str, size: int, mtime_ns: int, cache: dict[str, CachedHeader]) -> tuple[CachedHeader, bool]:
    cached = cache.get(path)
    if cached is not None and cached.size == size and cached.mtime_ns == mtime_ns:
        return cached, False
    try:
        header = read_plot_header(path)
        fresh = CachedHeader(size, mtime_ns, header.format, header.k, header.kind, header.compression, header.plot_id)
    except (PlotFileError, OSError):
        # A plot group keeps its format even when its header is not one we can read: the
        # format is what tells the next scan that reading it again would not help.
        group = FORMAT_PLOT_GROUP if is_plot_group_name(os.path.basename(path)) else None
        fresh = CachedHeader(size, mtime_ns, group, None, "unknown", 0, None)
    return fresh, True


# A directory whose files changed this recently is always listed again: a file copied in place
# under its final name grows without touching the directory's mtime.
SETTLE_SECONDS = 600


def _cached_listing(
    directory: str, dir_mtime_ns: int, known_mtimes: dict[str, int], by_dir: dict[str, list[tuple[str, CachedHeader]]], now: float
) -> list[tuple[str, CachedHeader]] | None:
    """The cached plot files of ``directory`` if it provably did not change since the last scan.

    Creating, deleting or renaming a file changes its directory's mtime, so an unchanged mtime
    means an unchanged set of names. Skipped (None) when the directory is new to us, holds a file
    whose header could not be read, or had a file modified recently. A plot group whose header
    layout we do not know does not count as unreadable: it stays unknown however often it is read.
    """
    if known_mtimes.get(directory) != dir_mtime_ns:
        return None
    entries = by_dir.get(directory, [])
    settle_ns = int((now - SETTLE_SECONDS) * 1e9)
    if any((h.kind == "unknown" and h.format != FORMAT_PLOT_GROUP) or h.mtime_ns > settle_ns for _, h in entries):
        return None
    return entries


def scan_drive(
    location: DriveLocation,
    cache: dict[str, CachedHeader],
    result: ScanResult,
    now: float,
    known_dir_mtimes: dict[str, int] | None = None,
    by_dir: dict[str, list[tuple[str, CachedHeader]]] | None = None,
) -> DriveState:
    """Count the finished plots and plot groups on one drive by kind, from the files themselves.

    A plot directory that did not change since the last scan (same mtime) is counted from the
    state database without listing or stat-ing its files: the minute job on a JBOD of 30,000
    plots then costs one stat per directory, not one per plot.
    """
    try:
        usage = psutil.disk_usage(location.mountpoint)
    except OSError:
        return DriveState(location, 0, 0, 0, mounted=False)
    counts = {"og": 0, "pool": 0, "unknown": 0}
    plot_bytes = recent = 0
    plot_ids: list[str | None] = []

    def count(path: str, header: CachedHeader) -> None:
        nonlocal plot_bytes, recent
        result.seen_paths.add(path)
        plot_ids.append(header.plot_id or plot_id_from_name(os.path.basename(path)))
        counts[header.kind if header.kind in counts else "unknown"] += 1
        plot_bytes += header.size
        if now - header.mtime_ns / 1e9 < DAY_SECONDS:
            recent += 1

    for directory in location.plot_dirs:
        try:
            dir_mtime_ns = os.stat(directory).st_mtime_ns  # before listing: a change during it is seen next time
        except OSError:
            continue
        listing = _cached_listing(directory, dir_mtime_ns, known_dir_mtimes or {}, by_dir or {}, now)
        result.dir_mtimes[directory] = dir_mtime_ns
        if listing is not None:
            for path, header in listing:
                count(path, header)
            continue
        try:
            entries = list(os.scandir(directory))
        except OSError:
            result.dir_mtimes.pop(directory, None)
            continue
        for entry in entries:
            if not is_counted_plot_name(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            header, changed = _header_for(entry.path, st.st_size, st.st_mtime_ns, cache)
            if changed:
                result.header_upserts[entry.path] = header
                result.headers_read += 1
            count(entry.path, header)
    return DriveState(
        location,
        total_bytes=usage.total,
        used_bytes=usage.used,
        free_bytes=usage.free,
        plots_og=counts["og"],
        plots_pool=counts["pool"],
        plots_unknown=counts["unknown"],
        plot_bytes=plot_bytes,
        plots_last_24h=recent,
        plot_ids=tuple(plot_ids),
    )


def scan_drives(
    locations: Sequence[DriveLocation],
    cache: dict[str, CachedHeader],
    now: float | None = None,
    known_dir_mtimes: dict[str, int] | None = None,
) -> ScanResult:
    """Scan every drive; also work out which cached headers belong to files that are gone.

    ``known_dir_mtimes`` (directory -> mtime_ns of the last scan) lets unchanged directories be
    counted from ``cache``; the result's ``dir_mtimes`` is what to remember for the next scan.
    """
    now = time.time() if now is None else now
    result = ScanResult(drives=[])
    by_dir: dict[str, list[tuple[str, CachedHeader]]] = {}
    if known_dir_mtimes:
        for path, header in cache.items():
            by_dir.setdefault(os.path.dirname(path), []).append((path, header))
    for location in locations:
        result.drives.append(scan_drive(location, cache, result, now, known_dir_mtimes, by_dir))
    seen_dirs = {
        d for state in result.drives if state.mounted for d in state.location.plot_dirs
    }
    # A cached path under a scanned directory that the scan did not meet was deleted or renamed;
    # paths on unmounted drives stay cached for when the drive comes back.
    result.header_deletes = [
        path for path in cache if path not in result.seen_paths and os.path.dirname(path) in seen_dirs
    ]
    return result
