"""Prometheus text exposition (format 0.0.4) for node_exporter's textfile collector.

The renderers are pure: they take a snapshot (harvester) or transfer records (plotter) and return
the file's text, with every metric family carrying ``# HELP`` and ``# TYPE`` once, its samples
grouped together, label values escaped and the output ordered deterministically.
``write_textfile`` puts the text in place atomically so node_exporter never reads a half file.

Samples carry no timestamps (the textfile collector rejects them); the time of the data is the
``chia_pm_export_timestamp_seconds`` gauge instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from utilities.durable import atomic_write
from utilities.harvester_export import HarvesterSnapshot
from utilities.state import TransferRecord

__all__ = [
    "MetricFamily",
    "escape_help",
    "escape_label_value",
    "format_value",
    "harvester_metrics",
    "plotter_metrics",
    "render",
    "write_textfile",
]

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_TEXTFILE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

Number = int | float | bool


def escape_label_value(value: str) -> str:
    """Backslash, double quote and newline are the three characters the format escapes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text escapes backslash and newline (quotes stay as they are)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: Number) -> str:
    """A sample value Prometheus parses: integers exactly, floats via repr, NaN/±Inf spelled out."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class MetricFamily:
    name: str
    help: str
    type: str  # "gauge" or "counter"
    samples: list[tuple[tuple[tuple[str, str], ...], Number]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _METRIC_NAME.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        if self.type not in ("gauge", "counter"):
            raise ValueError(f"unsupported metric type {self.type!r}")
        if self.type == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name!r} must end in _total")

    def add(self, value: Number, **labels: str) -> None:
        for key in labels:
            if not _LABEL_NAME.match(key) or key.startswith("__"):
                raise ValueError(f"invalid label name {key!r}")
        self.samples.append((tuple(labels.items()), value))

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.type}"]
        for labels, value in self.samples:
            label_text = ",".join(f'{k}="{escape_label_value(str(v))}"' for k, v in labels)
            label_part = "{" + label_text + "}" if labels else ""
            out.append(f"{self.name}{label_part} {format_value(value)}")
        return out


def render(families: Sequence[MetricFamily]) -> str:
    """Families in the given order; a family without samples is left out entirely."""
    seen: set[str] = set()
    lines: list[str] = []
    for family in families:
        if family.name in seen:
            raise ValueError(f"metric family {family.name!r} rendered twice")
        seen.add(family.name)
        if family.samples:
            lines.extend(family.lines())
    return "\n".join(lines) + "\n" if lines else ""


# -- harvester --------------------------------------------------------------------------------------
def harvester_metrics(
    snapshot: HarvesterSnapshot,
    temperatures: Mapping[str, int | None] = {},  # noqa: B006 - read-only default
) -> str:
    """The harvester's file: per-drive gauges plus the harvester totals.

    ``temperatures`` maps drive name to Celsius; drives with no reading (standby, no SMART) get no
    temperature sample rather than a made-up value.
    """
    host = snapshot.hostname
    drives = sorted(snapshot.drives, key=lambda d: (d.name, d.mountpoint))

    plots = MetricFamily("chia_pm_drive_plots", "Plot files on the drive, by kind (og, pool, unknown header).", "gauge")
    free_slots = MetricFamily(
        "chia_pm_drive_free_slots", "Further plots that fit on the drive after the reserve.", "gauge"
    )
    free_bytes = MetricFamily("chia_pm_drive_free_bytes", "Free bytes on the drive's filesystem.", "gauge")
    total_bytes = MetricFamily("chia_pm_drive_total_bytes", "Size in bytes of the drive's filesystem.", "gauge")
    offline = MetricFamily("chia_pm_drive_offline", "1 when the farmer took the drive offline, else 0.", "gauge")
    temperature = MetricFamily(
        "chia_pm_drive_temperature_celsius", "Drive temperature from SMART (absent in standby or unreadable).", "gauge"
    )
    receive = MetricFamily(
        "chia_pm_receive_drive", "1 for the first drive of the receive set (the current plot drive).", "gauge"
    )
    receive_set = MetricFamily(
        "chia_pm_receive_set_drive", "Position (1 = first) of the drive in the receive set; absent when not in it.",
        "gauge",
    )
    in_flight = MetricFamily(
        "chia_pm_drive_receives_in_flight",
        "Receives holding the drive now (a plot being received, or a session between two plots).", "gauge",
    )
    receive_speed = MetricFamily(
        "chia_pm_drive_receive_bytes_per_second", "Bytes per second being received onto the drive now.", "gauge"
    )

    positions = {entry.name: index for index, entry in enumerate(snapshot.receive_set, start=1)}
    claims: dict[str, int] = {}
    speeds: dict[str, float] = {}
    for r in snapshot.receiving:
        claims[r.drive] = claims.get(r.drive, 0) + 1
        speeds[r.drive] = speeds.get(r.drive, 0.0) + r.bytes_per_second
    for d in drives:
        labels = {"harvester": host, "drive": d.name, "mountpoint": d.mountpoint}
        for kind, count in (("og", d.plots_og), ("pool", d.plots_pool), ("unknown", d.plots_unknown)):
            plots.add(count, **labels, kind=kind)
        free_slots.add(d.free_slots, **labels)
        free_bytes.add(d.free_bytes, **labels)
        total_bytes.add(d.total_bytes, **labels)
        offline.add(d.offline, **labels)
        temp = temperatures.get(d.name)
        if temp is not None:
            temperature.add(temp, **labels)
        if d.name in positions:
            receive_set.add(positions[d.name], **labels)
        in_flight.add(claims.get(d.name, 0), **labels)
        receive_speed.add(float(speeds.get(d.name, 0.0)), **labels)
    if snapshot.receive_drive is not None:
        receive.add(1, harvester=host, drive=snapshot.receive_drive)

    h = {"harvester": host}
    total_plots = MetricFamily("chia_pm_plots", "Plot files on all drives of the harvester, by kind.", "gauge")
    total_plots.add(snapshot.og_plots, **h, kind="og")
    total_plots.add(snapshot.pool_plots, **h, kind="pool")
    total_plots.add(sum(d.plots_unknown for d in snapshot.drives), **h, kind="unknown")
    slots = MetricFamily("chia_pm_slots_until_full", "Free plot slots on online drives.", "gauge")
    slots.add(snapshot.slots_until_full, **h)
    max_plots = MetricFamily("chia_pm_max_plots", "Plots the harvester's drives hold when full.", "gauge")
    max_plots.add(snapshot.max_plots, **h)
    last_24h = MetricFamily("chia_pm_plots_last_24h", "Plots added in the last 24 hours.", "gauge")
    last_24h.add(snapshot.plots_last_24h, **h)
    days = MetricFamily(
        "chia_pm_days_to_fill", "Days until the online drives are full at the last 24 hours' pace.", "gauge"
    )
    if snapshot.days_to_fill is not None:
        days.add(snapshot.days_to_fill, **h)
    farmed = MetricFamily("chia_pm_chia_farmed_plots", "Plots chia itself reports farming (from its log).", "gauge")
    if snapshot.chia_plots is not None:
        farmed.add(snapshot.chia_plots, **h)
    available = MetricFamily(
        "chia_pm_receives_available", "Further plots the harvester can receive at once now (free set drives).", "gauge"
    )
    if snapshot.receives_available is not None:
        available.add(snapshot.receives_available, **h)
    stamp = MetricFamily("chia_pm_export_timestamp_seconds", "Unix time the data was collected.", "gauge")
    stamp.add(float(snapshot.generated_at), **h)

    return render(
        [
            plots,
            free_slots,
            free_bytes,
            total_bytes,
            offline,
            temperature,
            receive,
            receive_set,
            in_flight,
            receive_speed,
            available,
            total_plots,
            slots,
            max_plots,
            last_24h,
            days,
            farmed,
            stamp,
        ]
    )


# -- plotter ----------------------------------------------------------------------------------------
def plotter_metrics(hostname: str, records: Sequence[TransferRecord], now: float) -> str:
    """The plotter's file, per target harvester, from the transfer records given.

    The ``*_total`` counters count the records passed in, so pass the full history (not a
    window) for them to behave as counters. ``now`` becomes ``chia_pm_export_timestamp_seconds``.
    The last-transfer gauges describe the newest successful transfer to each harvester (newest by
    start time); its timestamp is when that transfer finished (start + duration).
    """
    sent: dict[str, int] = {}
    sent_bytes: dict[str, int] = {}
    failures: dict[str, int] = {}
    saved_bytes: dict[str, int] = {}
    newest: dict[str, TransferRecord] = {}
    for r in records:
        sent.setdefault(r.harvester, 0)
        sent_bytes.setdefault(r.harvester, 0)
        failures.setdefault(r.harvester, 0)
        saved_bytes.setdefault(r.harvester, 0)
        if r.ok:
            sent[r.harvester] += 1
            sent_bytes[r.harvester] += r.bytes
            saved_bytes[r.harvester] += r.saved
            best = newest.get(r.harvester)
            if best is None or (r.started_at, r.seconds) > (best.started_at, best.seconds):
                newest[r.harvester] = r
        else:
            failures[r.harvester] += 1

    plots_sent = MetricFamily("chia_pm_plots_sent_total", "Plots transferred successfully to the harvester.", "counter")
    bytes_sent = MetricFamily(
        "chia_pm_bytes_sent_total", "Bytes of plots transferred successfully to the harvester.", "counter"
    )
    failed = MetricFamily("chia_pm_transfer_failures_total", "Plot transfers to the harvester that failed.", "counter")
    saved = MetricFamily(
        "chia_pm_bytes_saved_by_resume_total",
        "Bytes of plots sent successfully that a resumed transfer did not send again.", "counter",
    )
    speed = MetricFamily(
        "chia_pm_last_transfer_mb_per_second", "Speed (MB/s) of the newest successful transfer.", "gauge"
    )
    last = MetricFamily(
        "chia_pm_last_transfer_timestamp_seconds", "Unix time the newest successful transfer finished.", "gauge"
    )
    for target in sorted(sent):
        labels = {"plotter": hostname, "harvester": target}
        plots_sent.add(sent[target], **labels)
        bytes_sent.add(sent_bytes[target], **labels)
        failed.add(failures[target], **labels)
        saved.add(saved_bytes[target], **labels)
        if target in newest:
            r = newest[target]
            speed.add(float(r.mb_per_second), **labels)
            last.add(float(r.started_at + r.seconds), **labels)
    stamp = MetricFamily("chia_pm_export_timestamp_seconds", "Unix time the data was collected.", "gauge")
    stamp.add(float(now), plotter=hostname)
    return render([plots_sent, bytes_sent, failed, saved, speed, last, stamp])


# -- I/O --------------------------------------------------------------------------------------------
def write_textfile(directory: Path, name: str, text: str) -> Path:
    """Atomically write ``directory/name.prom`` (mode 0644) and return its path.

    ``durable.atomic_write`` writes a hidden temporary file in the same directory
    (node_exporter only reads ``*.prom``), fsyncs it and renames it over the target, so a reader
    sees the old file or the new one, never a part; the directory is then fsynced so the rename
    survives a crash. ``name`` may be given with or without the ``.prom`` suffix.
    """
    if name.endswith(".prom"):
        name = name[: -len(".prom")]
    if not name or not _TEXTFILE_NAME.match(name) or name.startswith("."):
        raise ValueError(f"invalid textfile name {name!r}")
    directory = Path(directory)
    target = directory / f"{name}.prom"
    atomic_write(target, text, mode=0o644, make_parents=True)  # its temporary name does not end in .prom
    return target
