"""The farm at a glance (-fr) and the farm-wide UUID search (-uuid), from harvester exports.

This harvester's live snapshot plus every other harvester's export (fetched in parallel over
SSH). A harvester that is down or answers garbage is shown as such; it never breaks the report.

A plot held twice (on two drives, or on two harvesters) is farmed once and wastes a slot: the
exports carry the plot ids each drive holds (compactly, utilities/harvester/plot_ids.py), the
report lists every duplicate with its copies, and the farm's plot total counts each plot once.
Each harvester's own section still counts the files it holds. Plot drives that vanished from a
harvester (utilities/harvester/drive_presence.py) are listed in its section.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from utilities.errors import UsageError
from utilities.harvester.drive_health import REASON_TEXT
from utilities.harvester.plot_ids import Duplicate, find_duplicates
from utilities.harvester_export import TIB, HarvesterSnapshot
from utilities.text import REPORT_WIDTH, banner, report_line

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}")


@dataclass(frozen=True)
class FarmView:
    harvesters: dict[str, HarvesterSnapshot]
    problems: dict[str, str]  # harvester -> why it is missing from the totals

    @cached_property
    def duplicates(self) -> list[Duplicate]:
        """Plots held more than once among the harvesters whose exports carry plot ids."""
        return find_duplicates({n: s.plot_ids for n, s in self.harvesters.items() if s.plot_ids is not None})

    @property
    def unchecked(self) -> list[str]:
        """Harvesters whose exports carry no plot ids (older versions): not searched for duplicates."""
        return [n for n, s in self.harvesters.items() if s.plot_ids is None]


def build_view(local: HarvesterSnapshot, remote: Mapping[str, HarvesterSnapshot | Exception]) -> FarmView:
    harvesters = {local.hostname: local}
    problems = {}
    for name, answer in sorted(remote.items()):
        if name == local.hostname:
            continue
        if isinstance(answer, Exception):  # a RemoteError saying why
            problems[name] = str(answer)
        else:
            harvesters[name] = answer
    return FarmView(harvesters, problems)


def farm_totals(view: FarmView) -> dict[str, Any]:
    """Pure: the farm-wide figures of the report."""
    snaps = list(view.harvesters.values())
    per_day = sum(s.plots_last_24h for s in snaps)
    slots = sum(s.slots_until_full for s in snaps)
    og = sum(s.og_plots for s in snaps)
    chia_known = [s.chia_plots for s in snaps if s.chia_plots is not None]
    plot_tib = sum(s.plots_last_24h * s.plot_size_bytes for s in snaps) / TIB
    replacing = any(s.extra.get("replace_non_pool_plots") for s in snaps)
    available = [s.receives_available for s in snaps if s.receives_available is not None]
    files = sum(s.total_plots for s in snaps)
    extra_copies = sum(d.extra_copies for d in view.duplicates)
    return {
        "plots": files - extra_copies,  # each plot once: a second copy farms nothing
        "plot_files": files,
        "duplicate_plots": len(view.duplicates),
        "duplicate_copies": extra_copies,  # copies beyond the first, left out of "plots"
        "duplicates_unchecked": view.unchecked,
        "missing_drives": sum(len(s.missing_drives) for s in snaps),
        "held_back_drives": sum(len(s.held_back) for s in snaps),  # for their SMART health or heat
        "og_plots": og,
        "pool_plots": sum(s.pool_plots for s in snaps),
        "chia_plots": sum(chia_known) if chia_known else None,
        "chia_tib": round(sum(s.chia_tib or 0 for s in snaps), 1) if chia_known else None,
        "drives": sum(s.drive_count for s in snaps),
        "slots_until_full": slots,
        "max_plots": sum(s.max_plots for s in snaps),
        "plots_last_24h": per_day,
        "plots_per_hour": round(per_day / 24, 1),
        "tib_per_day": round(plot_tib, 2),
        "days_to_fill": round((slots + (og if replacing else 0)) / per_day, 1) if per_day else None,
        "replacing": replacing,
        "receives_in_flight": sum(len(s.receiving) for s in snaps),
        "receives_available": sum(available) if available else None,  # None: no harvester says
        "harvesters": len(snaps),
        "unreachable": dict(view.problems),
    }


def farm_report_text(view: FarmView) -> str:
    totals = farm_totals(view)
    lines = banner("Farm Wide Plot Report")
    rows: list[tuple[str, object]] = [
        ("Total Number of Plots on Farm:", totals["plots"]),
        ("Duplicate Plot Copies (not counted above):", totals["duplicate_copies"]),
        ("Total Number of Plots Chia is Farming:", totals["chia_plots"]),
        ("Total Amount of Drive Space (TiB) Chia is Farming:", totals["chia_tib"]),
        ("Total Number of Systemwide Plots Drives:", totals["drives"]),
        ("Total Number of Plots until full:", totals["slots_until_full"]),
        ("Maximum # of plots when full:", totals["max_plots"]),
        ("Plots completed in the last 24 Hours:", totals["plots_last_24h"]),
        ("Average Plots per Hour:", totals["plots_per_hour"]),
        ("Average Plotting Speed Last 24 Hours (TiB/Day):", totals["tib_per_day"]),
        (
            "Appx Number of Days to fill/replace plots/drives:" if totals["replacing"]
            else "Appx Number of Days to fill all current plot drives:",
            totals["days_to_fill"],
        ),
        ("Plots Being Received Now:", totals["receives_in_flight"]),
        ("Receives Available Now:", totals["receives_available"]),
        ("Missing Plot Drives:", totals["missing_drives"]),
        ("Plot Drives Held Back (SMART, heat):", totals["held_back_drives"]),
    ]
    lines += [report_line(label, value) for label, value in rows]
    lines += duplicate_lines(view)
    for name, snap in view.harvesters.items():
        lines += banner(f"{name} Harvester Report")
        section: list[tuple[str, object]] = []
        if snap.extra.get("replace_non_pool_plots"):
            section += [
                ("Replace Non-Pool Plots:", "Active"),
                (f"Total Number of OLD Plots on {name}:", snap.og_plots),
                (f"Total Number of PORTABLE Plots on {name}:", snap.pool_plots),
            ]
        per_day = snap.plots_last_24h
        days = (snap.og_plots / per_day if snap.extra.get("replace_non_pool_plots") else snap.days_to_fill) if per_day else None
        section += [
            (f"Total number of plots on {name}:", snap.total_plots),
            ("Plots completed in the last 24 hours:", per_day),
            ("Average Plotting Speed Last 24 Hours (Tib/Day):", round(snap.tib_per_day, 2)),
            (
                f"Appx # of Days to replace all plots on {name}:" if snap.extra.get("replace_non_pool_plots")
                else "Appx # of Days to fill all drives on this harvester:",
                round(days, 1) if days is not None else None,
            ),
            ("Receive Drives (* may replace old plots):" if any(e.replace for e in snap.receive_set)
             else "Receive Drives:", ", ".join(e.name + ("*" if e.replace else "") for e in snap.receive_set) or "none"),
            ("Receives in Flight:", len(snap.receiving)),
            ("Receives Available Now:", snap.receives_available),
        ]
        lines += [report_line(label, value) for label, value in section]
        lines += [
            report_line(f"Receiving Now on {r.drive}:", f"{100 * r.fraction:.0f}% at {r.bytes_per_second / 1e6:.1f} MB/s")
            for r in snap.receiving if r.plot
        ]
        lines += [
            f"MISSING DRIVE: {m.name} ({m.mountpoint}), {m.plots} plots, since "
            f"{datetime.fromtimestamp(m.since).isoformat(sep=' ', timespec='minutes')}: {m.reason}"
            for m in snap.missing_drives
        ]
        lines += [f"HELD BACK: {h['name']}: {REASON_TEXT.get(h['reason'], h['reason'])} ({h['detail']})"
                  for h in snap.held_back]
    for name, reason in view.problems.items():
        lines += banner(f"{name} Harvester Report")
        lines.append(f"UNREACHABLE: {reason}"[:200])
    lines.append("#" * REPORT_WIDTH)
    return "\n".join(lines)


DUPLICATES_SHOWN = 50  # text report; --json lists them all


def duplicate_lines(view: FarmView) -> list[str]:
    """-fr's duplicates: each plot id prefix (as in the file name) and where its copies are."""
    lines = []
    if view.duplicates:
        lines += banner("Duplicate Plots (each farms once)")
        for dup in view.duplicates[:DUPLICATES_SHOWN]:
            lines.append(f"{dup.prefix}: " + ", ".join(str(c) for c in dup.copies))
        if len(view.duplicates) > DUPLICATES_SHOWN:
            lines.append(f"... and {len(view.duplicates) - DUPLICATES_SHOWN} more (-fr --json lists them all)")
    if view.unchecked:
        lines.append(f"Not checked for duplicates (no plot ids in their export): {', '.join(view.unchecked)}")
    return lines


