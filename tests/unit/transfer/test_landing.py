"""Landing a plot in a real temp directory, worded as the receiver and as a local copy would."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import xxhash

from utilities.transfer import local_copy, receiver
from utilities.transfer.landing import FinalName, Landing, Problem
from utilities.transfer.part_files import StaleCheck, part_name
from utilities.transfer.protocol import ERR_BUSY, ERR_EXISTS, ReceiveFailure

NAME = "plot-k32-2021-05-01-00-00-" + "d" * 64 + ".plot"
DATA = os.urandom(3 * 4096 + 5)


class Stop(Exception):
    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


@pytest.fixture
def landings(drive: Path) -> Iterator[list[Landing]]:
    made: list[Landing] = []
    yield made
    for landing in made:
        landing.close()


def make(drive: Path, landings: list[Landing], wording=receiver.WORDING, fail=ReceiveFailure) -> Landing:  # type: ignore[no-untyped-def]
    landing = Landing(drive, NAME, len(DATA), wording=wording, fail=fail,
                      on_stale=lambda _entry, _check: None, note=lambda _message: None)
    landings.append(landing)
    return landing


@pytest.mark.parametrize("wording", [receiver.WORDING, local_copy.WORDING], ids=["receiver", "local copy"])
def test_every_problem_is_worded_by_both_writers(wording) -> None:  # type: ignore[no-untyped-def]
    assert set(wording) == set(Problem)
    landing = Landing("/drive", NAME, 100, wording=wording, fail=Stop, on_stale=lambda *_: None, note=print)
    for problem in Problem:
        stop = landing.failure(problem, OSError(5, "Input/output error"), free=7, offset=9)
        assert isinstance(stop, Stop) and stop.message and "{" not in stop.message, problem


def test_plot_lands_under_its_name_and_only_after_commit(drive: Path, landings: list[Landing]) -> None:
    landing = make(drive, landings)
    landing.open()
    assert landing.final_name() is FinalName.FREE
    assert landing.reserve() in (True, False)
    assert sorted(os.listdir(drive)) == [part_name(NAME)]
    landing.write(memoryview(DATA), 0)
    assert not (drive / NAME).exists()
    landing.commit()
    landing.close()
    assert sorted(os.listdir(drive)) == [NAME]
    assert (drive / NAME).read_bytes() == DATA


def test_an_unfinished_landing_leaves_nothing(drive: Path, landings: list[Landing]) -> None:
    landing = make(drive, landings)
    landing.open()
    landing.reserve()
    landing.write(memoryview(DATA[:100]), 0)
    landing.close()
    assert os.listdir(drive) == []


def test_final_name_free_same_size_or_refused(drive: Path, landings: list[Landing]) -> None:
    (drive / NAME).write_bytes(DATA)
    landing = make(drive, landings)
    landing.open()
    assert landing.final_name() is FinalName.SAME_SIZE
    size, digest = len(DATA), xxhash.xxh3_128(DATA).hexdigest()
    assert landing.prove_final(size, digest) == digest
    with pytest.raises(ReceiveFailure) as differs:
        landing.prove_final(size, "0" * 32)
    assert (differs.value.kind, differs.value.detail) == (ERR_EXISTS, f"{NAME} already exists in {drive} with different content")
    (drive / NAME).write_bytes(b"shorter")
    with pytest.raises(ReceiveFailure) as taken:
        landing.final_name()
    assert (taken.value.kind, taken.value.detail) == (ERR_EXISTS, f"{NAME} already exists in {drive}")


def test_a_part_a_living_writer_holds_is_busy_and_kept(drive: Path, landings: list[Landing]) -> None:
    part = drive / part_name(NAME)
    part.write_bytes(b"half a plot")
    with open(part, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        as_receiver = make(drive, landings)
        as_receiver.open()
        with pytest.raises(ReceiveFailure) as busy:
            as_receiver.reserve()
        assert (busy.value.kind, busy.value.detail) == (ERR_BUSY, f"another receiver is receiving {NAME}")
        as_copy = make(drive, landings, local_copy.WORDING, Stop)
        as_copy.open()
        with pytest.raises(Stop) as also_busy:
            as_copy.reserve()
        assert (also_busy.value.outcome, also_busy.value.message) == (
            local_copy.FAILED, f"{part_name(NAME)} is being written by another process")
    assert part.read_bytes() == b"half a plot"


def test_a_stale_part_goes_and_its_removal_is_told(drive: Path, landings: list[Landing]) -> None:
    stale = drive / part_name(NAME)
    stale.write_bytes(b"left by a SIGKILL")
    told: list[tuple[str, StaleCheck]] = []
    landing = Landing(drive, NAME, len(DATA), wording=receiver.WORDING, fail=ReceiveFailure,
                      on_stale=lambda entry, check: told.append((entry, check)), note=lambda _message: None)
    landings.append(landing)
    landing.open()
    landing.reserve()
    assert told == [(stale.name, StaleCheck(gone=True, removed=True))]


def test_commit_never_replaces_a_file_that_appeared(drive: Path, landings: list[Landing]) -> None:
    landing = make(drive, landings)
    landing.open()
    landing.reserve()
    landing.write(memoryview(DATA), 0)
    (drive / NAME).write_bytes(b"someone else's")
    with pytest.raises(ReceiveFailure) as appeared:
        landing.commit()
    assert (appeared.value.kind, appeared.value.detail) == (ERR_EXISTS, f"{NAME} appeared in {drive} while receiving")
    landing.close()
    assert sorted(os.listdir(drive)) == [NAME]
    assert (drive / NAME).read_bytes() == b"someone else's"


def test_make_room_runs_once_before_the_part_is_created(drive: Path, landings: list[Landing]) -> None:
    landing = make(drive, landings)
    landing.open()
    calls: list[list[str]] = []
    landing.reserve(lambda: calls.append(os.listdir(drive)))
    assert calls == [[]]  # called once, before the part file was created
