"""Render the harvester reports (-pr, -ct, daily) as text and JSON from one snapshot.

The labels follow the original tool's reports so a farmer's habits (and grep patterns) carry
over; the numbers all come from ``HarvesterSnapshot`` so screen, email and JSON always agree.
The line shapes, sizes and temperatures are ``utilities/text.py``'s, shared with every report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from utilities.harvester.drive_health import REASON_TEXT
from utilities.harvester.smart import SmartInfo
from utilities.harvester.smart_history import DriveTrend
from utilities.harvester_export import TIB, DriveSummary, HarvesterSnapshot
from utilities.text import (
    MISSING,
    REPORT_WIDTH,
    banner,
    binary_size,
    format_size,
    health_text,
    report_line,
    temperature_text,
)


def format_temperature(info: SmartInfo | None) -> str:
    """The drive's temperature as every report shows it ("41°C", "standby", ``n/a``)."""
    return MISSING if info is None else temperature_text(info.state, info.temperature_c)


def format_health(info: SmartInfo | None) -> str:
    """The drive's SMART health as every report shows it ("PASSED", "standby", ``n/a``)."""
    return MISSING if info is None else health_text(info.state, info.health)


def plot_size_label(setting: str | int) -> str:
    """How reports name the capacity unit: "k32", "k32-c5", or the configured byte size."""
    return setting if isinstance(setting, str) and not setting.isdigit() else format_size(int(setting))


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def local_drive_data(snap: HarvesterSnapshot) -> dict[str, Any]:
    """The drive reserved for move_local_plots.py, as the harvester pass recorded it in the
    snapshot; empty when local moves are off (the pass then records no such key)."""
    if "local_receive_drive" not in snap.extra:
        return {}
    local = snap.drive(snap.extra["local_receive_drive"])
    return {
        "local_receive_drive": local.name if local else None,
        "local_receive_mountpoint": local.mountpoint if local else None,
        "local_receive_device": local.device if local else None,
        "local_replaces_old_plots": bool(snap.extra.get("local_replaces_old_plots")) if local else False,
    }


def receive_set_data(snap: HarvesterSnapshot) -> dict[str, Any]:
    """The receive set and the receives in flight, as -pr and its JSON show them."""
    drives = []
    for entry in snap.receive_set:
        drive = snap.drive(entry.name)
        drives.append({"name": entry.name, "mountpoint": drive.mountpoint if drive else None,
                       "device": drive.device if drive else None, "replace": entry.replace})
    receiving = []
    for receive in snap.receiving:
        drive = snap.drive(receive.drive)
        receiving.append({
            "drive": receive.drive,
            "mountpoint": drive.mountpoint if drive else None,
            "plot": receive.plot or None,  # None: a session holding the drive between two plots
            "size": receive.size,
            "received": receive.received,
            "percent": round(100 * receive.fraction, 1),
            "mb_per_second": round(receive.bytes_per_second / 1e6, 1),
            "started_at": receive.started_at,
        })
    return {
        "receive_set": drives,
        "receives_in_flight": len(snap.receiving),
        "receives_available": snap.receives_available,
        "receiving": receiving,
    }


