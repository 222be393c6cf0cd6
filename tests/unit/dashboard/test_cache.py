"""At most one gathering per interval, however many viewers ask, and at the same time."""

from __future__ import annotations

import threading

from utilities.dashboard.cache import Every


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_value_is_produced_again_only_once_stale() -> None:
    clock = Clock()
    counter = iter(range(100))
    pages = Every(lambda: next(counter), interval=60, clock=clock)
    assert [pages.get() for _ in range(5)] == [0] * 5
    clock.now += 59.5
    assert pages.get() == 0 and pages.age() == 59.5
    clock.now += 0.5
    assert pages.get() == 1 and pages.produced == 2


def test_viewers_arriving_together_share_one_gathering() -> None:
    started, release = threading.Event(), threading.Event()
    calls = []

    def produce() -> int:
        calls.append(1)
        started.set()
        release.wait(timeout=60)
        return len(calls)

    pages = Every(produce, interval=60)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(pages.get())) for _ in range(8)]
    threads[0].start()
    started.wait(timeout=60)  # the first viewer is gathering; the rest arrive meanwhile
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(timeout=60)
    assert results == [1] * 8 and len(calls) == 1
