"""Plot names, headers and sizes, checked against real chiapos plots and the plotters' layouts."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import chiapos
import pytest

from tests.support import plotmaker
from utilities.errors import PlotFileError
from utilities.plots import (
    expected_plot_size,
    is_counted_plot_name,
    is_finished_plot_name,
    is_plot_group_name,
    parse_plot_header,
    parse_plot_size_setting,
    plot_id_from_name,
    plot_size_fits,
    read_plot_header,
    size_tolerance,
    validate_plot_name,
)
from utilities.transfer.part_files import is_part_name, part_name

GIB = 1024**3
HEX64 = "0123456789abcdef" * 4


def _id_in_name(name: str) -> str:
    """The 64 hex characters before the extension, found without the code under test."""
    stem = name.rsplit(".", 1)[0]
    return stem.rsplit("-", 1)[1]


# --------------------------------------------------------------------------------------------
# Real plots
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "memo_size"), [("pool", 112), ("og", 128)])
def test_real_chiapos_plot_header(tmp_path: Path, kind: str, memo_size: int) -> None:
    path = plotmaker.make_plot(tmp_path, kind=kind, k=18)
    header = read_plot_header(path)
    prover = chiapos.DiskProver(str(path))  # chiapos's own reading is the oracle

    assert header.format == "v1"
    assert header.k == 18 == prover.get_size()
    assert header.kind == kind
    assert header.memo_size == memo_size == len(prover.get_memo())
    assert header.compression == 0 == prover.get_compression_level()
    assert header.plot_id == _id_in_name(path.name) == bytes(prover.get_id()).hex()
    assert validate_plot_name(path.name) == path.name
    assert is_finished_plot_name(path.name)
    assert not list(tmp_path.glob("*.tmp")), "make_plot must not leave plotter temp files"


def test_real_plot_sizes_fit_and_truncated_half_does_not(tmp_path: Path) -> None:
    for kind in plotmaker.KINDS:
        path = plotmaker.copy_plot(kind, tmp_path)
        size = path.stat().st_size
        assert 3_000_000 < size < 5_000_000  # "about 3.8 MB" for a k=18 chiapos plot
        assert plot_size_fits(size, 18)

        half = tmp_path / f"half-{kind}.plot"
        half.write_bytes(path.read_bytes()[: size // 2])
        assert read_plot_header(half).k == 18  # the header alone cannot tell...
        assert not plot_size_fits(half.stat().st_size, 18)  # ...the size can
        assert not plot_size_fits(size, 20)  # a k=18 file is far too small for k=20


def test_cached_plot_copies(tmp_path: Path) -> None:
    first = plotmaker.copy_plot("pool", tmp_path)
    second = plotmaker.copy_plot("pool", tmp_path)
    assert first != second and first.exists() and second.exists()
    assert plotmaker.cached_plot("pool") == plotmaker.cached_plot("pool")
    cached = read_plot_header(plotmaker.cached_plot("pool"))
    assert read_plot_header(first) == cached  # plain copies keep the cached header
    validate_plot_name(first.name)

    patched = plotmaker.copy_plot("og", tmp_path, patch_id=True)
    header = read_plot_header(patched)
    assert header.kind == "og"
    assert header.plot_id == _id_in_name(patched.name)
    assert header.plot_id != read_plot_header(plotmaker.cached_plot("og")).plot_id

    named = plotmaker.copy_plot("pool", tmp_path / "sub", name="plot-k18-2024-01-01-00-00-" + HEX64 + ".plot")
    assert named.name.endswith(HEX64 + ".plot") and named.parent.name == "sub"


# --------------------------------------------------------------------------------------------
# Fake headers
# --------------------------------------------------------------------------------------------


def test_v2_header_bytes_follow_bladebit_layout() -> None:
    plot_id = bytes(range(32))
    memo = bytes([7]) * 112
    data = plotmaker.build_v2_header(plot_id, 32, memo, compression=5)
    assert data[0:4] == b"PLOT"
    assert struct.unpack("<I", data[4:8])[0] == 2
    assert data[8:40] == plot_id
    assert data[40] == 32
    assert data[41:43] == b"\x00\x70"  # memo length 112, big-endian
    assert data[43:155] == memo
    assert struct.unpack("<I", data[155:159])[0] == 1  # compressed flag
    assert data[159] == 5


@pytest.mark.parametrize("compression", [0, 1, 3, 5, 7, 9])
@pytest.mark.parametrize(("kind", "memo_size"), [("pool", 112), ("og", 128)])
def test_fake_v2_header_parses(tmp_path: Path, compression: int, kind: str, memo_size: int) -> None:
    path = tmp_path / plotmaker.plot_name(32, os.urandom(32), compression)
    plot_id = plotmaker.write_fake_v2_header(path, 32, compression, kind)
    header = read_plot_header(path)
    assert (header.format, header.k, header.plot_id) == ("v2", 32, plot_id)
    assert (header.kind, header.memo_size, header.compression) == (kind, memo_size, compression)
    size = path.stat().st_size
    assert size == expected_plot_size(32, compression)
    assert plot_size_fits(size, 32, compression)
    assert path.stat().st_blocks * 512 < 1024 * 1024  # sparse: ~100 GiB that takes no space
    validate_plot_name(path.name)


def test_fake_v1_header_parses(tmp_path: Path) -> None:
    path = tmp_path / "fake.plot"
    plot_id = plotmaker.write_fake_v1_header(path, 33, "og", size=4096)
    header = read_plot_header(path)
    assert (header.format, header.k, header.plot_id, header.kind, header.compression) == ("v1", 33, plot_id, "og", 0)
    assert path.stat().st_size == 4096
    assert not plot_size_fits(4096, 33)
    with pytest.raises(ValueError):
        plotmaker.write_fake_v1_header(path, 32, "pool", size=10)


def test_v1_header_from_bytes_built_here() -> None:
    """Layout written out by hand from chiapos's DiskProver, independent of plotmaker."""
    plot_id = bytes([0xAB]) * 32
    data = b"Proof of Space Plot" + plot_id + bytes([25]) + b"\x00\x04v1.0" + b"\x00\x70" + bytes(112)
    header = parse_plot_header(data, "x.plot")
    assert (header.k, header.plot_id, header.kind, header.memo_size) == (25, "ab" * 32, "pool", 112)


