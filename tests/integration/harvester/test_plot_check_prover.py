"""Checking real chiapos k=18 plots, intact and damaged, in real child processes."""

from __future__ import annotations

import faulthandler
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.support.plot_damage import flip_table, table_pointers
from tests.support.plotmaker import cached_plot
from utilities.harvester.plot_check import FAILING, NO_PROOFS, OK, READ_ERROR
from utilities.harvester.plot_check_prover import check_plot, query_plot, run_in_child


@pytest.fixture
def intact(tmp_path: Path) -> Path:
    target = tmp_path / "intact.plot"
    shutil.copyfile(cached_plot("pool"), target)
    return target


def test_an_intact_plot_is_ok_with_about_one_proof_per_challenge(intact: Path) -> None:
    outcome = check_plot(str(intact), challenges=30, full_proofs=None)
    assert outcome.result == OK, outcome.error
    assert outcome.error is None and outcome.bad_proofs == 0
    assert 10 <= outcome.proofs <= 60  # about 1 per challenge (Poisson): 30 +- a lot, never 0
    assert outcome.challenges == 30
    assert outcome.read_bytes is not None and outcome.read_bytes >= 0


def test_the_same_plot_gives_the_same_proofs_every_time(intact: Path) -> None:
    # Fixed challenges (chia's): a plot's count is comparable between runs and with chia's.
    first = query_plot(str(intact), 30, None)
    assert query_plot(str(intact), 30, None) == first
    assert query_plot(str(intact), 30, 1) == first  # one full proof verified finds the same qualities


@pytest.mark.parametrize("table", range(1, 8))
def test_half_a_table_flipped_fails_the_check(intact: Path, table: int) -> None:
    first, end = flip_table(intact, table)
    pointers = table_pointers(intact)
    assert pointers[table - 1] <= first < end <= pointers[table]
    outcome = check_plot(str(intact), challenges=30, full_proofs=None)
    assert outcome.result in FAILING
    assert outcome.result == READ_ERROR and outcome.error  # chiapos says what it found


def test_a_plot_cut_short_fails_the_check(intact: Path) -> None:
    with open(intact, "r+b") as handle:  # a copy that stopped at the start of table 5
        handle.truncate(table_pointers(intact)[4])
    outcome = check_plot(str(intact), challenges=30, full_proofs=None)
    assert outcome.result in FAILING


def test_a_zeroed_plot_body_finds_nothing(intact: Path) -> None:
    with open(intact, "r+b") as handle:  # the header survives, every table is zeros (sparse copy gone wrong)
        first = table_pointers(intact)[0]
        size = intact.stat().st_size
        handle.seek(first)
        handle.write(bytes(size - first))
    outcome = check_plot(str(intact), challenges=30, full_proofs=None)
    assert outcome.result in (NO_PROOFS, READ_ERROR)


def test_a_file_chiapos_cannot_open_is_a_read_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.plot"
    bogus.write_bytes(b"not a plot at all" * 100)
    outcome = check_plot(str(bogus), challenges=5, full_proofs=None)
    assert outcome.result == READ_ERROR
    assert outcome.error is not None and outcome.error.startswith("cannot open")


# -- the child process that keeps a crash from ending the run ----------------------------------


def _crash() -> None:
    faulthandler.disable()  # pytest's fault handler would print the child's stack: noise, not news
    os.kill(os.getpid(), signal.SIGSEGV)


def _exit_quietly() -> None:
    os._exit(3)


def _hang() -> None:
    time.sleep(3600)


def test_a_checker_that_crashes_is_reported_not_fatal() -> None:
    answer = run_in_child(_crash, (), timeout=60)
    assert not answer.answered and answer.signal == signal.SIGSEGV
    assert "SIGSEGV" in answer.failure()


def test_a_checker_that_exits_without_answering() -> None:
    answer = run_in_child(_exit_quietly, (), timeout=60)
    assert not answer.answered and answer.exit_code == 3


def test_a_checker_that_does_not_answer_in_time_is_killed() -> None:
    answer = run_in_child(_hang, (), timeout=0.2)
    assert answer.timed_out and "in time" in answer.failure()


def test_a_checker_answers_through_the_pipe() -> None:
    answer = run_in_child(divmod, (17, 5), timeout=60)
    assert answer.answered and answer.value == (3, 2)


def _lowered() -> tuple[list[str], int, int]:
    import psutil

    from utilities.harvester.plot_check_run import lower_priority

    missed = lower_priority()
    me = psutil.Process()
    return missed, int(me.ionice().ioclass), me.nice()


def test_checks_run_at_idle_io_priority_and_nice_19() -> None:
    import psutil

    answer = run_in_child(_lowered, (), timeout=60)  # in a child: the test process keeps its priority
    missed, ioclass, nice = answer.value
    assert missed == []
    assert ioclass == int(psutil.IOPRIO_CLASS_IDLE) and nice == 19
