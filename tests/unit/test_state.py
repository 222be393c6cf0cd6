from __future__ import annotations

import multiprocessing
from pathlib import Path

from tests.support.waiting import DEADLINE
from utilities.state import CachedHeader, DailyStats, StateDB


def test_kv_roundtrip(tmp_path: Path) -> None:
    with StateDB(tmp_path / "s.db") as db:
        assert db.get("x", 5) == 5
        db.set("x", {"a": [1, 2]})
        assert db.get("x") == {"a": [1, 2]}
    with StateDB(tmp_path / "s.db") as db:  # survives reopening
        assert db.get("x") == {"a": [1, 2]}


def test_offline_and_online(tmp_path: Path) -> None:
    with StateDB(tmp_path / "s.db") as db:
        assert db.set_offline("drive3", "/mnt/d3") is True
        assert db.set_offline("drive3", "/mnt/d3") is False
        assert db.offline_drives() == {"drive3": "/mnt/d3"}
        assert db.set_online("drive3") is True
        assert db.set_online("drive3") is False


def test_alert_latches_until_cleared(tmp_path: Path) -> None:
    with StateDB(tmp_path / "s.db") as db:
        assert db.alert_transition("hot:d1", True) is True
        assert db.alert_transition("hot:d1", True) is False
        assert db.alert_transition("hot:d1", False) is False
        assert db.alert_transition("hot:d1", True) is True


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    with StateDB(tmp_path / "s.db") as db:
        try:
            with db.transaction() as cur:
                db.set("k", 1, cur)
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert db.get("k") is None


def test_header_cache_and_daily(tmp_path: Path) -> None:
    with StateDB(tmp_path / "s.db") as db:
        header = CachedHeader(10, 20, "v1", 18, "pool", 0, "ab")
        db.update_headers({"/d/a.plot": header, "/d/b.plot": header}, [])
        db.update_headers({}, ["/d/a.plot"])
        assert db.load_headers() == {"/d/b.plot": header}
        db.record_daily(DailyStats("2026-01-01", 1.0, 10, 4, 6, 2))
        db.record_daily(DailyStats("2026-01-01", 2.0, 11, 4, 7, 3))
        assert db.daily_history() == [DailyStats("2026-01-01", 2.0, 11, 4, 7, 3)]


def _race(path: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    db = StateDB(Path(path))
    barrier.wait()
    results.put(db.alert_transition("drives_filling", True))
    db.close()


def test_two_processes_never_both_see_the_edge(tmp_path: Path) -> None:
    """Overlapping cron runs: exactly one of them may send the alert."""
    path = str(tmp_path / "s.db")
    StateDB(Path(path)).close()
    ctx = multiprocessing.get_context("fork")
    for attempt in range(5):
        with StateDB(Path(path)) as db:
            db.alert_transition("drives_filling", False)
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(path, barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=DEADLINE) for _ in procs]
        for p in procs:
            p.join(timeout=DEADLINE)
        assert sorted(outcomes) == [False, False, False, True], attempt
