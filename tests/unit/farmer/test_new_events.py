"""The rows coin_monitor.py records, derived from chia's log lines: events, log times, silence."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.chia_log_writer import CHIA_1_8, CHIA_2_5_7, ChiaLogWriter
from utilities.farmer.new_events import HarvesterState, derive_events, silence_event, xch
from utilities.settings.farmer import FarmerSettings


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_xch_amounts_are_exact() -> None:
    assert [xch(1_750_000_000_000), xch(1), xch(2 * 10**12), xch(0), xch(None)] == [
        "1.75", "0.000000000001", "2", "0", "n/a"
    ]


def test_events_from_lines(tmp_path: Path) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log", CHIA_2_5_7)
    coin = writer.coin(1, 1_750_000_000_000)
    writer.coin(2, 5)  # dust
    block = writer.block(3)
    writer.harvester(eligible=2, proofs=0, seconds=0.5, total=100)
    writer.harvester(eligible=2, proofs=0, seconds=9.25, total=97)
    writer.harvester(eligible=2, proofs=0, seconds=0.5, total=96)
    writer.pool_error()
    writer.service_error()
    writer.write("full_node", "full_node_server", "ERROR", "Exception: <class 'concurrent.futures._base.CancelledError'>")
    settings = FarmerSettings(min_coin_xch=Decimal("0.001"), slow_lookup_seconds=5, plot_drop_min=3)

    events, harvester = derive_events(_lines(writer.path), HarvesterState(), settings)

    by_kind = [(e.kind, e.status) for e in events]
    assert by_kind == [
        ("coin_received", "pending"), ("coin_received", "filtered"), ("block_farmed", "pending"),
        ("slow_lookup", "pending"), ("plot_count_dropped", "pending"), ("pool_error", "pending"),
        ("chia_health", "pending"),
    ]
    assert events[0].key == coin and events[0].amount_mojos == 1_750_000_000_000
    assert events[0].detail == "1.75 XCH at height 4242424"
    assert events[2].key == block
    assert events[4].detail == "plot count dropped from 100 to 97 (3 fewer)"
    assert harvester.total_plots == 96 and harvester.last_stamp is not None


def test_harvester_state_carries_over_between_batches(tmp_path: Path) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log", CHIA_1_8)
    writer.harvester(eligible=1, proofs=0, seconds=0.1, total=50)
    first = _lines(writer.path)
    writer.harvester(eligible=1, proofs=0, seconds=0.1, total=40)
    second = _lines(writer.path)[len(first):]
    settings = FarmerSettings()
    _, state = derive_events(first, HarvesterState(), settings)
    events, _ = derive_events(second, state, settings)
    assert [e.kind for e in events] == ["plot_count_dropped"]


def test_silence() -> None:
    seen = HarvesterState(last_check_at=10_000.0, last_stamp="2025-11-21T07:00:00.000", total_plots=5)
    assert silence_event(seen, 10_000.0 + 9 * 60, 10) is None
    event = silence_event(seen, 10_000.0 + 12 * 60, 10)
    assert event is not None and event.kind == "harvester_silent" and "12 minutes" in event.detail
    assert silence_event(seen, 10**9, 0) is None  # switched off
    assert silence_event(HarvesterState(), 10**9, 10) is None  # never saw a harvester here


@pytest.mark.parametrize("when", [datetime(2025, 1, 1), datetime(2025, 6, 30, 23, 59, 59)])
def test_event_times_are_log_times(tmp_path: Path, when: datetime) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log", CHIA_2_5_7, start=when)
    writer.block(1)
    (event,), _ = derive_events(_lines(writer.path), HarvesterState(), FarmerSettings())
    assert event.happened_at == when.timestamp() and event.stamp.startswith(when.isoformat()[:19])

