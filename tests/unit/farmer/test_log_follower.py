"""The log follower on real files: growth, partial lines, rotation (plain and gzip, also caught
half-way), copytruncate, losing track, garbage and runs killed between batches.

The rule every test checks: the lines handed out over all runs are exactly the lines written,
in order, none twice and none missing.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from tests.support.chia_log_writer import CHIA_2_5_7, ChiaLogWriter
from utilities.farmer.log_follower import FollowReport, follow, load_state, save_state
from utilities.farmer.log_position import HEAD_BYTES, FollowState
from utilities.state import StateDB


class Reader:
    """One cron run after another, carrying the saved position like the state database does."""

    def __init__(self, path: Path, start_at: str = "beginning", chunk_bytes: int = 4096) -> None:
        self.path = path
        self.start_at = start_at
        self.chunk_bytes = chunk_bytes
        self.state: FollowState | None = None
        self.lines: list[str] = []
        self.report = FollowReport()

    def run(self, stop_after_batches: int | None = None) -> list[str]:
        """One run; ``stop_after_batches`` simulates a run killed after that many batches."""
        new: list[str] = []
        self.report = FollowReport()
        for count, batch in enumerate(follow(self.path, self.state, self.start_at, self.report, self.chunk_bytes)):
            if stop_after_batches is not None and count >= stop_after_batches:
                break
            new += batch.lines
            self.state = batch.state  # saved together with what the lines produced
        self.lines += new
        return new


def _lines(writer: ChiaLogWriter, count: int, tag: str) -> list[str]:
    return [writer.write("full_node", "chia.full_node.full_node", "INFO", f"{tag} line {index}") for index in range(count)]


def test_reads_only_what_was_added(tmp_path: Path) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log")
    reader = Reader(writer.path)
    first = _lines(writer, 3, "a")
    assert reader.run() == first
    second = _lines(writer, 2, "b")
    assert reader.run() == second
    assert reader.run() == []
    assert reader.report.bytes_read == 0


def test_start_at_end_skips_the_past(tmp_path: Path) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log")
    _lines(writer, 5, "old")
    writer.write_raw(b"2025-11-21T07:00:09.000 half a li")
    reader = Reader(writer.path, start_at="end")
    assert reader.run() == []
    writer.write_raw(b"ne\n")
    new = _lines(writer, 2, "new")
    assert reader.run() == ["2025-11-21T07:00:09.000 half a line", *new]


def test_a_partial_last_line_waits_for_its_end(tmp_path: Path) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log")
    reader = Reader(writer.path)
    whole = _lines(writer, 1, "a")
    line = writer.format("farmer", "chia.farmer.farmer", "ERROR", "Error in pooling: (5, 'x')")
    writer.write_raw(line[:30].encode())
    assert reader.run() == whole
    writer.write_raw(line[30:].encode() + b"\n")
    assert reader.run() == [line]


@pytest.mark.parametrize("use_gzip", [False, True], ids=["plain", "gzip"])
def test_rotation_between_runs(tmp_path: Path, use_gzip: bool) -> None:
    writer = ChiaLogWriter(tmp_path / "log" / "debug.log", use_gzip=use_gzip)
    reader = Reader(writer.path)
    reader.run()
    _lines(writer, 3, "a")
    reader.run()
    before = _lines(writer, 4, "b")  # written to the old file after our last run
    writer.rotate()
    after = _lines(writer, 2, "c")
    assert reader.run() == before + after
    assert reader.report.rotations == 1
    names = sorted(p.name for p in writer.path.parent.iterdir())
    assert names == (["debug.log", "debug.log.1.gz"] if use_gzip else ["debug.log", "debug.log.1"])


@pytest.mark.parametrize("use_gzip", [False, True], ids=["plain", "gzip"])
def test_several_rotations_between_runs(tmp_path: Path, use_gzip: bool) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log", use_gzip=use_gzip)
    reader = Reader(writer.path)
    expected = _lines(writer, 2, "a")
    reader.run()
    expected = []
    for round_ in range(3):
        expected += _lines(writer, 3, f"r{round_}")
        writer.rotate()
    expected += _lines(writer, 1, "live")
    assert reader.run() == expected
    assert reader.report.rotations == 3


def test_run_during_a_rotation(tmp_path: Path) -> None:
    """The live file is renamed away and not yet replaced: read the rest of it, then carry on."""
    writer = ChiaLogWriter(tmp_path / "debug.log")
    reader = Reader(writer.path)
    _lines(writer, 2, "a")
    reader.run()
    tail = _lines(writer, 2, "b")
    temp = writer.rotate_started()
    assert not writer.path.exists()
    assert reader.run() == tail
    writer.rotate_finished(temp)
    new = _lines(writer, 2, "c")
    assert reader.run() == new


def test_copytruncate(tmp_path: Path) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log")
    reader = Reader(writer.path)
    _lines(writer, 2, "a")
    reader.run()
    before = _lines(writer, 3, "b")
    inode = writer.path.stat().st_ino
    writer.copytruncate()
    assert writer.path.stat().st_ino == inode and writer.path.stat().st_size == 0
    after = _lines(writer, 1, "c")
    assert reader.run() == before + after


def test_copytruncate_then_the_file_grew_past_the_old_offset(tmp_path: Path) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log")
    reader = Reader(writer.path)
    _lines(writer, 1, "a")
    reader.run()
    before = _lines(writer, 1, "b")
    writer.copytruncate()
    after = _lines(writer, 40, "c")  # longer than the old file: only the fingerprint tells
    assert writer.path.stat().st_size > reader.state.offset  # type: ignore[union-attr]
    assert reader.run() == before + after


def test_a_closed_file_s_unfinished_last_line_is_handed_out_once(tmp_path: Path) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log")
    reader = Reader(writer.path)
    _lines(writer, 1, "a")
    reader.run()
    writer.write_raw(b"2025-11-21T07:00:05.000 harvester cut off by a cra")
    writer.rotate()
    new = _lines(writer, 1, "b")
    assert reader.run() == ["2025-11-21T07:00:05.000 harvester cut off by a cra", *new]
    assert reader.run() == []


def test_lost_track_reads_what_is_newer_than_the_last_line_seen(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log", backups=2)
    reader = Reader(writer.path)
    _lines(writer, 2, "a")
    reader.run()
    lost = _lines(writer, 2, "lost")
    writer.rotate()
    gone = _lines(writer, 2, "gone")
    writer.rotate()
    kept = _lines(writer, 2, "kept1")
    writer.rotate()
    kept += _lines(writer, 2, "kept2")
    writer.rotate()  # the file we were reading has fallen off the end (2 backups)
    live = _lines(writer, 2, "live")
    new = reader.run()
    assert new == kept + live
    assert not set(lost + gone) & set(new)
    assert reader.report.lost_track and "lost track" in caplog.text


def test_garbage_does_not_stop_the_follower(tmp_path: Path) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log")
    reader = Reader(writer.path)
    _lines(writer, 1, "a")
    reader.run()
    writer.write_raw(b"\x00" * 100 + b"\n\xff\xfe\xfd not utf-8 \x80\n")
    after = _lines(writer, 2, "b")
    new = reader.run()
    assert new[0] == "\x00" * 100 and "not utf-8" in new[1] and new[2:] == after


def test_a_damaged_gzip_backup_is_reported_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log", use_gzip=True)
    reader = Reader(writer.path)
    _lines(writer, 50, "a")
    reader.run()
    _lines(writer, 50, "b")
    writer.rotate()
    backup = tmp_path / "debug.log.1.gz"
    data = backup.read_bytes()
    backup.write_bytes(data[: len(data) // 2])  # cut in half
    live = _lines(writer, 2, "c")
    assert reader.run()[-2:] == live
    assert "damaged" in caplog.text


def test_position_survives_in_the_state_database(tmp_path: Path) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log")
    written = _lines(writer, 30, "a")
    with StateDB(tmp_path / "state.sqlite3") as db:
        assert load_state(db, writer.path) is None
        got: list[str] = []
        for batch in follow(writer.path, None, "beginning", chunk_bytes=512):
            got += batch.lines
            with db.transaction() as cur:
                save_state(cur, writer.path, batch.state)
            break  # the run is killed after its first batch
    with StateDB(tmp_path / "state.sqlite3") as db:  # a new process
        state = load_state(db, writer.path)
        assert state is not None and 0 < state.offset < writer.path.stat().st_size
        assert min(HEAD_BYTES, state.offset) <= state.head_length <= HEAD_BYTES
        for batch in follow(writer.path, state, "beginning", chunk_bytes=512):
            got += batch.lines
    assert got == written


@pytest.mark.parametrize("seed", range(40))
def test_random_history_every_line_exactly_once(tmp_path: Path, seed: int) -> None:
    """Writes, partial writes, rotations (plain or gzip), copytruncates and killed runs in a
    random order, some histories switching gzip on half-way: all lines come out once, in order
    (with fewer rotations between two runs than backups kept, so nothing can fall off the end)."""
    rng = random.Random(seed)
    use_gzip = seed % 2 == 1
    writer = ChiaLogWriter(tmp_path / "debug.log", CHIA_2_5_7, backups=7, use_gzip=use_gzip)
    reader = Reader(writer.path, chunk_bytes=rng.choice([64, 300, 4096]))
    written = [writer.write("harvester", "chia.harvester.harvester", "INFO", "chia started")]
    reader.run()  # the first run
    rotations_since_run = 0
    for step in range(120):
        if step == 60 and seed % 4 == 2:
            writer.use_gzip = True  # the farmer switches log_use_gzip on: plain and .gz backups mix
        action = rng.random()
        if action < 0.45:
            for index in range(rng.randint(1, 6)):
                written.append(writer.write("harvester", "chia.harvester.harvester", "INFO", f"s{step} l{index}"))
        elif action < 0.6:
            # chia is caught in the middle of writing a line: a run happens, then the line ends.
            line = writer.format("wallet", "chia.wallet.wallet_node", "INFO", f"partial {step}")
            cut = rng.randint(1, len(line) - 1)
            writer.write_raw(line[:cut].encode())
            reader.run(stop_after_batches=rng.choice([None, 1]))
            writer.write_raw(line[cut:].encode() + b"\n")
            written.append(line)
        elif action < 0.72 and rotations_since_run < 5 and writer.path.exists():
            (writer.copytruncate if rng.random() < 0.3 and not writer.use_gzip else writer.rotate)()
            rotations_since_run += 1
        else:
            reader.run(stop_after_batches=rng.choice([None, None, 0, 1, 2]))
            rotations_since_run = 0
    reader.run()
    assert reader.lines == written


def test_gzip_backup_found_by_fingerprint_not_inode(tmp_path: Path) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log", use_gzip=True)
    reader = Reader(writer.path)
    _lines(writer, 5, "a")
    reader.run()
    old_inode = writer.path.stat().st_ino
    writer.rotate()
    with gzip.open(tmp_path / "debug.log.1.gz", "rb") as handle:
        assert handle.read().count(b"\n") == 5
    assert (tmp_path / "debug.log.1.gz").stat().st_ino != old_inode
    new = _lines(writer, 1, "b")
    assert reader.run() == new


def test_a_backup_being_gzipped_is_read_once(tmp_path: Path) -> None:
    """Mid-rotation with gzip: the temporary file and its half-written .gz exist side by side."""
    writer = ChiaLogWriter(tmp_path / "debug.log", use_gzip=True)
    reader = Reader(writer.path)
    _lines(writer, 2, "a")
    reader.run()
    tail = _lines(writer, 3, "b")
    temp = writer.rotate_started()
    with open(temp, "rb") as source, gzip.open(f"{temp}.gz", "wb") as target:
        target.write(source.read()[:100])  # the compressor is still at work
    assert reader.run() == tail
    assert reader.run() == []
