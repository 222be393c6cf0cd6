"""The pure rules of --check-plots: the order plots are checked in, the budget, what results mean."""

from __future__ import annotations

import hashlib

import pytest

from utilities.harvester.plot_check import (
    CANNOT_CHECK,
    DAY_SECONDS,
    NO_PROOFS,
    OK,
    READ_ERROR,
    CheckOutcome,
    CheckRecord,
    PlotFile,
    budget_allows,
    cannot_check_reason,
    challenge,
    classify,
    plan_checks,
    summarise,
)

NOW = 1_800_000_000.0


def plot(n: int, drive: str = "drive0", size: int = 1000, mtime_ns: int = 5) -> PlotFile:
    return PlotFile(f"/mnt/{drive}/plot-{n}.plot", drive, size, mtime_ns)


def record(p: PlotFile, days_ago: float, result: str = OK, size: int | None = None, mtime_ns: int | None = None) -> CheckRecord:
    return CheckRecord(p.path, p.name, p.drive, p.size if size is None else size,
                       p.mtime_ns if mtime_ns is None else mtime_ns, result, 30, 30, 1.0, NOW - days_ago * DAY_SECONDS)


# -- challenges ----------------------------------------------------------------------------------


def test_challenges_are_chias_own() -> None:
    # chia/plotting/check_plots.py: std_hash(i.to_bytes(32, "big")), std_hash being sha256.
    assert challenge(0) == hashlib.sha256(bytes(32)).digest()
    assert challenge(7) == hashlib.sha256((7).to_bytes(32, "big")).digest()
    assert len({challenge(i) for i in range(30)}) == 30


# -- what the answers mean -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proofs", "bad", "error", "expected"),
    [
        (29, 0, None, OK),
        (1, 0, None, OK),  # few proofs is luck, not damage (chia only fails a plot with none)
        (0, 0, None, NO_PROOFS),
        (12, 1, None, READ_ERROR),  # a proof that does not verify
        (3, 0, "ValueError: Invalid size for deltas: 64735", READ_ERROR),
        (0, 0, "cannot open: RuntimeError: Invalid plot header magic", READ_ERROR),
    ],
)
def test_classify(proofs: int, bad: int, error: str | None, expected: str) -> None:
    result, detail = classify(proofs, bad, error)
    assert result == expected
    if expected == READ_ERROR:
        assert detail  # the farmer is told what went wrong
    else:
        assert detail is None


@pytest.mark.parametrize(
    ("name", "fmt", "compression", "checkable"),
    [
        ("plot-k32-2024-01-01-00-00-" + "a" * 64 + ".plot", "v1", 0, True),  # chiapos, madMAx
        ("plot-k32-2024-01-01-00-00-" + "a" * 64 + ".plot", "v2", 0, True),  # bladebit, uncompressed
        ("plot-k32-c05-2024-01-01-00-00-" + "a" * 64 + ".plot", "v2", 5, False),
        ("plot-k28-2024-01-01-00-00-" + "a" * 64 + ".plot2", "plot2", 0, False),
        ("plot-k28-2024-01-01-00-00-" + "a" * 64 + ".plot2", None, 0, False),  # unknown draft
        ("farm-group-1.gplot", None, 0, False),
        ("farm-group-1.gplot", "gplot", 0, False),
    ],
)
def test_which_plots_cannot_be_checked(name: str, fmt: str | None, compression: int, checkable: bool) -> None:
    reason = cannot_check_reason(name, fmt, compression)
    assert (reason is None) == checkable
    if reason:
        assert "cannot" in reason or "needs" in reason


# -- which plots a run checks, in which order ----------------------------------------------------


def test_never_checked_plots_come_first_in_the_order_found_then_the_oldest_checks() -> None:
    a, b, c, d, e = (plot(i) for i in range(5))
    records = {a.path: record(a, 40), b.path: record(b, 90), d.path: record(d, 31)}
    assert plan_checks([a, b, c, d, e], records, NOW, recheck_days=30, named=False) == [c, e, b, a, d]


