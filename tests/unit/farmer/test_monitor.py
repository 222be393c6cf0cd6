"""The coin monitor's pure decisions: events from lines, back-off, silence, chia's log level."""

from __future__ import annotations

import os
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.chia_log_writer import CHIA_1_8, CHIA_2_5_7, ChiaLogWriter
from tests.support.waiting import wait_until
from utilities.farmer.monitor import (
    LOG_LEVEL_CHECKED_KEY,
    HarvesterState,
    backoff_decision,
    backoff_interval,
    cached_log_level_problem,
    check_chia_log_level,
    chia_log_levels,
    derive_events,
    ensure_schema,
    log_level_problem,
    prune_conditions,
    silence_event,
    xch,
)
from utilities.settings.farmer import FarmerSettings
from utilities.state import StateDB


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


def test_backoff() -> None:
    assert backoff_decision(1000.0, None, 0, 15, 240) == (True, 0)
    assert backoff_decision(1000.0 + 14 * 60, 1000.0, 0, 15, 240) == (False, 0)
    assert backoff_decision(1000.0 + 16 * 60, 1000.0, 0, 15, 240) == (True, 1)  # still recurring: doubles
    assert backoff_decision(1000.0 + 31 * 60, 1000.0, 0, 15, 240) == (True, 0)  # after a quiet spell
    assert backoff_interval(10, 15, 240) == 240 * 60  # capped
    assert backoff_decision(5.0, 0.0, 3, 0, 0) == (True, 0)  # back-off switched off


def test_silence() -> None:
    seen = HarvesterState(last_check_at=10_000.0, last_stamp="2025-11-21T07:00:00.000", total_plots=5)
    assert silence_event(seen, 10_000.0 + 9 * 60, 10) is None
    event = silence_event(seen, 10_000.0 + 12 * 60, 10)
    assert event is not None and event.kind == "harvester_silent" and "12 minutes" in event.detail
    assert silence_event(seen, 10**9, 0) is None  # switched off
    assert silence_event(HarvesterState(), 10**9, 10) is None  # never saw a harvester here


def test_chia_log_levels_and_the_warning(tmp_path: Path) -> None:
    config = {"logging": {"log_level": "WARNING"}, "farmer": {"logging": {"log_level": "INFO"}}}
    assert chia_log_levels(config) == {"logging.log_level": "WARNING", "farmer.logging.log_level": "INFO"}
    problem = log_level_problem(chia_log_levels(config), Path("/c.yaml"))
    assert problem is not None and "WARNING" in problem and "log_level: INFO" in problem and "restart" in problem
    assert log_level_problem({"logging.log_level": "INFO"}, Path("/c.yaml")) is None
    assert chia_log_levels("not a mapping") == {}

    path = tmp_path / "config.yaml"
    path.write_text("logging: [unclosed\n")
    assert "cannot be read" in (check_chia_log_level(path) or "")
    path.write_text("daemon_port: 55400\n")  # no logging section: chia's default is WARNING
    assert "WARNING" in (check_chia_log_level(path) or "")


def _after_a_timestamp_tick(path: Path) -> None:
    """Wait until the filesystem's clock has moved past ``path``'s ctime, so a change made next
    gets another timestamp (on many kernels they move only every few milliseconds)."""
    stamp = path.stat().st_ctime_ns
    probe = path.with_name(path.name + ".tick")
    probe.touch()

    def ticked() -> bool:
        os.utime(probe)  # now
        return probe.stat().st_ctime_ns > stamp

    wait_until("the filesystem's clock to tick", ticked, interval=0.001)
    probe.unlink()


def test_chia_config_is_parsed_again_only_when_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("logging:\n  log_level: INFO\n")
    with StateDB(tmp_path / "state.sqlite3") as db:
        assert cached_log_level_problem(path, db) is None
        cached = db.get(LOG_LEVEL_CHECKED_KEY)
        db.set(LOG_LEVEL_CHECKED_KEY, {**cached, "problem": "the cached answer"})
        assert cached_log_level_problem(path, db) == "the cached answer"  # file unchanged: not parsed
        _after_a_timestamp_tick(path)
        path.write_text("logging:\n  log_level: WARN\n")  # same size, same inode: only the mtime says
        assert "WARN" in (cached_log_level_problem(path, db) or "")
        db.set(LOG_LEVEL_CHECKED_KEY, {**db.get(LOG_LEVEL_CHECKED_KEY), "problem": "the cached answer"})
        _after_a_timestamp_tick(path)
        os.chmod(path, 0o600)  # metadata only (ctime): checked again
        assert "WARN" in (cached_log_level_problem(path, db) or "")
        path.unlink()
        assert "was not found" in (cached_log_level_problem(path, db) or "")


@pytest.mark.parametrize("when", [datetime(2025, 1, 1), datetime(2025, 6, 30, 23, 59, 59)])
def test_event_times_are_log_times(tmp_path: Path, when: datetime) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log", CHIA_2_5_7, start=when)
    writer.block(1)
    (event,), _ = derive_events(_lines(writer.path), HarvesterState(), FarmerSettings())
    assert event.happened_at == when.timestamp() and event.stamp.startswith(when.isoformat()[:19])


def test_old_conditions_are_pruned_coins_kept(tmp_path: Path) -> None:
    with StateDB(tmp_path / "state.sqlite3") as db:
        ensure_schema(db)
        with db.transaction() as cur:
            for kind, age_days, status in (("pool_error", 100, "notified"), ("pool_error", 100, "pending"),
                                           ("pool_error", 10, "notified"), ("coin_received", 400, "notified")):
                cur.execute(
                    "INSERT INTO farm_events(kind, key, happened_at, stamp, detail, status) VALUES (?, ?, ?, '', '', ?)",
                    (kind, f"{kind}{age_days}{status}", 1e9 - age_days * 86400, status),
                )
        prune_conditions(db, 1e9)
        left = sorted(db.query("SELECT kind, status FROM farm_events"))
    assert left == [("coin_received", "notified"), ("pool_error", "notified"), ("pool_error", "pending")]