# --------------------------------------------------------------------------------------------
# Garbage
# --------------------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_garbage_and_short_files_raise_naming_the_file(tmp_path: Path) -> None:
    real = plotmaker.cached_plot("pool").read_bytes()[:4096]
    good_v2 = plotmaker.build_v2_header(bytes(32), 32, bytes(112), 0)
    cases = {
        "empty.plot": b"",
        "random.plot": os.urandom(4096),
        "text.plot": b"hello world\n" * 100,
        "magic-only.plot": b"Proof of Space Plot",
        "partial-magic.plot": b"Proof of",
        "cut-in-memo.plot": real[:100],
        "bad-k.plot": real[:51] + bytes([5]) + real[52:],
        "bad-memo.plot": b"Proof of Space Plot" + bytes(32) + bytes([32]) + b"\x00\x04v1.0\x00\x64" + bytes(100),
        "v2-version-3.plot": good_v2[:4] + struct.pack("<I", 3) + good_v2[8:],
        "v2-cut-before-flags.plot": good_v2[:150],
        "v2-level-missing.plot": good_v2[:155] + struct.pack("<I", 1),
        "empty.plot2": b"",
    }
    for name, data in cases.items():
        path = _write(tmp_path / name, data)
        with pytest.raises(PlotFileError) as excinfo:
            read_plot_header(path)
        message = str(excinfo.value)
        assert str(path) in message, message
        assert "\n" not in message


