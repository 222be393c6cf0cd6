"""The ``harvester:`` config section (drive_manager.py): which drives hold plots, how plots are
received onto them, alerts, metrics and preparing new drives.

Its ``local_moves:`` subsection (move_local_plots.py) lives in ``settings/local_moves.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from utilities.install_paths import DEFAULT_RECEIVE_SCRIPT
from utilities.settings.base import Section
from utilities.settings.local_moves import LocalMoveSettings


class DriveDiscoverySettings(Section):
    # Shell-style globs (fnmatch) on psutil's device and mountpoint of each mounted filesystem.
    device_patterns: tuple[str, ...] = (
        "/dev/sd*",
        "/dev/nvme*",
        "/dev/mapper/*",
        "/dev/dm-*",
        "/dev/md*",
        "/dev/vd*",
    )
    mountpoint_patterns: tuple[str, ...] = ("/mnt/enclosure*/*/column*/drive*",)
    # Directories given as globs, like chia's own plot_directories; one drive per filesystem.
    plot_directories: tuple[str, ...] = ()
    # Filesystem types never taken as plot drives, whatever the patterns say.
    exclude_fstypes: tuple[str, ...] = ("proc", "sysfs", "devtmpfs", "squashfs", "overlay")


class HarvesterAlertSettings(Section):
    # Alert once when the free plot slots of all online drives drop to this many or fewer.
    free_slots_low_water: int = Field(default=50, ge=0)
    # A drive at or above this temperature (Celsius) is marked in -ct and alerted once.
    temperature_limit_c: int = Field(default=50, ge=20, le=90)
    # How often the cron run reads drive temperatures (SMART costs time on big JBODs).
    temperature_check_minutes: int = Field(default=10, ge=0)  # 0: every run


class DriveHealthSettings(Section):
    """The held-back rule (utilities/harvester/drive_health.py), judged at each SMART read."""

    # Take sick drives out of the receive set (and the local-moves drive) automatically.
    hold_back_sick_drives: bool = True
    # Growth within window_hours that holds a drive until `-on DRIVE`: pending sectors (ATA
    # 197), reallocated sectors (ATA 5; SAS grown defects) and uncorrectable sectors (ATA 198;
    # NVMe media errors; SAS uncorrected errors).
    pending_growth_limit: int = Field(default=1, ge=1)
    reallocated_growth_limit: int = Field(default=8, ge=1)
    uncorrectable_growth_limit: int = Field(default=1, ge=1)
    window_hours: float = Field(default=24, gt=0, le=24 * 30)
    # A drive held for its temperature (at or above alerts.temperature_limit_c) returns once it
    # is read below the limit less this many degrees.
    hot_hysteresis_c: int = Field(default=5, ge=0, le=30)
    # SMART readings are kept this long in the state database (the trend in -ct needs 7).
    history_days: int = Field(default=30, ge=8, le=366)


class PlotCheckSettings(Section):
    """drive_manager.py --check-plots (utilities/harvester/plot_check*.py): a cron entry works
    through the farm a budget at a time, at idle I/O priority."""

    # Challenges looked up per plot (chia plots check's default is 30).
    challenges: int = Field(default=30, ge=1, le=100_000)
    # No new plot is started once a run has checked for this long (a plot in progress finishes).
    budget_minutes: float = Field(default=10, gt=0, le=7 * 24 * 60)
    # A plot checked within this many days is skipped, unless its drive is named on the command line.
    recheck_days: float = Field(default=30, ge=0, le=3650)
    # Full proofs fetched and verified per plot; none: one for every quality found, like chia plots check.
    full_proofs: int | None = Field(default=None, ge=1)
    # Check at idle I/O priority and nice 19, so the harvester's lookups go first; false runs
    # at normal priority (a one-off check of a drive nothing farms yet).
    idle_priority: bool = True


class DrivePrepSettings(Section):
    # New drives are mounted at the next free <layout_root>/driveN.
    layout_root: Path | None = None
    fstype: Literal["xfs", "ext4"] = "xfs"
    fstab: Path = Path("/etc/fstab")
    # Devices never to be touched, whatever is asked (system disks, ...).
    protected_devices: tuple[str, ...] = ()
    # chia's config.yaml: the new mountpoint is added to harvester.plot_directories when set.
    chia_config: Path | None = None


class HarvesterSettings(Section):
    drive_discovery: DriveDiscoverySettings = DriveDiscoverySettings()
    # fill_in_order: fill drives one by one in natural mountpoint order; most_free: spread out.
    receive_drive_policy: Literal["fill_in_order", "most_free"] = "fill_in_order"
    # Plot slots kept free on each drive (room for filesystem growth); 0 fills drives completely.
    reserve_slots: int = Field(default=0, ge=0)
    # Where drive_manager.py writes the script the plotter starts over SSH.
    receive_script: Path = DEFAULT_RECEIVE_SCRIPT
    # Where the harvester export (JSON snapshot for plotters and farm reports) is written.
    export_file: Path | None = None  # default: <state_dir>/export/harvester.json
    # chia's debug.log, read for the number of plots chia itself is farming.
    chia_log: Path = Path("~/.chia/mainnet/log/debug.log")
    smartctl: str = "smartctl"
    # A receiver gives up (and removes its partial file) when no byte arrives for this long.
    receive_idle_timeout_seconds: float = Field(default=120, gt=0, le=86400)
    # Drives in the receive set: plots received at once, each onto its own drive (with one
    # receive per drive). A plotter is told how many receives are available now.
    concurrent_receive_drives: int = Field(default=4, ge=1, le=64)
    # Receives at once per drive of the set: 1 (two streams on one HDD make both slower).
    receives_per_drive: int = Field(default=1, ge=1, le=8)
    # A dropped transfer's part file (with its journal) waits this long for the plotter to
    # resume it before the minute pass removes it like any stale part (issue 13).
    resume_keep_hours: float = Field(default=24, gt=0, le=24 * 30)
    # The journal's chunk: a cut transfer resends at most this much of what already arrived,
    # and each chunk costs one fdatasync and one journal write. 1 GiB suits HDDs and k32 plots.
    resume_chunk_mib: float = Field(default=1024, ge=0.25, le=65536)
    # Replace old OG plots one by one with incoming pool plots (the plot count never drops by
    # more than one); with fill_empty_drives_first, free space is filled first until the free
    # slots of all drives fall to empty_drives_low_water_mark.
    replace_non_pool_plots: bool = False
    fill_empty_drives_first: bool = True
    empty_drives_low_water_mark: int = Field(default=0, ge=0)
    # Disk to ask for SMART data per drive (name or mountpoint -> device), where the mounted
    # device hides the disk (LUKS on multipath, some RAID or USB set-ups).
    smart_devices: dict[str, str] = {}
    alerts: HarvesterAlertSettings = HarvesterAlertSettings()
    health: DriveHealthSettings = DriveHealthSettings()
    plot_checks: PlotCheckSettings = PlotCheckSettings()
    # node_exporter textfile collector directory for Prometheus metrics (off when unset).
    metrics_dir: Path | None = None
    drive_prep: DrivePrepSettings = DrivePrepSettings()
    # move_local_plots.py: plots made on this harvester, moved onto its own plot drives.
    local_moves: LocalMoveSettings = LocalMoveSettings()
