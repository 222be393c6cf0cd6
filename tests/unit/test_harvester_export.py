"""The export's receive-set fields: the round trip, an older harvester's export, garbage refused,
and the count of receives a harvester can take now."""

from __future__ import annotations

import copy
import json

import pytest

from utilities.harvester_export import (
    RECEIVE_PROTOCOL,
    DriveSummary,
    HarvesterSnapshot,
    ReceiveSetDrive,
    parse_export,
    receives_available,
)
from utilities.transfer.claims import ReceiveInFlight

PLOT = 100 * 2**30


def _drive(name: str, free_slots: int = 4, og: int = 0, **kw: object) -> DriveSummary:
    base: dict[str, object] = dict(
        name=name, mountpoint=f"/mnt/{name}", device=f"/dev/{name}", uuid=None, fstype="xfs",
        total_bytes=10 * PLOT, free_bytes=free_slots * PLOT, plots_og=og, plots_pool=0, plots_unknown=0,
        plots_last_24h=0, free_slots=free_slots, offline=False, mounted=True,
    )
    base.update(kw)
    return DriveSummary(**base)  # type: ignore[arg-type]


def _receive(drive: str, plot: str = "plot-k32-x.plot", received: int = 10) -> ReceiveInFlight:
    return ReceiveInFlight(drive, plot, size=100, received=received, started_at=1.0, updated_at=2.0, pid=42)


def _snapshot() -> HarvesterSnapshot:
    return HarvesterSnapshot(
        "chianas01", 1_700_000_000.0, PLOT, (_drive("drive0"), _drive("drive1", 0, og=3), _drive("drive2")),
        receive_drive="drive0", receive_dir="/mnt/drive0",
        receive_set=(ReceiveSetDrive("drive0"), ReceiveSetDrive("drive1", True), ReceiveSetDrive("drive2")),
        receives_available=2, receiving=(_receive("drive2"),),
    )


def _raw(snapshot: HarvesterSnapshot) -> dict:
    return json.loads(json.dumps(snapshot.to_dict()))


def test_round_trip_keeps_the_receive_fields() -> None:
    snap = _snapshot()
    data = _raw(snap)
    assert data["receive_set"] == [{"name": "drive0", "replace": False}, {"name": "drive1", "replace": True},
                                   {"name": "drive2", "replace": False}]
    assert (data["receives_available"], data["receive_protocol"]) == (2, RECEIVE_PROTOCOL) == (2, 3)
    assert data["receiving"] == [{"drive": "drive2", "plot": "plot-k32-x.plot", "size": 100, "received": 10,
                                  "started_at": 1.0, "updated_at": 2.0, "pid": 42}]
    back = parse_export(json.dumps(data).encode(), "chianas01")
    assert (back.receive_set, back.receives_available, back.receiving, back.receive_protocol) == (
        snap.receive_set, 2, snap.receiving, 3)


def test_an_older_export_parses_as_one_receive_drive_and_protocol_1() -> None:
    data = _raw(_snapshot())
    for key in ("receive_set", "receives_available", "receiving", "receive_protocol"):
        del data[key]
    data["extra"] = {"receive_replaces_old_plots": True}
    old = HarvesterSnapshot.from_dict(data)
    assert old.receive_set == (ReceiveSetDrive("drive0", True),)
    assert (old.receives_available, old.receiving, old.receive_protocol) == (None, (), 1)
    data["receive_drive"] = None
    assert HarvesterSnapshot.from_dict(data).receive_set == ()


def test_a_snapshot_made_with_a_receive_drive_only_has_it_as_its_set() -> None:
    snap = HarvesterSnapshot("h", 1.0, PLOT, (_drive("drive0"),), receive_drive="drive0")
    assert snap.receive_set == (ReceiveSetDrive("drive0"),)
    assert HarvesterSnapshot("h", 1.0, PLOT, ()).receive_set == ()


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("receive_set", {"name": "drive0"}, "receive_set is not a list"),
        ("receive_set", [{"replace": True}], "needs a drive name"),
        ("receive_set", [{"name": "drive0", "replace": "yes"}], "replace is not true or false"),
        ("receive_set", ["drive0"], "entry is not an object"),
        ("receives_available", -1, "receives_available is not a whole number"),
        ("receives_available", True, "receives_available is not a whole number"),
        ("receives_available", "3", "receives_available is not a whole number"),
        ("receiving", {"drive": "drive0"}, "receiving is not a list"),
        ("receiving", [{"plot": "x"}], "needs a drive name"),
        ("receiving", [{"drive": "drive0", "received": -5}], "received is not a whole number"),
        ("receive_protocol", 0, "receive_protocol is not a positive whole number"),
        ("receive_protocol", "2", "receive_protocol is not a positive whole number"),
        ("receive_drive", 7, "receive_drive is not a drive name"),
    ],
)
def test_garbage_in_the_receive_fields_is_refused_naming_it(key: str, value: object, problem: str) -> None:
    data = copy.deepcopy(_raw(_snapshot()))
    data[key] = value
    with pytest.raises(ValueError, match=problem) as info:
        HarvesterSnapshot.from_dict(data)
    assert "\n" not in str(info.value)


def test_receives_available_counts_free_receive_slots_of_set_drives_with_room() -> None:
    drives = (_drive("d0"), _drive("d1", 0, og=2), _drive("d2", 0), _drive("d3"), _drive("d4", offline=True),
              _drive("d5", mounted=False))
    entries = [ReceiveSetDrive("d0"), ReceiveSetDrive("d1", True), ReceiveSetDrive("d3")]
    assert receives_available(entries, drives, 1, []) == 3
    # A claim takes its drive's slot; a second receive slot per drive is one more each.
    assert receives_available(entries, drives, 1, [_receive("d3"), _receive("d9")]) == 2
    assert receives_available(entries, drives, 2, [_receive("d3"), _receive("d3"), _receive("d0", plot="")]) == 3
    # Full and not replacing: nothing; full but may replace one of its OG plots: a slot.
    assert receives_available([ReceiveSetDrive("d2"), ReceiveSetDrive("d1")], drives, 1, []) == 0
    assert receives_available([ReceiveSetDrive("d2", True), ReceiveSetDrive("d1", True)], drives, 1, []) == 1
    # Drives gone, offline or unmounted since the set was chosen take nothing.
    gone = [ReceiveSetDrive("d4"), ReceiveSetDrive("d5"), ReceiveSetDrive("d7")]
    assert receives_available(gone, drives, 1, []) == 0
    assert receives_available([], drives, 4, []) == 0