def test_unreadable_paths_raise_plot_file_error(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.plot", tmp_path):
        with pytest.raises(PlotFileError, match=str(path)):
            read_plot_header(path)


# --------------------------------------------------------------------------------------------
# plot2
# --------------------------------------------------------------------------------------------


def test_plot2_pos2_draft_header_parses() -> None:
    # pos2-chip PlotFile.hpp draft 1: "pos2", version 1, id, k, strength, 112-byte memo
    data = b"pos2" + bytes([1]) + bytes([0x11]) * 32 + bytes([28, 2]) + bytes(112) + bytes(64)
    header = parse_plot_header(data, "plot-k28-2025-01-01-00-00-" + HEX64 + ".plot2")
    assert (header.format, header.k, header.plot_id) == ("plot2", 28, "11" * 32)
    assert (header.memo_size, header.kind, header.compression) == (112, "pool", 0)

    # draft 2: ... k, strength, 2-byte index, meta group, 1-byte memo length, memo
    data = b"pos2" + bytes([2]) + bytes([0x22]) * 32 + bytes([30, 2]) + b"\x00\x00\x00" + bytes([112]) + bytes(112)
    header = parse_plot_header(data, "x.plot2")
    assert (header.k, header.plot_id, header.memo_size) == (30, "22" * 32, 112)


def test_plot2_with_unknown_header_is_still_a_plot(tmp_path: Path) -> None:
    name = "plot-k32-2025-01-01-00-00-" + HEX64 + ".plot2"
    path = _write(tmp_path / name, b"\x00future format\x00" * 10)
    header = read_plot_header(path)
    assert header.format == "plot2" and header.k is None
    assert header.plot_id == HEX64
    with pytest.raises(PlotFileError):  # the same bytes under a .plot name are garbage
        read_plot_header(_write(tmp_path / name.replace(".plot2", ".plot"), path.read_bytes()))


def test_plot2_is_never_og_whatever_its_memo_length() -> None:
    """Replace mode deletes only OG plots: a new-format plot must never look like one."""
    data = b"pos2" + bytes([2]) + bytes([0x33]) * 32 + bytes([28, 2]) + b"\x00\x00\x00" + bytes([128]) + bytes(128)
    header = parse_plot_header(data, "x.plot2")
    assert (header.format, header.memo_size, header.kind) == ("plot2", 128, "pool")


# --------------------------------------------------------------------------------------------
# Plot groups (.gplot)
# --------------------------------------------------------------------------------------------

GROUP_NAME = "plot-k28-2025-01-01-00-00-" + HEX64 + ".gplot"


def test_plot_group_header_is_read_only_for_a_layout_seen_before(tmp_path: Path) -> None:
    # pos2-chip group draft: "PoS2", version 2, id, k, strength, group size (2), meta group (1),
    # chunk index offset (8), 1-byte memo length, memo.
    known = b"PoS2" + bytes([2]) + bytes([0x44]) * 32 + bytes([28, 2]) + bytes(11) + bytes([112]) + bytes(112)
    header = read_plot_header(_write(tmp_path / GROUP_NAME, known + bytes(64)))
    assert (header.format, header.k, header.plot_id, header.kind) == ("gplot", 28, "44" * 32, "pool")
    unknown_cases = {
        "future-draft.gplot": b"PoS2" + bytes([9]) + known[5:],
        "other-magic.gplot": b"GRP0" + known[4:],
        # An old OG plot's bytes under a group name are not read as OG (nor as a group).
        "og-bytes.gplot": plotmaker.cached_plot("og").read_bytes()[:4096],
        "empty.gplot": b"",
    }
    for name, data in unknown_cases.items():
        path = _write(tmp_path / name, data)
        with pytest.raises(PlotFileError, match="plot group header of a layout not known yet") as excinfo:
            read_plot_header(path)
        assert str(path) in str(excinfo.value)


def test_plot_group_names_are_counted_but_never_sent_received_or_moved() -> None:
    assert is_plot_group_name(GROUP_NAME) and is_counted_plot_name(GROUP_NAME)
    assert not is_finished_plot_name(GROUP_NAME)  # what every move, send and delete asks
    for name in ("." + GROUP_NAME, GROUP_NAME + ".tmp", "dir/" + GROUP_NAME, ""):
        assert not is_plot_group_name(name) and not is_counted_plot_name(name), name
    with pytest.raises(PlotFileError, match=r"plot groups \(\.gplot\) are counted but never sent or received"):
        validate_plot_name(GROUP_NAME)
    # Receivers and the stale part sweep: a plot2 part is ours, a plot group part never is.
    plot2 = GROUP_NAME.replace(".gplot", ".plot2")
    assert is_part_name(part_name(plot2))
    assert not is_part_name(part_name(GROUP_NAME))


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------

GOOD_NAMES = [
    "plot-k32-2021-03-18-02-33-" + HEX64 + ".plot",
    "plot-k32-c05-2023-06-01-12-00-" + HEX64 + ".plot",
    "plot-k33-2021-03-18-02-33-" + HEX64.upper() + ".plot",
    "portable.plot-k32-2021-03-18-02-33-" + HEX64 + ".plot",
    "plot-k18-2024-01-01-00-00-" + HEX64 + ".plot",
    "plot-k28-2025-01-01-00-00-" + HEX64 + ".plot2",
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_valid_plot_names(name: str) -> None:
    assert validate_plot_name(name) == name
    assert is_finished_plot_name(name)
    assert plot_id_from_name(name) == HEX64


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x.plot",
        "a b.plot",
        "$(rm -rf).plot",
        "-rf.plot",
        "x;rm -rf ~.plot",
        "`reboot`.plot",
        "plot-k32-2021-03-18-02-33-" + HEX64 + ".plot;ls",
        "sub/plot-k32-2021-03-18-02-33-" + HEX64 + ".plot",
        "../plot-k32-2021-03-18-02-33-" + HEX64 + ".plot",
        ".plot-k32-2021-03-18-02-33-" + HEX64 + ".plot",
        "plot-k32-2021-03-18-02-33-" + HEX64 + ".plot.tmp",
        "plot-k32-2021-03-18-02-33-" + HEX64 + ".plot ",
        "plot-k32-2021-03-18-02-33-" + HEX64[:-1] + ".plot",
        "plot-k17-2021-03-18-02-33-" + HEX64 + ".plot",
        "plot-k51-2021-03-18-02-33-" + HEX64 + ".plot",
        "plot-k32-2021-03-18-02-33-" + HEX64[:-1] + "g.plot",
        "plot-k32-2021-03-18-02-33-" + HEX64 + ".PLOT",
        "x.plot",
    ],
)
def test_rejected_plot_names(name: str) -> None:
    with pytest.raises(PlotFileError):
        validate_plot_name(name)


