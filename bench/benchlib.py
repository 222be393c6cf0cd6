"""The harness shared by the benchmarks that mount things as root (bench_local_move.py, bench_transfer.py,
bench_harvester_pass.py).

Why it exists: these benchmarks mount loop drives and tmpfs, and start processes and network
namespaces, on a shared machine. Getting out again is the part that must never go wrong: Ctrl-C,
SIGTERM and SIGHUP unwind like an exception; clean-up runs with those signals ignored; processes
that could hold a mount are stopped before the mounts are undone; the mount table is checked
before the work directory is removed, so ``rmtree`` never walks into a filesystem still mounted.
Written once here, so a fix reaches every benchmark. The rest is what more than one of them
prints or builds the same way: the markdown table, MB/s, page-cache residency, the loop device's
direct I/O and the fake plot file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the benchmarks import tests.support and utilities from the repository
    sys.path.insert(0, str(REPO))

MIB = 1024 * 1024
GIB = 1024 * MIB
PLOT_HEADER_PAGE = 4096  # a fake plot's random data starts after its header's page


class CheckFailed(Exception):
    """A benchmark's check failed (a tool did not produce what it should), or the machine is unfit."""

    reported = False  # set by whoever already printed it, so the harness does not print it twice


# --------------------------------------------------------------------------------------------
# Signals, and the run that always cleans up
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def signals_raise_interrupt() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP unwind as KeyboardInterrupt, so the finally blocks unmount everything."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    saved = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    # Also when started in the background by a shell, which leaves SIGINT ignored.
    saved[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Clean-up must not be cut short by a second Ctrl-C."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


@dataclass
class Scratch:
    """One benchmark run's work directory and what has to be undone in it.

    ``stack`` holds the mounts, loop drives and farms (closed last-in first-out); ``stop_first``
    the callables that stop processes which could keep a mount busy, called before the stack closes.
    """

    work: Path
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    stop_first: list[Callable[[], None]] = field(default_factory=list)


def mounts_under(root: Path) -> list[str]:
    """Mountpoints at ``root`` or below it, from /proc/self/mounts as it is now."""
    from tests.support.loopdrives import mounts

    return [mp for _, mp, _ in mounts() if mp == str(root) or mp.startswith(str(root) + "/")]


def run_in_scratch(work: Path, body: Callable[[Scratch], int], *, time_clean_up: bool = False) -> int:
    """Run ``body`` in ``work`` (a fresh directory) and always undo it; its exit status.

    130 when interrupted (Ctrl-C, SIGTERM, SIGHUP), 1 on CheckFailed or a clean-up error. ``work``
    is removed only when nothing is mounted under it any more.
    """
    scratch = Scratch(work)
    status = 1
    try:
        with signals_raise_interrupt():
            status = body(scratch)
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        status = 130
    except CheckFailed as exc:
        if not exc.reported:
            print(f"FAILED: {exc}", file=sys.stderr)
        status = 1
    finally:
        with signals_ignored():
            t0 = time.perf_counter()
            for stop in scratch.stop_first:
                stop()
            try:
                scratch.stack.close()  # unmount, detach, stop the farms
            except Exception as exc:  # noqa: BLE001 - report, then check the mount table
                print(f"ERROR during clean-up: {exc}", file=sys.stderr)
                status = status or 1
            left = mounts_under(work)
            if left:
                more = f" and {len(left) - 5} more" if len(left) > 5 else ""
                print(f"ERROR: still mounted under {work}, not removing it: {left[:5]}{more}", file=sys.stderr)
                status = status or 1
            else:
                shutil.rmtree(work, ignore_errors=True)
                took = f" in {time.perf_counter() - t0:.1f} s" if time_clean_up else ""
                print(f"clean-up done{took}: nothing mounted under {work}; removed it", file=sys.stderr)
    return status


def chosen_tools(parser: argparse.ArgumentParser, value: str, known: Sequence[str]) -> list[str]:
    """``--tools a,b``: the named tools in ``known``'s order (the table's); a parser error names unknown ones."""
    tools = [t.strip() for t in value.split(",") if t.strip()]
    unknown = set(tools) - set(known)
    if unknown or not tools:
        parser.error(f"--tools: unknown {sorted(unknown)}; choose from {','.join(known)}")
    return [t for t in known if t in tools]


def require_root_and_tools(why_root: str, tools: Sequence[str]) -> None:
    if os.geteuid() != 0:
        raise CheckFailed(f"needs root ({why_root}): run it with sudo")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise CheckFailed(f"missing tools: {', '.join(missing)}")


# --------------------------------------------------------------------------------------------
# Figures and the table
# --------------------------------------------------------------------------------------------


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def print_markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]) -> None:
    """A markdown table, columns padded to their widest cell; ``align`` is "<" or ">" per column."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths, strict=True)) + " |"

    print(fmt(header))
    print("|" + "|".join(("-" * (w + 1) + ":") if a == ">" else ("-" * (w + 2))
                         for a, w in zip(align, widths, strict=True)) + "|")
    for row in rows:
        print(fmt(row))


# --------------------------------------------------------------------------------------------
# Page cache, loop devices, the fake plot
# --------------------------------------------------------------------------------------------


def cached_fraction(path: Path) -> float | None:
    """Share of the file in the page cache (fincore, i.e. mincore(2)); None without fincore."""
    if shutil.which("fincore") is None:
        return None
    proc = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", str(path)],
                          capture_output=True, text=True, check=False)
    try:
        res, size = (int(x) for x in proc.stdout.split())
    except ValueError:
        return None
    return res / size if size else 1.0


def loop_direct_io(device: str) -> str:
    """Switch a loop device to direct I/O; "direct I/O", or why it stays buffered.

    Writes of the loop device then go straight to the image file's disk (O_DIRECT), as with a
    real drive; buffered, every byte sits in the page cache twice and fsync pays for both.
    """
    proc = subprocess.run(["losetup", "--direct-io=on", device], capture_output=True, text=True, check=False)
    try:
        state = Path(f"/sys/block/{os.path.basename(device)}/loop/dio").read_text().strip()
    except OSError:
        state = ""
    return "direct I/O" if proc.returncode == 0 and state == "1" else \
        f"buffered (direct I/O refused: {proc.stderr.strip()})"


@dataclass(frozen=True)
class SourcePlot:
    path: Path
    k: int
    size: int

    @property
    def name(self) -> str:
        return self.path.name


def make_source_plot(directory: Path, k: int) -> SourcePlot:
    """A valid v1 plot header + chia name, the rest random bytes; fsynced, left in page cache."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from tests.support.plotmaker import plot_name, write_fake_v1_header
    from utilities.plots import expected_plot_size, plot_size_fits, read_plot_header

    plot_id = secrets.token_bytes(32)
    path = directory / plot_name(k, plot_id)
    size = expected_plot_size(k)
    write_fake_v1_header(path, k=k, kind="pool", size=size, plot_id=plot_id)
    keystream = Cipher(algorithms.AES(secrets.token_bytes(32)), modes.CTR(secrets.token_bytes(16))).encryptor()
    zeros = bytes(8 * MIB)
    fd = os.open(path, os.O_WRONLY)
    try:
        offset = PLOT_HEADER_PAGE
        while offset < size:
            n = min(len(zeros), size - offset)
            data = keystream.update(zeros[:n])
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
        os.fsync(fd)  # written back now, so no write-back of the source runs during the timed runs
    finally:
        os.close(fd)
    header = read_plot_header(path)
    if header.k != k or not plot_size_fits(path.stat().st_size, k):
        raise CheckFailed(f"{path}: the fake plot does not pass the plot checks (k {header.k}, size {size})")
    return SourcePlot(path, k, size)
