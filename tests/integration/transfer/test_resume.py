"""A dropped transfer resumes where it stopped (issue 13), still proven identical end to end.

Real receive_plot.py sessions (started by ``/bin/sh -c`` through a receive script, as sshd
would), the plotter's real ReceiverSession, and a loopback proxy in the data path that counts
the bytes on the wire and cuts the stream (the link going down) or flips a byte.  Chunks are
small (``--resume-chunk``) so a few MiB make many chunks.  What must hold: a cut leaves the
part and its journal; the retry sends at most the missing bytes plus one chunk and lands the
identical plot; a torn or missing journal means the part is removed and the plot sent whole; a
chunk that differs (flipped in the stream, or on the drive) is sent again, never kept; the
source can be deleted only after OK.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.cut_proxy import CutProxy
from tests.support.plotmaker import plot_name
from tests.support.waiting import DEADLINE, wait_until
from utilities.transfer.channel import LocalExec
from utilities.transfer.claims import try_claim
from utilities.transfer.intake import RECV_LOW_WATER
from utilities.transfer.journal import journal_name, read_journal
from utilities.transfer.part_files import open_directory, part_name
from utilities.transfer.protocol import TransferError
from utilities.transfer.sender import SendOptions, TransferResult, delete_source_after_ok
from utilities.transfer.session import ReceiverSession

REPO = Path(__file__).resolve().parents[3]
RECEIVER = REPO / "receive_plot.py"
LOOPBACK = "127.0.0.1"
SSH_ENV = {"SSH_CLIENT": f"{LOOPBACK} 40022 22", "SSH_CONNECTION": f"{LOOPBACK} 40022 {LOOPBACK} 22"}
CHUNK = 256 * 1024
SIZE = 32 * CHUNK + 12345  # 33 chunks, the last one short


class Farm:
    """One harvester's two drives, its receive script, the proxy, and the plotter's sessions."""

    def __init__(
        self, root: Path, proxy: CutProxy, *, resume: bool = True, receiver_resume: str = "yes", chunk: int = CHUNK
    ) -> None:
        self.root = root
        self.drives = [root / "drive0", root / "drive1"]
        for path in self.drives:
            path.mkdir(parents=True)
        (root / "plots").mkdir()
        drives = [{"name": f"d{n}", "dir": str(d), "replace": False} for n, d in enumerate(self.drives)]
        argv = [sys.executable, str(RECEIVER), "--config", "/nonexistent/config.yaml", "--drives", json.dumps(drives),
                "--claims", str(root / "claims"), "--idle-timeout", str(DEADLINE), "--resume", receiver_resume,
                "--resume-chunk", str(chunk)]
        self.script = root / "receive_plot.sh"
        self.script.write_text(f"#!/bin/sh\nexec {shlex.join(argv)} \"$@\"\n")
        self.script.chmod(0o755)
        self.exec = LocalExec(env={**os.environ, **SSH_ENV})
        self.proxy = proxy
        self.options = SendOptions(ready_timeout=DEADLINE, verify_timeout=DEADLINE, idle_timeout=DEADLINE,
                                   data_address=proxy.data_address, nc=None, resume=resume)
        self.base_port = 20000 + (os.getpid() * 7) % 30000

    def plot(self, size: int = SIZE) -> Path:
        path = self.root / "plots" / plot_name(32, os.urandom(32))
        path.write_bytes(os.urandom(size))
        return path

    def send(self, path: Path, *, cut_at: int | None = None, flip_at: int | None = None) -> tuple[TransferResult, int]:
        """One attempt on a new session: its result and the bytes it put on the wire."""
        self.proxy.cut_at, self.proxy.flip_at = cut_at, flip_at
        before = self.proxy.forwarded
        with ReceiverSession(self.exec, self.script, LOOPBACK, self.base_port, options=self.options) as session:
            result = session.send(path)
        return result, self.proxy.forwarded - before

    def part(self, path: Path, drive: int = 0) -> Path:
        return self.drives[drive] / part_name(path.name)

    def held_chunks(self, path: Path, drive: int = 0) -> int:
        dir_fd = open_directory(self.drives[drive])
        try:
            journal, _ = read_journal(dir_fd, part_name(path.name))
        finally:
            os.close(dir_fd)
        return len(journal.chunks) if journal is not None else 0

    def close(self) -> None:
        for process in self.exec.started:
            process.kill()


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    with CutProxy() as proxy:
        made = Farm(tmp_path, proxy)
        yield made
        made.close()


def landed(farm: Farm, path: Path) -> bytes:
    return next((d / path.name).read_bytes() for d in farm.drives if (d / path.name).exists())


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_a_cut_stream_resumes_with_the_rest_plus_at_most_one_chunk(farm: Farm, fraction: float) -> None:
    path = farm.plot()
    data = path.read_bytes()
    cut = int(SIZE * fraction)
    first, sent = farm.send(path, cut_at=cut)
    assert not first.ok and sent == cut
    assert farm.part(path).exists() and farm.held_chunks(path) == cut // CHUNK
    with pytest.raises(TransferError):
        delete_source_after_ok(path, first)
    assert path.exists()

    second, resent = farm.send(path)
    assert second.ok, second.reason
    assert resent <= SIZE - cut + CHUNK and resent == SIZE - (cut // CHUNK) * CHUNK
    assert second.saved == (cut // CHUNK) * CHUNK and second.size == SIZE
    assert landed(farm, path) == data
    assert not farm.part(path).exists()
    assert not (farm.drives[0] / journal_name(part_name(path.name))).exists()
    delete_source_after_ok(path, second)
    assert not path.exists()


@pytest.mark.skipif(shutil.which("nc") is None, reason="no nc")
def test_a_resume_streams_through_nc_too(farm: Farm) -> None:
    farm.options = dataclasses.replace(farm.options, nc="nc")
    path = farm.plot()
    data = path.read_bytes()
    cut = SIZE // 3
    assert not farm.send(path, cut_at=cut)[0].ok
    result, resent = farm.send(path)
    assert result.ok and resent == SIZE - (cut // CHUNK) * CHUNK and landed(farm, path) == data


def test_an_uninterrupted_resumable_send_lands_whole_and_leaves_no_journal(farm: Farm) -> None:
    path = farm.plot()
    data = path.read_bytes()
    result, sent = farm.send(path)
    assert result.ok and sent == SIZE and result.saved == 0
    assert landed(farm, path) == data
    assert sorted(os.listdir(farm.drives[0])) == [path.name]


@pytest.mark.parametrize("damage", ["torn", "missing"])
def test_a_torn_or_missing_journal_means_the_part_goes_and_the_plot_is_sent_whole(farm: Farm, damage: str) -> None:
    path = farm.plot()
    data = path.read_bytes()
    farm.send(path, cut_at=SIZE // 2)
    journal = farm.drives[0] / journal_name(part_name(path.name))
    assert journal.exists()
    if damage == "torn":
        journal.write_bytes(journal.read_bytes()[: journal.stat().st_size // 2])
    else:
        journal.unlink()
    result, sent = farm.send(path)
    assert result.ok and sent == SIZE and result.saved == 0
    assert landed(farm, path) == data
    assert sorted(os.listdir(farm.drives[0])) == [path.name]


def test_a_byte_flipped_in_the_stream_before_the_cut_is_sent_again_from_its_chunk(farm: Farm) -> None:
    path = farm.plot()
    data = path.read_bytes()
    farm.send(path, flip_at=3 * CHUNK + 17, cut_at=20 * CHUNK + 5)
    assert farm.held_chunks(path) == 20  # the receiver cannot know; the plotter's check will
    result, resent = farm.send(path)
    assert result.ok and resent == SIZE - 3 * CHUNK
    assert landed(farm, path) == data


def test_a_byte_flipped_on_the_drive_in_the_kept_part_is_sent_again_from_its_chunk(farm: Farm) -> None:
    path = farm.plot()
    data = path.read_bytes()
    farm.send(path, cut_at=20 * CHUNK + 5)
    with open(farm.part(path), "r+b") as part:
        part.seek(7 * CHUNK + 100)
        byte = part.read(1)
        part.seek(7 * CHUNK + 100)
        part.write(bytes([byte[0] ^ 0x01]))
    result, resent = farm.send(path)
    assert result.ok and resent == SIZE - 7 * CHUNK
    assert landed(farm, path) == data


def test_a_changed_source_is_not_resumed_onto(farm: Farm) -> None:
    path = farm.plot()
    farm.send(path, cut_at=SIZE // 2)
    path.write_bytes(os.urandom(SIZE))  # same name and size, another file (new mtime)
    data = path.read_bytes()
    result, sent = farm.send(path)
    assert result.ok and sent == SIZE
    assert landed(farm, path) == data


def _receiver_stopped_mid_plot(farm: Farm, path: Path, chunks: int, signum: int) -> TransferResult:
    """An attempt whose stream the proxy holds once ``chunks`` chunks are journaled; its one
    receiver is then sent ``signum``.  The attempt's result."""
    outcome: list[TransferResult] = []
    # Just past the chunk: the chunk's last bytes sit below the receiver's low-water mark
    # (RECV_LOW_WATER) when the stream stops, and it must still take them and journal the chunk.
    assert RECV_LOW_WATER > 99
    farm.proxy.hold_at = chunks * CHUNK + 99
    attempt = threading.Thread(target=lambda: outcome.append(farm.send(path)[0]))
    attempt.start()
    try:
        assert farm.proxy.held.wait(DEADLINE)
        wait_until(f"{chunks} chunks in the journal", lambda: farm.held_chunks(path) >= chunks)
        (receiver,) = _receivers(farm)
        os.kill(receiver.pid, signum)
        wait_until("the receiver to end", lambda: not receiver.is_running() or receiver.status() == "zombie")
    finally:
        farm.proxy.release.set()
        attempt.join(DEADLINE)
    assert outcome
    return outcome[0]