def test_finished_names() -> None:
    base = "plot-k32-2021-03-18-02-33-" + HEX64
    assert is_finished_plot_name(base + ".plot")
    assert is_finished_plot_name(base + ".plot2")
    for name in (
        base + ".plot.tmp",
        base + ".plot.2.tmp",
        base + ".plot.part",
        base + ".part",
        base + ".plot2.tmp",
        base + ".plotx",
        "." + base + ".plot",
        "._" + base + ".plot",
        ".plot",
        "dir/" + base + ".plot",
        "",
    ):
        assert not is_finished_plot_name(name), name


# --------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------


def test_expected_size_grows_with_k_and_shrinks_with_compression() -> None:
    sizes = [expected_plot_size(k) for k in range(18, 51)]
    assert all(b > 2 * a for a, b in zip(sizes, sizes[1:], strict=False))  # a bit over double per k
    levels = [expected_plot_size(32, c) for c in range(0, 10)]
    assert all(b < a for a, b in zip(levels, levels[1:], strict=False))


def test_expected_size_matches_chia_documentation() -> None:
    # docs.chia.net/plotting-compression: k32 C0 101.4 GiB, C1 87.5, C5 81.3, C7 78.0, C9 75.2
    for level, gib in [(0, 101.4), (1, 87.5), (5, 81.3), (7, 78.0), (9, 75.2)]:
        assert expected_plot_size(32, level) / GIB == pytest.approx(gib, abs=0.05)
    assert 108.8e9 < expected_plot_size(32) < 108.9e9
    for bad_k, bad_c in [(17, 0), (51, 0), (32, 10), (32, -1)]:
        with pytest.raises(ValueError):
            expected_plot_size(bad_k, bad_c)


def test_tolerance_narrows_with_k() -> None:
    tolerances = [size_tolerance(k) for k in range(18, 51)]
    assert tolerances[0] >= 0.13  # measured k=18 plots reach +12.6%
    assert all(b <= a for a, b in zip(tolerances, tolerances[1:], strict=False))
    assert 0 < size_tolerance(32) <= 0.02  # real k32 plots are within ~0.3% of 101.4 GiB
    assert size_tolerance(32, 5) > size_tolerance(32)
    k32 = expected_plot_size(32)
    assert plot_size_fits(int(101.3 * GIB), 32) and plot_size_fits(int(101.5 * GIB), 32)
    assert not plot_size_fits(int(96 * GIB), 32)
    assert not plot_size_fits(k32 // 2, 32)
    assert plot_size_fits(int(81.3 * GIB), 32, 5) and not plot_size_fits(int(81.3 * GIB), 32)


def test_plot_size_setting() -> None:
    k32 = parse_plot_size_setting("k32")
    assert 108.8e9 < k32 < 108.9e9
    assert parse_plot_size_setting("K33") / k32 == pytest.approx(67 / 65 * 2)
    assert parse_plot_size_setting(" k32 ") == k32
    c5 = parse_plot_size_setting("k32-c5")
    assert c5 / GIB == pytest.approx(81.3, abs=0.05)
    assert parse_plot_size_setting("k32-C05") == c5 == parse_plot_size_setting("k32c5")
    assert parse_plot_size_setting(108_000_000_000) == 108_000_000_000
    assert parse_plot_size_setting("4096") == 4096


@pytest.mark.parametrize(
    "value",
    ["", "k", "k17", "k51", "k32-c99", "k32-c", "k32 c5", "32k", "0", "-5", "1e9", "1.5", "k32.5", "١٢٣", 0, -5, True],
)
def test_plot_size_setting_errors(value: object) -> None:
    with pytest.raises(ValueError):
        parse_plot_size_setting(value)  # type: ignore[arg-type]


def test_plot_size_setting_rejects_other_types() -> None:
    for value in (None, 1.5, [32]):
        with pytest.raises(ValueError):
            parse_plot_size_setting(value)  # type: ignore[arg-type]
