"""Drive claims on real files and real flocks: taking and giving back receive slots, and what
readers (the minute pass, -pr, the metrics) see of them without ever taking a lock."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.waiting import DEADLINE
from utilities.transfer import claims as claims_module
from utilities.transfer.claims import (
    DriveClaim,
    ReceiveInFlight,
    claim_file_name,
    claims_per_drive,
    drive_of_claim_file,
    receives_in_flight,
    try_claim,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def claims(tmp_path: Path) -> Iterator[tuple[Path, list[DriveClaim]]]:
    """A claims directory, and the claims a test took (released at the end, held or not)."""
    held: list[DriveClaim] = []
    yield tmp_path / "receiving", held
    for claim in held:
        claim.release()


def take(directory: Path, held: list[DriveClaim], drive: str, per_drive: int = 1) -> DriveClaim | None:
    claim = try_claim(directory, drive, per_drive)
    if claim is not None:
        held.append(claim)
    return claim


def test_a_claim_is_exclusive_until_released(claims: tuple[Path, list[DriveClaim]]) -> None:
    directory, held = claims
    first = take(directory, held, "drive0")
    assert first is not None and (first.drive, first.index) == ("drive0", 0)
    assert take(directory, held, "drive0") is None
    assert take(directory, held, "drive1") is not None  # another drive is another claim
    first.release()
    first.release()  # twice is harmless
    again = take(directory, held, "drive0")
    assert again is not None and again.index == 0


def test_per_drive_gives_that_many_slots(claims: tuple[Path, list[DriveClaim]]) -> None:
    directory, held = claims
    slots = [take(directory, held, "drive0", per_drive=3) for _ in range(3)]
    assert [s.index for s in slots if s is not None] == [0, 1, 2]
    assert take(directory, held, "drive0", per_drive=3) is None
    assert claims_per_drive(receives_in_flight(directory)) == {"drive0": 3}


def test_readers_see_only_held_claims_with_their_progress(claims: tuple[Path, list[DriveClaim]]) -> None:
    directory, held = claims
    receiving = take(directory, held, "drive0")
    between = take(directory, held, "drive1")
    gone = take(directory, held, "drive2")
    assert receiving is not None and between is not None and gone is not None
    receiving.record("a.plot", 1000, 250, 100.0, force=True)
    gone.record("b.plot", 1000, 999, 100.0, force=True)
    gone.release()  # its file stays behind, unlocked: an old claim
    assert (directory / claim_file_name("drive2", 0)).exists()
    seen = {r.drive: r for r in receives_in_flight(directory)}
    assert sorted(seen) == ["drive0", "drive1"]
    assert (seen["drive0"].plot, seen["drive0"].size, seen["drive0"].received) == ("a.plot", 1000, 250)
    assert seen["drive0"].pid == os.getpid() and seen["drive0"].fraction == 0.25
    assert seen["drive1"].plot == "" and seen["drive1"].received == 0  # a session between plots


def test_records_are_rate_limited_unless_forced(claims: tuple[Path, list[DriveClaim]]) -> None:
    directory, held = claims
    claim = take(directory, held, "drive0")
    assert claim is not None
    claim.record("a.plot", 1000, 10, 100.0, force=True)
    claim.record("a.plot", 1000, 20, 100.0)  # right after the last one: skipped
    assert receives_in_flight(directory)[0].received == 10
    claim.record("a.plot", 1000, 30, 100.0, force=True)
    assert receives_in_flight(directory)[0].received == 30


def test_a_claim_dies_with_its_holder(claims: tuple[Path, list[DriveClaim]]) -> None:
    """The kernel drops the flock of a process that ends, however it ends: nobody cleans up."""
    directory, held = claims
    code = (
        "import sys; from utilities.transfer.claims import try_claim;"
        f"c = try_claim({str(directory)!r}, 'drive0'); print(c.index, flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"0\n"
        assert [r.pid for r in receives_in_flight(directory)] == [holder.pid]
        assert take(directory, held, "drive0") is None
        holder.kill()
        holder.wait(timeout=DEADLINE)
        assert receives_in_flight(directory) == []
        assert take(directory, held, "drive0") is not None
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=DEADLINE)
        for stream in (holder.stdin, holder.stdout):
            stream.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("drive", ["drive0", "/mnt/enclosure 1/drive.7", "a%2Fb", "d.0.claim", "äöü"])
def test_any_drive_name_round_trips_through_its_file_name(
    claims: tuple[Path, list[DriveClaim]], drive: str
) -> None:
    directory, held = claims
    name = claim_file_name(drive, 3)
    assert "/" not in name and drive_of_claim_file(name) == drive
    claim = take(directory, held, drive)
    assert claim is not None
    assert [r.drive for r in receives_in_flight(directory)] == [drive]


def test_other_files_in_the_claims_directory_are_ignored(claims: tuple[Path, list[DriveClaim]]) -> None:
    directory, held = claims
    assert receives_in_flight(directory) == []  # not even made yet
    assert take(directory, held, "drive0") is not None
    for stray in ("notes.txt", ".claim", "drive0.x.claim"):
        (directory / stray).write_text("{}")
    assert drive_of_claim_file("notes.txt") is None and drive_of_claim_file("drive0.x.claim") is None
    assert [r.drive for r in receives_in_flight(directory)] == ["drive0"]


def test_a_receive_in_flight_round_trips_and_bad_records_are_refused() -> None:
    receive = ReceiveInFlight("drive0", "a.plot", 1000, 500, 10.0, 20.0, 42)
    assert ReceiveInFlight.from_dict(receive.to_dict()) == receive
    assert receive.bytes_per_second == 50.0
    for bad in ({"plot": "a.plot"}, {"drive": "d", "size": -1}, {"drive": "d", "received": True},
                {"drive": "d", "started_at": "x"}):
        with pytest.raises(ValueError):
            ReceiveInFlight.from_dict(bad)
    with pytest.raises(TypeError):
        ReceiveInFlight.from_dict(["drive0"])


def test_a_lock_list_with_other_device_numbers_is_checked_on_the_lock_itself(
    claims: tuple[Path, list[DriveClaim]], tmp_path: Path
) -> None:
    """btrfs gives stat() other device numbers than /proc/locks: a held claim must still count
    and a free one with the same inode number must not."""
    directory, held = claims
    holding = take(directory, held, "drive0")
    free = take(directory, held, "drive1")
    assert holding is not None and free is not None
    free.release()
    files = {drive: directory / claim_file_name(drive, 0) for drive in ("drive0", "drive1")}
    inodes = {drive: path.stat().st_ino for drive, path in files.items()}
    proc_locks = tmp_path / "locks"
    proc_locks.write_text("".join(f"{n}: FLOCK  ADVISORY  WRITE 1 00:ff:{inode} 0 EOF\n"
                                  for n, inode in enumerate(inodes.values(), 1)))
    listed = claims_module._locked_files(str(proc_locks))
    assert listed == {(0, 0xFF, inode) for inode in inodes.values()}
    assert claims_module._is_held(str(files["drive0"]), files["drive0"].stat(), listed)
    assert not claims_module._is_held(str(files["drive1"]), files["drive1"].stat(), listed)
    assert not claims_module._is_held(str(files["drive0"]), files["drive0"].stat(), set())  # not listed at all
