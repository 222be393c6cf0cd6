"""Plot files: which names count as finished plots, what their headers say, how big they should be.

The manager moves, counts and deletes plots on many drives, so it must recognise a finished plot
without trusting the plotter that made it.  Everything here reads at most the first few KiB of a
file: a farm has thousands of ~100 GiB plots and the header is all we need to know the k size,
the plot id, whether it is an OG or a pool (portable) plot and its compression level.

Pure functions (name rules, ``parse_plot_header``, the size maths) are kept apart from the one
function that touches the disk (``read_plot_header``) so they can be tested without files.

Header layouts were checked against the writers' and readers' own sources (code corpus):

* v1, chiapos / madMAx: ``Chia-Network/chiapos`` ``src/prover_disk.hpp`` (``DiskProver`` reads
  magic, id, k, 2-byte format-description length, description, 2-byte memo length, memo; the
  2-byte lengths go through ``Util::TwoBytesToInt``, i.e. big-endian).
* v2, bladebit: ``Chia-Network/bladebit`` ``src/plotting/PlotWriter.cpp``
  (``BeginPlotInternal``), ``PlotReader.cpp`` (``IPlotFile::ReadHeader``), ``ChiaConsts.h``
  (``CHIA_PLOT_V2_MAGIC 0x544F4C50`` = ``b"PLOT"`` written as a native little-endian uint32,
  ``CHIA_PLOT_VERSION_2 2``) and ``PlotHeader.h`` (``PlotFlags::Compressed = 1 << 0``).
  Note: unlike v1 the v2 header has *no* format description; the memo length is byte-swapped
  (big-endian, ``Swap16``) while version and flags are raw little-endian uint32s.
* plot2, the new proof of space (CHIP-48, ``.plot2``): ``Chia-Network/pos2-chip``
  ``src/plot/PlotFile.hpp`` and ``PlotFormat.hpp``.  The format is still changing between
  drafts; every draft seen starts ``b"pos2"`` (or ``b"PoS2"`` for plot-group files), a 1-byte
  format version, a 32-byte id, a 1-byte k and a 1-byte strength, so only that prefix is relied
  on.  The memo position depends on the draft and is read only for drafts whose layout was seen.
  chia-blockchain itself (``chia/plotting/prover.py`` ``V2Prover``) cannot yet read any of it.
* plot groups (``.gplot``): one file holding several new-format plots.  Chia has not settled
  the format: chia-blockchain (``chia/plotting/prover.py``, ``util.py``) knows only ``.plot``
  and ``.plot2``, and the only group layout seen is a pos2-chip draft that starts ``b"PoS2"``.
  So a ``.gplot`` is counted wherever drives are counted but never moved, sent, replaced or
  deleted: ``is_plot_group_name`` and ``parse_plot_group_header`` below.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from utilities.errors import PlotFileError

# --------------------------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------------------------

FINISHED_SUFFIXES = (".plot", ".plot2")
PLOT_GROUP_SUFFIX = ".gplot"

# k range accepted by chiapos (kMinPlotSize 18 .. kMaxPlotSize 50); mainnet needs k >= 32 but
# tests and testnets use small plots, and refusing them here would hide them from the manager.
MIN_K = 18
MAX_K = 50

_K_PATTERN = r"(?:1[89]|[2-4][0-9]|50)"
_PLOT_NAME_RE = re.compile(
    r"(?:portable\.)?"  # optional "portable." prefix
    rf"plot-k(?P<k>{_K_PATTERN})"
    r"(?:-c(?P<c>[0-9]{1,2}))?"  # bladebit / gigahorse compression tag, e.g. -c05
    r"-[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9]{2}-[0-9]{2}"  # YYYY-MM-DD-HH-MM
    r"-(?P<id>[0-9a-fA-F]{64})"
    r"\.plot2?"
)
_SAFE_CHARS_RE = re.compile(r"[A-Za-z0-9._-]+")


def is_finished_plot_name(name: str) -> bool:
    """True if ``name`` ends exactly in ``.plot`` or ``.plot2`` and is not hidden.

    Plotters write ``*.plot.tmp``, ``*.plot.2.tmp`` and copiers ``*.part`` while a plot is still
    growing; treating those as plots would let the manager move or count half-written files.
    Hidden names (``.foo.plot``, macOS ``._foo.plot`` resource forks) are never real plots.
    """
    if not name or name.startswith(".") or "/" in name or "\0" in name:
        return False
    return name.endswith(FINISHED_SUFFIXES)


def is_plot_group_name(name: str) -> bool:
    """True if ``name`` is a plot group (``*.gplot``, not hidden): counted, never moved or sent.

    Kept apart from is_finished_plot_name on purpose: every path that moves, sends or deletes
    plots asks that one, so a plot group can only reach the paths that count.
    """
    if not name or name.startswith(".") or "/" in name or "\0" in name:
        return False
    return name.endswith(PLOT_GROUP_SUFFIX)


def is_counted_plot_name(name: str) -> bool:
    """True for every file a drive scan counts: finished plots and plot groups."""
    return is_finished_plot_name(name) or is_plot_group_name(name)


def validate_plot_name(name: str) -> str:
    """Return ``name`` if it is a safe, chia-style plot basename, else raise PlotFileError.

    Plot names end up in paths, logs and remote commands; accepting only ``[A-Za-z0-9._-]`` in
    the shape plotters actually produce means a crafted file name can never smuggle in ``..``,
    a slash, a space or shell syntax, nor start with ``-`` and be read as an option.
    """
    shown = repr(name)
    if not name:
        raise PlotFileError("empty plot file name")
    if not _SAFE_CHARS_RE.fullmatch(name):
        raise PlotFileError(f"unsafe characters in plot file name {shown}")
    if name.startswith(("-", ".")) or ".." in name:
        raise PlotFileError(f"unsafe plot file name {shown}")
    if name.endswith(PLOT_GROUP_SUFFIX):
        raise PlotFileError(f"plot groups (.gplot) are counted but never sent or received: {shown}")
    if not _PLOT_NAME_RE.fullmatch(name):
        raise PlotFileError(f"not a chia plot file name: {shown}")
    return name


def plot_id_from_name(name: str) -> str | None:
    """The lower-case hex plot id embedded in a chia-style name, or None if it has none."""
    match = _PLOT_NAME_RE.fullmatch(name)
    return match.group("id").lower() if match else None


# --------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------

# Enough for every header layout below (largest: v2 with a 128-byte memo is ~340 bytes).
HEADER_READ_SIZE = 4096

FORMAT_V1 = "v1"
FORMAT_V2 = "v2"
FORMAT_PLOT2 = "plot2"
FORMAT_PLOT_GROUP = "gplot"

KIND_OG = "og"
KIND_POOL = "pool"

V1_MAGIC = b"Proof of Space Plot"
V2_MAGIC = b"PLOT"
V2_VERSION = 2
V2_FLAG_COMPRESSED = 1
PLOT2_MAGICS = (b"pos2", b"PoS2")

PLOT_ID_SIZE = 32
# pool public key 48 + farmer public key 48 + local master secret key 32
OG_MEMO_SIZE = 48 + 48 + 32
# pool contract puzzle hash 32 + farmer public key 48 + local master secret key 32
POOL_MEMO_SIZE = 32 + 48 + 32
_MEMO_KINDS = {OG_MEMO_SIZE: KIND_OG, POOL_MEMO_SIZE: KIND_POOL}

# plot2 drafts whose memo location is known: (magic, version) -> ("fixed", size) or
# ("length_byte_at", offset).  pos2 v1: fixed 112-byte memo right after k and strength;
# pos2 v2: 2-byte index + 1-byte meta group, then a 1-byte memo length;
# PoS2 group files: group size 2 + meta group 1 + 8-byte chunk index offset, then the length.
_PLOT2_MEMO_LAYOUT: dict[tuple[bytes, int], tuple[str, int]] = {
    (b"pos2", 1): ("fixed", POOL_MEMO_SIZE),
    (b"pos2", 2): ("length_byte_at", 42),
    (b"PoS2", 2): ("length_byte_at", 50),
}
_PLOT2_PREFIX_SIZE = 4 + 1 + PLOT_ID_SIZE + 1 + 1
_PLOT2_MIN_K = 16  # chia-blockchain's preliminary v2 size table starts at k=16


@dataclass(frozen=True)
class PlotHeader:
    """What the first bytes of a plot file say.

    ``format`` is "v1" (chiapos/madMAx), "v2" (bladebit), "plot2" (new proof of space) or
    "gplot" (a plot group);
    ``k`` is None only for a ``.plot2`` whose header layout we do not know; ``plot_id`` is
    lower-case hex ("" if unknown); ``memo_size`` is 0 if unknown; ``kind`` is "og" for a
    pool-public-key memo and "pool" for a pool-contract (portable/NFT) memo.
    """

    format: str
    k: int | None
    plot_id: str
    memo_size: int
    kind: str
    compression: int


class _Reader:
    """Sequential reader over the header bytes that turns running out of data into one error."""

    def __init__(self, data: bytes, name: str) -> None:
        self._data = data
        self._name = name
        self.pos = 0

    def take(self, size: int, what: str) -> bytes:
        end = self.pos + size
        if end > len(self._data):
            raise PlotFileError(f"truncated plot header ({what}) in {self._name}")
        chunk = self._data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16_be(self, what: str) -> int:
        return struct.unpack(">H", self.take(2, what))[0]

    def u32_le(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]


def _check_k(k: int, low: int, name: str) -> int:
    if not low <= k <= MAX_K:
        raise PlotFileError(f"implausible k={k} in plot header of {name}")
    return k


def _kind_for_memo(memo_size: int, name: str) -> str:
    kind = _MEMO_KINDS.get(memo_size)
    if kind is None:
        raise PlotFileError(f"unexpected memo size {memo_size} in plot header of {name}")
    return kind


def _parse_v1(data: bytes, name: str) -> PlotHeader:
    reader = _Reader(data, name)
    reader.take(len(V1_MAGIC), "magic")
    plot_id = reader.take(PLOT_ID_SIZE, "plot id")
    k = _check_k(reader.u8("k"), MIN_K, name)
    reader.take(reader.u16_be("format description length"), "format description")
    memo_size = reader.u16_be("memo length")
    reader.take(memo_size, "memo")
    return PlotHeader(FORMAT_V1, k, plot_id.hex(), memo_size, _kind_for_memo(memo_size, name), 0)


def _parse_v2(data: bytes, name: str) -> PlotHeader:
    reader = _Reader(data, name)
    reader.take(len(V2_MAGIC), "magic")
    version = reader.u32_le("version")
    if version != V2_VERSION:
        raise PlotFileError(f"unsupported bladebit plot version {version} in {name}")
    plot_id = reader.take(PLOT_ID_SIZE, "plot id")
    k = _check_k(reader.u8("k"), MIN_K, name)
    memo_size = reader.u16_be("memo length")
    reader.take(memo_size, "memo")
    flags = reader.u32_le("flags")
    compression = 0
    if flags & V2_FLAG_COMPRESSED:
        compression = reader.u8("compression level")
        if compression == 0:
            raise PlotFileError(f"compressed flag set but compression level 0 in {name}")
    return PlotHeader(FORMAT_V2, k, plot_id.hex(), memo_size, _kind_for_memo(memo_size, name), compression)


def _parse_plot2(data: bytes, name: str) -> PlotHeader:
    reader = _Reader(data, name)
    magic = reader.take(4, "magic")
    version = reader.u8("format version")
    plot_id = reader.take(PLOT_ID_SIZE, "plot id")
    k = _check_k(reader.u8("k"), _PLOT2_MIN_K, name)
    reader.u8("strength")
    memo_size = 0
    layout = _PLOT2_MEMO_LAYOUT.get((magic, version))
    if layout is not None:
        how, value = layout
        if how == "fixed":
            memo_size = value
        else:
            reader.pos = value
            memo_size = reader.u8("memo length")
        reader.take(memo_size, "memo")
    # Every plot2 draft builds its memo as puzzle hash + farmer key + local key (pos2-chip
    # PlotFormat takes a 32 + 48 + 32 byte memo): there are no OG plot2 files, whatever a draft's
    # memo length says, so replace mode can never take a new plot for an old OG one.
    return PlotHeader(FORMAT_PLOT2, k, plot_id.hex(), memo_size, KIND_POOL, 0)


def _unknown_plot2(name: str) -> PlotHeader:
    """A ``.plot2`` whose header matches no draft we know: still a finished plot, k unknown.

    The plot2 format has changed several times and will change again; refusing such a file
    would make the manager treat a farmer's newest plots as garbage (and maybe delete them).
    """
    plot_id = plot_id_from_name(Path(name).name) or ""
    return PlotHeader(FORMAT_PLOT2, None, plot_id, 0, KIND_POOL, 0)


def parse_plot_group_header(data: bytes, name: str) -> PlotHeader:
    """Parse the header of a plot group (``.gplot``) only where it is safe; else PlotFileError.

    Safe means a draft whose whole header layout we have seen (``_PLOT2_MEMO_LAYOUT``): then
    the group is counted as a pool plot (no new-format plot is OG).  Anything else (another
    magic, an unseen draft) raises, and the drive scan counts the file as a plot of unknown
    kind: guessing a kind from a format that is still changing could make the counts, and the
    replace decisions built on them, wrong.  A group counts as one plot file either way,
    because its plot count is not in any header layout that is settled.
    """
    magic, version = data[:4], data[4:5]
    if magic not in PLOT2_MAGICS or not version or (magic, version[0]) not in _PLOT2_MEMO_LAYOUT:
        raise PlotFileError(f"plot group header of a layout not known yet: {name}")
    header = _parse_plot2(data, name)
    return PlotHeader(FORMAT_PLOT_GROUP, header.k, header.plot_id, header.memo_size, KIND_POOL, 0)


def parse_plot_header(data: bytes, name_for_errors: str) -> PlotHeader:
    """Parse the first bytes of a plot file (pure; ``data`` may be longer than the header).

    ``name_for_errors`` is used in error messages, for its ``.plot2`` suffix to decide that an
    unknown header still belongs to a new-format plot, and for its ``.gplot`` suffix to read a
    plot group's header (parse_plot_group_header).  Raises PlotFileError for anything that is
    not a plot header.
    """
    name = name_for_errors
    if name.endswith(PLOT_GROUP_SUFFIX):
        return parse_plot_group_header(data, name)
    if data.startswith(V1_MAGIC):
        return _parse_v1(data, name)
    if data.startswith(V2_MAGIC):
        return _parse_v2(data, name)
    if data[:4] in PLOT2_MAGICS:
        return _parse_plot2(data, name)
    if not data:
        raise PlotFileError(f"empty file, not a plot: {name}")
    if name.endswith(".plot2"):
        return _unknown_plot2(name)
    if len(data) < len(V1_MAGIC) and V1_MAGIC.startswith(data):
        raise PlotFileError(f"truncated plot header (magic) in {name}")
    raise PlotFileError(f"not a plot file (unknown header magic): {name}")


def read_plot_header(path: str | Path) -> PlotHeader:
    """Read and parse the header of the plot at ``path`` (reads only HEADER_READ_SIZE bytes)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(HEADER_READ_SIZE)
    except OSError as exc:
        raise PlotFileError(f"cannot read plot header of {path}: {exc.strerror or exc}") from exc
    return parse_plot_header(data, str(path))


