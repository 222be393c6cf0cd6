"""Make plot files for tests and benchmarks.

``make_plot`` runs the real chiapos plotter (k=18 takes about a second), so tests exercise the
manager against files a real harvester would accept.  Because a second per plot adds up, one
plot of each kind is built once into a per-user cache directory and ``copy_plot`` hands out
copies under fresh names.  ``write_fake_v1_header`` / ``write_fake_v2_header`` write only a
header and make the rest of the file sparse, which lets benchmarks create thousands of
plot-sized files in no time and no disk space.

The header builders here are written from the plotters' sources (see utilities/plots.py for
which files), not from our parser, so a parser bug is not mirrored by the test data.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import chiapos

from utilities.plots import expected_plot_size, plot_size_fits, read_plot_header

KINDS = ("pool", "og")
# pool: puzzle hash 32 + farmer pk 48 + local sk 32; og: pool pk 48 + farmer pk 48 + local sk 32
MEMO_SIZES = {"pool": 112, "og": 128}

# chiapos arguments that work for small k: buffer MiB, buckets, stripe size, threads.
# The default stripe size (65536, and even 8192) fails at k=18 with "Stripe size too large".
_BUFFER_MB = 300
_BUCKETS = 32
_STRIPE_SIZE = 2000
_THREADS = 2

CACHE_K = 18
_ID_OFFSET_V1 = 19  # after b"Proof of Space Plot"


def plot_name(k: int, plot_id: bytes, compression: int = 0, suffix: str = ".plot") -> str:
    """A chia-style file name: plot-k18[-c05]-YYYY-MM-DD-HH-MM-<hex id>.plot."""
    tag = f"-c{compression:02d}" if compression else ""
    stamp = time.strftime("%Y-%m-%d-%H-%M", time.gmtime())
    return f"plot-k{k}{tag}-{stamp}-{plot_id.hex()}{suffix}"


def _memo(kind: str) -> bytes:
    if kind not in MEMO_SIZES:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return secrets.token_bytes(MEMO_SIZES[kind])


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence chiapos, which prints its progress with C++ iostreams straight to fd 1."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def make_plot(
    dest_dir: str | Path,
    kind: str = "pool",
    k: int = 18,
    name: str | None = None,
    plot_id: bytes | None = None,
) -> Path:
    """Plot a real chiapos plot into ``dest_dir`` and return its path.

    Plotting happens in a private temporary directory and the finished file is moved in, so
    ``dest_dir`` never sees chiapos's ``.tmp`` files.  ``name`` defaults to a chia-style name
    carrying the plot id.
    """
    memo = _memo(kind)
    plot_id = plot_id if plot_id is not None else secrets.token_bytes(32)
    if len(plot_id) != 32:
        raise ValueError("plot_id must be 32 bytes")
    filename = name or plot_name(k, plot_id)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="plotmaker-") as work:
        with _quiet_stdout():
            chiapos.DiskPlotter().create_plot_disk(
                work, work, work, filename, k, memo, plot_id, _BUFFER_MB, _BUCKETS, _STRIPE_SIZE, _THREADS, False
            )
        final = dest / filename
        shutil.move(os.path.join(work, filename), final)
    return final


# --------------------------------------------------------------------------------------------
# Cache of real plots
# --------------------------------------------------------------------------------------------

_cached: dict[str, Path] = {}


def plot_cache() -> Path:
    """The per-user cache directory, created private (0700) and checked to be ours.

    It lives in /tmp so every test process and benchmark shares it; because /tmp is shared
    with other users, refuse a pre-existing path that is a symlink or owned by someone else.
    """
    root = Path(tempfile.gettempdir()) / f"pm-plot-cache-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeError(f"plot cache {root} is not a directory owned by this user")
    return root


def _cache_is_good(path: Path, kind: str) -> bool:
    try:
        header = read_plot_header(path)
        size = path.stat().st_size
    except Exception:  # noqa: BLE001 - any problem just means "rebuild"
        return False
    return header.kind == kind and header.k == CACHE_K and plot_size_fits(size, CACHE_K)


def cached_plot(kind: str) -> Path:
    """A real k=18 plot of ``kind`` in the cache, built at most once per process.

    A valid file left by an earlier process is reused.  A new one is plotted into a private
    temporary directory inside the cache and renamed into place, so concurrent processes
    (pytest-xdist, parallel benchmarks) never see a half-written cache entry.
    """
    if kind not in MEMO_SIZES:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    known = _cached.get(kind)
    if known is not None and known.exists():
        return known
    root = plot_cache()
    target = root / f"{kind}-k{CACHE_K}.plot"
    if not _cache_is_good(target, kind):
        work = Path(tempfile.mkdtemp(prefix=f".build-{kind}-", dir=root))
        try:
            built = make_plot(work, kind=kind, k=CACHE_K)
            os.replace(built, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    _cached[kind] = target
    return target


def copy_plot(kind: str, dest_dir: str | Path, name: str | None = None, patch_id: bool = False) -> Path:
    """Copy the cached plot of ``kind`` into ``dest_dir`` under a fresh chia-style name.

    The default name carries a fresh random id so copies never collide, but the header still
    holds the cached plot's id.  ``patch_id=True`` overwrites the header id with the one in the
    name (still parses; no longer yields valid proofs) for tests that need the two to agree.
    """
    source = cached_plot(kind)
    new_id = secrets.token_bytes(32)
    final = Path(dest_dir) / (name or plot_name(CACHE_K, new_id))
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, final)
    if patch_id:
        if name is not None:
            raise ValueError("patch_id needs the generated name (the id comes from it)")
        with open(final, "r+b") as handle:
            handle.seek(_ID_OFFSET_V1)
            handle.write(new_id)
    return final


# --------------------------------------------------------------------------------------------
# Fake (sparse) plots with real headers
# --------------------------------------------------------------------------------------------


def build_v1_header(plot_id: bytes, k: int, memo: bytes, description: bytes = b"v1.0") -> bytes:
    """chiapos / madMAx header: magic, id, k, BE16 len + description, BE16 len + memo, 10 table
    pointers (left zero here)."""
    return (
        b"Proof of Space Plot"
        + plot_id
        + bytes([k])
        + struct.pack(">H", len(description))
        + description
        + struct.pack(">H", len(memo))
        + memo
        + bytes(10 * 8)
    )


def build_v2_header(plot_id: bytes, k: int, memo: bytes, compression: int) -> bytes:
    """bladebit v2 header (PlotWriter.cpp): LE32 magic "PLOT", LE32 version 2, id, k,
    BE16 memo length + memo, LE32 flags (bit 0 = compressed), [level byte], 10 table
    pointers and 10 table sizes (left zero here).  No format description, unlike v1."""
    flags = 1 if compression else 0
    level = bytes([compression]) if compression else b""
    return (
        struct.pack("<I", 0x544F4C50)
        + struct.pack("<I", 2)
        + plot_id
        + bytes([k])
        + struct.pack(">H", len(memo))
        + memo
        + struct.pack("<I", flags)
        + level
        + bytes(2 * 10 * 8)
    )


def _write_sparse(path: str | Path, header: bytes, size: int | None) -> None:
    if size is not None and size < len(header):
        raise ValueError(f"size {size} is smaller than the {len(header)}-byte header")
    with open(path, "wb") as handle:
        handle.write(header)
        if size is not None:
            handle.truncate(size)


def write_fake_v1_header(
    path: str | Path,
    k: int = 32,
    kind: str = "pool",
    size: int | None = None,
    plot_id: bytes | None = None,
) -> str:
    """Write a v1 header at ``path`` and extend the file sparsely to ``size`` bytes.

    ``size`` defaults to expected_plot_size(k).  Returns the plot id as hex.
    """
    plot_id = plot_id if plot_id is not None else secrets.token_bytes(32)
    header = build_v1_header(plot_id, k, _memo(kind))
    _write_sparse(path, header, expected_plot_size(k) if size is None else size)
    return plot_id.hex()


def write_fake_v2_header(
    path: str | Path,
    k: int = 32,
    compression: int = 0,
    kind: str = "pool",
    size: int | None = None,
    plot_id: bytes | None = None,
) -> str:
    """Write a bladebit v2 header at ``path`` and extend the file sparsely to ``size`` bytes.

    ``size`` defaults to expected_plot_size(k, compression).  Returns the plot id as hex.
    """
    plot_id = plot_id if plot_id is not None else secrets.token_bytes(32)
    header = build_v2_header(plot_id, k, _memo(kind), compression)
    _write_sparse(path, header, expected_plot_size(k, compression) if size is None else size)
    return plot_id.hex()
