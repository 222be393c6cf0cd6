#!/usr/bin/env python3
"""A small but real plotter for tests: chia's, madMAx's and bladebit's command lines and logs.

The plot-job manager starts ``chia plots create``, ``chia_plot`` (madMAx) and ``bladebit`` /
``bladebit_cuda`` and reads their progress from the lines they print.  Real k32 plots take an
hour and a GPU, so tests put a bin directory on PATH holding executables with those names
(``install_fake_plotters``) that run this script.  It:

* accepts the same command-line shape as the real program (unknown options are an error, as
  they are for the real ones; any k from 18 works, like ``--override-k``);
* makes a REAL plot with chiapos (k=18 takes about a second), whose memo comes from the keys on
  the command line: a pool contract address gives the 112-byte pool memo, a pool public key (or
  no pool option, like chia using its keychain) the 128-byte OG memo;
* writes its temporary files into the temp directories under the names that program uses, and
  the finished plot under an in-progress name (``.2.tmp`` / ``.plot.tmp`` / ``.plot.tmp``) that
  is renamed into the destination only at the very end, as the real programs do;
* prints (line buffered) the progress lines that program prints in each phase.  For chia these
  are chiapos's own lines, captured from the real run and replayed phase by phase; madMAx's and
  bladebit's were written from their sources and published logs.

Test control, without sleeps:

* ``FAKE_PLOTTER_GATE_DIR``: before entering phase N the plotter waits until one of the files
  ``<gate_dir>/<key>.phaseM`` exists with M >= N, where key is ``all``, the plot id, the process
  id or ``$FAKE_PLOTTER_JOB_TAG``.  ``all.phase4`` therefore lets every job run to the end and
  ``<plot id>.phase2`` holds one job just before phase 3.  While waiting it creates
  ``<gate_dir>/<plot id>.waiting_phaseN`` (content: the pid; removed when released) so a test
  can wait for "the job is now held at phase N" without parsing logs.
* ``FAKE_PLOTTER_FAIL_AT=phaseN`` (N in 1..4), or for one job a file ``<gate_dir>/<key>.failN``
  (``fail()``): at the gate of phase N the plotter prints an error and exits with status 1,
  leaving its temporary files behind, like a crashed plotter.

bladebit is k32-only; the fake's bladebit defaults to k=18 (``FAKE_PLOTTER_BLADEBIT_K``) and
also takes ``-k N`` among its global options.  k above 24 is refused (it would take hours).

SIGTERM keeps its default action (the process ends at once, temporary files stay), which is
what the real plotters do; cleaning up after a stopped job is the manager's business.  Like
madMAx, ``chia_plot`` with ``-n`` other than 1 instead finishes the current plot on the first
SIGTERM/SIGINT and exits at once on a second one within a second.  Also as in the real
programs: madMAx refuses directories without a trailing slash, and bladebit's ``--disk-128`` /
``--disk-16`` refuse uncompressed plots (``--compress 0``).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS = ("chia", "chia_plot", "bladebit", "bladebit_cuda")
BLADEBIT_COMMANDS = ("ramplot", "diskplot", "cudaplot")

# chiapos arguments that work for small k (see tests/support/plotmaker.py): stripe size must be
# small for k=18, buffer and buckets are clamped to what chiapos accepts for tiny plots.
# The requested buffer, buckets and threads are shown in the log but not given to chiapos.
_STRIPE_SIZE = 2000
_BUFFER_MB = 100
_BUCKETS = 32
_THREADS = 2
_PLACEHOLDER_BYTES = 64 * 1024
_GATE_POLL_SECONDS = 0.05
_MAX_K = 24

GATE_DIR_ENV = "FAKE_PLOTTER_GATE_DIR"
BLADEBIT_K_ENV = "FAKE_PLOTTER_BLADEBIT_K"
FAIL_AT_ENV = "FAKE_PLOTTER_FAIL_AT"
JOB_TAG_ENV = "FAKE_PLOTTER_JOB_TAG"


class UsageError(Exception):
    """Bad command line: reported on stderr with exit status 2, like the real CLIs."""


# ---------------------------------------------------------------------------------------------
# Installing the executables
# ---------------------------------------------------------------------------------------------


def install_fake_plotters(bin_dir: Path, python: str | None = None) -> dict[str, Path]:
    """Write ``chia``, ``chia_plot``, ``bladebit`` and ``bladebit_cuda`` into ``bin_dir``.

    Each is a Python entry script, as real ``chia`` is, run by the interpreter running the tests
    (so chiapos is importable): the process is ``[python, BIN/chia, plots, create, ...]``, which
    is how the manager recognises a plotter in the process list, and its pid is the plotter's.
    Returns program name -> path.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    interpreter = python or sys.executable
    repo = Path(__file__).resolve().parents[2]
    made = {}
    for program in PROGRAMS:
        path = bin_dir / program
        path.write_text(
            f"#!{interpreter}\n"
            "import sys\n"
            f"sys.path.insert(0, {str(repo)!r})\n"
            "from tests.support.fake_plotter import main\n"
            f"sys.exit(main(['--program', {program!r}, *sys.argv[1:]]))\n"
        )
        path.chmod(0o755)
        made[program] = path
    return made


# ---------------------------------------------------------------------------------------------
# Keys, memo, plot id, names
# ---------------------------------------------------------------------------------------------

_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32M_CONST = 0x2BC830A3


def _bech32_polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: list[int], from_bits: int, to_bits: int, pad: bool) -> list[int] | None:
    acc = bits = 0
    out = []
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad and bits:
        out.append((acc << (to_bits - bits)) & maxv)
    elif not pad and (bits >= from_bits or ((acc << (to_bits - bits)) & maxv)):
        return None
    return out


