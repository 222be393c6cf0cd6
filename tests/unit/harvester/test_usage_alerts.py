"""Disk usage alerts: the hysteresis decision (pure) and the measurement (real statvfs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from utilities.harvester.usage_alerts import measure_usage, usage_alert_active

CRITICAL, CLEAR = 90.0, 80.0


def _replay(readings: list[float]) -> list[bool]:
    """The alert state after each reading, starting inactive; a rising edge is a notification."""
    active, states = False, []
    for used in readings:
        active = usage_alert_active(active, used, CRITICAL, CLEAR)
        states.append(active)
    return states


def test_alerts_once_while_hovering_around_the_critical_mark() -> None:
    states = _replay([50, 90, 89.9, 90.1, 85, 95, 80])
    assert states == [False, True, True, True, True, True, True]
    rising = sum(1 for before, now in zip([False, *states], states, strict=False) if now and not before)
    assert rising == 1


def test_alerts_again_only_after_dropping_below_the_clear_mark() -> None:
    states = _replay([91, 79.9, 85, 89, 92])
    assert states == [True, False, False, False, True]


@pytest.mark.parametrize(("was", "used", "expected"), [
    (False, 89.99, False), (False, 90.0, True), (True, 80.0, True), (True, 79.99, False),
])
def test_marks_are_inclusive_at_the_top_and_exclusive_at_the_bottom(was: bool, used: float, expected: bool) -> None:
    assert usage_alert_active(was, used, CRITICAL, CLEAR) is expected


def test_measure_counts_each_filesystem_once_and_skips_missing(tmp_path: Path) -> None:
    (tmp_path / "t1").mkdir()
    (tmp_path / "t2").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "t0.log").write_text("a file the glob matches first: not a directory, skipped\n")
    before = os.statvfs(tmp_path)
    found = measure_usage([str(tmp_path / "t*"), str(tmp_path / "missing")], [str(tmp_path / "out")])
    after = os.statvfs(tmp_path)
    assert len(found) == 1  # all three live on one filesystem: one reading, named after the first
    usage = found[0]
    assert usage.directory == str(tmp_path / "t1") and usage.role == "temp"
    # The shared /tmp changes under other processes: the reading lies between the two around it.
    free = sorted(info.f_bavail * info.f_frsize for info in (before, after))
    assert free[0] <= usage.free_bytes <= free[1]
    assert 0.0 <= usage.used_percent <= 100.0
    assert usage.alert_key == f"disk_usage:{tmp_path / 't1'}"