# --------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------

# chia-blockchain chia/types/blockchain_format/proof_of_space.py: "The actual space in bytes of
# a plot, is _expected_plot_size(k) * UI_ACTUAL_SPACE_CONSTANT_FACTOR" with the factor 0.78
# (0.762 in 2020 releases).  For k=32 that is 108,877,420,953 bytes = 101.4 GiB, the size
# chia's own docs give for an uncompressed k32, so the product is what we call a "real" size.
_ACTUAL_SPACE_FACTOR_PERCENT = 78

# k32 plot sizes in tenths of GiB per bladebit compression level, from the "Compression table"
# at https://docs.chia.net/plotting-compression/ (C0 101.4, C1 87.5 ... C7 78.0, C9 75.2).
# The docs list no C8 (bladebit never shipped it); 76.6 is the midpoint of C7 and C9, an
# interpolation rather than a measurement.  Ratios to C0 are assumed to hold for every k.
_K32_SIZE_TENTHS_GIB: dict[int, int] = {
    0: 1014,
    1: 875,
    2: 860,
    3: 845,
    4: 829,
    5: 813,
    6: 796,
    7: 780,
    8: 766,
    9: 752,
}
KNOWN_COMPRESSION_LEVELS = tuple(sorted(_K32_SIZE_TENTHS_GIB))