def plot_report_data(
    snap: HarvesterSnapshot, receive_smart: SmartInfo | None, failing_checks: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The -pr figures as plain data: the JSON output, and the source of the text layout.

    ``failing_checks``: the plots whose last --check-plots failed (plot_check_store.failing_plots).
    """
    receive = snap.drive(snap.receive_drive)
    return {
        "hostname": snap.hostname,
        "generated_at": datetime.fromtimestamp(snap.generated_at).isoformat(timespec="seconds"),
        "total_plots": snap.total_plots,
        "og_plots": snap.og_plots,
        "pool_plots": snap.pool_plots,
        "unknown_plots": snap.total_plots - snap.og_plots - snap.pool_plots,
        "chia_plots": snap.chia_plots,
        "chia_tib": _round(snap.chia_tib, 1),
        "plot_tib_on_disk": round(sum(d.total_bytes - d.free_bytes for d in snap.drives) / TIB, 2),
        "drive_count": snap.drive_count,
        "offline_drives": [d.name for d in snap.drives if d.offline],
        "slots_until_full": snap.slots_until_full,
        "max_plots": snap.max_plots,
        "plots_last_24h": snap.plots_last_24h,
        "plots_per_hour": round(snap.plots_per_hour, 1),
        "tib_per_day": round(snap.tib_per_day, 2),
        "days_to_fill": snap.days_to_fill,
        "plot_size_bytes": snap.plot_size_bytes,
        "receive_drive": snap.receive_drive,
        "receive_mountpoint": receive.mountpoint if receive else None,
        "receive_device": receive.device if receive else None,
        "receive_temperature": format_temperature(receive_smart) if receive else None,
        "receive_health": format_health(receive_smart) if receive else None,
        "receive_serial": receive_smart.serial if receive and receive_smart else None,
        **receive_set_data(snap),
        **local_drive_data(snap),
        "stale_parts_removed_24h": snap.stale_parts.files,
        "stale_part_bytes_freed_24h": snap.stale_parts.bytes,
        "resumable_parts": snap.resumable_parts.files,
        "resumable_part_bytes": snap.resumable_parts.bytes,
        "missing_drives": missing_drives_data(snap),
        "held_back": held_back_data(snap),
        "failing_plot_checks": [{**f, "checked_at": datetime.fromtimestamp(f["checked_at"]).isoformat(timespec="seconds")}
                                for f in failing_checks],
        "drives": [d.__dict__ for d in snap.drives],
    }


def failing_checks_lines(failing: Sequence[Mapping[str, Any]]) -> list[str]:
    """-pr's "Plots Failing Their Check" section: per plot its drive, what failed and when."""
    lines = [report_line("Plots Failing Their Check:", len(failing) or "none")]
    for f in failing:
        what = "no proofs" if f["result"] == "no_proofs" else "read error"
        lines.append(f"    {f['drive']}: {f['plot']}")
        lines.append(f"      {what}, {f['proofs']}/{f['challenges']} proofs, checked {f['checked_at']}"
                     + (f": {f['error']}" if f.get("error") else ""))
    return lines


def held_back_data(snap: HarvesterSnapshot) -> list[dict[str, Any]]:
    """Drives held back from receiving for their health (utilities/harvester/drive_holds.py)."""
    return [{**h, "since": datetime.fromtimestamp(h["since"]).isoformat(timespec="seconds")
             if isinstance(h.get("since"), (int, float)) else None} for h in snap.held_back]


def held_back_lines(held: Sequence[Mapping[str, Any]]) -> list[str]:
    """-pr's "Held Back Plot Drives" section: per drive why, and how it comes back."""
    lines = [report_line("Held Back Plot Drives:", len(held) or "none")]
    for h in held:
        back = "returns when it cools down" if h["reason"] == "hot" else f"back with -on {h['name']}"
        lines.append(f"    {h['name']}: {REASON_TEXT.get(h['reason'], h['reason'])} since {h['since']} ({back})")
        lines.append(f"      {h['detail']}")
    return lines


def missing_drives_data(snap: HarvesterSnapshot) -> list[dict[str, Any]]:
    """Plot drives that vanished and have not come back (utilities/harvester/drive_presence.py)."""
    return [{**m.to_dict(), "since": datetime.fromtimestamp(m.since).isoformat(timespec="seconds")}
            for m in snap.missing_drives]


def missing_drives_lines(missing: Sequence[Mapping[str, Any]]) -> list[str]:
    """-pr's "Missing Plot Drives" section: per drive its mountpoint, the plots it held, since when."""
    lines = [report_line("Missing Plot Drives:", len(missing) or "none")]
    for m in missing:
        lines.append(f"    {m['name']}: {m['mountpoint']}, {m['plots']} plots, missing since {m['since']}")
        lines.append(f"      {m['reason']}")
    return lines


def resumable_parts_text(files: int, held: int) -> str:
    """-pr's "Kept Part Files" value: "0", or "2 (partial, resumable, 150.0 GiB)"."""
    return f"{files} (partial, resumable, {binary_size(held)})" if files else "0"


def stale_parts_text(files: int, freed: int) -> str:
    """-pr's "Stale Part Files Removed" value: "0", or "2 (200.0 GiB freed)"."""
    return f"{files} ({binary_size(freed)} freed)" if files else "0"


def receive_set_text(drives: Sequence[Mapping[str, Any]]) -> str:
    """-pr's "Receive Drives" value: the set in order, a drive that may replace old plots marked."""
    return ", ".join(d["name"] + ("*" if d["replace"] else "") for d in drives) or "NONE - no drive has room"


def receiving_lines(receiving: Sequence[Mapping[str, Any]]) -> list[str]:
    """-pr's "Receiving Now" lines: per receive its drive, how far and how fast, then the plot."""
    lines = []
    for r in receiving:
        label = f"Receiving Now on {r['drive']}:"
        if r["plot"] is None:
            lines.append(report_line(label, "session open, between plots"))
            continue
        lines.append(report_line(label, f"{r['percent']:.0f}% of {binary_size(r['size'])} at {r['mb_per_second']:.1f} MB/s"))
        lines.append(f"    {r['plot']}")
    return lines


def plot_report_text(data: Mapping[str, Any], size_label: str) -> str:
    host = data["hostname"]
    lines = banner(f"{host} Plot Report")
    rows: list[tuple[str, object]] = [(f"Total Number of Plots on {host}:", data["total_plots"])]
    rows += [
        (f"Total Number of OLD Plots on {host}:", data["og_plots"]),
        (f"Total Number of PORTABLE Plots on {host}:", data["pool_plots"]),
        ("Total Number of Plots Chia is Farming:", data["chia_plots"]),
        ("Total Amount of Drive Space (TiB) Chia is Farming:", data["chia_tib"]),
        ("Total Number of Systemwide Plots Drives:", data["drive_count"]),
        ("Offline Plot Drives:", ", ".join(data["offline_drives"]) or "none"),
        (f"Total Number of {size_label} Plots until full:", data["slots_until_full"]),
        ("Maximum # of plots when full:", data["max_plots"]),
        ("Plots completed in the last 24 Hours:", data["plots_last_24h"]),
        ("Average Plots per Hours:", data["plots_per_hour"]),
        ("Average Plotting Speed Last 24 Hours (TiB/Day):", data["tib_per_day"]),
        ("Appx Number of Days to fill all current plot drives:", data["days_to_fill"]),
        ("Current Plot Storage Drive:", data["receive_device"] or "NONE - no drive has room"),
        ("Current Plot Storage Mountpoint:", data["receive_mountpoint"]),
        ("Temperature of Current Plot Drive:", data["receive_temperature"]),
        ("Latest Smart Drive Assessment of Plot Drive:", data["receive_health"]),
        ("Receive Drives (* may replace old plots):" if any(d["replace"] for d in data["receive_set"])
         else "Receive Drives:", receive_set_text(data["receive_set"])),
        ("Receives in Flight:", data["receives_in_flight"]),
        ("Receives Available Now:", data["receives_available"]),
    ]
    if "local_receive_drive" in data:  # harvester.local_moves.enabled
        rows += [
            ("Current Local Plot Storage Drive:", data["local_receive_device"] or "NONE - no drive has room"),
            ("Current Local Plot Storage Mountpoint:", data["local_receive_mountpoint"]),
        ]
    rows.append(("Stale Part Files Removed (24 h):",
                 stale_parts_text(data["stale_parts_removed_24h"], data["stale_part_bytes_freed_24h"])))
    rows.append(("Kept Part Files:", resumable_parts_text(data["resumable_parts"], data["resumable_part_bytes"])))
    lines += [report_line(label, value) for label, value in rows]
    lines += receiving_lines(data["receiving"])
    lines += missing_drives_lines(data["missing_drives"])
    lines += held_back_lines(data["held_back"])
    lines += failing_checks_lines(data.get("failing_plot_checks", []))
    lines.append("#" * REPORT_WIDTH)
    return "\n".join(lines)


def temperature_rows(
    drives: Sequence[DriveSummary], smart: Mapping[str, SmartInfo], limit_c: int,
    trends: Mapping[str, DriveTrend] | None = None, held: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One row per drive for -ct; ``hot`` marks drives at or above the configured limit; with
    ``trends`` (the SMART history) each row has its ``trend``, with ``held`` (drive -> why) the
    drives held back."""
    rows = []
    for drive in drives:
        info = smart.get(drive.name)
        temp = info.temperature_c if info is not None and info.state == "active" else None
        rows.append(
            {
                "drive": drive.name,
                "mountpoint": drive.mountpoint,
                "device": drive.device,
                "disk": info.disk if info else None,
                "serial": info.serial if info else None,
                "state": info.state if info else "unavailable",
                "temperature_c": temp,
                "health": info.health if info else None,
                "hot": temp is not None and temp >= limit_c,
            }
        )
        if trends is not None:
            trend = trends.get(drive.name)
            rows[-1]["trend"] = trend.to_dict() if trend else None
            rows[-1]["held_back"] = (held or {}).get(drive.name)
    return rows


def _trend_cells(row: Mapping[str, Any]) -> list[str]:
    """-ct's history columns: temperature 24 h and 7 d ago, and each sector count now/24h/7d."""
    trend = row.get("trend")

    def value(when: str, key: str) -> str:
        found = trend[when][key] if trend else None
        return MISSING if found is None else str(found)

    cells = [value("24h", "temperature_c"), value("7d", "temperature_c")]
    cells += ["/".join(value(when, key) for when in ("now", "24h", "7d"))
              for key in ("reallocated", "pending", "offline_uncorrectable")]
    return [*cells, row.get("held_back") or ""]


TREND_HEADERS = ["24h", "7d", "Realloc now/24h/7d", "Pending now/24h/7d", "Uncorr. now/24h/7d", "Held back"]


def temperature_report_text(hostname: str, rows: Sequence[Mapping[str, Any]], limit_c: int) -> str:
    from tabulate import tabulate  # only -ct prints a table; the cron pass need not import it

    table = tabulate(
        [
            [
                r["serial"] or "n/a",
                r["device"],
                r["drive"],
                temperature_text(r["state"], r["temperature_c"]),
                *(_trend_cells(r) if "trend" in r else []),
                "HOT" if r["hot"] else "",
            ]
            for r in rows
        ],
        headers=["Serial#", "Device", "Drive", "Temp", *(TREND_HEADERS if any("trend" in r for r in rows) else []),
                 f">= {limit_c}°C"],
        tablefmt="simple",
    )
    width = max([REPORT_WIDTH] + [len(line) for line in table.splitlines()])
    return "\n".join(banner(f"{hostname} Temperature Report", width) + [table, "#" * width])


def daily_report_context(
    data: Mapping[str, Any], smart: SmartInfo | None, grown: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The template context of the daily report email (see templates/daily_report.*.j2);
    ``grown``: the drives whose sector counts grew in 24 h (smart_history.grown_drives)."""
    receive_total = next(
        (d["total_bytes"] for d in data["drives"] if d["name"] == data["receive_drive"]), None
    )
    return {
        "hostname": data["hostname"],
        "time": data["generated_at"],
        "receive_drive_mountpoint": data["receive_mountpoint"],
        "receive_drive_device": data["receive_device"],
        "receive_drive_size": format_size(receive_total) if receive_total else None,
        "serial": data["receive_serial"],
        "temperature": data["receive_temperature"],
        "health": data["receive_health"],
        "total_plots": data["total_plots"],
        "og_plots": data["og_plots"],
        "pool_plots": data["pool_plots"],
        "drive_count": data["drive_count"],
        "slots_until_full": data["slots_until_full"],
        "max_plots": data["max_plots"],
        "chia_plots": data["chia_plots"],
        "chia_tib": data["chia_tib"],
        "plots_last_24h": data["plots_last_24h"],
        "plots_per_hour": data["plots_per_hour"],
        "tib_per_day": data["tib_per_day"],
        "days_to_fill": data["days_to_fill"],
        "grown_drives": list(grown),
        "held_back": data.get("held_back", []),
    }
