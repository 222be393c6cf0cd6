from __future__ import annotations

import json
import time

import pytest

from utilities.harvester_export import DriveSummary, HarvesterSnapshot, parse_export
from utilities.plotter.harvester_choice import choose_harvester, room_for_plots, usable_reason


def _snap(name: str, free_slots: list[int], og: int = 0, replace: bool = False, receive: str | None = "d0",
          age: float = 0) -> HarvesterSnapshot:
    drives = tuple(
        DriveSummary(f"d{i}", f"/mnt/d{i}", f"/dev/sd{i}", None, "xfs", 10, 5, og, 0, 0, 0, slots, False, True)
        for i, slots in enumerate(free_slots)
    )
    return HarvesterSnapshot(name, time.time() - age, 100, drives, receive_drive=receive,
                             extra={"replace_non_pool_plots": replace})


def test_most_room_wins_and_in_flight_counts() -> None:
    snaps = {"a": _snap("a", [3, 2]), "b": _snap("b", [4])}
    assert choose_harvester(snaps, "fill").name == "a"
    assert choose_harvester(snaps, "fill", in_flight={"a": 2}).name == "b"
    assert choose_harvester(snaps, "fill", in_flight={"a": 5, "b": 4}) is None
    assert choose_harvester(snaps, "fill", only="b").name == "b"


def test_replace_priority_counts_old_plots_only_where_replacing() -> None:
    snaps = {"a": _snap("a", [1], og=50, replace=True), "b": _snap("b", [10], og=50)}
    assert room_for_plots(snaps["a"], "replace") == 51
    assert room_for_plots(snaps["b"], "replace") == 10
    assert choose_harvester(snaps, "replace").name == "a"
    assert choose_harvester(snaps, "fill").name == "b"


def test_stale_or_full_exports_are_not_usable() -> None:
    now = time.time()
    assert usable_reason(_snap("a", [1]), now, 600) is None
    assert "minutes old" in usable_reason(_snap("a", [1], age=3600), now, 600)
    assert "no drive" in usable_reason(_snap("a", [0], receive=None), now, 600)


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b"\xff\xfe", "not JSON"),
        (b"<html>502</html>", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"schema": 99}', "schema"),
        (b'{"schema": 1, "hostname": "a"}', "malformed"),
        (b'{"schema": 1, "hostname": "a", "generated_at": 1, "plot_size_bytes": 1, "drives": [{"x": 1}]}', "malformed"),
    ],
)
def test_garbage_exports_are_refused_with_a_reason(raw: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_export(raw, "a")


def test_export_roundtrip_and_wrong_host() -> None:
    snap = _snap("chianas01", [2, 0])
    raw = json.dumps(snap.to_dict()).encode()
    assert parse_export(raw, "chianas01").slots_until_full == 2
    with pytest.raises(ValueError, match="expected 'chianas02'"):
        parse_export(raw, "chianas02")
