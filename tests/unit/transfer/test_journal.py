"""The resume journal (issue 13): pure format and digest, and the sweeps' respect for it.

A journal names only chunks the drive holds; a torn, foreign or inconsistent one makes its part
garbage; a journaled part nobody holds is kept for a resume until it expires, then swept with
its journal.  Real files in a temporary directory; no processes.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
import xxhash

from tests.support.plotmaker import plot_name
from utilities.transfer import part_files
from utilities.transfer.journal import (
    ChunkHasher,
    Journal,
    chunked_digest,
    format_journal,
    hash_chunks,
    journal_name,
    parse_journal,
    read_journal,
    source_token,
    write_journal,
)
from utilities.transfer.protocol import (
    format_from,
    format_plot,
    format_resume,
    parse_chunk_line,
    parse_from_line,
    parse_plot_line,
    parse_plot_request,
    parse_receiver_line,
)

HEX = "0123456789abcdef" * 2


def journal(chunks: int = 2) -> Journal:
    return Journal(plot_name(32, b"j" * 32), 10_000, "abc123", 4096, [HEX] * chunks)


def test_a_journal_round_trips_and_a_torn_or_edited_one_is_refused() -> None:
    data = format_journal(journal())
    assert parse_journal(data) == journal()
    for cut in (1, len(data) // 2, len(data) - 2):
        assert parse_journal(data[:cut]) is None
    assert parse_journal(data.replace(b"10000", b"10001")) is None  # its check no longer matches
    assert parse_journal(b"\xff\xfe") is None
    too_many = Journal(journal().name, 4096, "abc123", 4096, [HEX] * 2)
    assert parse_journal(format_journal(too_many)) is None  # more chunks than the plot has


def test_chunk_hashes_do_not_depend_on_how_the_stream_is_cut_into_pieces() -> None:
    data = os.urandom(10 * 1000 + 7)
    whole = ChunkHasher(1000, len(data))
    whole.update(memoryview(data))
    pieces = ChunkHasher(1000, len(data))
    offset = 0
    for size in (1, 999, 1, 2500, 3, 7000, 10_000):
        pieces.update(memoryview(data[offset : offset + size]))
        offset = min(len(data), offset + size)
    expected = [xxhash.xxh3_128(data[i : i + 1000]).hexdigest() for i in range(0, len(data), 1000)]
    assert whole.digests == pieces.digests == expected and len(expected) == 11
    assert chunked_digest(expected) == xxhash.xxh3_128(b"".join(bytes.fromhex(h) for h in expected)).hexdigest()
    resumed = ChunkHasher(1000, len(data), 4000)
    resumed.update(memoryview(data[4000:]))
    assert expected[:4] + resumed.digests == expected


def test_hash_chunks_stops_at_the_first_chunk_that_differs(tmp_path: Path) -> None:
    data = bytearray(os.urandom(5000))
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        all_five = hash_chunks(fd, 1000, 5)
        assert hash_chunks(fd, 1000, 3) == all_five[:3]
        wrong = list(all_five)
        wrong[2] = HEX
        assert hash_chunks(fd, 1000, 5, wrong) == all_five[:2]
        assert hash_chunks(fd, 1000, 5, all_five) == all_five
    finally:
        os.close(fd)


def test_the_source_token_changes_with_any_part_of_the_identity() -> None:
    base = source_token(1, 2, 3, 4)
    assert base == source_token(1, 2, 3, 4)
    assert len({base, source_token(2, 2, 3, 4), source_token(1, 3, 3, 4), source_token(1, 2, 4, 4),
                source_token(1, 2, 3, 5)}) == 5


def test_the_resume_lines() -> None:
    name = plot_name(32, b"p" * 32)
    assert parse_plot_request(format_plot(name, 7, "ab-1")) == (name, 7, "ab-1")
    assert parse_plot_request(format_plot(name, 7)) == (name, 7, None)
    assert parse_plot_line(format_plot(name, 7, "ab-1")) is None  # an older receiver's reading
    assert parse_plot_request(f"PLOT {name} 7 AB") is None and parse_plot_request(f"PLOT {name} 7 a b") is None
    with pytest.raises(ValueError, match="source"):
        format_plot(name, 7, "no spaces")
    reply = parse_receiver_line(format_resume(4040, 1 << 30, 3))
    assert (reply.kind, reply.port, reply.chunk, reply.count) == ("RESUME", 4040, 1 << 30, 3)
    assert parse_receiver_line("RESUME 4040 0 3").kind == "ERROR"
    assert parse_chunk_line(f"CHUNK {HEX}") == HEX and parse_chunk_line("CHUNK xyz") is None
    assert parse_from_line(format_from(2), 3) == 2 and parse_from_line(format_from(4), 3) is None


def _kept_part(directory: Path, chunks: int = 1) -> tuple[int, str]:
    """A part of 10 000 bytes nobody holds, with a journal of ``chunks`` chunks."""
    made = journal(chunks)
    directory.mkdir(exist_ok=True)
    part = part_files.part_name(made.name)
    (directory / part).write_bytes(b"x" * made.size)
    dir_fd = part_files.open_directory(directory)
    if chunks:
        write_journal(dir_fd, part, made)
    return dir_fd, part


def test_a_journaled_part_nobody_holds_is_kept_until_it_expires(tmp_path: Path) -> None:
    tmp_path = tmp_path / "drive"
    dir_fd, part = _kept_part(tmp_path)
    try:
        assert read_journal(dir_fd, part)[0] == journal(1)
        check = part_files.remove_if_stale(dir_fd, part)
        assert (check.gone, check.resumable) == (False, True) and (tmp_path / part).exists()
        check = part_files.remove_if_stale(dir_fd, part, keep_seconds=0)
        assert check.removed and sorted(os.listdir(tmp_path)) == []  # the journal went with it
    finally:
        os.close(dir_fd)


@pytest.mark.parametrize("damage", ["torn", "missing", "empty", "other size"])
def test_a_part_with_a_bad_journal_is_swept_at_once(tmp_path: Path, damage: str) -> None:
    tmp_path = tmp_path / "drive"
    dir_fd, part = _kept_part(tmp_path, chunks=0 if damage == "empty" else 1)
    try:
        journal_path = tmp_path / journal_name(part)
        if damage == "torn":
            journal_path.write_bytes(journal_path.read_bytes()[:-10])
        elif damage == "missing":
            journal_path.unlink()
        elif damage == "other size":
            (tmp_path / part).write_bytes(b"x" * 9999)
        assert part_files.remove_if_stale(dir_fd, part).removed
        assert os.listdir(tmp_path) == []
    finally:
        os.close(dir_fd)


def test_a_held_part_is_never_swept_even_with_an_expired_journal(tmp_path: Path) -> None:
    tmp_path = tmp_path / "drive"
    dir_fd, part = _kept_part(tmp_path)
    fd = os.open(tmp_path / part, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        check = part_files.remove_if_stale(dir_fd, part, keep_seconds=0)
        assert not check.gone and (tmp_path / part).exists()
    finally:
        os.close(fd)
        os.close(dir_fd)


def test_a_forgotten_part_goes_at_once_though_its_journal_would_keep_it(tmp_path: Path) -> None:
    tmp_path = tmp_path / "drive"
    dir_fd, part = _kept_part(tmp_path)
    try:
        check, freed = part_files.reclaim_if_stale(dir_fd, part, forgotten=True)
        assert check.removed and os.listdir(tmp_path) == []
    finally:
        os.close(dir_fd)


def test_a_journal_whose_part_is_gone_is_swept_and_one_beside_its_part_is_not(tmp_path: Path) -> None:
    from utilities.harvester.stale_parts import list_parts, sweep_directory

    drive = tmp_path / "drive"
    dir_fd, part = _kept_part(drive)
    os.close(dir_fd)
    orphan = part_files.part_name(plot_name(32, b"o" * 32))
    (drive / journal_name(orphan)).write_bytes(b"{}")
    (drive / (journal_name(orphan) + ".tmp")).write_bytes(b"{")
    (drive / ".notes.journal").write_bytes(b"not ours")  # no part name inside: never touched
    listed = list_parts(str(drive))
    assert listed is not None and set(listed) == {part, journal_name(orphan), journal_name(orphan) + ".tmp"}
    assert sweep_directory(str(drive), listed) == []
    assert sorted(os.listdir(drive)) == sorted([part, journal_name(part), ".notes.journal"])


def test_journal_part_names_only_journals_of_valid_part_names() -> None:
    part = part_files.part_name(plot_name(32, b"p" * 32))
    assert part_files.journal_part(journal_name(part)) == part
    assert part_files.journal_part(journal_name(part) + ".tmp") == part
    assert part_files.journal_part(part) is None
    assert part_files.journal_part(".x;rm -rf.part.journal") is None
    entries = [part, journal_name(part), journal_name(".gone.part")]
    assert part_files.orphan_journal_candidates(entries) == []  # '.gone.part' is no plot's part


def test_forget_requests_keep_only_plot_names(tmp_path: Path) -> None:
    from utilities.errors import PlotFileError
    from utilities.transfer.forget import REQUESTS_FILENAME, parse_requests, request_forget, take_requests

    tmp_path = tmp_path / "claims"
    tmp_path.mkdir()
    name = plot_name(32, b"f" * 32)
    request_forget(str(tmp_path), name)
    request_forget(str(tmp_path), name)
    with pytest.raises(PlotFileError):
        request_forget(str(tmp_path), "../../etc/passwd")
    with (tmp_path / REQUESTS_FILENAME).open("ab") as handle:
        handle.write(b"../evil.plot\n\xff\xfe\n")
    assert take_requests(str(tmp_path)) == {name}
    assert os.listdir(tmp_path) == [] and take_requests(str(tmp_path)) == set()
    assert parse_requests(b"") == set()
