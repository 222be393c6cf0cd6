"""At most one gathering per refresh interval, however many browsers reload the page.

Gathering the page asks every harvester for its export over SSH, as ``-fr`` does. A page left
open in five tabs, or reloaded by hand, must not make the harvesters do five times that work:
the last result is served until it is ``interval`` seconds old, and while one request gathers
anew, the others wait for that result instead of starting their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Every(Generic[T]):
    """``get()`` returns ``produce()``'s last value, produced again only once it is stale."""

    def __init__(self, produce: Callable[[], T], interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._produce = produce
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._value: T | None = None
        self._at: float | None = None
        self.produced = 0  # how often produce() ran (the benchmark and tests read it)

    def fresh(self, now: float) -> bool:
        return self._at is not None and now - self._at < self._interval

    def get(self) -> T:
        with self._lock:  # one producer at a time; the others wait here and reuse its result
            if not self.fresh(self._clock()):
                self._value = self._produce()
                self._at = self._clock()
                self.produced += 1
            return self._value  # type: ignore[return-value]

    def age(self) -> float | None:
        """Seconds since the value was produced (None before the first)."""
        return None if self._at is None else self._clock() - self._at
