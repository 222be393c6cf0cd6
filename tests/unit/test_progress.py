"""Progress callbacks (utilities/progress.py): one report per quarter, per phase, and tqdm bars."""

from __future__ import annotations

import io
from typing import Any

import pytest

from utilities.progress import TerminalBar, bar_per_phase, quarter_marks, quarter_marks_per_phase


def test_quarter_marks_report_each_quarter_once() -> None:
    seen: list[tuple[int, int, int]] = []
    update = quarter_marks(lambda *report: seen.append(report))
    for done in (0, 10, 30, 30, 99, 100, 100):
        update(done, 100)
    assert seen == [(25, 30, 100), (50, 99, 100), (75, 99, 100), (100, 100, 100)]


def test_an_empty_copy_is_complete_at_once() -> None:
    seen: list[int] = []
    update = quarter_marks(lambda percent, done, total: seen.append(percent))
    update(0, 0)
    assert seen == [25, 50, 75, 100]


def test_each_phase_counts_its_own_quarters() -> None:
    seen: list[tuple[str, int]] = []
    update = quarter_marks_per_phase(lambda phase, percent, done, total: seen.append((phase, percent)))
    update("copy", 60, 100)
    update("copy", 100, 100)
    update("verify", 30, 100)
    assert seen == [("copy", 25), ("copy", 50), ("copy", 75), ("copy", 100), ("verify", 25)]


class FakeTqdm:
    made: list[FakeTqdm] = []

    def __init__(self, total: int, desc: str, **options: Any) -> None:
        self.total, self.desc, self.options, self.n, self.closed = total, desc, options, 0, 0
        FakeTqdm.made.append(self)

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def fake_tqdm(monkeypatch: pytest.MonkeyPatch) -> list[FakeTqdm]:
    import tqdm

    FakeTqdm.made = []
    monkeypatch.setattr(tqdm, "tqdm", FakeTqdm)
    return FakeTqdm.made


def test_terminal_bar_follows_the_bytes_and_closes_at_the_end(fake_tqdm: list[FakeTqdm]) -> None:
    bar = TerminalBar(200, "plot -> harvester1")
    (made,) = fake_tqdm
    assert (made.total, made.desc) == (200, "plot -> harvester1")
    assert made.options == {"unit": "B", "unit_scale": True, "unit_divisor": 1024}
    bar(50, 200)
    bar(120, 200)
    assert (made.n, made.closed) == (120, 0)
    bar(200, 200)
    assert (made.n, made.closed) == (200, 1)


def test_a_new_phase_closes_the_bar_before_it(fake_tqdm: list[FakeTqdm]) -> None:
    update = bar_per_phase(lambda phase: f"{phase} plot")
    update("copy", 10, 100)
    update("verify", 5, 100)
    copy, verify = fake_tqdm
    assert (copy.desc, copy.n, copy.closed) == ("copy plot", 10, 1)
    assert (verify.desc, verify.n, verify.closed) == ("verify plot", 5, 0)


def test_a_real_bar_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    import tqdm

    out = io.StringIO()
    real = tqdm.tqdm
    monkeypatch.setattr(tqdm, "tqdm", lambda **kw: real(file=out, **kw))
    bar = TerminalBar(2048, "plot")
    bar(2048, 2048)
    assert "plot: 100%" in out.getvalue() and "2.00k/2.00k" in out.getvalue()
