"""Waiting in tests: on a condition, with one generous deadline.

A deadline here only stops a hung test; it never measures anything.  On a busy 2-core CI
machine a step that takes milliseconds on a quiet one can take seconds, so every wait in the
tests uses ``DEADLINE`` (or a multiple of it), never a few seconds picked to "be enough".
Product timeouts a test configures for work that must succeed (an SMTP channel, an SSH connect,
a transfer's idle limit) are generous for the same reason; only the timeouts a test wants to
see fire are short.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: Seconds any wait may take before the test fails as hung.
DEADLINE = 120.0

#: ``timeout_seconds`` of notification channels (SMTP, HTTP) that must deliver in a test.
CHANNEL_TIMEOUT = 120


def wait_until(what: str, check: Callable[[], Any], timeout: float = DEADLINE, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy (returned); fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
