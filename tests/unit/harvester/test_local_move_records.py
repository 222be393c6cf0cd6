"""move_local_plots.py's records (local_move_records.py): the recorded reservation and its re-check (pure), held plots."""

from __future__ import annotations

from pathlib import Path

from utilities.harvester.drives import Mount
from utilities.harvester.local_move_records import LocalDrive, after_failure, parse_reservation, reservation_problem

DRIVE = LocalDrive("drive1", "/mnt/e0/drive1", "/dev/sdb", Path("/mnt/e0/drive1"), False, 1000.0)
MOUNTS = [Mount("/dev/sda1", "/", "ext4"), Mount("/dev/sdb", "/mnt/e0/drive1", "xfs")]


def test_parse_reservation() -> None:
    record = {"name": "drive1", "mountpoint": "/mnt/e0/drive1", "device": "/dev/sdb",
              "receive_dir": "/mnt/e0/drive1", "replace": False, "decided_at": 1000.0}
    assert parse_reservation(record) == DRIVE
    assert parse_reservation({"decided_at": 5.0}) is None  # no drive had room
    assert parse_reservation(None) is None
    assert parse_reservation({"name": "x", "receive_dir": "/x"}) is None  # malformed: no mountpoint


def test_reserved_drive_passes_when_mounted_and_online() -> None:
    assert reservation_problem(DRIVE, [], MOUNTS) is None


def test_offline_since_the_reservation() -> None:
    assert "taken offline" in (reservation_problem(DRIVE, ["drive1"], MOUNTS) or "")


def test_unmounted_drive_would_write_to_the_root_filesystem() -> None:
    problem = reservation_problem(DRIVE, [], MOUNTS[:1])
    assert problem == "the local plot drive drive1 is not mounted at /mnt/e0/drive1"


def test_another_disk_mounted_in_its_place() -> None:
    problem = reservation_problem(DRIVE, [], [MOUNTS[0], Mount("/dev/sdc", "/mnt/e0/drive1", "xfs")])
    assert problem == "/mnt/e0/drive1 now holds /dev/sdc, not the reserved /dev/sdb"


def test_failures_hold_the_plot_and_alert_once() -> None:
    state = (0, False)
    alerts = []
    for _ in range(5):
        failures, held, alert = after_failure(*state, threshold=3)
        state = (failures, held)
        alerts.append(alert)
    assert state == (5, True)
    assert alerts == [False, False, True, False, False]


def test_held_plots_are_recorded_and_cleared(tmp_path: Path) -> None:
    from utilities.harvester.local_move_records import SCHEMA, clear_errors, held_plots, record_failure
    from utilities.plot_finder import FinishedPlot
    from utilities.plots import PlotHeader
    from utilities.state import StateDB

    def plot(name: str) -> FinishedPlot:
        return FinishedPlot(Path("/out") / name, 1, 0.0, PlotHeader("v1", 32, "", 112, "pool", 0))

    a, b = plot("plot-a.plot"), plot("plot-b.plot")
    with StateDB(tmp_path / "state.sqlite3") as db:
        db.ensure_tables(SCHEMA)
        assert record_failure(db, a, "stalled", threshold=2) == (1, False)
        assert record_failure(db, a, "stalled again", threshold=2) == (2, True)
        assert record_failure(db, b, "io", threshold=1) == (1, True)
        assert {name: h.last_reason for name, h in held_plots(db).items()} == {"plot-a.plot": "stalled again",
                                                                                "plot-b.plot": "io"}
        assert clear_errors(db, "/out/plot-a.plot") == ["plot-a.plot"]
        assert list(held_plots(db)) == ["plot-b.plot"]
        assert clear_errors(db, "plot-a.plot") == []
        assert clear_errors(db, "all") == ["plot-b.plot"]
        assert held_plots(db) == {}
