from __future__ import annotations

import os
from pathlib import Path

from tests.support.plotmaker import copy_plot
from utilities.plot_finder import finished_plots, open_for_writing


def test_open_for_writing_sees_writers_not_readers(tmp_path: Path) -> None:
    written, read = tmp_path / "w.plot", tmp_path / "r.plot"
    written.write_bytes(b"x")
    read.write_bytes(b"x")
    with open(written, "ab"), open(read, "rb"):
        assert open_for_writing([str(written), str(read)]) == {str(written)}
    assert open_for_writing([str(written)]) == set()


def test_finished_plots_oldest_first_and_skips_unfinished(tmp_path: Path) -> None:
    older = copy_plot("og", tmp_path)
    newer = copy_plot("pool", tmp_path)
    os.utime(older, (1_000_000, 1_000_000))
    (tmp_path / ("plot-k18-2026-01-01-00-00-" + "a" * 64 + ".plot.2.tmp")).write_bytes(b"x")
    truncated = tmp_path / ("plot-k18-2026-01-01-00-00-" + "b" * 64 + ".plot")
    truncated.write_bytes(older.read_bytes()[: older.stat().st_size // 2])
    garbage = tmp_path / ("plot-k18-2026-01-01-00-00-" + "c" * 64 + ".plot")
    garbage.write_bytes(b"not a plot at all" * 100)
    shell = tmp_path / "x;rm -rf ~.plot"
    shell.write_bytes(older.read_bytes())
    ready, skipped = finished_plots([str(tmp_path)])
    assert [p.path for p in ready] == [older, newer]
    assert [p.header.kind for p in ready] == ["og", "pool"]
    reasons = "\n".join(skipped)
    assert f"{truncated}: size" in reasons and str(garbage) in reasons and str(shell) in reasons
    with open(newer, "r+b"):
        ready, skipped = finished_plots([str(tmp_path)])
    assert [p.path for p in ready] == [older]
    assert any("open for writing" in line for line in skipped)


def test_a_plot_being_written_is_held_back_through_a_symlinked_directory(tmp_path: Path) -> None:
    """/proc shows the writer's real path; a plot directory reached through a symlink must still match it."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    plot = copy_plot("pool", real)
    with open(plot, "r+b"):
        ready, skipped = finished_plots([str(link)])
    assert ready == []
    assert any("open for writing" in line for line in skipped)
    ready, _ = finished_plots([str(link)])
    assert [p.path.name for p in ready] == [plot.name]


PLOT2_HEADER = b"pos2" + bytes([1]) + bytes([0x11]) * 32 + bytes([28, 2]) + bytes(112)  # pos2-chip draft 1


def test_a_plot2_is_ready_and_a_plot_group_is_skipped_with_its_reason(tmp_path: Path) -> None:
    plot2 = tmp_path / ("plot-k28-2026-01-01-00-00-" + "d" * 64 + ".plot2")
    plot2.write_bytes(PLOT2_HEADER + bytes(4096))
    group = tmp_path / ("plot-k28-2026-01-01-00-00-" + "e" * 64 + ".gplot")
    group.write_bytes(b"PoS2" + PLOT2_HEADER[4:] + bytes(4096))
    ready, skipped = finished_plots([str(tmp_path)])
    assert [(p.path, p.header.format, p.header.kind) for p in ready] == [(plot2, "plot2", "pool")]
    assert skipped == [f"{group}: a plot group (.gplot): counted on the drives but never sent or moved "
                       "until chia settles its format"]