def _export_without_ids(snap: HarvesterSnapshot) -> dict[str, Any]:
    data = snap.to_dict()
    data.pop("plot_ids", None)  # ~320 KB per 30,000 plots; the duplicates are listed instead
    return data


def farm_report_data(view: FarmView) -> dict[str, Any]:
    """-fr --json: the totals, the duplicates, and each harvester's export as it is (receive set,
    receives in flight and available, missing drives included; its plot ids left out)."""
    return {
        "totals": farm_totals(view),
        "duplicates": [d.to_dict() for d in view.duplicates],
        "harvesters": {name: _export_without_ids(snap) for name, snap in view.harvesters.items()},
    }


def validate_uuid(text: str) -> str:
    if not _UUID_RE.fullmatch(text.strip()):
        raise UsageError(f"-uuid: {text!r} is not a filesystem UUID (like fa1eb1f5-ff48-4fcd-b4d1-be2e556654ad)")
    return text.strip().lower()


def find_uuid(view: FarmView, uuid: str) -> tuple[str, str] | None:
    """(harvester, mountpoint) of the drive with this filesystem UUID, or None."""
    for name, snap in view.harvesters.items():
        for drive in snap.drives:
            if drive.uuid and drive.uuid.lower() == uuid:
                return name, drive.mountpoint
    return None


def uuid_report_text(uuid: str, found: tuple[str, str] | None, problems: Mapping[str, str]) -> str:
    lines = banner("UUID Search Report")
    lines.append(f"UUID:          {uuid}")
    if found:
        lines += ["Status:        LOCATED", f"Harvester:     {found[0]}", f"Mount Point:   {found[1]}"]
    else:
        lines.append("Status:        NOT LOCATED")
        lines += [f"Not searched:  {name} ({reason})"[:200] for name, reason in problems.items()]
    lines.append("#" * REPORT_WIDTH)
    return "\n".join(lines)
