"""chia's log level: read from its config.yaml, the warning, and the cache of the answer."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.waiting import wait_until
from utilities.farmer.chia_log_level import (
    LOG_LEVEL_CHECKED_KEY,
    cached_log_level_problem,
    check_chia_log_level,
    chia_log_levels,
    log_level_problem,
)
from utilities.state import StateDB


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