def encode_puzzle_hash(puzzle_hash: bytes, prefix: str = "xch") -> str:
    """bech32m address for a 32-byte puzzle hash (how chia shows a pool contract address)."""
    data = _convert_bits(list(puzzle_hash), 8, 5, True) or []
    checksum = _bech32_polymod(_hrp_expand(prefix) + data + [0] * 6) ^ _BECH32M_CONST
    data += [(checksum >> 5 * (5 - i)) & 31 for i in range(6)]
    return prefix + "1" + "".join(_BECH32_CHARSET[d] for d in data)


def decode_puzzle_hash(address: str) -> bytes | None:
    """The 32-byte puzzle hash in a bech32m address, or None if it is not one."""
    address = address.lower()
    hrp, sep, rest = address.rpartition("1")
    if not sep or not hrp or len(rest) < 7 or any(c not in _BECH32_CHARSET for c in rest):
        return None
    data = [_BECH32_CHARSET.index(c) for c in rest]
    if _bech32_polymod(_hrp_expand(hrp) + data) != _BECH32M_CONST:
        return None
    decoded = _convert_bits(data[:-6], 5, 8, False)
    return bytes(decoded) if decoded is not None and len(decoded) == 32 else None


def _key_bytes(text: str | None, size: int, fallback: str) -> bytes:
    """A public key given as hex (optionally 0x-prefixed); anything else is hashed to ``size``.

    Tests may pass any string: the fake needs bytes of the right length, not a valid BLS key.
    """
    text = (text or fallback).strip()
    raw = text[2:] if text.lower().startswith("0x") else text
    with contextlib.suppress(ValueError):
        data = bytes.fromhex(raw)
        if len(data) == size:
            return data
    return hashlib.shake_256(text.encode()).digest(size)


@dataclass(frozen=True)
class PlotIdentity:
    plot_id: bytes
    memo: bytes
    pool_contract: str | None
    pool_key: bytes | None
    farmer_key: bytes

    @property
    def is_pool_plot(self) -> bool:
        return self.pool_contract is not None


def make_identity(farmer_key: str | None, pool_key: str | None, contract: str | None) -> PlotIdentity:
    """Memo and plot id from the keys, like chia does (a fresh local key per plot).

    Pool plots: puzzle hash 32 + farmer pk 48 + local sk 32 = 112 bytes; OG plots: pool pk 48 +
    farmer pk 48 + local sk 32 = 128 bytes (the sizes utilities/plots.py classifies by).
    """
    local_sk = os.urandom(32)
    farmer = _key_bytes(farmer_key, 48, "fake farmer key")
    if contract is not None:
        puzzle_hash = decode_puzzle_hash(contract) or hashlib.sha256(contract.encode()).digest()
        memo = puzzle_hash + farmer + local_sk
        return PlotIdentity(hashlib.sha256(memo).digest(), memo, contract, None, farmer)
    pool = _key_bytes(pool_key, 48, "fake pool key")
    memo = pool + farmer + local_sk
    return PlotIdentity(hashlib.sha256(memo).digest(), memo, None, pool, farmer)


def plot_file_name(k: int, plot_id: bytes, compression: int = 0, when: datetime.datetime | None = None) -> str:
    when = when or datetime.datetime.now()
    tag = f"-c{compression:02d}" if compression else ""
    return f"plot-k{k}{tag}-{when:%Y-%m-%d-%H-%M}-{plot_id.hex()}.plot"


# ---------------------------------------------------------------------------------------------
# Command lines
# ---------------------------------------------------------------------------------------------


@dataclass
class Request:
    """One plotting run, whatever program shape it came from."""

    program: str  # "chia" | "madmax" | "bladebit"
    k: int = 32
    count: int = 1
    tmp_dir: Path | None = None
    tmp2_dir: Path | None = None
    final_dir: Path | None = None
    threads: int = 2
    buffer_mb: int = 3390
    buckets: int = 128
    farmer_key: str | None = None
    pool_key: str | None = None
    contract: str | None = None
    exclude_final_dir: bool = False
    compression: int = 0
    bladebit_command: str = ""
    front_end: str = ""  # "chia plotters" when bladebit/madmax run through chia's CLI
    extra: dict[str, str] = field(default_factory=dict)


