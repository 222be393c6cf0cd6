"""The -pr and -fr reports: the drive reserved for local plots when local moves are on, the
receive set, and the receives in flight and available."""

from __future__ import annotations

import json

from utilities.harvester.farm_report import build_view, farm_report_data, farm_report_text
from utilities.harvester.reports import plot_report_data, plot_report_text
from utilities.harvester_export import DriveSummary, HarvesterSnapshot, ReceiveSetDrive
from utilities.text import REPORT_WIDTH
from utilities.transfer.claims import ReceiveInFlight

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


def _sink_snapshot() -> HarvesterSnapshot:
    plot = "plot-k32-2024-01-01-00-00-" + "c" * 64 + ".plot"
    receiving = (
        ReceiveInFlight("drive1", plot, size=4 * 10**9, received=10**9, started_at=100.0, updated_at=110.0, pid=5),
        ReceiveInFlight("drive0", "", started_at=100.0, updated_at=100.0, pid=6),
    )
    return HarvesterSnapshot(
        "chianas01", 1_700_000_000.0, PLOT, (_drive("drive0", "/dev/sdb"), _drive("drive1", "/dev/sdc")),
        receive_drive="drive0", receive_dir="/mnt/enclosure0/drive0",
        receive_set=(ReceiveSetDrive("drive0"), ReceiveSetDrive("drive1", True)), receives_available=0,
        receiving=receiving,
    )


def test_receive_set_and_receives_in_flight_are_reported() -> None:
    data = plot_report_data(_sink_snapshot(), None)
    assert data["receive_set"] == [
        {"name": "drive0", "mountpoint": "/mnt/enclosure0/drive0", "device": "/dev/sdb", "replace": False},
        {"name": "drive1", "mountpoint": "/mnt/enclosure0/drive1", "device": "/dev/sdc", "replace": True},
    ]
    assert (data["receives_in_flight"], data["receives_available"]) == (2, 0)
    first, idle = data["receiving"]
    assert (first["drive"], first["percent"], first["mb_per_second"]) == ("drive1", 25.0, 100.0)
    assert idle["plot"] is None
    assert json.loads(json.dumps(data))["receiving"][0]["plot"].startswith("plot-k32-")
    text = plot_report_text(data, "k32")
    assert _line(text, "Receive Drives (* may replace old plots):").endswith(" drive0, drive1*")
    assert _line(text, "Receives in Flight:").endswith(" 2")
    assert _line(text, "Receives Available Now:").endswith(" 0")
    now = _line(text, "Receiving Now on drive1:")
    assert now.endswith(" 25% of 3.7 GiB at 100.0 MB/s") and len(now) == REPORT_WIDTH
    assert f"    {first['plot']}" in text.splitlines()
    assert _line(text, "Receiving Now on drive0:").endswith(" session open, between plots")


def test_no_receive_set_and_an_older_snapshot() -> None:
    empty = HarvesterSnapshot("chianas01", 1.0, PLOT, (_drive("drive0", "/dev/sdb"),))
    text = plot_report_text(plot_report_data(empty, None), "k32")
    assert _line(text, "Receive Drives:").endswith(" NONE - no drive has room")
    assert _line(text, "Receives Available Now:").endswith(" n/a")
    assert "Receiving Now" not in text


def test_farm_report_shows_receives_per_harvester() -> None:
    old = HarvesterSnapshot("chianas02", 1.0, PLOT, (_drive("drive0", "/dev/sdb"),), receive_drive="drive0")
    view = build_view(_sink_snapshot(), {"chianas02": old})
    totals = farm_report_data(view)["totals"]
    assert (totals["receives_in_flight"], totals["receives_available"]) == (2, 0)
    text = farm_report_text(view)
    assert _line(text, "Plots Being Received Now:").endswith(" 2")
    sections = text.split("chianas02 Harvester Report")
    assert _line(sections[0], "Receive Drives (* may replace old plots):").endswith(" drive0, drive1*")
    assert _line(sections[0], "Receiving Now on drive1:").endswith(" 25% at 100.0 MB/s")
    assert _line(sections[1], "Receive Drives:").endswith(" drive0")
    assert _line(sections[1], "Receives Available Now:").endswith(" n/a")  # an older harvester does not say
    assert farm_report_data(view)["harvesters"]["chianas01"]["receives_available"] == 0