def test_recently_checked_plots_are_skipped_unless_their_drive_is_named() -> None:
    a, b, c = plot(1), plot(2), plot(3)
    records = {a.path: record(a, 2), b.path: record(b, 29.9), c.path: record(c, 1)}
    assert plan_checks([a, b, c], records, NOW, recheck_days=30, named=False) == []
    # Named: everything, still the oldest check first (so repeated budgeted runs rotate).
    assert plan_checks([a, b, c], records, NOW, recheck_days=30, named=True) == [b, a, c]


def test_recheck_days_zero_rechecks_everything_every_run() -> None:
    a, b = plot(1), plot(2)
    records = {a.path: record(a, 0.01), b.path: record(b, 0.5)}
    assert plan_checks([a, b], records, NOW, recheck_days=0, named=False) == [b, a]


def test_a_plot_replaced_under_the_same_name_counts_as_never_checked() -> None:
    old, same = plot(1), plot(2)
    records = {old.path: record(old, 1, result=READ_ERROR, size=999), same.path: record(same, 1)}
    assert plan_checks([old, same], records, NOW, recheck_days=30, named=False) == [old]
    touched = {old.path: record(old, 1, mtime_ns=4)}
    assert plan_checks([old], touched, NOW, recheck_days=30, named=False) == [old]


def test_failing_plots_are_not_rechecked_sooner_than_good_ones() -> None:
    # A failing plot's alert is latched; checking it every run would only cost its drive I/O.
    bad, good = plot(1), plot(2)
    records = {bad.path: record(bad, 1, result=READ_ERROR), good.path: record(good, 40)}
    assert plan_checks([bad, good], records, NOW, recheck_days=30, named=False) == [good]


def test_records_of_plots_no_longer_found_do_not_matter() -> None:
    gone, here = plot(1), plot(2)
    records = {gone.path: record(gone, 90)}
    assert plan_checks([here], records, NOW, recheck_days=30, named=False) == [here]


# -- the budget ----------------------------------------------------------------------------------


def test_the_budget_stops_new_plots_but_never_the_first() -> None:
    assert budget_allows(0.0, 600, checked=0)
    assert budget_allows(5000.0, 600, checked=0)  # slow listing: still one plot of progress
    assert budget_allows(599.9, 600, checked=12)
    assert not budget_allows(600.0, 600, checked=12)


# -- the run's totals ----------------------------------------------------------------------------


def test_summary_counts_rates_and_bytes_per_opened_plot() -> None:
    outcomes = [
        (plot(1), CheckOutcome(OK, 31, 30, 2.0, read_bytes=4_000_000)),
        (plot(2), CheckOutcome(READ_ERROR, 0, 30, 0.5, "ValueError: x", read_bytes=1_000_000)),
        (plot(3), CheckOutcome(NO_PROOFS, 0, 30, 3.0, read_bytes=1_000_000)),
        (plot(4), CheckOutcome(CANNOT_CHECK, error="a plot group")),
    ]
    summary = summarise(outcomes, elapsed=6.0, left=7)
    assert summary["plots_checked"] == 4
    assert (summary["ok"], summary["failing"], summary["cannot_check"]) == (1, 2, 1)
    assert (summary["no_proofs"], summary["read_error"]) == (1, 1)
    assert summary["plots_per_minute"] == 40.0
    assert summary["bytes_read"] == 6_000_000
    assert summary["bytes_read_per_plot"] == 2_000_000  # the plot group read nothing and is not counted
    assert summary["left_for_next_run"] == 7


def test_summary_of_an_empty_run_and_of_unmeasured_reads() -> None:
    empty = summarise([], elapsed=0.0, left=0)
    assert empty["plots_checked"] == 0 and empty["plots_per_minute"] is None and empty["bytes_read_per_plot"] is None
    unmeasured = summarise([(plot(1), CheckOutcome(OK, 30, 30, 1.0))], elapsed=1.0, left=0)
    assert unmeasured["bytes_read"] is None and unmeasured["bytes_read_per_plot"] is None
