"""The back-off that keeps conditions that come and go from flooding the farmer."""

from __future__ import annotations

from utilities.farmer.notifications import backoff_decision, backoff_interval


def test_backoff() -> None:
    assert backoff_decision(1000.0, None, 0, 15, 240) == (True, 0)
    assert backoff_decision(1000.0 + 14 * 60, 1000.0, 0, 15, 240) == (False, 0)
    assert backoff_decision(1000.0 + 16 * 60, 1000.0, 0, 15, 240) == (True, 1)  # still recurring: doubles
    assert backoff_decision(1000.0 + 31 * 60, 1000.0, 0, 15, 240) == (True, 0)  # after a quiet spell
    assert backoff_interval(10, 15, 240) == 240 * 60  # capped
    assert backoff_decision(5.0, 0.0, 3, 0, 0) == (True, 0)  # back-off switched off

