"""The harvester snapshot: one scan's facts, and the totals every report and decision derives.

Reports, the export JSON the plotters read and the receive-drive choice all come from the same
snapshot, so a report can never disagree with what the program did. The export is versioned
(``schema``) and parsed defensively: a plotter must survive a harvester that answers garbage.

Receive sets (issue 12) added fields without a new schema: ``receive_set`` (the drives plots
are received onto at once, in order), ``receives_available`` (how many more plots it takes now),
``receiving`` (the receives in flight) and ``receive_protocol`` (2: sessions, busy answers and
drive claims; 3: resumable transfers, issue 13). An export without them is an older
harvester's: one receive drive, protocol 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utilities import __version__
from utilities.durable import atomic_write
from utilities.harvester.drive_presence import MissingDrive
from utilities.harvester.plot_ids import plot_ids_from_dict, plot_ids_to_dict
from utilities.transfer.claims import ReceiveInFlight, claims_per_drive

EXPORT_SCHEMA = 1
TIB = 1024**4
# What the harvester's receiver speaks: 1 = one plot per receiver process onto one drive (an
# export without the field); 2 = sessions of several plots, busy answers, a set of drives.
RECEIVE_PROTOCOL = 3  # 3: resumable transfers (issue 13)


@dataclass(frozen=True)
class DriveSummary:
    """A drive as the export carries it (plain values, no host paths beyond the mountpoint)."""

    name: str
    mountpoint: str
    device: str
    uuid: str | None
    fstype: str
    total_bytes: int
    free_bytes: int
    plots_og: int
    plots_pool: int
    plots_unknown: int
    plots_last_24h: int
    free_slots: int
    offline: bool
    mounted: bool

    @property
    def plot_count(self) -> int:
        return self.plots_og + self.plots_pool + self.plots_unknown


@dataclass(frozen=True)
class PartsRemoved:
    """Stale part files the minute passes removed in the last 24 hours, and the bytes freed.

    Each is a plot slot a receiver or local move lost when it died mid-plot and the harvester
    won back; shown in -pr and exported, so a farmer sees writers dying, not just a slot
    appearing again.
    """

    files: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, data: Any, key: str = "stale_parts_removed_24h") -> PartsRemoved:
        """Parse the export's figures; absent (an older harvester) is none removed. TypeError
        or ValueError for anything else than two whole numbers."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise TypeError(f"{key} is not an object")
        files, size = data.get("files"), data.get("bytes")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (files, size)):
            raise ValueError(f"{key} needs whole numbers files and bytes")
        return cls(files, size)


@dataclass(frozen=True)
class ReceiveSetDrive:
    """A drive of the receive set, by name, and whether a receiver may replace one old OG plot
    on it to make room."""

    name: str
    replace: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "replace": self.replace}

    @classmethod
    def from_dict(cls, data: Any) -> ReceiveSetDrive:
        """TypeError/ValueError for anything but ``{"name": str, "replace": bool}``."""
        if not isinstance(data, dict):
            raise TypeError("a receive_set entry is not an object")
        name, replace = data.get("name"), data.get("replace", False)
        if not isinstance(name, str) or not name:
            raise ValueError("a receive_set entry needs a drive name")
        if not isinstance(replace, bool):
            raise ValueError(f"receive_set entry {name!r}: replace is not true or false")
        return cls(name, replace)


def receives_available(
    receive_set: Sequence[ReceiveSetDrive],
    drives: Sequence[DriveSummary],
    per_drive: int,
    receiving: Iterable[ReceiveInFlight],
) -> int:
    """Pure: how many more plots the harvester can take at once now.

    Per drive of the set that can take a plot (a free slot, or replace allowed and an old OG plot
    to replace) the receive slots its live claims leave free; a drive the scan no longer finds,
    or one offline or unmounted, takes none.
    """
    held = claims_per_drive(receiving)
    by_name = {d.name: d for d in drives}
    total = 0
    for entry in receive_set:
        drive = by_name.get(entry.name)
        if drive is None or not drive.mounted or drive.offline:
            continue
        if drive.free_slots >= 1 or (entry.replace and drive.plots_og >= 1):
            total += max(0, per_drive - held.get(entry.name, 0))
    return total


def _parse_receive_set(data: Any) -> tuple[ReceiveSetDrive, ...]:
    """The export's receive set; none in an older harvester's (the snapshot then takes its
    receive drive alone)."""
    if data is None:
        return ()
    if not isinstance(data, list):
        raise TypeError("receive_set is not a list")
    return tuple(ReceiveSetDrive.from_dict(entry) for entry in data)