def test_a_receiver_stopped_by_sigterm_keeps_its_durable_chunks(farm: Farm) -> None:
    path = farm.plot()
    data = path.read_bytes()
    first = _receiver_stopped_mid_plot(farm, path, 10, signal.SIGTERM)
    assert not first.ok and path.exists()
    held = farm.held_chunks(path)
    assert held >= 10 and farm.part(path).exists()
    result, resent = farm.send(path)
    assert result.ok and resent == SIZE - held * CHUNK
    assert landed(farm, path) == data


def _receivers(farm: Farm) -> list[psutil.Process]:
    found = []
    for shell in farm.exec.started:
        try:
            proc = psutil.Process(shell.pid)
            found += [p for p in [proc, *proc.children(recursive=True)] if str(RECEIVER) in " ".join(p.cmdline())]
        except psutil.Error:
            continue
    return found


def test_without_resume_the_part_goes_and_the_plot_is_sent_whole(tmp_path: Path) -> None:
    with CutProxy() as proxy:
        farm = Farm(tmp_path, proxy, resume=False)
        try:
            path = farm.plot()
            farm.send(path, cut_at=SIZE // 2)
            assert os.listdir(farm.drives[0]) == []
            result, sent = farm.send(path)
            assert result.ok and sent == SIZE
        finally:
            farm.close()


def test_a_receiver_without_resume_answers_ready_and_takes_the_whole_plot(tmp_path: Path) -> None:
    with CutProxy() as proxy:
        farm = Farm(tmp_path, proxy, receiver_resume="no")
        try:
            path = farm.plot()
            farm.send(path, cut_at=SIZE // 2)
            assert os.listdir(farm.drives[0]) == []
            result, sent = farm.send(path)
            assert result.ok and sent == SIZE and landed(farm, path) == path.read_bytes()
        finally:
            farm.close()


def test_twenty_random_cuts_and_flips_land_identical_plots_within_the_byte_budget(farm: Farm) -> None:
    """Cuts at random bytes, some with a byte flipped before the cut: every plot lands
    identical, no source goes before OK, and the wire carries at most the plot, one chunk per
    cut, and (after a flip) what was sent from the flipped chunk on."""
    seed = int(os.environ.get("RESUME_SEED", "0")) or int.from_bytes(os.urandom(4))
    rng = random.Random(seed)
    cuts = 0
    while cuts < 20:
        path = farm.plot(rng.randrange(4 * CHUNK, 24 * CHUNK))
        data = path.read_bytes()
        size = len(data)
        total, budget, start = 0, size, 0
        for attempt in range(10):
            cut = rng.randrange(1, size - start + 1) if attempt < 4 and cuts < 20 else None
            flip = rng.randrange(0, cut) if cut is not None and rng.random() < 0.3 else None
            result, sent = farm.send(path, cut_at=cut, flip_at=flip)
            total += sent
            if result.ok:
                break
            assert path.exists()
            cuts += 1
            budget += CHUNK + (sent - (flip // CHUNK) * CHUNK if flip is not None else 0)
            start = farm.held_chunks(path) * CHUNK
        assert result.ok, result.reason
        assert landed(farm, path) == data, f"seed {seed}"
        assert total <= budget, (seed, total, budget, size)
        delete_source_after_ok(path, result)
        assert not path.exists()


def test_the_retry_goes_to_the_drive_that_holds_the_part(farm: Farm) -> None:
    path = farm.plot()
    data = path.read_bytes()
    other = try_claim(farm.root / "claims", "d0")  # another receiver has drive0: the part lands on drive1
    assert other is not None
    try:
        farm.send(path, cut_at=SIZE // 2)
    finally:
        other.release()
    assert farm.part(path, drive=1).exists() and farm.held_chunks(path, drive=1) == (SIZE // 2) // CHUNK
    result, resent = farm.send(path)  # drive0 is free now and first in the set: drive1 still wins
    assert result.ok and resent == SIZE - ((SIZE // 2) // CHUNK) * CHUNK
    assert (farm.drives[1] / path.name).read_bytes() == data and os.listdir(farm.drives[0]) == []


def test_a_killed_receivers_part_outlives_other_plots_landing_beside_it(farm: Farm) -> None:
    path = farm.plot()
    data = path.read_bytes()
    assert not _receiver_stopped_mid_plot(farm, path, 6, signal.SIGKILL).ok
    neighbour = farm.plot(3 * CHUNK)
    assert farm.send(neighbour)[0].ok  # its landing sweeps stale parts of drive0: ours waits for its resume
    held = farm.held_chunks(path)
    assert farm.part(path).exists() and held >= 6
    result, resent = farm.send(path)
    assert result.ok and resent == SIZE - held * CHUNK
    assert landed(farm, path) == data


def test_a_kept_part_whose_source_is_gone_is_dropped_by_the_next_sweep(farm: Farm, tmp_path: Path) -> None:
    """The plotter asks over its exec channel (the real receive_plot.py --forget) for the one
    plot it no longer has; the sweep then removes that part, journal and all, and keeps the
    part of a plot whose source is still there.  Nothing is asked twice."""
    from utilities.harvester.stale_parts import list_parts, sweep_directory
    from utilities.plotter.forget_parts import forget_gone_sources, present_names
    from utilities.settings.farm import HarvesterTarget
    from utilities.state import StateDB, TransferRecord
    from utilities.transfer.forget import take_requests

    gone, kept = farm.plot(), farm.plot()
    for path in (gone, kept):
        result, _sent = farm.send(path, cut_at=SIZE // 2)
        assert not result.ok and farm.held_chunks(path) > 0
    target = HarvesterTarget(name="h1", host=LOOPBACK, receive_script=str(farm.script))
    with StateDB(tmp_path / "plotter.db") as db:
        for path in (gone, kept):
            db.record_transfer(TransferRecord(path.name, "h1", path.name, 0, 1.0e9, 1.0, False, "stream failed", 0))
        gone.unlink()
        present = present_names([str(farm.root / "plots")])
        assert present == {kept.name}
        asked = forget_gone_sources(db, present, {"h1": target}, lambda _t: farm.exec, now=1.0e9 + 10)
        assert [a.destination for a in asked] == [gone.name]
        assert forget_gone_sources(db, present, {"h1": target}, lambda _t: farm.exec, now=1.0e9 + 20) == []

    drive = str(farm.drives[0])
    resumable: list[tuple[str, int]] = []
    listed = list_parts(drive)
    assert listed is not None
    removed = sweep_directory(drive, listed, resumable, forget=take_requests(str(farm.root / "claims")))
    assert [name for name, _freed in removed] == [part_name(gone.name)]
    assert not farm.part(gone).exists() and not (farm.drives[0] / journal_name(part_name(gone.name))).exists()
    assert farm.part(kept).exists() and [name for name, _held in resumable] == [part_name(kept.name)]
    second, _resent = farm.send(kept)
    assert second.ok and second.saved > 0


def test_a_part_that_holds_every_chunk_is_proven_and_landed_without_resending(farm: Farm) -> None:
    """The link dropped after the last byte but before VERIFY: the part and its journal hold the
    whole plot (its last chunk short).  The retry streams nothing and still proves every byte."""
    from utilities.transfer.integrity import SourceIdentity
    from utilities.transfer.journal import Journal, hash_chunks, source_token, write_journal

    path = farm.plot()
    data = path.read_bytes()
    source = SourceIdentity.of(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = hash_chunks(fd, CHUNK, SIZE // CHUNK + 1)
    finally:
        os.close(fd)
    assert len(chunks) == SIZE // CHUNK + 1  # the short last chunk too
    part = farm.part(path)
    part.write_bytes(data)
    dir_fd = open_directory(farm.drives[0])
    try:
        token = source_token(source.size, source.mtime_ns, source.inode, source.device)
        write_journal(dir_fd, part.name, Journal(path.name, SIZE, token, CHUNK, chunks))
    finally:
        os.close(dir_fd)

    result, sent = farm.send(path)
    assert result.ok, result.reason
    assert sent == 0 and result.saved == SIZE
    assert landed(farm, path) == data and not part.exists()