class _Args:
    """A tiny option reader: real CLIs mix ``-k 32``, ``--size 32`` and ``--size=32``."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = list(argv)
        self.pos = 0

    def more(self) -> bool:
        return self.pos < len(self.argv)

    def peek(self) -> str:
        return self.argv[self.pos]

    def next(self) -> str:
        value = self.argv[self.pos]
        self.pos += 1
        return value

    def value_for(self, option: str) -> str:
        if not self.more():
            raise UsageError(f"option {option} needs a value")
        return self.next()


def _int(option: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"option {option}: {value!r} is not a number") from None


def _parse_options(
    args: _Args, spec: dict[str, str], flags: dict[str, str], stop: Callable[[str], bool]
) -> dict[str, str]:
    """Read options until ``stop(token)``; ``spec`` maps option spellings to a value key,
    ``flags`` maps switches to a key (value "1")."""
    found: dict[str, str] = {}
    while args.more() and not stop(args.peek()):
        token = args.next()
        name, eq, inline = token.partition("=")
        if name in spec:
            found[spec[name]] = inline if eq else args.value_for(name)
        elif token in flags:
            found[flags[token]] = "1"
        else:
            raise UsageError(f"unknown option {token!r}")
    return found


_CHIA_CREATE_OPTIONS = {
    "-k": "k",
    "--size": "k",
    "-n": "n",
    "--num": "n",
    "-b": "buffer",
    "--buffer": "buffer",
    "-r": "threads",
    "--num_threads": "threads",
    "-u": "buckets",
    "--buckets": "buckets",
    "-a": "fingerprint",
    "--alt_fingerprint": "fingerprint",
    "-c": "contract",
    "--pool_contract_address": "contract",
    "-f": "farmer",
    "--farmer_public_key": "farmer",
    "-p": "pool",
    "--pool_public_key": "pool",
    "-t": "tmp",
    "--tmp_dir": "tmp",
    "-2": "tmp2",
    "--tmp2_dir": "tmp2",
    "-d": "final",
    "--final_dir": "final",
    "-i": "plotid",
    "--plotid": "plotid",
    "-m": "memo",
    "--memo": "memo",
}
_CHIA_CREATE_FLAGS = {
    "-e": "nobitfield",
    "--nobitfield": "nobitfield",
    "-x": "exclude",
    "--exclude_final_dir": "exclude",
    "--override-k": "override_k",
}

_MADMAX_OPTIONS = {
    "-k": "k",
    "--size": "k",
    "-n": "n",
    "--count": "n",
    "-r": "threads",
    "--threads": "threads",
    "-u": "buckets",
    "--buckets": "buckets",
    "-v": "buckets3",
    "--buckets3": "buckets3",
    "-t": "tmp",
    "--tmpdir": "tmp",
    "-2": "tmp2",
    "--tmpdir2": "tmp2",
    "-d": "final",
    "--finaldir": "final",
    "-p": "pool",
    "--poolkey": "pool",
    "-c": "contract",
    "--contract": "contract",
    "-f": "farmer",
    "--farmerkey": "farmer",
    "-K": "rmulti2",
    "--rmulti2": "rmulti2",
    "-x": "port",
    "--port": "port",
}
_MADMAX_FLAGS = {"-w": "waitforcopy", "--waitforcopy": "waitforcopy", "-G": "tmptoggle", "--tmptoggle": "tmptoggle"}

# bladebit's global options (before the command) and each command's own options.
_BLADEBIT_GLOBAL = {
    "-t": "threads",
    "--threads": "threads",
    "-n": "n",
    "--count": "n",
    "-f": "farmer",
    "--farmer-key": "farmer",
    "-p": "pool",
    "--pool-key": "pool",
    "-c": "contract",
    "--pool-contract": "contract",
    "--compress": "compress",
    "-z": "compress",
    "-i": "plotid",
    "--plot-id": "plotid",
    "--memo": "memo",
    "--thread-count": "threads",
    # Not a bladebit option (bladebit is k32-only): the fake's way to make small test plots.
    "-k": "k",
    "--size": "k",
}
_BLADEBIT_GLOBAL_FLAGS = {
    "-w": "warm",
    "--warm-start": "warm",
    "-v": "verbose",
    "--verbose": "verbose",
    "--no-numa": "no_numa",
    "--no-cpu-affinity": "no_affinity",
    "--benchmark": "benchmark",
    "--no-direct-io": "no_direct_io",
    "-m": "no_numa",
}
_BLADEBIT_COMMAND_OPTIONS = {
    "-b": "buckets",
    "--buckets": "buckets",
    "-t1": "tmp",
    "--temp1": "tmp",
    "-t2": "tmp2",
    "--temp2": "tmp2",
    "--cache": "cache",
    "-d": "device",
    "--device": "device",
    "--check": "check",
    "--check-threshold": "check_threshold",
    "--f1-threads": "f1_threads",
    "--fp-threads": "fp_threads",
    "--c-threads": "c_threads",
    "--p2-threads": "p2_threads",
    "--p3-threads": "p3_threads",
}
_BLADEBIT_COMMAND_FLAGS = {
    "--disk-128": "disk128",
    "--disk-16": "disk16",
    "--no-t1-direct": "no_t1_direct",
    "--no-t2-direct": "no_t2_direct",
    "-a": "alternate",
    "--alternate": "alternate",
}

# `chia plotters bladebit <cmd>` options (chia/plotters/bladebit.py) and `chia plotters madmax`.
_CHIA_PLOTTERS_BLADEBIT = {
    "-r": "threads",
    "--threads": "threads",
    "-n": "n",
    "--count": "n",
    "-f": "farmer",
    "--farmerkey": "farmer",
    "-p": "pool",
    "--pool-key": "pool",
    "-c": "contract",
    "--contract": "contract",
    "-i": "plotid",
    "--id": "plotid",
    "--memo": "memo",
    "-d": "final",
    "--final_dir": "final",
    "--finaldir": "final",
    "-t": "tmp",
    "--tmp_dir": "tmp",
    "--tmpdir": "tmp",
    "-2": "tmp2",
    "--tmp_dir2": "tmp2",
    "--tmpdir2": "tmp2",
    "-u": "buckets",
    "--f1-threads": "f1_threads",
    "--fp-threads": "fp_threads",
    "--c-threads": "c_threads",
    "--p2-threads": "p2_threads",
    "--p3-threads": "p3_threads",
    "--buckets": "buckets",
    "--compress": "compress",
    "--device": "device",
    "--cache": "cache",
    "--check": "check",
    "--check-threshold": "check_threshold",
    "--root": "root",
    "-k": "k",
    "--size": "k",  # see _BLADEBIT_GLOBAL
}
_CHIA_PLOTTERS_BLADEBIT_FLAGS = {
    "-w": "warm",
    "--warmstart": "warm",
    "--no-numa": "no_numa",
    "-m": "no_numa",
    "--nonuma": "no_numa",
    "--no-cpu-affinity": "no_affinity",
    "--verbose": "verbose",
    "-v": "verbose",
    "--disk-128": "disk128",
    "--disk-16": "disk16",
    "--no-direct-downloads": "no_direct_downloads",
    "--no-t1-direct": "no_t1_direct",
    "--no-t2-direct": "no_t2_direct",
    "-a": "alternate",
    "--alternate": "alternate",
}


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _fill(req: Request, opts: dict[str, str]) -> Request:
    if req.program == "bladebit":
        # Real bladebit always plots k32; the fake defaults to a test-sized k instead.
        req.k = _int(BLADEBIT_K_ENV, os.environ.get(BLADEBIT_K_ENV, "18"))
    if "k" in opts:
        req.k = _int("-k", opts["k"])
    if "n" in opts:
        req.count = _int("-n", opts["n"])
    if "threads" in opts:
        req.threads = _int("threads", opts["threads"])
    if "buffer" in opts:
        req.buffer_mb = _int("-b", opts["buffer"])
    if "buckets" in opts:
        req.buckets = _int("-u", opts["buckets"])
    if "compress" in opts:
        req.compression = _int("--compress", opts["compress"])
    req.tmp_dir = _path(opts.get("tmp")) or req.tmp_dir
    req.tmp2_dir = _path(opts.get("tmp2")) or req.tmp2_dir
    req.final_dir = _path(opts.get("final")) or req.final_dir
    req.farmer_key = opts.get("farmer")
    req.pool_key = opts.get("pool")
    req.contract = opts.get("contract")
    req.exclude_final_dir = "exclude" in opts
    req.extra = opts
    if req.pool_key and req.contract:
        raise UsageError("specify only one of a pool public key and a pool contract address")
    if not 18 <= req.k <= _MAX_K:
        raise UsageError(f"k={req.k}: the fake plotter makes plots of k 18..{_MAX_K} only (bigger ones take hours)")
    if req.count < 1:
        raise UsageError(f"plot count must be at least 1, got {req.count}")
    return req


def _check_madmax_dirs(opts: dict[str, str]) -> None:
    """madMAx joins its directories and file names by plain string concatenation, so it refuses
    a directory without a trailing slash ("Invalid tmpdir: ... (needs trailing '/' or '\\')")."""
    for key, label in (("tmp", "tmpdir"), ("tmp2", "tmpdir2"), ("final", "finaldir")):
        value = opts.get(key)
        if value is not None and not value.endswith(("/", "\\")):
            raise UsageError(f"Invalid {label}: {value} (needs trailing '/' or '\\')")


def _parse_bladebit(args: _Args, front_end: str) -> Request:
    """``bladebit[_cuda] [global options] ramplot|diskplot|cudaplot [options] <out_dir>``."""
    opts = _parse_options(args, _BLADEBIT_GLOBAL, _BLADEBIT_GLOBAL_FLAGS, lambda t: t in BLADEBIT_COMMANDS)
    if not args.more():
        raise UsageError("expected a command: ramplot, diskplot or cudaplot")
    command = args.next()
    opts.update(
        _parse_options(args, _BLADEBIT_COMMAND_OPTIONS, _BLADEBIT_COMMAND_FLAGS, lambda t: not t.startswith("-"))
    )
    if not args.more():
        raise UsageError(f"{command}: missing output directory")
    opts["final"] = args.next()
    if args.more():
        raise UsageError(f"unexpected argument {args.peek()!r}")
    req = _fill(Request("bladebit", front_end=front_end), opts)
    req.bladebit_command = command
    if command == "diskplot" and not req.tmp_dir:
        raise UsageError("diskplot needs a temporary directory (-t1)")
    if (opts.get("disk128") or opts.get("disk16")) and not req.tmp_dir:
        raise UsageError("--disk-128/--disk-16 need -t1 and -t2")
    if (opts.get("disk128") or opts.get("disk16")) and req.compression <= 0:
        # CudaPlotter.cu refuses this combination at start-up.
        raise UsageError("Cannot plot classic (uncompressed) plots in 128G or 64G mode.")
    req.tmp2_dir = req.tmp2_dir or req.tmp_dir
    return req


def parse_command_line(program: str, argv: list[str]) -> Request:
    """The run a real program would do with ``argv``; UsageError for anything it would reject."""
    args = _Args(argv)
    if program == "chia":
        words = argv[:3]
        if words[:2] == ["plots", "create"]:
            args.pos = 2
            opts = _parse_options(args, _CHIA_CREATE_OPTIONS, _CHIA_CREATE_FLAGS, lambda t: False)
            req = _fill(Request("chia", buckets=128), opts)
            if req.k < 32 and "override_k" not in opts:
                raise UsageError(f"k={req.k} is less than 32; use --override-k to plot it anyway")
        elif words[:3] == ["plotters", "bladebit", words[2] if len(words) > 2 else ""] and len(words) == 3:
            command = words[2]
            if command not in BLADEBIT_COMMANDS:
                raise UsageError(f"unknown bladebit command {command!r}")
            args.pos = 3
            opts = _parse_options(args, _CHIA_PLOTTERS_BLADEBIT, _CHIA_PLOTTERS_BLADEBIT_FLAGS, lambda t: False)
            req = _fill(Request("bladebit", front_end="chia plotters"), opts)
            req.bladebit_command = command
            if req.final_dir is None:
                raise UsageError("missing -d / --final_dir")
            req.tmp2_dir = req.tmp2_dir or req.tmp_dir
        elif words[:2] == ["plotters", "madmax"]:
            args.pos = 2
            opts = _parse_options(args, _MADMAX_OPTIONS, _MADMAX_FLAGS, lambda t: False)
            req = _fill(Request("madmax", buckets=256, front_end="chia plotters"), opts)
            _check_madmax_dirs(opts)
        else:
            raise UsageError(f"unsupported chia command: {' '.join(argv[:3]) or '(none)'}")
    elif program == "chia_plot":
        opts = _parse_options(args, _MADMAX_OPTIONS, _MADMAX_FLAGS, lambda t: False)
        req = _fill(Request("madmax", buckets=256), opts)
        _check_madmax_dirs(opts)
    elif program in ("bladebit", "bladebit_cuda"):
        req = _parse_bladebit(args, "")
        if program == "bladebit_cuda" and req.bladebit_command != "cudaplot":
            raise UsageError("bladebit_cuda only plots with the cudaplot command")
    else:
        raise UsageError(f"unknown program {program!r}")
    # Defaults as the real programs choose them.
    if req.program == "chia":
        req.tmp_dir = req.tmp_dir or Path.cwd()
        req.tmp2_dir = req.tmp2_dir or req.tmp_dir
        req.final_dir = req.final_dir or Path.cwd()
    elif req.program == "madmax":
        req.tmp_dir = req.tmp_dir or Path.cwd()
        req.tmp2_dir = req.tmp2_dir or req.tmp_dir
        req.final_dir = req.final_dir or req.tmp_dir
    return req


# ---------------------------------------------------------------------------------------------
# Output, gates, failures
# ---------------------------------------------------------------------------------------------


def say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def ctime_now() -> str:
    """chiapos's timestamp format (C ``ctime`` without the newline)."""
    return time.strftime("%a %b %d %H:%M:%S %Y")


