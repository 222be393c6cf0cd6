"""Held-back drives in the reports: -pr, -fr and an export read back from another harvester."""

from __future__ import annotations

import json

from utilities.harvester.farm_report import build_view, farm_report_data, farm_report_text
from utilities.harvester.reports import plot_report_data, plot_report_text
from utilities.harvester_export import DriveSummary, HarvesterSnapshot, parse_export

NOW = 1_900_000_000.0
HELD = [
    {"name": "drive0", "reason": "sectors", "detail": "pending sectors 0 -> 2 within 24 h (limit +1 pending sectors)",
     "since": NOW - 600, "mountpoint": "/mnt/drive0"},
    {"name": "drive1", "reason": "hot", "detail": "57°C, limit 50°C; returns below 45°C", "since": NOW,
     "mountpoint": "/mnt/drive1"},
]


def _snapshot(hostname: str = "chianas01", held: object = HELD) -> HarvesterSnapshot:
    drives = tuple(DriveSummary(f"drive{i}", f"/mnt/drive{i}", f"/dev/sd{'bcd'[i]}", None, "xfs", 10**12, 10**11,
                                0, 3, 0, 0, 5, False, True) for i in range(3))
    return HarvesterSnapshot(hostname, NOW, 10**9, drives, receive_drive="drive2", extra={"held_back": held})


def test_plot_report_says_which_drives_are_held_back_and_why() -> None:
    data = plot_report_data(_snapshot(), None)
    assert [(h["name"], h["reason"]) for h in data["held_back"]] == [("drive0", "sectors"), ("drive1", "hot")]
    lines = plot_report_text(data, "k32").splitlines()
    assert any(line.startswith("Held Back Plot Drives:") and line.endswith(" 2") for line in lines)
    (sectors,) = [line for line in lines if line.strip().startswith("drive0: bad sectors growing since ")]
    assert sectors.endswith("(back with -on drive0)")
    assert any(line.strip() == HELD[0]["detail"] for line in lines)
    assert any(line.strip().startswith("drive1: too hot since ") and "cools down" in line for line in lines)


def test_no_drive_held_back_says_none() -> None:
    lines = plot_report_text(plot_report_data(_snapshot(held=[]), None), "k32").splitlines()
    assert any(line.startswith("Held Back Plot Drives:") and line.endswith(" none") for line in lines)


def test_an_export_carries_the_holds_to_the_farm_report() -> None:
    remote = parse_export(json.dumps(_snapshot("chianas02").to_dict()).encode(), "chianas02")
    assert [h["name"] for h in remote.held_back] == ["drive0", "drive1"]
    view = build_view(_snapshot(held=[]), {"chianas02": remote})
    text = farm_report_text(view).splitlines()
    assert any(line.startswith("Plot Drives Held Back (SMART, heat):") and line.endswith(" 2") for line in text)
    assert "HELD BACK: drive0: bad sectors growing (" + HELD[0]["detail"] + ")" in text
    assert farm_report_data(view)["totals"]["held_back_drives"] == 2


def test_a_garbled_held_back_field_in_an_export_is_left_out() -> None:
    garbled = _snapshot(held=[{"name": "drive0", "reason": "sectors"}, "drive1", {"reason": "hot"}, 7])
    assert [h["name"] for h in garbled.held_back] == ["drive0"]
    assert _snapshot(held="nonsense").held_back == []