def _formula_size(k: int) -> int:
    """chia's ``_expected_plot_size``: ((2k)+1) * 2**(k-1), proportional to a plot's entries."""
    return ((2 * k) + 1) * (2 ** (k - 1))


def expected_plot_size(k: int, compression: int = 0) -> int:
    """Approximate size in bytes of a real plot of size ``k`` at bladebit level ``compression``.

    Derived from chia's formula rather than hard-coded k32 numbers so any k works; raises
    ValueError for a k outside 18..50 or a compression level with no documented size.
    """
    if not MIN_K <= k <= MAX_K:
        raise ValueError(f"k must be between {MIN_K} and {MAX_K}, got {k}")
    tenths = _K32_SIZE_TENTHS_GIB.get(compression)
    if tenths is None:
        raise ValueError(
            f"no documented plot size for compression level {compression}"
            f" (known: {', '.join(map(str, KNOWN_COMPRESSION_LEVELS))})"
        )
    uncompressed = _formula_size(k) * _ACTUAL_SPACE_FACTOR_PERCENT // 100
    return uncompressed * tenths // _K32_SIZE_TENTHS_GIB[0]


# Measured with tests/support/plotmaker.py (chiapos 2.0.12, 32 buckets, stripe 2000), sizes
# relative to expected_plot_size(k): k18 (20 plots) 0.981..1.126, k19 (8) 0.994..1.087,
# k20 (7) 0.976..1.039, k22 (2) 1.009..1.018.  Small plots vary because their table sizes are
# random and padded to whole parks; the spread roughly halves every 2 k.  Real k32 plots sit
# within about 0.3% of 101.4 GiB.  So the tolerance starts at 25% for k18, halves every 2 k and
# never drops below 1%; compressed plots get 2% more because their ratios come from a k32-only
# table rounded to 0.1 GiB.  A half-written or half-copied plot is always rejected.
_TOLERANCE_AT_MIN_K = 0.25
_TOLERANCE_FLOOR = 0.01
_COMPRESSED_EXTRA_TOLERANCE = 0.02


