"""The page's model: pure functions from what the product already knows to what the page shows.

Farm totals are ``farm_report.farm_totals`` itself (the ``-fr`` figures, never recomputed here);
what this module adds is only shape: drives as grid cells, receives in flight, the transfers of
the last 24 hours as ``plot_manager.py --history`` sums them, and one point per day for the
charts. Exports from older harvesters lack the newer fields (``receiving``, ``receive_set``,
temperatures): each is read defensively, and missing means "not known", never an error.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from utilities.harvester.farm_report import FarmView, farm_totals
from utilities.harvester_export import DriveSummary, HarvesterSnapshot
from utilities.state import DailyStats, TransferRecord
from utilities.text import MISSING, binary_size
from utilities.transfer_summary import TransferSummary, last_day_summary

DAY = 24 * 3600
__all__ = ["TransferSummary", "last_day_summary"]  # also the dashboard's: gather and tests take them from here


def shown(value: object) -> str:
    """A figure as the ``-fr`` text report prints it: ``str(value)``, ``n/a`` for none."""
    return MISSING if value is None else str(value)


# -- receives in flight ------------------------------------------------------------------------


@dataclass(frozen=True)
class Receive:
    """One plot a harvester is receiving now (from its export's ``receiving`` list)."""

    drive: str
    plot: str
    size: int
    received: int
    started_at: float
    updated_at: float

    @property
    def percent(self) -> float:
        return round(100.0 * self.received / self.size, 1) if self.size else 0.0

    @property
    def mb_per_second(self) -> float:
        elapsed = self.updated_at - self.started_at
        return round(self.received / 1e6 / elapsed, 1) if self.received and elapsed > 0 else 0.0


def _field(item: Any, name: str, default: Any) -> Any:
    return item.get(name, default) if isinstance(item, Mapping) else getattr(item, name, default)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else 0.0


def receives_of(snap: HarvesterSnapshot) -> list[Receive]:
    """The receives in flight an export reports (dicts or parsed objects); none when absent."""
    raw = getattr(snap, "receiving", None) or snap.extra.get("receiving")
    if not isinstance(raw, list | tuple):
        return []
    receives = []
    for item in raw:
        drive = _field(item, "drive", None)
        if not isinstance(drive, str) or not drive:
            continue
        plot = _field(item, "plot", "")
        receives.append(Receive(
            drive=drive,
            plot=plot if isinstance(plot, str) else "",
            size=int(_number(_field(item, "size", 0))),
            received=int(_number(_field(item, "received", 0))),
            started_at=_number(_field(item, "started_at", 0.0)),
            updated_at=_number(_field(item, "updated_at", 0.0)),
        ))
    return receives


def receive_set_of(snap: HarvesterSnapshot) -> list[str]:
    """Names of the drives plots are received on, in policy order (the receive drive alone
    for a harvester that exports no ``receive_set``)."""
    raw = getattr(snap, "receive_set", None) or snap.extra.get("receive_set")
    names = []
    if isinstance(raw, list | tuple):
        for item in raw:
            name = item if isinstance(item, str) else _field(item, "name", None)
            if isinstance(name, str) and name:
                names.append(name)
    if not names and snap.receive_drive:
        names.append(snap.receive_drive)
    return names


def temperatures_of(snap: HarvesterSnapshot, local: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Drive temperatures in °C: this machine's from its last minute pass (``local``), another
    harvester's from its export when it carries them; drives without a reading are left out."""
    raw: Any = local if local is not None else snap.extra.get("temperatures")
    if not isinstance(raw, Mapping):
        return {}
    return {
        str(name): int(value) for name, value in raw.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


# -- the drive grid ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DriveCell:
    drive: DriveSummary
    temperature_c: int | None
    hot: bool
    receive_drive: bool  # the drive receive_plot.sh points at first
    in_receive_set: bool
    receiving: tuple[Receive, ...]

    @property
    def used_percent(self) -> float:
        d = self.drive
        return round(100.0 * (d.total_bytes - d.free_bytes) / d.total_bytes, 1) if d.total_bytes > 0 else 0.0

    @property
    def size_text(self) -> str:
        return f"{binary_size(self.drive.free_bytes)} free of {binary_size(self.drive.total_bytes)}"

    @property
    def state(self) -> str:
        """One word for the cell's colour: unmounted, offline, receiving, full or online."""
        if not self.drive.mounted:
            return "unmounted"
        if self.drive.offline:
            return "offline"
        if self.receiving:
            return "receiving"
        if self.drive.free_slots <= 0:
            return "full"
        return "online"


def drive_cells(snap: HarvesterSnapshot, temperatures: Mapping[str, int], hot_limit_c: int | None) -> list[DriveCell]:
    receiving: dict[str, list[Receive]] = {}
    for receive in receives_of(snap):
        receiving.setdefault(receive.drive, []).append(receive)
    receive_set = set(receive_set_of(snap))
    cells = []
    for d in snap.drives:
        temp = temperatures.get(d.name)
        cells.append(DriveCell(
            drive=d,
            temperature_c=temp,
            hot=temp is not None and hot_limit_c is not None and temp >= hot_limit_c,
            receive_drive=d.name == snap.receive_drive,
            in_receive_set=d.name in receive_set,
            receiving=tuple(receiving.get(d.name, ())),
        ))
    return cells


@dataclass(frozen=True)
class HarvesterPanel:
    name: str
    snapshot: HarvesterSnapshot
    cells: list[DriveCell]
    receive_set: list[str]
    export_age_seconds: float

    @property
    def unknown_plots(self) -> int:
        return sum(d.plots_unknown for d in self.snapshot.drives)


def harvester_panel(
    name: str, snap: HarvesterSnapshot, temperatures: Mapping[str, int], hot_limit_c: int | None, now: float
) -> HarvesterPanel:
    return HarvesterPanel(
        name=name,
        snapshot=snap,
        cells=drive_cells(snap, temperatures, hot_limit_c),
        receive_set=receive_set_of(snap),
        export_age_seconds=max(0.0, now - snap.generated_at),
    )


# -- transfers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayPoint:
    day: str  # YYYY-MM-DD, local time
    plots_moved: int = 0
    mb_per_second: float | None = None  # average of the day's successful transfers
    new_plots: int | None = None  # from the harvester's daily statistics (-ud), when recorded


@dataclass
class _DayTotals:
    plots: int = 0
    bytes: int = 0
    seconds: float = 0.0


def _local_day(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp).date().isoformat()


def daily_points(
    records: Iterable[TransferRecord], daily: Sequence[DailyStats], now: float, days: int
) -> list[DayPoint]:
    """One point per day for the last ``days`` days (oldest first), days without data included,
    so the charts' x axis is time and a quiet day shows as a gap, not as a missing bar."""
    today = dt.datetime.fromtimestamp(now).date()
    keys = [(today - dt.timedelta(days=offset)).isoformat() for offset in range(days - 1, -1, -1)]
    totals: dict[str, _DayTotals] = {key: _DayTotals() for key in keys}
    for r in records:
        day = totals.get(_local_day(r.started_at))
        if day is not None and r.ok:
            day.plots += 1
            day.bytes += r.bytes
            day.seconds += r.seconds
    new_plots = {s.day: s.new_plots for s in daily}
    return [
        DayPoint(
            day=key,
            plots_moved=totals[key].plots,
            mb_per_second=round(totals[key].bytes / 1e6 / totals[key].seconds, 1) if totals[key].seconds else None,
            new_plots=new_plots.get(key),
        )
        for key in keys
    ]


# -- coins and alerts --------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    key: str
    active: bool
    changed_at: float
    detail: str


@dataclass
class Page:
    """Everything one page shows, gathered once per refresh interval."""

    generated_at: float
    refresh_seconds: int
    hostname: str
    totals: dict[str, Any] = field(default_factory=dict)
    harvesters: list[HarvesterPanel] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    in_flight: list[tuple[str, Receive]] = field(default_factory=list)
    transfers: TransferSummary | None = None
    days: list[DayPoint] = field(default_factory=list)
    coins: dict[str, Any] | None = None
    alerts: list[Alert] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # parts of the page that could not be read
    version: str = ""


def add_farm(
    page: Page,
    view: FarmView,
    hot_limit_c: int | None,
    local_name: str | None = None,
    local_temperatures: Mapping[str, Any] | None = None,
) -> None:
    """The farm's part of the page: -fr's totals (``farm_totals`` itself), one panel per
    harvester, the unreachable ones with their reason, and every receive in flight."""
    page.totals = farm_totals(view)
    page.unreachable = dict(view.problems)
    for name, snap in view.harvesters.items():
        local = local_temperatures if name == local_name else None
        panel = harvester_panel(name, snap, temperatures_of(snap, local), hot_limit_c, page.generated_at)
        page.harvesters.append(panel)
        page.in_flight += [(name, receive) for cell in panel.cells for receive in cell.receiving]