def _parse_count(data: Any, key: str) -> int | None:
    if data is None:
        return None
    if isinstance(data, bool) or not isinstance(data, int) or data < 0:
        raise ValueError(f"{key} is not a whole number")
    return data


def _parse_receiving(data: Any) -> tuple[ReceiveInFlight, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise TypeError("receiving is not a list")
    return tuple(ReceiveInFlight.from_dict(entry) for entry in data)


def _parse_protocol(data: Any) -> int:
    if data is None:
        return 1
    if isinstance(data, bool) or not isinstance(data, int) or data < 1:
        raise ValueError("receive_protocol is not a positive whole number")
    return data


def _parse_missing(data: Any) -> tuple[MissingDrive, ...]:
    """The export's missing drives; a report-only field, so an entry that does not parse is left
    out instead of making the whole export (which plotters choose harvesters by) unusable."""
    if not isinstance(data, list):
        return ()
    missing = []
    for entry in data:
        try:
            missing.append(MissingDrive.from_dict(entry))
        except (TypeError, ValueError):
            continue
    return tuple(missing)


@dataclass(frozen=True)
class HarvesterSnapshot:
    hostname: str
    generated_at: float
    plot_size_bytes: int
    drives: tuple[DriveSummary, ...]
    receive_drive: str | None = None  # name of the drive receive_plot.sh points at
    receive_dir: str | None = None
    chia_plots: int | None = None  # plots chia itself reports farming (from its log)
    chia_plots_at: float | None = None
    chia_bytes: int | None = None
    version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)
    stale_parts: PartsRemoved = PartsRemoved()  # removed in the last 24 hours (cron passes)
    # Part files kept for a resume (issue 13) at the last cron pass: files and bytes they hold.
    resumable_parts: PartsRemoved = PartsRemoved()
    # The drives plots are received onto at once, in order (receive_drive is the first).
    receive_set: tuple[ReceiveSetDrive, ...] = ()
    receives_available: int | None = None  # more plots it takes at once now; None: not known
    receiving: tuple[ReceiveInFlight, ...] = ()  # live drive claims: receives in flight
    receive_protocol: int = RECEIVE_PROTOCOL
    # Plot drives that vanished and have not come back (utilities/harvester/drive_presence.py).
    missing_drives: tuple[MissingDrive, ...] = ()
    # Drive name -> the packed plot id prefixes it holds (utilities/harvester/plot_ids.py), for
    # -fr's duplicates; None: not known (an older harvester's export, or a broken field).
    plot_ids: dict[str, bytes] | None = None

    def __post_init__(self) -> None:
        # A snapshot made with a receive drive only (an older harvester's export, older code)
        # has that drive as its set, so every reader can go by the set.
        if not self.receive_set and self.receive_drive:
            replace = bool(self.extra.get("receive_replaces_old_plots"))
            object.__setattr__(self, "receive_set", (ReceiveSetDrive(self.receive_drive, replace),))

    # -- derived totals (pure) ------------------------------------------------------------------
    @property
    def online_drives(self) -> list[DriveSummary]:
        return [d for d in self.drives if d.mounted and not d.offline]

    @property
    def total_plots(self) -> int:
        return sum(d.plot_count for d in self.drives)

    @property
    def og_plots(self) -> int:
        return sum(d.plots_og for d in self.drives)

    @property
    def pool_plots(self) -> int:
        return sum(d.plots_pool for d in self.drives)

    @property
    def drive_count(self) -> int:
        return len(self.drives)

    @property
    def slots_until_full(self) -> int:
        """Free plot slots on drives that can still receive (offline drives do not)."""
        return sum(d.free_slots for d in self.online_drives)

    @property
    def max_plots(self) -> int:
        """Plots the drives hold when full: what is there now plus every free slot."""
        return sum(d.plot_count + d.free_slots for d in self.drives)

    @property
    def plots_last_24h(self) -> int:
        return sum(d.plots_last_24h for d in self.drives)

    @property
    def plots_per_hour(self) -> float:
        return self.plots_last_24h / 24.0

    @property
    def tib_per_day(self) -> float:
        return self.plots_last_24h * self.plot_size_bytes / TIB

    @property
    def days_to_fill(self) -> float | None:
        """Days until every online drive is full at the last 24 hours' pace; None if no pace."""
        if self.plots_last_24h == 0:
            return None
        return math.ceil(self.slots_until_full / self.plots_last_24h * 10) / 10

    @property
    def chia_tib(self) -> float | None:
        if self.chia_bytes is not None:
            return self.chia_bytes / TIB
        if self.chia_plots is None:
            return None
        return self.chia_plots * self.plot_size_bytes / TIB

    @property
    def held_back(self) -> list[dict[str, Any]]:
        """Drives held back from receiving plots for their health (utilities/harvester/drive_holds.py):
        ``extra["held_back"]``, each {name, reason (failing/sectors/hot), detail, since, mountpoint};
        entries another harvester's export garbled are left out (report-only)."""
        entries = self.extra.get("held_back")
        if not isinstance(entries, list):
            return []
        return [
            {"name": e["name"], "reason": str(e.get("reason")), "detail": str(e.get("detail") or ""),
             "since": e.get("since"), "mountpoint": e.get("mountpoint")}
            for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)
        ]

    def drive(self, name: str | None) -> DriveSummary | None:
        return next((d for d in self.drives if d.name == name), None)

    # -- export -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": EXPORT_SCHEMA,
            "version": self.version,
            "hostname": self.hostname,
            "generated_at": self.generated_at,
            "plot_size_bytes": self.plot_size_bytes,
            "receive_drive": self.receive_drive,
            "receive_dir": self.receive_dir,
            "chia_plots": self.chia_plots,
            "chia_plots_at": self.chia_plots_at,
            "chia_bytes": self.chia_bytes,
            "totals": {
                "plots": self.total_plots,
                "og_plots": self.og_plots,
                "pool_plots": self.pool_plots,
                "drives": self.drive_count,
                "slots_until_full": self.slots_until_full,
                "max_plots": self.max_plots,
                "plots_last_24h": self.plots_last_24h,
                "days_to_fill": self.days_to_fill,
            },
            "drives": [d.__dict__ for d in self.drives],
            "stale_parts_removed_24h": self.stale_parts.to_dict(),
            "resumable_parts": self.resumable_parts.to_dict(),
            "receive_set": [entry.to_dict() for entry in self.receive_set],
            "receives_available": self.receives_available,
            "receiving": [receive.to_dict() for receive in self.receiving],
            "receive_protocol": self.receive_protocol,
            "missing_drives": [m.to_dict() for m in self.missing_drives],
            **({"plot_ids": plot_ids_to_dict(self.plot_ids)} if self.plot_ids is not None else {}),
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Any) -> HarvesterSnapshot:
        """Parse an export; raise ValueError naming the first problem (garbage stays out)."""
        if not isinstance(data, dict):
            raise ValueError("export is not a JSON object")
        if data.get("schema") != EXPORT_SCHEMA:
            raise ValueError(f"export schema {data.get('schema')!r} is not {EXPORT_SCHEMA}")
        receive_drive = data.get("receive_drive")
        if receive_drive is not None and not isinstance(receive_drive, str):
            raise ValueError("export is malformed: receive_drive is not a drive name")
        try:
            drives = tuple(DriveSummary(**d) for d in data["drives"])
            return cls(
                hostname=str(data["hostname"]),
                generated_at=float(data["generated_at"]),
                plot_size_bytes=int(data["plot_size_bytes"]),
                drives=drives,
                receive_drive=receive_drive,
                receive_dir=data.get("receive_dir"),
                chia_plots=data.get("chia_plots"),
                chia_plots_at=data.get("chia_plots_at"),
                chia_bytes=data.get("chia_bytes"),
                version=str(data.get("version", "unknown")),
                extra=dict(data.get("extra") or {}),
                stale_parts=PartsRemoved.from_dict(data.get("stale_parts_removed_24h")),
                resumable_parts=PartsRemoved.from_dict(data.get("resumable_parts"), "resumable_parts"),
                receive_set=_parse_receive_set(data.get("receive_set")),
                receives_available=_parse_count(data.get("receives_available"), "receives_available"),
                receiving=_parse_receiving(data.get("receiving")),
                receive_protocol=_parse_protocol(data.get("receive_protocol")),
                missing_drives=_parse_missing(data.get("missing_drives")),
                plot_ids=plot_ids_from_dict(data.get("plot_ids")),  # never raises: garbage is "not known"
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"export is malformed: {exc}") from None



def parse_export(raw: bytes, expected_name: str) -> HarvesterSnapshot:
    """Parse a harvester's export; ValueError naming the problem for anything untrustworthy."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"export is not JSON ({exc.__class__.__name__})") from None
    snapshot = HarvesterSnapshot.from_dict(data)
    if snapshot.hostname != expected_name:
        raise ValueError(f"export is from {snapshot.hostname!r}, expected {expected_name!r}")
    return snapshot


def write_export(snapshot: HarvesterSnapshot, path: Path) -> None:
    """Write the export for plotters and farm reports: atomically, mode 0644, durable."""
    atomic_write(path, json.dumps(snapshot.to_dict(), indent=1, sort_keys=True) + "\n", mode=0o644, make_parents=True)
