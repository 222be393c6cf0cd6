"""The receive set: reading ``--drives``, the order drives are tried in, what the receiver
answers when none takes the plot, and the walk with real claims in a real claims directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from utilities.transfer.claims import DriveClaim, receives_in_flight, try_claim
from utilities.transfer.protocol import ERR_BAD_DEST, ERR_BUSY, ERR_EXISTS, ERR_IO, ERR_NO_SPACE, ReceiveFailure
from utilities.transfer.receive_set import Placement, SetDrive, no_drive_failure, parse_drives, walk_order

D0, D1, D2 = SetDrive("d0", "/mnt/d0"), SetDrive("d1", "/mnt/d1", True), SetDrive("d2", "/mnt/d2")
FULL = ReceiveFailure(ERR_NO_SPACE, "100 bytes needed, 5 free in /mnt/d0")


def drives_json(*items: object) -> str:
    return json.dumps(list(items))


def test_drives_are_read_in_order() -> None:
    text = drives_json({"name": "d0", "dir": "/mnt/d0", "replace": False},
                       {"name": "d1", "dir": "/mnt/d1", "replace": True})
    assert parse_drives(text) == (D0, SetDrive("d1", "/mnt/d1", True))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[", "not JSON"),
        ("{}", "not a non-empty JSON list"),
        ("[]", "not a non-empty JSON list"),
        ('["/mnt/d0"]', "drive 1 is not an object"),
        (drives_json({"name": "d0", "dir": "/mnt/d0"}), "exactly the keys name, dir, replace"),
        (drives_json({"name": "d0", "dir": "/mnt/d0", "replace": False, "x": 1}), "exactly the keys"),
        (drives_json({"name": "", "dir": "/mnt/d0", "replace": False}), "name must be non-empty text"),
        (drives_json({"name": 7, "dir": "/mnt/d0", "replace": False}), "name must be non-empty text"),
        (drives_json({"name": "d0", "dir": "mnt/d0", "replace": False}), "dir must be an absolute path"),
        (drives_json({"name": "d0", "dir": "", "replace": False}), "dir must be an absolute path"),
        (drives_json({"name": "d0", "dir": None, "replace": False}), "dir must be an absolute path"),
        (drives_json({"name": "d0", "dir": "/mnt/d0", "replace": "yes"}), "replace must be true or false"),
        (drives_json({"name": "d0", "dir": "/mnt/d0", "replace": 1}), "replace must be true or false"),
        (drives_json({"name": "d0", "dir": "/mnt/d0", "replace": False},
                     {"name": "d0", "dir": "/mnt/d1", "replace": False}), "drive name 'd0' is given twice"),
        (drives_json({"name": "d0", "dir": "/mnt/d0", "replace": False},
                     {"name": "d1", "dir": "/mnt/d0/", "replace": False}), "dir '/mnt/d0/' is given twice"),
    ],
)
def test_bad_drives_are_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as refused:
        parse_drives(text)
    assert "\n" not in str(refused.value)


def test_the_held_drive_is_tried_first_then_the_set_in_order() -> None:
    assert walk_order([D0, D1, D2], None) == [D0, D1, D2]
    assert walk_order([D0, D1, D2], "d1") == [D1, D0, D2]
    assert walk_order([D0, D1, D2], "gone") == [D0, D1, D2]


def test_busy_wins_then_one_refusal_as_it_is_then_all_of_them() -> None:
    busy = no_drive_failure(["d0", "d1"], [])
    assert busy.kind == ERR_BUSY and "d0, d1" in busy.detail
    partly = no_drive_failure(["d1"], [("d0", FULL)])
    assert partly.kind == ERR_BUSY and "d1" in partly.detail and FULL.detail in partly.detail
    assert no_drive_failure([], [("d0", FULL)]) is FULL  # --dest: the one drive's own words
    gone = ReceiveFailure(ERR_BAD_DEST, "/mnt/d1: No such file or directory")
    both = no_drive_failure([], [("d0", FULL), ("d1", gone)])
    assert both.kind == ERR_NO_SPACE
    assert both.detail == f"no drive of the receive set can take it: d0: {FULL.detail}; d1: {gone.detail}"
    assert no_drive_failure([], [("d1", gone), ("d2", gone)]).kind == ERR_BAD_DEST


# -- the walk, with real claims ----------------------------------------------------------------


@pytest.fixture
def claims_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "receiving"


@pytest.fixture
def others(claims_dir: Path) -> Iterator[list[DriveClaim]]:
    """Claims held by "other receivers" (this test)."""
    held: list[DriveClaim] = []
    yield held
    for claim in held:
        claim.release()


def hold(claims_dir: Path, others: list[DriveClaim], drive: str) -> None:
    claim = try_claim(claims_dir, drive)
    assert claim is not None
    others.append(claim)


def lands_on(accepting: set[str], tried: list[str], failure: ReceiveFailure = FULL):  # type: ignore[no-untyped-def]
    def land(drive: SetDrive) -> str:
        tried.append(drive.name)
        if drive.name not in accepting:
            raise failure
        return drive.name

    return land


def test_the_session_keeps_its_drive_and_moves_on_when_it_fills(claims_dir: Path) -> None:
    placement = Placement([D0, D1, D2], str(claims_dir))
    tried: list[str] = []
    try:
        assert placement.place(lands_on({"d0", "d1"}, tried)).drive == D0
        assert placement.place(lands_on({"d0", "d1"}, tried)).drive == D0
        assert [r.drive for r in receives_in_flight(claims_dir)] == ["d0"]
        placed = placement.place(lands_on({"d1"}, tried))  # d0 is full now
        assert placed.drive == D1 and placed.landed == "d1"
        assert tried == ["d0", "d0", "d0", "d1"]
        assert [r.drive for r in receives_in_flight(claims_dir)] == ["d1"]  # d0 given back
    finally:
        placement.release()
    assert receives_in_flight(claims_dir) == []


def test_drives_claimed_by_others_are_skipped_and_all_claimed_is_busy(
    claims_dir: Path, others: list[DriveClaim]
) -> None:
    hold(claims_dir, others, "d0")
    placement = Placement([D0, D1, D2], str(claims_dir))
    tried: list[str] = []
    try:
        assert placement.place(lands_on({"d0", "d1", "d2"}, tried)).drive == D1
        placement.release()
        hold(claims_dir, others, "d1")
        hold(claims_dir, others, "d2")
        with pytest.raises(ReceiveFailure) as busy:
            placement.place(lands_on({"d0", "d1", "d2"}, tried))
        assert busy.value.kind == ERR_BUSY
        assert tried == ["d1"]  # nothing is tried on a drive that is not ours
    finally:
        placement.release()


def test_no_room_anywhere_is_no_space_and_nothing_stays_claimed(claims_dir: Path) -> None:
    placement = Placement([D0, D1], str(claims_dir))
    tried: list[str] = []
    with pytest.raises(ReceiveFailure) as full:
        placement.place(lands_on(set(), tried))
    assert full.value.kind == ERR_NO_SPACE and tried == ["d0", "d1"]
    assert placement.claim is None and receives_in_flight(claims_dir) == []


def test_other_failures_end_the_walk_on_the_drive_they_happened(claims_dir: Path) -> None:
    placement = Placement([D0, D1], str(claims_dir))
    tried: list[str] = []
    try:
        for kind in (ERR_IO, ERR_EXISTS):
            with pytest.raises(ReceiveFailure) as failed:
                placement.place(lands_on(set(), tried, ReceiveFailure(kind, "boom")))
            assert failed.value.kind == kind
        assert tried == ["d0", "d0"]
    finally:
        placement.release()


def test_without_a_claims_directory_nothing_is_claimed(claims_dir: Path, tmp_path: Path) -> None:
    """``--dest``: one drive, no claims, its refusal as it is."""
    placement = Placement([SetDrive(str(tmp_path), str(tmp_path))], None)
    assert placement.place(lambda drive: drive.dir).landed == str(tmp_path)
    assert placement.claim is None and not claims_dir.exists()
    with pytest.raises(ReceiveFailure) as full:
        placement.place(lands_on(set(), []))
    assert full.value is FULL


def test_a_plot_already_on_a_drive_of_the_set_is_found_there(tmp_path: Path) -> None:
    drives = [SetDrive(f"d{n}", str(tmp_path / f"d{n}")) for n in range(3)]
    for drive in drives[1:]:
        Path(drive.dir).mkdir()  # d0's directory is gone: skipped
    (Path(drives[2].dir) / "a.plot").write_bytes(b"x")
    placement = Placement(drives, None)
    assert placement.find_existing("a.plot") == drives[2]
    assert placement.find_existing("b.plot") is None


def test_a_claims_directory_that_cannot_be_made_is_an_io_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    placement = Placement([D0], str(tmp_path / "file" / "receiving"))
    with pytest.raises(ReceiveFailure) as failed:
        placement.place(lambda drive: drive)
    assert failed.value.kind == ERR_IO and "cannot claim d0" in failed.value.detail
