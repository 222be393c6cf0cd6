"""The pure start decision: every limit, the stagger, start early, temp room and destinations."""

from __future__ import annotations

from pathlib import Path

from utilities.config import validate_config
from utilities.plotter.jobs.scheduler import ActiveJob, Refusal, StartDecision, next_start, pick_destination
from utilities.settings.plot_jobs import PlotJobSettings

T1, T2 = Path("/mnt/t1"), Path("/mnt/t2")
O1, O2 = Path("/mnt/o1"), Path("/mnt/o2")
GIB = 2**30
PLOT = 100 * GIB
NOW = 1_000_000.0


def _settings(**jobs: object) -> PlotJobSettings:
    base: dict[str, object] = {
        "temp_directories": [{"path": str(T1), "max_jobs": 2}, {"path": str(T2), "max_jobs": 2}],
        "output_directories": [str(O1), str(O2)], "max_jobs": 4, "temp_space_gib": 10,
    }
    return validate_config({"plotter": {"jobs": {**base, **jobs}}}).plotter.jobs


def _decide(settings: PlotJobSettings, jobs: list[ActiveJob] | None = None, *, now: float = NOW,
            temps: dict[Path, int] | None = None, outs: dict[Path, int] | None = None,
            last: dict[Path, float] | None = None) -> StartDecision | Refusal:
    temps = {T1: 50 * GIB, T2: 50 * GIB} if temps is None else temps
    outs = {O1: 500 * GIB, O2: 300 * GIB} if outs is None else outs
    return next_start(now, jobs or [], temps, outs, settings, last or {}, PLOT)


def _job(temp: Path, phase: int | None, dest: Path = O1, started: float = 0.0, written: bool = False) -> ActiveJob:
    return ActiveJob(temp_dir=temp, dest_dir=dest, phase=phase, started_at=started, plot_written=written)


def test_first_job_goes_to_first_temp_and_most_free_output() -> None:
    decision = _decide(_settings(temp2_directory="/mnt/t2x"))
    assert decision == StartDecision(temp_dir=T1, dest_dir=O1, temp2_dir=Path("/mnt/t2x"))


def test_max_jobs_overall() -> None:
    jobs = [_job(T1, 3), _job(T2, 3)]
    refusal = _decide(_settings(max_jobs=2), jobs)
    assert isinstance(refusal, Refusal) and refusal.kind == "limit" and "max_jobs" in refusal.reason
    assert isinstance(_decide(_settings(max_jobs=3), jobs), StartDecision)


def test_max_phase1_jobs_overall_counts_starting_jobs_as_phase1() -> None:
    jobs = [_job(T1, None), _job(T2, 1)]
    refusal = _decide(_settings(max_phase1_jobs=2), jobs)
    assert isinstance(refusal, Refusal) and "max_phase1_jobs" in refusal.reason
    assert isinstance(_decide(_settings(max_phase1_jobs=2), [_job(T1, 2), _job(T2, 1)]), StartDecision)


def test_per_temp_max_jobs_sends_the_job_to_the_other_directory() -> None:
    settings = _settings(temp_directories=[{"path": str(T1), "max_jobs": 1}, {"path": str(T2), "max_jobs": 1}])
    decision = _decide(settings, [_job(T1, 2)])
    assert isinstance(decision, StartDecision) and decision.temp_dir == T2
    refusal = _decide(settings, [_job(T1, 2), _job(T2, 2)])
    assert isinstance(refusal, Refusal) and refusal.kind == "temp"
    assert f"{T1}: max_jobs 1 reached" in refusal.reason and f"{T2}: max_jobs 1 reached" in refusal.reason


def test_per_temp_phase1_limit() -> None:
    settings = _settings(temp_directories=[{"path": str(T1), "max_jobs": 3, "max_phase1_jobs": 1}])
    refusal = _decide(settings, [_job(T1, 1)], temps={T1: 100 * GIB})
    assert isinstance(refusal, Refusal) and "max_phase1_jobs 1" in refusal.reason
    assert _decide(settings, [_job(T1, 2)], temps={T1: 100 * GIB}) == StartDecision(T1, O1, None)


def test_fewest_jobs_then_longest_idle_temp_directory_wins() -> None:
    settings = _settings()
    assert _decide(settings, [_job(T1, 3)]).temp_dir == T2  # type: ignore[union-attr]
    last = {T1: NOW - 500, T2: NOW - 900}
    assert _decide(settings, last=last).temp_dir == T2  # type: ignore[union-attr]


def test_global_stagger_with_an_injected_clock() -> None:
    settings = _settings(min_minutes_between_starts=15)
    last = {T1: NOW}
    for minutes in (0, 1, 14.9):
        refusal = _decide(settings, [_job(T1, 1, started=NOW)], now=NOW + minutes * 60, last=last)
        assert isinstance(refusal, Refusal) and refusal.kind == "stagger"
    decision = _decide(settings, [_job(T1, 1, started=NOW)], now=NOW + 15 * 60, last=last)
    assert isinstance(decision, StartDecision) and decision.temp_dir == T2