def size_tolerance(k: int, compression: int = 0) -> float:
    """Relative tolerance (e.g. 0.05 = ±5%) that plot_size_fits allows for this k."""
    base = max(_TOLERANCE_FLOOR, _TOLERANCE_AT_MIN_K / 2 ** ((k - MIN_K) / 2))
    return base + (_COMPRESSED_EXTRA_TOLERANCE if compression else 0.0)


def plot_size_fits(actual_size: int, k: int, compression: int = 0) -> bool:
    """True if ``actual_size`` bytes is plausible for a complete plot of this k and level.

    Catches truncated copies and files whose header lies about k; raises ValueError like
    expected_plot_size for an unknown k or compression level.
    """
    expected = expected_plot_size(k, compression)
    tolerance = size_tolerance(k, compression)
    return expected * (1 - tolerance) <= actual_size <= expected * (1 + tolerance)


_SIZE_SETTING_RE = re.compile(r"k(?P<k>[0-9]{1,2})(?:-?c(?P<c>[0-9]{1,2}))?", re.IGNORECASE)


def parse_plot_size_setting(value: str | int) -> int:
    """Bytes per plot for the config's capacity "plot size" setting.

    Accepts ``k32``, ``k33``, ``k32-c5`` (any k 18..50, any documented compression level) which
    become expected_plot_size(k, c), i.e. the approximate size of a real plot, or a positive
    number of bytes as an int or a string of digits.  Raises ValueError otherwise.
    """
    if isinstance(value, bool):
        raise ValueError(f"plot size must be like k32, k32-c5 or a byte count, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"plot size in bytes must be positive, got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"plot size must be like k32, k32-c5 or a byte count, got {value!r}")
    text = value.strip()
    if text.isdigit() and text.isascii():
        size = int(text)
        if size <= 0:
            raise ValueError(f"plot size in bytes must be positive, got {value!r}")
        return size
    match = _SIZE_SETTING_RE.fullmatch(text)
    if not match:
        raise ValueError(f"plot size must be like k32, k32-c5 or a byte count, got {value!r}")
    k = int(match.group("k"))
    compression = int(match.group("c") or 0)
    try:
        return expected_plot_size(k, compression)
    except ValueError as exc:
        raise ValueError(f"invalid plot size {value!r}: {exc}") from None
