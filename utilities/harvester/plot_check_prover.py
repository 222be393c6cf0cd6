"""Checking one plot with chiapos' prover, in a child process of its own.

Why a child per plot: chiapos is C++, and a corrupt plot can crash it outright (segfaults inside
chiapos on bad plots: Chia-Network/chiapos #241, chia-blockchain #6868). In-process, one such
plot would end the run before its result is recorded, and since unchecked plots go first, every
later run would die on the same plot and the farm would never be checked again. In a child, a
crash is that plot's result ("read error: chiapos crashed"), and the run goes on. A plot whose
disk stops answering is given up after ``PLOT_TIMEOUT_SECONDS``. Forking costs a few
milliseconds against the seconds a real plot's seeks take (bench/bench_check_plots.py).

The child also measures what it read from the disk (``read_bytes`` of /proc/self/io, which
counts only reads that reached the block layer, not page-cache hits).
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

# Loaded once in the checking process, so every forked child has it already. Only the
# --check-plots action imports this module: the minute pass never pays for chiapos.
import chiapos

from utilities.harvester.plot_check import CheckOutcome, challenge, classify

# A k32 plot answers 30 challenges (and their full proofs) in well under a minute even on a
# slow disk; one that takes this long is not farmable in time either.
PLOT_TIMEOUT_SECONDS = 600.0


def proc_read_bytes() -> int | None:
    """Bytes this process has read from storage so far (None where /proc/self/io is missing)."""
    try:
        with open("/proc/self/io") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key == "read_bytes":
                    return int(value)
    except (OSError, ValueError):
        pass
    return None


def query_plot(path: str, challenges: int, full_proofs: int | None) -> tuple[int, int, str | None]:
    """(qualities found, full proofs that did not verify, error) for the plot at ``path``.

    As ``chia plots check`` does: qualities for each challenge, the full proof of a quality,
    and the proof verified (``Verifier.validate_proof`` must give back the same quality).
    ``full_proofs`` caps the proofs fetched (each costs 64 reads); None fetches one per quality.
    The first error or bad proof ends the plot's check: it already fails.
    """
    try:
        prover = chiapos.DiskProver(path)
    except Exception as exc:  # noqa: BLE001 - whatever chiapos raises is the plot's error
        return 0, 0, f"cannot open: {type(exc).__name__}: {exc}"
    verifier = chiapos.Verifier()
    plot_id, k = prover.get_id(), prover.get_size()
    proofs = fetched = 0
    try:
        for index in range(challenges):
            chal = challenge(index)
            for position, quality in enumerate(prover.get_qualities_for_challenge(chal)):
                proofs += 1
                if full_proofs is not None and fetched >= full_proofs:
                    continue
                fetched += 1
                proof = prover.get_full_proof(chal, position)
                if verifier.validate_proof(plot_id, k, chal, proof) != quality:
                    return proofs, 1, None
    except Exception as exc:  # noqa: BLE001
        return proofs, 0, f"{type(exc).__name__}: {exc}"
    return proofs, 0, None


@dataclass(frozen=True)
class ChildAnswer:
    """What a child process gave back: its value, or how it ended without one."""

    value: Any = None
    signal: int | None = None  # killed by this signal (a crash)
    exit_code: int | None = None  # exited without answering
    timed_out: bool = False

    @property
    def answered(self) -> bool:
        return self.signal is None and self.exit_code is None and not self.timed_out

    def failure(self) -> str:
        if self.timed_out:
            return "no answer in time (the disk may have stopped answering)"
        if self.signal is not None:
            return f"the checker crashed ({signal.Signals(self.signal).name}) reading this plot"
        return f"the checker exited ({self.exit_code}) without an answer"


def _child_main(conn: Connection, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    conn.send(target(*args))
    conn.close()


def run_in_child(target: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> ChildAnswer:
    """Run ``target(*args)`` in a forked child; its return value comes back through a pipe.

    Fork, not spawn: chiapos is already loaded and nothing needs pickling but the answer. The
    child is killed (by its pid) if it has not answered within ``timeout`` seconds.
    """
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_main, args=(sender, target, args), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            child.kill()
            child.join()
            return ChildAnswer(timed_out=True)
        try:
            value = receiver.recv()
        except EOFError:  # it died before answering
            child.join()
            code = child.exitcode
            if code is not None and code < 0:
                return ChildAnswer(signal=-code)
            return ChildAnswer(exit_code=code)
        child.join()
        return ChildAnswer(value=value)
    finally:
        receiver.close()


def _measured_query(path: str, challenges: int, full_proofs: int | None) -> tuple[int, int, str | None, int | None]:
    before = proc_read_bytes()
    proofs, bad, error = query_plot(path, challenges, full_proofs)
    after = proc_read_bytes()
    return proofs, bad, error, (after - before if before is not None and after is not None else None)


def check_plot(path: str, challenges: int, full_proofs: int | None, timeout: float = PLOT_TIMEOUT_SECONDS) -> CheckOutcome:
    """Check one plot chiapos can read (see ``plot_check.cannot_check_reason`` first)."""
    started = time.monotonic()
    answer = run_in_child(_measured_query, (path, challenges, full_proofs), timeout)
    seconds = time.monotonic() - started
    if not answer.answered:
        result, detail = classify(0, 0, answer.failure())
        return CheckOutcome(result, 0, challenges, seconds, detail)
    proofs, bad, error, read = answer.value
    result, detail = classify(proofs, bad, error)
    return CheckOutcome(result, proofs, challenges, seconds, detail, bad, read)

