"""Plot ids in the export and duplicates across the farm: the compact encoding's round trip,
older and broken exports, duplicates on two drives / two harvesters, and -fr counting each plot once."""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from utilities.harvester.farm_report import build_view, farm_report_data, farm_report_text, farm_totals
from utilities.harvester.plot_ids import (
    PREFIX_BYTES,
    PlotCopy,
    encode_prefixes,
    find_duplicates,
    plot_ids_from_dict,
    plot_ids_to_dict,
    prefixes_of,
)
from utilities.harvester_export import DriveSummary, HarvesterSnapshot, parse_export

PLOT = 100 * 2**30


def _id() -> str:
    return secrets.token_hex(32)


def _drive(name: str, plots: int) -> DriveSummary:
    return DriveSummary(name=name, mountpoint=f"/mnt/{name}", device=f"/dev/{name}", uuid=None, fstype="xfs",
                        total_bytes=10 * PLOT, free_bytes=PLOT, plots_og=0, plots_pool=plots, plots_unknown=0,
                        plots_last_24h=0, free_slots=1, offline=False, mounted=True)


def _snap(host: str, drives: dict[str, list[str]] | None, counts: dict[str, int] | None = None) -> HarvesterSnapshot:
    names = counts or {n: len(ids) for n, ids in (drives or {}).items()}
    ids = None if drives is None else {n: encode_prefixes(i) for n, i in drives.items()}
    return HarvesterSnapshot(host, 1_700_000_000.0, PLOT, tuple(_drive(n, c) for n, c in names.items()), plot_ids=ids)


def _round_trip(snap: HarvesterSnapshot) -> HarvesterSnapshot:
    return parse_export(json.dumps(snap.to_dict()).encode(), snap.hostname)


def test_encoding_round_trips_sorted_prefixes_and_skips_unknown_ids() -> None:
    ids = [_id() for _ in range(50)]
    blob = encode_prefixes([*ids, None, "", "zz" * 32, "abcd"])
    assert len(blob) == 50 * PREFIX_BYTES
    assert prefixes_of(blob) == sorted(bytes.fromhex(i[:16]) for i in ids)
    back = plot_ids_from_dict(json.loads(json.dumps(plot_ids_to_dict({"drive0": blob, "drive1": b""}))))
    assert back == {"drive0": blob, "drive1": b""}


def test_the_field_costs_about_eleven_bytes_a_plot() -> None:
    blob = encode_prefixes(_id() for _ in range(30_000))
    size = len(json.dumps(plot_ids_to_dict({"drive0": blob})))
    assert 30_000 * 10 < size < 30_000 * 11 + 200  # base64 of 8 bytes: 10.7 characters


def test_export_round_trip_keeps_plot_ids_and_missing_means_unknown() -> None:
    snap = _snap("chianas01", {"drive0": [_id(), _id()], "drive1": []})
    assert _round_trip(snap).plot_ids == snap.plot_ids
    old = snap.to_dict()
    del old["plot_ids"]  # an export from before plot ids
    assert parse_export(json.dumps(old).encode(), "chianas01").plot_ids is None
    assert "plot_ids" not in _snap("chianas01", None).to_dict()


@pytest.mark.parametrize("garbage", [
    "AAAA", 42, [], {"prefix_bytes": 4, "encoding": "base64", "drives": {}},
    {"prefix_bytes": 8, "encoding": "hex", "drives": {}}, {"prefix_bytes": 8, "encoding": "base64", "drives": "x"},
])
def test_a_broken_field_is_ignored_and_the_export_still_parses(garbage: object) -> None:
    data = _snap("chianas01", {"drive0": [_id()]}).to_dict()
    data["plot_ids"] = garbage
    snap = parse_export(json.dumps(data).encode(), "chianas01")
    assert snap.plot_ids is None and snap.total_plots == 1


def test_a_broken_drive_entry_is_left_out_and_the_rest_stand() -> None:
    good = encode_prefixes([_id()])
    data = {"prefix_bytes": 8, "encoding": "base64", "drives": {
        "drive0": base64.b64encode(good).decode(), "drive1": "not base64!", "drive2": base64.b64encode(b"12345").decode(),
        "drive3": 7, "drive4": "\u00e9\u00e9\u00e9\u00e9"}}
    assert plot_ids_from_dict(data) == {"drive0": good}


def test_duplicates_on_two_harvesters_and_on_two_drives_and_twice_on_one_drive() -> None:
    a, b, c, d = _id(), _id(), _id(), _id()
    found = find_duplicates({
        "chianas01": {"drive0": encode_prefixes([a, b]), "drive1": encode_prefixes([b, d, d])},
        "chianas02": {"drive0": encode_prefixes([a, c])},
    })
    by_prefix = {dup.prefix: dup.copies for dup in found}
    assert by_prefix == {
        a[:16]: (PlotCopy("chianas01", "drive0"), PlotCopy("chianas02", "drive0")),
        b[:16]: (PlotCopy("chianas01", "drive0"), PlotCopy("chianas01", "drive1")),
        d[:16]: (PlotCopy("chianas01", "drive1"), PlotCopy("chianas01", "drive1")),
    }
    assert [dup.prefix for dup in found] == sorted(by_prefix)
    assert find_duplicates({"chianas01": {"drive0": encode_prefixes([a, b])}}) == []


def test_farm_totals_count_each_plot_once_and_say_how_many_copies_were_left_out() -> None:
    shared, own = _id(), [_id() for _ in range(3)]
    local = _snap("chianas01", {"drive0": [shared, own[0]]})
    remote = _snap("chianas02", {"drive0": [shared, own[1]], "drive1": [shared, own[2]]})
    view = build_view(local, {"chianas02": _round_trip(remote)})
    totals = farm_totals(view)
    assert (totals["plot_files"], totals["plots"], totals["duplicate_plots"], totals["duplicate_copies"]) == (6, 4, 1, 2)
    assert totals["duplicates_unchecked"] == []
    text = farm_report_text(view)
    line = next(x for x in text.splitlines() if x.startswith(shared[:16]))
    assert line == f"{shared[:16]}: chianas01:drive0, chianas02:drive0, chianas02:drive1"
    assert next(x for x in text.splitlines() if x.startswith("Total Number of Plots on Farm:")).split()[-1] == "4"
    data = json.loads(json.dumps(farm_report_data(view)))
    assert data["duplicates"] == [{"plot_id_prefix": shared[:16], "copies": [
        {"harvester": "chianas01", "drive": "drive0"}, {"harvester": "chianas02", "drive": "drive0"},
        {"harvester": "chianas02", "drive": "drive1"}]}]
    assert all("plot_ids" not in h for h in data["harvesters"].values())  # listed as duplicates instead


def test_an_older_harvester_is_counted_but_named_as_not_checked() -> None:
    shared = _id()
    view = build_view(_snap("chianas01", {"drive0": [shared]}), {"chianas02": _snap("chianas02", None, {"drive0": 1})})
    totals = farm_totals(view)
    assert (totals["plots"], totals["duplicate_copies"], totals["duplicates_unchecked"]) == (2, 0, ["chianas02"])
    assert "Not checked for duplicates (no plot ids in their export): chianas02" in farm_report_text(view)