def log_stamp() -> str:
    """chia's Python logging prefix time: 2021-07-14T22:33:24.969."""
    now = datetime.datetime.now()
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}"


def chia_log(message: str) -> None:
    say(f"{log_stamp()} chia.plotting.create_plots       : INFO     {message}")


def release(gate_dir: Path, phase: int, key: str = "all") -> None:
    """Test side: let jobs matching ``key`` (all, a plot id, a pid, a job tag) run up to and
    including ``phase`` (4 = to the end)."""
    if not 1 <= phase <= 4:
        raise ValueError(f"phase must be 1..4, got {phase}")
    (gate_dir / f"{key}.phase{phase}").touch()


def held_at(gate_dir: Path, phase: int) -> dict[str, int]:
    """Test side: plot id -> pid of every job now waiting at the gate before ``phase``."""
    held = {}
    for marker in gate_dir.glob(f"*.waiting_phase{phase}"):
        with contextlib.suppress(OSError, ValueError):
            held[marker.name.split(".", 1)[0]] = int(marker.read_text().strip())
    return held


def _gate_keys(plot_id: str) -> list[str]:
    keys = ["all", plot_id, str(os.getpid())]
    tag = os.environ.get(JOB_TAG_ENV)
    if tag:
        keys.append(tag)
    return keys


