"""Which kept parts a plotter asks its harvesters to drop (issue 13): pure decisions and the
plotter's own record of failed attempts in a real SQLite database."""

from __future__ import annotations

from pathlib import Path

from utilities.plotter.forget_parts import Abandoned, parse_forgotten, parts_to_forget, present_names
from utilities.state import StateDB, TransferRecord
from utilities.transfer.protocol import build_forget_command


def test_only_plots_gone_from_the_plotter_and_not_yet_forgotten_are_asked_for() -> None:
    abandoned = [Abandoned("a.plot", "h1", "a.plot"), Abandoned("b.plot", "h1", "portable.b.plot"),
                 Abandoned("c.plot", "h2", "c.plot")]  # fmt: skip
    todo = parts_to_forget(abandoned, present={"a.plot"}, forgotten={("c.plot", "h2")})
    assert todo == [Abandoned("b.plot", "h1", "portable.b.plot")]


def test_the_forgotten_record_survives_garbage() -> None:
    assert parse_forgotten([["a.plot", "h1"], ["x"], "y", [1, 2], None]) == {("a.plot", "h1")}
    assert parse_forgotten({"not": "a list"}) == set()


def test_a_plot_counts_as_abandoned_only_while_its_last_attempt_failed(tmp_path: Path) -> None:
    with StateDB(tmp_path / "state.db") as db:
        def attempt(plot: str, harvester: str, ok: bool, at: float) -> None:
            db.record_transfer(TransferRecord(plot, harvester, f"portable.{plot}", 0, at, 1.0, ok, None if ok else "cut", 0))

        attempt("sent.plot", "h1", False, 100.0)
        attempt("sent.plot", "h2", True, 200.0)
        attempt("cut.plot", "h1", False, 150.0)
        attempt("cut.plot", "h2", False, 250.0)
        attempt("old.plot", "h1", False, 10.0)
        assert db.abandoned_attempts(50.0) == [("cut.plot", "h2", "portable.cut.plot")]


def test_present_names_sees_every_file_and_refuses_to_guess_when_a_directory_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.plot.tmp").write_bytes(b"")
    assert present_names([str(tmp_path / "a"), str(tmp_path / "missing")]) == {"x.plot.tmp"}
    (tmp_path / "file").write_bytes(b"")
    assert present_names([str(tmp_path / "file")]) is None  # not a directory: nothing is forgotten


def test_the_forget_command_quotes_every_word() -> None:
    name = "plot-k32-2026-12-04-10-00-" + "a" * 64 + ".plot"
    assert build_forget_command("/opt/my dir/receive_plot.sh", name) == f"'/opt/my dir/receive_plot.sh' --forget {name}"
