"""The harvester snapshot: one scan's facts, and the totals every report and decision derives.

Reports, the export JSON the plotters read and the receive-drive choice all come from the same
snapshot, so a report can never disagree with what the program did. The export is versioned
(``schema``) and parsed defensively: a plotter must survive a harvester that answers garbage.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utilities import __version__
from utilities.durable import atomic_write

EXPORT_SCHEMA = 1
TIB = 1024**4


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
    def from_dict(cls, data: Any) -> PartsRemoved:
        """Parse the export's figures; absent (an older harvester) is none removed. TypeError
        or ValueError for anything else than two whole numbers."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise TypeError("stale_parts_removed_24h is not an object")
        files, size = data.get("files"), data.get("bytes")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (files, size)):
            raise ValueError("stale_parts_removed_24h needs whole numbers files and bytes")
        return cls(files, size)


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
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Any) -> HarvesterSnapshot:
        """Parse an export; raise ValueError naming the first problem (garbage stays out)."""
        if not isinstance(data, dict):
            raise ValueError("export is not a JSON object")
        if data.get("schema") != EXPORT_SCHEMA:
            raise ValueError(f"export schema {data.get('schema')!r} is not {EXPORT_SCHEMA}")
        try:
            drives = tuple(DriveSummary(**d) for d in data["drives"])
            return cls(
                hostname=str(data["hostname"]),
                generated_at=float(data["generated_at"]),
                plot_size_bytes=int(data["plot_size_bytes"]),
                drives=drives,
                receive_drive=data.get("receive_drive"),
                receive_dir=data.get("receive_dir"),
                chia_plots=data.get("chia_plots"),
                chia_plots_at=data.get("chia_plots_at"),
                chia_bytes=data.get("chia_bytes"),
                version=str(data.get("version", "unknown")),
                extra=dict(data.get("extra") or {}),
                stale_parts=PartsRemoved.from_dict(data.get("stale_parts_removed_24h")),
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
