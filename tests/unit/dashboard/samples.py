"""Snapshots and pages for the dashboard's unit tests, built from the export's own classes."""

from __future__ import annotations

from typing import Any

from utilities.harvester_export import DriveSummary, HarvesterSnapshot

GIB = 1024**3


def drive(name: str, **changes: Any) -> DriveSummary:
    values: dict[str, Any] = {
        "name": name, "mountpoint": f"/mnt/enclosure0/front/column0/{name}", "device": "/dev/sdb1", "uuid": None,
        "fstype": "xfs", "total_bytes": 100 * GIB, "free_bytes": 25 * GIB, "plots_og": 2, "plots_pool": 1,
        "plots_unknown": 0, "plots_last_24h": 1, "free_slots": 3, "offline": False, "mounted": True,
    }
    values.update(changes)
    return DriveSummary(**values)


def snapshot(name: str, drives: tuple[DriveSummary, ...], **changes: Any) -> HarvesterSnapshot:
    values: dict[str, Any] = {
        "hostname": name, "generated_at": 1_000_000.0, "plot_size_bytes": 8 * GIB, "drives": drives,
        "receive_drive": drives[0].name if drives else None,
    }
    values.update(changes)
    return HarvesterSnapshot(**values)
