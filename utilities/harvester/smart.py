"""SMART health and temperature of plot drives, via pySMART, without waking sleeping disks.

A harvester's drives spend most of their life spun down; a monitoring job that spins up
100 drives every few minutes costs power, wear and heat, and defeats the point of standby.
So every read goes through three guards:

1. ``smartctl -n standby -i <disk>`` first.  With ``-n standby`` smartctl itself asks the
   drive for its power mode (ATA CHECK POWER MODE, which does not spin it up) and, if it is
   in STANDBY or SLEEP, prints ``Device is in STANDBY mode, exit(2)`` and exits with status 2
   without sending any other command (smartctl(8), ``-n``; smartmontools ``ataprint.cpp``).
   Status 2 (bit 1) also means "device open failed", so the *message* decides, not the
   status.  A disk in standby is reported as ``state="standby"`` and pySMART is never called.
2. pySMART is only used for a disk that was just seen spinning, and it runs smartctl through
   our own subclass of ``pySMART.smartctl.Smartctl``, which puts ``-n standby`` on *every* call.
   pySMART 1.4.3 itself has no notion of standby: ``Device(name)`` runs
   ``smartctl -d test <dev>`` (type autodetection) and then ``smartctl -d <type> --all <dev>``
   (plus ``-d sat|ata -l sataphy`` / ``-d scsi -l sasphy`` probes for plain ``ata``/``scsi``
   types), none with ``-n``; ``--all`` reads SMART data and spins a standby disk up.  With
   ``-n standby`` on each call, a disk that spun down between our check and pySMART's read
   is still not woken, and we see its standby message and report ``standby``.
3. If smartctl says the power mode cannot be checked (``... ignoring -n option``, common
   behind USB bridges), nothing is read unless the caller opts in with ``wake_if_unknown``.

smartctl(8) also warns that type *autodetection* may spin a device up; when the caller knows
the type (``device_type``, e.g. ``"sat"`` or ``"nvme"``) it is passed as ``-d`` to our check
and as ``interface`` to pySMART, which then skips its ``-d test`` call altogether.

Which smartctl runs: pySMART resolves ``shutil.which("smartctl")`` once at import
(``pySMART.utils.SMARTCTL_PATH``) into the shared global ``pySMART.SMARTCTL``; its
``Device(smart_options=...)`` even appends options to that shared object for good.  We never
touch the global: each read builds its own ``Smartctl`` with the configured path, so the
configured path is what runs, threads do not share state, and a hung smartctl (a dying disk
can block for minutes) is killed after ``timeout`` seconds.

Layers: ``parent_disk`` and ``classify_power_check`` are pure; ``read_smart`` does the I/O;
``read_many`` fans out over distinct disks with a small thread pool.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

# pySMART (with chardet, about 25 ms) is imported on the first read that gets past the
# standby check: most cron minutes read no SMART at all.
if TYPE_CHECKING:
    from pySMART.smartctl import Smartctl

SmartState = Literal["active", "standby", "unavailable"]
PowerState = Literal["active", "standby", "unavailable", "unknown"]

DEFAULT_TIMEOUT = 15.0
DEFAULT_WORKERS = 8
"""Enough to read 100 drives in seconds, few enough not to flood one HBA or USB hub."""

NO_WAKE_OPTIONS = ("-n", "standby")
_KILL_GRACE_SECONDS = 5.0
_MAX_ERROR_CHARS = 200
_STANDBY_MESSAGE = re.compile(r"Device is in (?P<mode>[A-Z]+(?: \(OS\))?) mode, exit\(\d+\)")
_POWER_CHECK_IGNORED = re.compile(r"ignoring -n option", re.IGNORECASE)
_SD_STYLE_PARTITION = re.compile(r"^((?:sd|hd|vd|xvd)[a-z]+)\d+$")
_P_STYLE_PARTITION = re.compile(r"^(.*\d)p\d+$")
_VIRTUAL_PREFIXES = ("loop", "ram", "zram", "nbd", "md", "dm-")


@dataclass(frozen=True)
class SectorCounts:
    """The wear and failure counters of one read, the same names for every interface.

    ATA: attributes 5 (Reallocated_Sector_Ct), 197 (Current_Pending_Sector), 198
    (Offline_Uncorrectable), 199 (UDMA_CRC_Error_Count), 9 (Power_On_Hours), raw values.
    NVMe has no sector remapping a host can see: "Media and Data Integrity Errors" (data the
    drive could not return) counts as uncorrectable, "Power On Hours" as power-on hours.
    SCSI/SAS: "Elements in grown defect list" (blocks the drive remapped since it left the
    factory) counts as reallocated, the "Total uncorrected errors" of the read, write and
    verify rows together as uncorrectable, "Accumulated power on time" as power-on hours.
    """

    reallocated_sectors: int | None = None
    pending_sectors: int | None = None
    offline_uncorrectable: int | None = None
    crc_errors: int | None = None
    power_on_hours: int | None = None


@dataclass(frozen=True, kw_only=True)
class SmartInfo(SectorCounts):
    """What we learned about one disk.

    ``device`` is what the caller asked about (maybe a partition), ``disk`` the whole disk
    that was read.  ``health`` is pySMART's assessment: ``"PASS"``, ``"FAIL"`` or ``"WARN"``
    (an attribute failed in the past), ``None`` when the drive reports none.  ``error`` says
    in one line why a disk is ``unavailable``.

    The counters are what a failing disk shows first (``None`` when the disk does not report
    one, or was not read); see ``SectorCounts`` for where each comes from per interface.
    """

    device: str
    disk: str
    state: SmartState
    serial: str | None = None
    model: str | None = None
    temperature_c: int | None = None
    health: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class PowerCheck:
    """Verdict on the output of ``smartctl -n standby -i <disk>``."""

    state: PowerState
    error: str | None = None


# --------------------------------------------------------------------------- pure parts


def partition_parent_name(name: str) -> str:
    """The whole-disk kernel name for a partition name: ``sdaa1`` -> ``sdaa``,
    ``nvme0n1p1`` -> ``nvme0n1``, ``mmcblk0p2`` -> ``mmcblk0``; anything else unchanged.

    Kernel naming has two schemes: disks whose name ends in a letter get the partition
    number appended (``sdb1``), disks whose name ends in a digit get ``p<N>`` appended
    (``nvme0n1p1``).  That is why ``nvme0n1`` and ``sdp`` (the 16th SCSI disk) stay as they
    are.
    """
    match = _SD_STYLE_PARTITION.match(name)
    if match:
        return match.group(1)
    match = _P_STYLE_PARTITION.match(name)
    if match and not name.startswith("dm-"):
        return match.group(1)
    return name


def _sysfs_slaves(dm_name: str) -> list[str]:
    try:
        return sorted(os.listdir(f"/sys/block/{dm_name}/slaves"))
    except OSError:
        return []


def parent_disk(
    device: str,
    *,
    slaves_of: Callable[[str], Sequence[str]] = _sysfs_slaves,
    resolve: Callable[[str], str] = os.path.realpath,
) -> str:
    """The whole disk holding ``device``, for a partition, a by-id link or a device mapper.

    ``/dev/sdb1`` -> ``/dev/sdb``; ``/dev/mapper/x`` and ``/dev/disk/by-*/...`` are resolved
    with ``resolve`` first; ``dm-N`` follows ``/sys/block/dm-N/slaves`` when there is exactly
    one slave (LUKS, a single-disk LV), else the input comes back unchanged because no single
    disk can be blamed.  Never raises: an unexpected name is returned as given.
    ``slaves_of`` and ``resolve`` exist so tests need no real sysfs.
    """
    original = device
    path = device.strip()
    for _ in range(8):  # dm on dm on partition is the deepest real stack; bound it anyway
        if path.startswith(("/dev/mapper/", "/dev/disk/")):
            try:
                path = resolve(path)
            except OSError:
                return original
            if path.startswith("/dev/mapper/"):
                return original
        directory, name = os.path.split(path)
        if not name.startswith("dm-"):
            parent = partition_parent_name(name)
            return os.path.join(directory, parent) if directory else parent
        try:
            slaves = list(slaves_of(name))
        except OSError:
            return original
        if len(slaves) != 1:
            return original
        path = os.path.join(directory or "/dev", slaves[0])
    return original


def classify_power_check(output: str, returncode: int) -> PowerCheck:
    """Read the verdict of ``smartctl -n standby -i``: spinning, asleep, or not readable.

    The standby message is checked before the exit status, because smartctl uses status 2
    both for "in a low-power mode" and for "device open failed" (smartctl(8), EXIT STATUS,
    bit 1), and ``-n standby,0`` would even make standby exit 0.
    """
    if _STANDBY_MESSAGE.search(output):
        return PowerCheck("standby")
    if returncode & 0b11:
        return PowerCheck("unavailable", _error_line(output) or f"smartctl exit status {returncode}")
    ignored = next((ln.strip() for ln in output.splitlines() if _POWER_CHECK_IGNORED.search(ln)), None)
    if ignored:
        return PowerCheck("unknown", ignored[:_MAX_ERROR_CHARS])
    return PowerCheck("active")


def _error_line(output: str) -> str | None:
    """The first line of smartctl output that is not its version banner."""
    for line in output.splitlines():
        text = line.strip()
        if not text or text.startswith(("smartctl ", "Copyright (C)")):
            continue
        return text[:_MAX_ERROR_CHARS]
    return None


def _is_virtual(disk: str) -> bool:
    name = os.path.basename(disk)
    return disk.startswith("/dev/mapper/") or name.startswith(_VIRTUAL_PREFIXES)


# --------------------------------------------------------------------------- smartctl runs


class SmartctlTimeout(Exception):
    """smartctl did not finish in time (a dying disk can block a command for minutes)."""


@dataclass(frozen=True)
class _Run:
    argv: tuple[str, ...]
    returncode: int
    stdout: str


def _run(argv: Sequence[str], timeout: float) -> _Run:
    """Run smartctl with English messages (we match them) and a hard time limit.

    On timeout the child is killed and we wait only briefly: a process stuck in
    uninterruptible disk I/O cannot die until the I/O returns, and the cron job must not wait
    for it.
    """
    env = dict(os.environ, LC_ALL="C", LANG="C")
    process = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=_KILL_GRACE_SECONDS)
        raise SmartctlTimeout(f"smartctl timed out after {timeout:g}s") from None
    text = stdout.decode("utf-8", errors="replace")
    if not text.strip():
        text = stderr.decode("utf-8", errors="replace")
    return _Run(tuple(argv), process.returncode, text)


@functools.cache
def _no_wake_smartctl_class() -> type[Smartctl]:
    """The ``_NoWakeSmartctl`` class, defined on first use so pySMART is imported only then."""
    from pySMART.smartctl import Smartctl

    class _NoWakeSmartctl(Smartctl):
        """pySMART's smartctl wrapper, but every call carries ``-n standby`` and a timeout.

        Overriding ``generic_call`` (pySMART's one funnel for running smartctl) keeps pySMART's
        parsing while the process handling is ours; every run is recorded so that ``read_smart``
        can see a standby or open error that pySMART itself swallows.
        """

        def __init__(self, smartctl_path: str, timeout: float) -> None:
            super().__init__(smartctl_path=smartctl_path, options=[])
            self.timeout = timeout
            self.runs: list[_Run] = []

        def generic_call(self, params: list[str], pass_options: bool = False) -> tuple[list[str], int]:
            argv = [self.smartctl_path, *NO_WAKE_OPTIONS]
            if pass_options:
                argv.extend(self.options)
            argv.extend(params)
            result = _run(argv, self.timeout)
            self.runs.append(result)
            return result.stdout.splitlines(), result.returncode

    return _NoWakeSmartctl


def _resolve_executable(smartctl: str) -> str | None:
    if os.sep in smartctl:
        return smartctl if os.path.isfile(smartctl) and os.access(smartctl, os.X_OK) else None
    return shutil.which(smartctl)


# --------------------------------------------------------------------------- public I/O


def read_smart(
    device: str,
    smartctl: str = "smartctl",
    timeout: float = DEFAULT_TIMEOUT,
    *,
    device_type: str | None = None,
    wake_if_unknown: bool = False,
) -> SmartInfo:
    """Read serial, model, temperature and health of the disk holding ``device``.

    Never raises for the expected failures (smartctl missing, loop or virtual device,
    permission denied, timeout, unparsable output): those give ``state="unavailable"`` and a
    one-line ``error``.  A spun-down disk gives ``state="standby"`` and is not woken.
    """
    disk = parent_disk(device)

    def unavailable(error: str) -> SmartInfo:
        return SmartInfo(device=device, disk=disk, state="unavailable", error=error)

    if _is_virtual(disk):
        return unavailable(f"{disk} is a virtual device without SMART data")
    executable = _resolve_executable(smartctl)
    if executable is None:
        return unavailable(f"smartctl not found: {smartctl}")

    type_args = ["-d", device_type] if device_type else []
    try:
        check = _run([executable, *NO_WAKE_OPTIONS, "-i", *type_args, disk], timeout)
    except SmartctlTimeout as exc:
        return unavailable(str(exc))
    except OSError as exc:
        return unavailable(f"cannot run {executable}: {exc.strerror or exc}")
    power = classify_power_check(check.stdout, check.returncode)
    if power.state == "standby":
        return SmartInfo(device=device, disk=disk, state="standby")
    if power.state == "unavailable":
        return unavailable(power.error or "smartctl failed")
    if power.state == "unknown" and not wake_if_unknown:
        return unavailable(
            f"power mode cannot be checked without risking a spin-up ({power.error or 'smartctl ignored -n'}); not read"
        )
    return _read_with_pysmart(device, disk, executable, timeout, device_type)


def _read_with_pysmart(device: str, disk: str, executable: str, timeout: float, device_type: str | None) -> SmartInfo:
    from pySMART import Device

    runner = _no_wake_smartctl_class()(executable, timeout)
    try:
        found = Device(disk, interface=device_type, smartctl=runner)
    except SmartctlTimeout as exc:
        return SmartInfo(device=device, disk=disk, state="unavailable", error=str(exc))
    except Exception as exc:  # pySMART raises bare errors on output it cannot parse
        return SmartInfo(
            device=device,
            disk=disk,
            state="unavailable",
            error=f"pySMART could not read {disk}: {type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS],
        )
    outputs = "\n".join(run.stdout for run in runner.runs)
    if _STANDBY_MESSAGE.search(outputs):
        # Spun down after our check; -n standby made smartctl leave it alone.
        return SmartInfo(device=device, disk=disk, state="standby")
    serial = (found.serial or "").strip() or None
    model = (found.model or "").strip() or None
    if serial is None and model is None:
        last = runner.runs[-1] if runner.runs else None
        reason = (_error_line(last.stdout) if last else None) or "smartctl returned no device data"
        return SmartInfo(device=device, disk=disk, state="unavailable", error=reason)
    try:
        temperature = found.temperature
    except Exception:  # a property that parses text; one odd attribute must not cost the read
        temperature = None
    try:
        counts = sector_counts(found)
    except Exception:  # as for the temperature: odd attribute text must not cost the read
        counts = SectorCounts()
    return SmartInfo(
        device=device,
        disk=disk,
        state="active",
        serial=serial,
        model=model,
        temperature_c=int(temperature) if temperature is not None else None,
        health=found.assessment,
        **dataclasses.asdict(counts),
    )


_ATA_COUNTERS = {
    5: "reallocated_sectors",
    197: "pending_sectors",
    198: "offline_uncorrectable",
    199: "crc_errors",
    9: "power_on_hours",
}


def sector_counts(found: object) -> SectorCounts:
    """The counters of a pySMART ``Device`` (see ``SectorCounts`` for the mapping).

    Read from what pySMART 1.4.3 parsed: ``if_attributes`` is ``AtaAttributes`` (its
    ``legacyAttributes`` indexed by attribute id, raw values as text), ``NvmeAttributes``
    (``integrityErrors``, ``powerOnHours``) or ``SCSIAttributes`` (``diagnostics``).
    """
    from pySMART.interface import AtaAttributes, NvmeAttributes, SCSIAttributes

    interface = getattr(found, "if_attributes", None)
    if isinstance(interface, AtaAttributes):
        values: dict[str, int | None] = {}
        attributes = interface.legacyAttributes
        for number, field_name in _ATA_COUNTERS.items():
            attribute = attributes[number] if number < len(attributes) else None
            values[field_name] = attribute.raw_int if attribute is not None else None
        return SectorCounts(**values)
    if isinstance(interface, NvmeAttributes):
        return SectorCounts(offline_uncorrectable=interface.integrityErrors, power_on_hours=interface.powerOnHours)
    if isinstance(interface, SCSIAttributes):
        diagnostics = interface.diagnostics
        uncorrected = [diagnostics.Uncorrected_Reads, diagnostics.Uncorrected_Writes, diagnostics.Uncorrected_Verifies]
        known = [n for n in uncorrected if n is not None]
        return SectorCounts(
            reallocated_sectors=diagnostics.Reallocated_Sector_Ct,
            offline_uncorrectable=sum(known) if known else None,
            power_on_hours=diagnostics.Power_On_Hours,
        )
    return SectorCounts()


def read_many(
    devices: Iterable[str],
    smartctl: str = "smartctl",
    timeout: float = DEFAULT_TIMEOUT,
    *,
    max_workers: int = DEFAULT_WORKERS,
    wake_if_unknown: bool = False,
) -> dict[str, SmartInfo]:
    """``read_smart`` for many devices, reading each distinct whole disk once, in parallel.

    Keys are the devices as given (duplicates collapse); two partitions of one disk share one
    read, each getting a copy with its own ``device``.
    """
    ordered = list(dict.fromkeys(devices))
    disks = {device: parent_disk(device) for device in ordered}
    unique = list(dict.fromkeys(disks.values()))
    if not unique:
        return {}

    def read(disk: str) -> SmartInfo:
        return read_smart(disk, smartctl, timeout, wake_if_unknown=wake_if_unknown)

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(unique)))) as pool:
        by_disk = dict(zip(unique, pool.map(read, unique), strict=True))
    return {device: replace(by_disk[disks[device]], device=device) for device in ordered}