def wait_for_gate(phase: int, plot_id: str) -> None:
    """Block before phase ``phase`` until a gate file allows it (no-op without a gate dir)."""
    gate_dir = os.environ.get(GATE_DIR_ENV)
    if not gate_dir:
        return
    gates = Path(gate_dir)
    keys = _gate_keys(plot_id)
    names = [f"{key}.phase{m}" for key in keys for m in range(phase, 5)]
    marker = gates / f"{plot_id}.waiting_phase{phase}"
    marked = False
    while not any((gates / name).exists() for name in names):
        if not marked:
            with contextlib.suppress(OSError):
                marker.write_text(f"{os.getpid()}\n")
            marked = True
        time.sleep(_GATE_POLL_SECONDS)
    if marked:  # the marker says "held here now", so it goes once the job moves on
        with contextlib.suppress(OSError):
            marker.unlink()


def fail(gate_dir: Path, phase: int, key: str) -> None:
    """Test side: make the job(s) matching ``key`` crash when they reach ``phase``."""
    (gate_dir / f"{key}.fail{phase}").touch()


def maybe_fail(phase: int, plot_id: str) -> None:
    """Crash here if ``$FAKE_PLOTTER_FAIL_AT`` or a ``<key>.failN`` file in the gate dir asks."""
    why = ""
    if os.environ.get(FAIL_AT_ENV, "").strip().lower() == f"phase{phase}":
        why = f"{FAIL_AT_ENV}=phase{phase}"
    gate_dir = os.environ.get(GATE_DIR_ENV)
    if not why and gate_dir:
        for key in _gate_keys(plot_id):
            if (Path(gate_dir) / f"{key}.fail{phase}").exists():
                why = f"{key}.fail{phase}"
                break
    if why:
        say(f"Caught plotting error: injected failure in phase {phase} ({why})")
        print(f"fake plotter: failing in phase {phase} as {why} asks", file=sys.stderr, flush=True)
        sys.exit(1)


def enter_phase(phase: int, plot_id: str, ended: list[str] | None = None) -> None:
    """Gate, then the previous phase's closing lines, then the failure check.

    The closing lines ("Phase 1 took ...") wait for the gate because madMAx and bladebit have no
    "starting phase N" line: their log shows the next phase as soon as the previous one ends.
    Holding them back makes every program's log read "still in phase N-1" while held at gate N.
    """
    wait_for_gate(phase, plot_id)
    if ended:
        say(*ended)
        ended.clear()
    maybe_fail(phase, plot_id)


def make_placeholders(paths: list[Path]) -> None:
    """Temporary files of the size class tests can see (the real plot lives elsewhere)."""
    for path in paths:
        with open(path, "wb") as handle:
            handle.truncate(_PLACEHOLDER_BYTES)
            handle.write(b"fake plotter temporary data\n")


