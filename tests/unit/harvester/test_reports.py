"""The -pr report: the drive reserved for local plots is shown when local moves are on."""

from __future__ import annotations

import json

from utilities.harvester.reports import plot_report_data, plot_report_text
from utilities.harvester_export import DriveSummary, HarvesterSnapshot
from utilities.text import REPORT_WIDTH

PLOT = 100 * 2**30


def _drive(name: str, device: str) -> DriveSummary:
    return DriveSummary(name, f"/mnt/enclosure0/{name}", device, None, "xfs", 10 * PLOT, 4 * PLOT,
                        3, 3, 0, 1, 4, offline=False, mounted=True)


def _snapshot(**extra: object) -> HarvesterSnapshot:
    return HarvesterSnapshot("chianas01", 1_700_000_000.0, PLOT, (_drive("drive0", "/dev/sdb"), _drive("drive1", "/dev/sdc")),
                             receive_drive="drive0", receive_dir="/mnt/enclosure0/drive0", extra=dict(extra))


def _line(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(label))


def test_local_plot_drive_is_reported_when_local_moves_are_on() -> None:
    data = plot_report_data(_snapshot(local_receive_drive="drive1", local_replaces_old_plots=True), None)
    assert (data["local_receive_drive"], data["local_receive_mountpoint"], data["local_receive_device"],
            data["local_replaces_old_plots"]) == ("drive1", "/mnt/enclosure0/drive1", "/dev/sdc", True)
    assert json.loads(json.dumps(data))["local_receive_drive"] == "drive1"
    text = plot_report_text(data, "k32")
    local = _line(text, "Current Local Plot Storage Drive:")
    assert local.endswith(" /dev/sdc") and len(local) == REPORT_WIDTH  # right-aligned like every report line
    assert _line(text, "Current Local Plot Storage Mountpoint:").endswith(" /mnt/enclosure0/drive1")
    assert _line(text, "Current Plot Storage Drive:").endswith(" /dev/sdb")  # the network's, unchanged


def test_no_local_drive_with_room() -> None:
    data = plot_report_data(_snapshot(local_receive_drive=None, local_replaces_old_plots=False), None)
    assert data["local_receive_drive"] is None and data["local_receive_mountpoint"] is None
    text = plot_report_text(data, "k32")
    assert _line(text, "Current Local Plot Storage Drive:").endswith(" NONE - no drive has room")
    assert _line(text, "Current Local Plot Storage Mountpoint:").endswith(" n/a")


def test_nothing_about_local_plots_when_local_moves_are_off() -> None:
    data = plot_report_data(_snapshot(receive_replaces_old_plots=False), None)
    assert not any(key.startswith("local_") for key in data)
    assert "Local Plot" not in plot_report_text(data, "k32")