def test_per_directory_stagger_allows_other_directories() -> None:
    settings = _settings(temp_directories=[{"path": str(T1), "max_jobs": 2, "min_minutes_between_starts": 30},
                                           {"path": str(T2), "max_jobs": 2, "min_minutes_between_starts": 30}])
    last = {T1: NOW - 10 * 60}
    assert _decide(settings, [_job(T1, 1)], last=last).temp_dir == T2  # type: ignore[union-attr]
    both = {T1: NOW - 10 * 60, T2: NOW - 29 * 60}
    refusal = _decide(settings, [_job(T1, 1), _job(T2, 1)], last=both)
    assert isinstance(refusal, Refusal) and refusal.kind == "stagger"
    later = _decide(settings, [_job(T1, 1), _job(T2, 1)], now=NOW + 60, last=both)
    assert isinstance(later, StartDecision) and later.temp_dir == T2


def test_start_early_jobs_past_the_phase_stop_counting() -> None:
    settings = _settings(max_jobs=1, start_early_phase=3)
    assert isinstance(_decide(settings, [_job(T1, 3)]), Refusal)
    decision = _decide(settings, [_job(T1, 4)])
    assert isinstance(decision, StartDecision)
    # without start early the phase-4 job still counts
    assert isinstance(_decide(_settings(max_jobs=1), [_job(T1, 4)]), Refusal)


def test_start_early_also_frees_the_per_directory_limit() -> None:
    settings = _settings(temp_directories=[{"path": str(T1), "max_jobs": 1}], start_early_phase=2, max_jobs=5)
    assert isinstance(_decide(settings, [_job(T1, 2)], temps={T1: 50 * GIB}), Refusal)
    assert _decide(settings, [_job(T1, 3)], temps={T1: 50 * GIB}) == StartDecision(T1, O1, None)


def test_temp_directory_needs_room_for_one_job() -> None:
    settings = _settings(temp_space_gib=40)
    decision = _decide(settings, temps={T1: 39 * GIB, T2: 40 * GIB})
    assert isinstance(decision, StartDecision) and decision.temp_dir == T2
    refusal = _decide(settings, temps={T1: 39 * GIB, T2: 1 * GIB})
    assert isinstance(refusal, Refusal) and "bytes free" in refusal.reason


def test_temp_room_counts_what_running_jobs_will_still_take() -> None:
    settings = _settings(temp_space_gib=40)
    growing = ActiveJob(temp_dir=T1, dest_dir=O1, phase=1, started_at=0, temp_bytes=10 * GIB)
    decision = _decide(settings, [growing], temps={T1: 60 * GIB, T2: 0})
    assert isinstance(decision, Refusal) and f"{30 * GIB} promised" in decision.reason
    assert _decide(settings, [growing], temps={T1: 70 * GIB, T2: 0}) == StartDecision(T1, O1, None)
    past_peak = ActiveJob(temp_dir=T1, dest_dir=O1, phase=3, started_at=0, temp_bytes=35 * GIB)
    assert _decide(settings, [past_peak], temps={T1: 40 * GIB, T2: 0}) == StartDecision(T1, O1, None)


def test_missing_temp_directory_is_skipped() -> None:
    refusal = _decide(_settings(), temps={})
    assert isinstance(refusal, Refusal) and "not available" in refusal.reason


def test_no_destination_only_when_a_job_could_otherwise_start() -> None:
    refusal = _decide(_settings(), outs={O1: PLOT - 1, O2: 0})
    assert isinstance(refusal, Refusal) and refusal.kind == "no_destination"
    limited = _decide(_settings(max_jobs=1), [_job(T1, 1)], outs={O1: 0, O2: 0})
    assert isinstance(limited, Refusal) and limited.kind == "limit"


def test_destination_counts_plots_running_jobs_will_write() -> None:
    outs = {O1: 190 * GIB, O2: 150 * GIB}
    assert pick_destination(outs, [], PLOT) == O1
    assert pick_destination(outs, [_job(T1, 2, dest=O1)], PLOT) == O2
    assert pick_destination(outs, [_job(T1, 2, dest=O1), _job(T1, 2, dest=O2)], PLOT) is None
    assert pick_destination(outs, [_job(T1, 4, dest=O1, written=True)], PLOT) == O1


def test_unconfigured_temp_directories() -> None:
    settings = validate_config({"plotter": {"jobs": {"output_directories": [str(O1)]}}}).plotter.jobs
    refusal = next_start(NOW, [], {}, {O1: 10 * PLOT}, settings, {}, PLOT)
    assert isinstance(refusal, Refusal) and refusal.kind == "unconfigured"


def test_repeated_decisions_fill_up_to_the_limits() -> None:
    """The runner calls next_start again after each start; the limits then hold across them."""
    settings = _settings(max_jobs=3)
    jobs: list[ActiveJob] = []
    last: dict[Path, float] = {}
    while isinstance(decision := _decide(settings, jobs, last=last), StartDecision):
        jobs.append(_job(decision.temp_dir, None, dest=decision.dest_dir, started=NOW))
        last[decision.temp_dir] = NOW
    assert [j.temp_dir for j in jobs] == [T1, T2, T1]
    assert [j.dest_dir for j in jobs] == [O1, O1, O1]  # 500 GiB, then 400 vs 300, then 300 vs 300: first