def remove_files(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def captured_fd1() -> Iterator[list[str]]:
    """Run a block with fd 1 (where chiapos's C++ iostreams write) going to a hidden file; the
    lines are in the yielded list afterwards."""
    lines: list[str] = []
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield lines
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def run_chiapos(tmp_dir: Path, work_dir: Path, work_name: str, k: int, ident: PlotIdentity, req: Request) -> list[str]:
    """Plot for real: chiapos leaves the finished plot at ``work_dir/work_name``."""
    import chiapos  # imported here so --help and usage errors work without it

    with captured_fd1() as lines:
        chiapos.DiskPlotter().create_plot_disk(
            str(tmp_dir),
            str(work_dir),
            str(work_dir),
            work_name,
            k,
            ident.memo,
            ident.plot_id,
            _BUFFER_MB,
            _BUCKETS,
            _STRIPE_SIZE,
            _THREADS,
            "nobitfield" in req.extra,
        )
    return lines


def move_into_place(work: Path, final: Path) -> bool:
    """Rename ``work`` to ``final`` if they share a filesystem; False means the caller must copy
    (under an in-progress name) and rename, as the real programs do across drives."""
    try:
        os.rename(work, final)
        return False
    except OSError as exc:
        if exc.errno != 18:  # EXDEV
            raise
    return True


def _copy_then_rename(src: Path, partial: Path, final: Path) -> float:
    started = time.monotonic()
    with open(src, "rb") as fin, open(partial, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1024 * 1024)
        fout.flush()
        os.fsync(fout.fileno())
    src.unlink()
    os.rename(partial, final)
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# chia plots create (chiapos)
# ---------------------------------------------------------------------------------------------


def _split_chiapos_phases(lines: list[str]) -> dict[int, list[str]]:
    """Captured chiapos output -> {0: header, 1..4: phase lines}; chiapos's own final rename and
    total time are dropped because the fake does those steps itself, later."""
    phases: dict[int, list[str]] = {n: [] for n in range(5)}
    current = 0
    for line in lines:
        for n in range(1, 5):
            if line.startswith(f"Starting phase {n}/4"):
                current = n
        if line.startswith(("Renamed final file", "Total time =", "Copied final file", "Copy time =", "Removed temp2")):
            continue
        phases[current].append(line)
    return phases


def plot_chia(req: Request, index: int) -> None:
    assert req.tmp_dir and req.tmp2_dir and req.final_dir
    ident = make_identity(req.farmer_key, req.pool_key, req.contract)
    pid_hex = ident.plot_id.hex()
    name = plot_file_name(req.k, ident.plot_id)
    work_name = name + ".2.tmp"
    work = req.tmp2_dir / work_name
    final = req.final_dir / name
    if index == 0:
        pool_text = (
            f"pool contract address:  {req.contract}"
            if ident.is_pool_plot
            else f"pool public key:  {ident.pool_key.hex()}"  # type: ignore[union-attr]
        )
        chia_log(f"Creating {req.count} plots of size {req.k}, {pool_text} farmer public key: {ident.farmer_key.hex()}")
        chia_log(f"Memo: {ident.memo.hex()}")
        if req.exclude_final_dir:
            chia_log(f"NOT adding directory {req.final_dir} to harvester for farming")
        else:
            chia_log(f"Adding directory {req.final_dir} to harvester for farming")
    chia_log(f"Starting plot {index + 1}/{req.count}")
    started = time.monotonic()
    cpu_started = time.process_time()
    say(
        "",
        f"Starting plotting progress into temporary dirs: {req.tmp_dir} and {req.tmp2_dir}",
        f"ID: {pid_hex}",
        f"Plot size is: {req.k}",
        f"Buffer size is: {req.buffer_mb}MiB",
        f"Using {req.buckets} buckets",
        f"Final Directory is: {req.final_dir}",
        f"Using {req.threads} threads of stripe size 65536",
        f"Process ID is: {os.getpid()}",
        "",
    )
    tables = [req.tmp_dir / f"{name}.table{n}.tmp" for n in range(1, 8)] + [req.tmp_dir / f"{name}.sort.tmp"]

    enter_phase(1, pid_hex)
    say(f"Starting phase 1/4: Forward Propagation into tmp files... {ctime_now()}")
    make_placeholders(tables)
    lines = run_chiapos(req.tmp_dir, req.tmp2_dir, work_name, req.k, ident, req)
    # chiapos's own work file is <work_name>.2.tmp; the real program's is <name>.2.tmp.
    lines = [line.replace(work_name + ".2.tmp", work_name) for line in lines]
    phases = _split_chiapos_phases(lines)
    say(*phases[1][1:])
    for phase in (2, 3, 4):
        enter_phase(phase, pid_hex)
        if phase == 4:
            remove_files(tables)
        say(*phases[phase])
    elapsed = time.monotonic() - started
    cpu = 100.0 * (time.process_time() - cpu_started) / max(elapsed, 1e-6)
    say(f"Total time = {elapsed:.3f} seconds. CPU ({cpu:.3f}%) {ctime_now()}")
    if move_into_place(work, final):
        partial = req.final_dir / work_name
        copy_started = time.monotonic()
        with open(work, "rb") as fin, open(partial, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1024 * 1024)
            fout.flush()
            os.fsync(fout.fileno())
        say(f'Copied final file from "{work}" to "{partial}"')
        copy_time = time.monotonic() - copy_started
        say(f"Copy time = {copy_time:.3f} seconds. CPU ({cpu:.3f}%) {ctime_now()}")
        work.unlink()
        say(f'Removed temp2 file "{work}"? 1')
        os.rename(partial, final)
        say(f'Renamed final file from "{partial}" to "{final}"')
    else:
        say(f'Renamed final file from "{work}" to "{final}"')
    _chia_created.append(name)
    if index == req.count - 1:
        chia_log("Summary:")
        chia_log(f"Created a total of {len(_chia_created)} new plots")
        for created in _chia_created:
            chia_log(created)


_chia_created: list[str] = []  # chia lists every plot it made at the end of the run


# ---------------------------------------------------------------------------------------------
# madMAx chia_plot
# ---------------------------------------------------------------------------------------------


def plot_madmax(req: Request, index: int) -> None:
    assert req.tmp_dir and req.tmp2_dir and req.final_dir
    ident = make_identity(req.farmer_key, req.pool_key, req.contract)
    pid_hex = ident.plot_id.hex()
    stem = plot_file_name(req.k, ident.plot_id)[: -len(".plot")]
    work_name = stem + ".plot.tmp"
    work = req.tmp2_dir / work_name
    final = req.final_dir / (stem + ".plot")
    if index == 0:
        say(
            f"Multi-threaded pipelined Chia k{req.k} plotter - fake0001",
            "",
            f"Final Directory: {req.final_dir}/",
            f"Number of Plots: {req.count}",
        )
    buckets_log = max(req.buckets, 2).bit_length() - 1
    say(f"Crafting plot {index + 1} out of {req.count}")
    say(f"Process ID: {os.getpid()}", f"Number of Threads: {req.threads}")
    say(
        f"Number of Buckets P1:    2^{buckets_log} ({req.buckets})",
        f"Number of Buckets P3+P4: 2^{buckets_log} ({req.buckets})",
    )
    if ident.is_pool_plot:
        say(f"Pool Puzzle Hash:  {ident.memo[:32].hex()}")
    else:
        say(f"Pool Public Key:   {ident.pool_key.hex()}")  # type: ignore[union-attr]
    say(
        f"Farmer Public Key: {ident.farmer_key.hex()}",
        f"Working Directory:   {req.tmp_dir}/",
        f"Working Directory 2: {req.tmp2_dir}/",
        f"Plot Name: {stem}",
    )
    started = time.monotonic()
    p1_files = [req.tmp_dir / f"{stem}.p1.t{n}.sort_bucket_000.tmp" for n in range(1, 8)]
    p2_files = [req.tmp_dir / f"{stem}.p2.t{n}.tmp" for n in range(2, 8)]
    entries = 1 << req.k

    enter_phase(1, pid_hex)
    phase_start = time.monotonic()
    make_placeholders(p1_files)
    run_chiapos(req.tmp_dir, req.tmp2_dir, work_name, req.k, ident, req)
    p1 = time.monotonic() - phase_start
    say(f"[P1] Table 1 took {p1 / 7:.4f} sec")
    for table in range(2, 8):
        say(f"[P1] Table {table} took {p1 / 7:.4f} sec, found {entries + table * 7} matches")
    ended = [f"Phase 1 took {p1:.4f} sec"]

    enter_phase(2, pid_hex, ended)
    phase_start = time.monotonic()
    make_placeholders(p2_files)
    say(f"[P2] max_table_size = {entries + 49}")
    for table in range(7, 1, -1):
        say(f"[P2] Table {table} scan took 0.0012 sec")
        say(
            f"[P2] Table {table} rewrite took 0.0034 sec, dropped {0 if table == 7 else entries // 7} entries ({0 if table == 7 else 14.2857} %)"
        )
    ended = [f"Phase 2 took {time.monotonic() - phase_start:.4f} sec"]

    enter_phase(3, pid_hex, ended)
    phase_start = time.monotonic()
    remove_files(p1_files)
    say("Wrote plot header with 252 bytes")
    for table in range(2, 8):
        say(f"[P3-1] Table {table} took 0.0021 sec, wrote {entries * 4 // 5} right entries")
        say(f"[P3-2] Table {table} took 0.0017 sec, wrote {entries * 4 // 5} left entries, {entries * 4 // 5} final")
    ended = [f"Phase 3 took {time.monotonic() - phase_start:.4f} sec, wrote {entries * 5} entries to final plot"]

    enter_phase(4, pid_hex, ended)
    phase_start = time.monotonic()
    remove_files(p2_files)
    say("[P4] Starting to write C1 and C3 tables", "[P4] Finished writing C1 and C3 tables")
    say("[P4] Writing C2 table", "[P4] Finished writing C2 table")
    size = work.stat().st_size
    say(f"Phase 4 took {time.monotonic() - phase_start:.4f} sec, final plot size is {size} bytes")
    total = time.monotonic() - started
    say(f"Total plot creation time was {total:.4f} sec ({total / 60:.4f} min)")
    if req.final_dir == req.tmp_dir:
        # madMAx copies only when the final directory differs from the temp directory; else the
        # finished plot stays in temp dir 2 under its final name and nothing more is printed.
        os.rename(work, req.tmp2_dir / final.name)
        return
    say(f"Started copy to {final}")
    if move_into_place(work, final):
        took = _copy_then_rename(work, final.with_name(final.name + ".tmp"), final)
        say(f"Copy to {final} finished, took {took:.4f} sec, {size / max(took, 1e-6) / 1048576:.2f} MB/s avg.")
    else:
        say(f"Renamed final plot to {final}")


# ---------------------------------------------------------------------------------------------
# bladebit (ramplot, diskplot, cudaplot; directly or via `chia plotters bladebit`)
# ---------------------------------------------------------------------------------------------


def _bladebit_header(req: Request, ident: PlotIdentity) -> None:
    if req.front_end:
        say(f"Starting bladebit {req.bladebit_command}")
    if req.bladebit_command == "cudaplot":
        say("[Bladebit CUDA Plotter]", " Host RAM            : 256 GiB", " Plot checks         : disabled", "")
        say("Selected cuda device 0 : Fake CUDA Device", " CUDA Compute Capability   : 8.6", "")
    elif req.bladebit_command == "diskplot":
        say(
            "[Bladebit Disk Plotter]",
            f" Bucket count   : {req.buckets}",
            f" Temp1 path     : {req.tmp_dir}",
            f" Temp2 path     : {req.tmp2_dir}",
            "",
        )
    say(
        "[Global Plotting Config]",
        f" Will create {req.count} plots.",
        f" Thread count          : {req.threads}",
        " Warm start enabled    : false",
        f" Farmer public key     : {ident.farmer_key.hex()}",
    )
    if ident.is_pool_plot:
        say(f" Pool contract address : {req.contract}")
    else:
        say(f" Pool public key       : {ident.pool_key.hex()}")  # type: ignore[union-attr]
    say(f" Compression Level     : {req.compression}", f" Output path           : {req.final_dir}", "")
    if req.bladebit_command == "cudaplot":
        say("Allocating buffers (this may take a few seconds)...", "Done.")


def plot_bladebit(req: Request, index: int) -> None:
    assert req.final_dir
    ident = make_identity(req.farmer_key, req.pool_key, req.contract)
    pid_hex = ident.plot_id.hex()
    name = plot_file_name(req.k, ident.plot_id, req.compression)
    work_name = name + ".tmp"
    work = req.final_dir / work_name
    final = req.final_dir / name
    if index == 0:
        _bladebit_header(req, ident)
    say(f"Generating plot {index + 1} / {req.count}: {pid_hex}")
    say(f"Plot temporary file: {work}", "")
    temp_files = []
    if req.tmp_dir is not None:
        temp_files = [req.tmp_dir / f"table_{side}_{n}.tmp" for n in range(2, 8) for side in ("l", "r")]
        temp_files += [(req.tmp2_dir or req.tmp_dir) / f"y{n}.tmp" for n in range(2)]
    started = time.monotonic()
    cuda = req.bladebit_command == "cudaplot"
    disk = req.bladebit_command == "diskplot"
    entries = 1 << req.k

    enter_phase(1, pid_hex)
    phase_start = time.monotonic()
    if not cuda:
        say("Running Phase 1")
    make_placeholders(temp_files)
    chiapos_tmp = req.tmp_dir or req.final_dir
    run_chiapos(chiapos_tmp, req.final_dir, work_name, req.k, ident, req)
    p1 = time.monotonic() - phase_start
    if cuda:
        say("Generating F1", f"Finished F1 in {p1 / 7:.2f} seconds.")
        for table in range(2, 8):
            say(f"Table {table} completed in {p1 / 7:.2f} seconds with {entries} entries.")
        say("Finalizing Table 7", f"Finalized Table 7 in {p1 / 70:.2f} seconds.")
        ended = [f"Completed Phase 1 in {p1:.2f} seconds"]
    elif disk:
        say("Generating f1...", f"Finished f1 generation in {p1 / 7:.2f} seconds.")
        for table in range(2, 8):
            say(f"Table {table}", f"Completed table {table} in {p1 / 7:.2f} seconds with {entries} entries.")
        ended = [f"Finished Phase 1 in {p1:.2f} seconds ( {p1 / 60:.1f} minutes )."]
    else:
        say("Generating F1...", f"Finished F1 generation in {p1 / 7:.2f} seconds.")
        for table in range(2, 8):
            say(f"Forward propagating to table {table}...", "  Sorting entries...")
            say(f"Finished forward propagating table {table} in {p1 / 7:.2f} seconds.")
        ended = [f"Finished Phase 1 in {p1:.2f} seconds."]

    enter_phase(2, pid_hex, ended)
    phase_start = time.monotonic()
    if not cuda:
        say("Running Phase 2")
    for table in range(6, 1, -1):
        if cuda:
            say(f"Pruning table {table}...")
        elif disk:
            say(f"Finished marking table {table} in 0.01 seconds.")
        else:
            say(f"  Prunning table {table}...", f"  Finished prunning table {table} in 0.01 seconds.")
    p2 = time.monotonic() - phase_start
    ended = [f"Completed Phase 2 in {p2:.2f} seconds" if cuda else f"Finished Phase 2 in {p2:.2f} seconds."]

    enter_phase(3, pid_hex, ended)
    phase_start = time.monotonic()
    if not cuda:
        say("Running Phase 3")
    for table in range(1, 7):
        if cuda:
            say(f"Compressing tables {table} and {table + 1}.")
        else:
            say(
                f"  Compressing tables {table} and {table + 1}...",
                f"  Finished compressing tables {table} and {table + 1} in 0.01 seconds",
            )
            say(f"  Table {table} now has {entries * 4 // 5} / {entries} entries ( 80.00% ).")
    p3 = time.monotonic() - phase_start
    ended = [f"Completed Phase 3 in {p3:.2f} seconds" if cuda else f"Finished Phase 3 in {p3:.2f} seconds."]

    enter_phase(4, pid_hex, ended)
    phase_start = time.monotonic()
    remove_files(temp_files)
    if cuda:
        total = time.monotonic() - started
        say(f"Completed Plot {index + 1} in {total:.2f} seconds ( {total / 60:.2f} minutes )", "")
        say("Completed writing plot in 0.01 seconds")
    else:
        say("Running Phase 4")
        say(
            "  Writing P7.",
            "  Finished writing P7 in 0.00 seconds.",
            "  Writing C1 table.",
            "  Finished writing C1 table in 0.00 seconds.",
        )
        say(
            "  Writing C2 table.",
            "  Finished writing C2 table in 0.00 seconds.",
            "  Writing C3 table.",
            "  Finished writing C3 table in 0.00 seconds.",
        )
        say(f"Finished Phase 4 in {time.monotonic() - phase_start:.2f} seconds.")
        say("Writing final plot tables to disk", "")
        say(f"Plot {final} finished writing to disk:")
        say(f"Finished writing tables to disk in {time.monotonic() - phase_start:.2f} seconds.")
    os.rename(work, final)
    total = time.monotonic() - started
    say(f"Finished plotting in {total:.2f} seconds ( {total / 60:.2f} minutes ).")


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

_graceful_exit = False
_last_interrupt = 0.0


def _madmax_interrupt(signum: int, frame: object) -> None:
    """madMAx with -n != 1 finishes the current plot on SIGINT/SIGTERM; twice within a second
    exits at once (status -4), leaving the temporary files."""
    global _graceful_exit, _last_interrupt
    now = time.monotonic()
    if now - _last_interrupt <= 1.0:
        say("", "Double Ctrl-C pressed, exiting now!")
        os._exit(252)
    _last_interrupt = now
    if not _graceful_exit:
        say(
            "",
            "*" * 88,
            "**  The crafting of plots will stop after the creation and copy of the current plot.  **",
            "*" * 88,
        )
        _graceful_exit = True


_PLOTTERS: dict[str, Callable[[Request, int], None]] = {
    "chia": plot_chia,
    "madmax": plot_madmax,
    "bladebit": plot_bladebit,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # die at once, temp files stay: like the real ones
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if len(argv) < 2 or argv[0] != "--program" or argv[1] not in PROGRAMS:
        print(f"usage: fake_plotter.py --program {{{','.join(PROGRAMS)}}} ARGS...", file=sys.stderr)
        return 2
    program, rest = argv[1], argv[2:]
    try:
        req = parse_command_line(program, rest)
        for directory in (req.tmp_dir, req.tmp2_dir, req.final_dir):
            if directory is not None and not directory.is_dir():
                raise UsageError(f"directory {directory} does not exist")
    except UsageError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return 2
    if req.program == "madmax" and req.count != 1:
        signal.signal(signal.SIGINT, _madmax_interrupt)
        signal.signal(signal.SIGTERM, _madmax_interrupt)
    for index in range(req.count):
        if _graceful_exit:
            say("", "Process has been interrupted, waiting for copy/rename operations to finish ...")
            break
        _PLOTTERS[req.program](req, index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
