from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path

import pytest

from utilities.harvester_export import DriveSummary, HarvesterSnapshot, ReceiveSetDrive
from utilities.metrics import (
    escape_label_value,
    format_value,
    harvester_metrics,
    plotter_metrics,
    write_textfile,
)
from utilities.state import TransferRecord
from utilities.transfer.claims import ReceiveInFlight

PLOT = 108_837_056_512

# -- a strict reading of the text exposition format 0.0.4 --------------------------------------------
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_VALUE = r'(?:[^"\\\n]|\\[\\"n])*'
_LABEL = rf'[a-zA-Z_][a-zA-Z0-9_]*="{_LABEL_VALUE}"'
_VALUE = r"(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)"
SAMPLE = re.compile(rf"^(?P<name>{_NAME})(?:\{{(?P<labels>{_LABEL}(?:,{_LABEL})*)\}})? (?P<value>{_VALUE})$")
HELP = re.compile(rf"^# HELP (?P<name>{_NAME}) (?P<text>(?:[^\\\n]|\\[\\n])*)$")
TYPE = re.compile(rf"^# TYPE (?P<name>{_NAME}) (?P<type>counter|gauge)$")
LABEL_PAIR = re.compile(rf'([a-zA-Z_][a-zA-Z0-9_]*)="({_LABEL_VALUE})"')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], value)


def parse(text: str) -> dict[str, dict]:
    """Validate strictly and return {family: {"type", "help", "samples": [(labels, value)]}}."""
    assert text.endswith("\n") and not text.endswith("\n\n")
    families: dict[str, dict] = {}
    current: str | None = None
    for line in text[:-1].split("\n"):
        if m := HELP.match(line):
            name = m["name"]
            assert name not in families, f"HELP for {name} twice"
            families[name] = {"help": m["text"], "type": None, "samples": []}
            current = name
        elif m := TYPE.match(line):
            assert m["name"] == current and families[current]["type"] is None, line
            families[current]["type"] = m["type"]
        elif m := SAMPLE.match(line):
            assert m["name"] == current, f"sample outside its family: {line!r}"
            assert families[current]["type"] is not None
            labels = {k: _unescape(v) for k, v in LABEL_PAIR.findall(m["labels"] or "")}
            assert len(labels) == len(LABEL_PAIR.findall(m["labels"] or "")), "duplicate label"
            float(m["value"].replace("Inf", "inf"))
            families[current]["samples"].append((labels, m["value"]))
        else:
            raise AssertionError(f"not exposition format: {line!r}")
    for name, fam in families.items():
        assert fam["type"] is not None and fam["help"], name
        assert fam["samples"], f"{name} has no samples"
        if fam["type"] == "counter":
            assert name.endswith("_total")
        keys = [tuple(sorted(labels.items())) for labels, _ in fam["samples"]]
        assert len(keys) == len(set(keys)), f"duplicate series in {name}"
    return families


def values(families: dict[str, dict], name: str) -> list[tuple[dict[str, str], str]]:
    return families[name]["samples"] if name in families else []


# -- fixtures ----------------------------------------------------------------------------------------
def drive(name: str, mountpoint: str, **kw: object) -> DriveSummary:
    base: dict[str, object] = dict(
        name=name,
        mountpoint=mountpoint,
        device=f"/dev/{name}",
        uuid=None,
        fstype="ext4",
        total_bytes=18_000_000_000_000,
        free_bytes=500_000_000_000,
        plots_og=100,
        plots_pool=50,
        plots_unknown=0,
        plots_last_24h=0,
        free_slots=4,
        offline=False,
        mounted=True,
    )
    base.update(kw)
    return DriveSummary(**base)  # type: ignore[arg-type]


def small_snapshot() -> HarvesterSnapshot:
    return HarvesterSnapshot(
        hostname="harv1",
        generated_at=1700000000.5,
        plot_size_bytes=PLOT,
        drives=(
            drive(
                "d1",
                "/mnt/d1",
                plots_og=10,
                plots_pool=2,
                plots_unknown=1,
                free_slots=3,
                plots_last_24h=2,
                total_bytes=1000,
                free_bytes=400,
            ),
        ),
        receive_drive="d1",
        chia_plots=12,
    )


# -- harvester ---------------------------------------------------------------------------------------
def test_small_snapshot_exact_lines() -> None:
    text = harvester_metrics(small_snapshot(), {"d1": 41})
    lab = 'harvester="harv1",drive="d1",mountpoint="/mnt/d1"'
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples == [
        f'chia_pm_drive_plots{{{lab},kind="og"}} 10',
        f'chia_pm_drive_plots{{{lab},kind="pool"}} 2',
        f'chia_pm_drive_plots{{{lab},kind="unknown"}} 1',
        f"chia_pm_drive_free_slots{{{lab}}} 3",
        f"chia_pm_drive_free_bytes{{{lab}}} 400",
        f"chia_pm_drive_total_bytes{{{lab}}} 1000",
        f"chia_pm_drive_offline{{{lab}}} 0",
        f"chia_pm_drive_temperature_celsius{{{lab}}} 41",
        'chia_pm_receive_drive{harvester="harv1",drive="d1"} 1',
        f"chia_pm_receive_set_drive{{{lab}}} 1",
        f"chia_pm_drive_receives_in_flight{{{lab}}} 0",
        f"chia_pm_drive_receive_bytes_per_second{{{lab}}} 0.0",
        'chia_pm_plots{harvester="harv1",kind="og"} 10',
        'chia_pm_plots{harvester="harv1",kind="pool"} 2',
        'chia_pm_plots{harvester="harv1",kind="unknown"} 1',
        'chia_pm_slots_until_full{harvester="harv1"} 3',
        'chia_pm_max_plots{harvester="harv1"} 16',
        'chia_pm_plots_last_24h{harvester="harv1"} 2',
        'chia_pm_days_to_fill{harvester="harv1"} 1.5',
        'chia_pm_chia_farmed_plots{harvester="harv1"} 12',
        'chia_pm_export_timestamp_seconds{harvester="harv1"} 1700000000.5',
    ]
    assert "# HELP chia_pm_drive_plots " in text
    assert "# TYPE chia_pm_drive_plots gauge\n" in text
    assert text.index("# TYPE chia_pm_drive_plots gauge") < text.index("chia_pm_drive_plots{")
    parse(text)


def test_escaping_of_awkward_mountpoint() -> None:
    mp = '/mnt/we"ird\\path\nx'
    snap = HarvesterSnapshot(hostname='h"1', generated_at=1.0, plot_size_bytes=PLOT, drives=(drive("d9", mp),))
    text = harvester_metrics(snap)
    assert 'mountpoint="/mnt/we\\"ird\\\\path\\nx"' in text
    assert 'harvester="h\\"1"' in text
    families = parse(text)  # the raw newline never breaks a line
    (labels, _), *_ = values(families, "chia_pm_drive_free_slots")
    assert labels == {"harvester": 'h"1', "drive": "d9", "mountpoint": mp}
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_omission_rules() -> None:
    snap = HarvesterSnapshot(
        hostname="h",
        generated_at=10.0,
        plot_size_bytes=PLOT,
        drives=(drive("a", "/mnt/a"), drive("b", "/mnt/b", offline=True), drive("c", "/mnt/c")),
        receive_drive=None,
        chia_plots=None,
    )
    assert snap.days_to_fill is None
    families = parse(harvester_metrics(snap, {"a": None, "b": 38}))
    for absent in ("chia_pm_days_to_fill", "chia_pm_chia_farmed_plots", "chia_pm_receive_drive"):
        assert absent not in families
    temps = values(families, "chia_pm_drive_temperature_celsius")
    assert [(lbl["drive"], v) for lbl, v in temps] == [("b", "38")]
    offline = {lbl["drive"]: v for lbl, v in values(families, "chia_pm_drive_offline")}
    assert offline == {"a": "0", "b": "1", "c": "0"}
    # offline drive's slots do not count toward slots until full
    assert values(families, "chia_pm_slots_until_full") == [({"harvester": "h"}, "8")]
    # no temperatures at all: the family is left out, HELP/TYPE included
    assert "chia_pm_drive_temperature_celsius" not in harvester_metrics(snap)


def test_every_family_has_help_and_type_once_and_order_is_deterministic() -> None:
    drives = tuple(drive(f"d{i}", f"/mnt/d{i}", plots_last_24h=i) for i in (3, 1, 2))
    snap = HarvesterSnapshot(
        hostname="h", generated_at=5.0, plot_size_bytes=PLOT, drives=drives, receive_drive="d2", chia_plots=450
    )
    text = harvester_metrics(snap, {"d1": 30, "d2": 31, "d3": None})
    families = parse(text)
    assert text.count("# HELP ") == text.count("# TYPE ") == len(families)
    assert [lbl["drive"] for lbl, _ in values(families, "chia_pm_drive_free_slots")] == ["d1", "d2", "d3"]
    reversed_snap = HarvesterSnapshot(
        hostname="h", generated_at=5.0, plot_size_bytes=PLOT, drives=drives[::-1], receive_drive="d2", chia_plots=450
    )
    assert harvester_metrics(reversed_snap, {"d2": 31, "d1": 30}) == text
    assert values(families, "chia_pm_plots") == [
        ({"harvester": "h", "kind": "og"}, "300"),
        ({"harvester": "h", "kind": "pool"}, "150"),
        ({"harvester": "h", "kind": "unknown"}, "0"),
    ]
    assert all(f["type"] == "gauge" for f in families.values())


def test_receive_set_and_receives_in_flight_per_drive() -> None:
    drives = tuple(drive(f"d{i}", f"/mnt/d{i}") for i in range(4))
    receiving = (
        ReceiveInFlight("d2", "a.plot", 400, 100, started_at=10.0, updated_at=14.0, pid=7),  # 25 B/s
        ReceiveInFlight("d2", "b.plot", 400, 300, started_at=10.0, updated_at=12.0, pid=8),  # 150 B/s
        ReceiveInFlight("d1", "", 0, 0, started_at=11.0, updated_at=11.0, pid=9),  # a session between plots
    )
    snap = HarvesterSnapshot(
        hostname="h", generated_at=20.0, plot_size_bytes=PLOT, drives=drives, receive_drive="d2",
        receive_set=(ReceiveSetDrive("d2"), ReceiveSetDrive("d0", replace=True), ReceiveSetDrive("d1")),
        receives_available=1, receiving=receiving,
    )
    families = parse(harvester_metrics(snap))
    by_drive = {name: {lbl["drive"]: v for lbl, v in values(families, name)} for name in (
        "chia_pm_receive_set_drive", "chia_pm_drive_receives_in_flight", "chia_pm_drive_receive_bytes_per_second")}
    assert by_drive["chia_pm_receive_set_drive"] == {"d0": "2", "d1": "3", "d2": "1"}  # d3 is not in the set
    assert by_drive["chia_pm_drive_receives_in_flight"] == {"d0": "0", "d1": "1", "d2": "2", "d3": "0"}
    assert by_drive["chia_pm_drive_receive_bytes_per_second"] == {"d0": "0.0", "d1": "0.0", "d2": "175.0", "d3": "0.0"}
    assert values(families, "chia_pm_receives_available") == [({"harvester": "h"}, "1")]
    assert values(families, "chia_pm_receive_drive") == [({"harvester": "h", "drive": "d2"}, "1")]
    # An older harvester's snapshot says nothing about receives available: no sample, no guess.
    assert "chia_pm_receives_available" not in parse(harvester_metrics(small_snapshot()))


def test_empty_harvester_still_valid() -> None:
    snap = HarvesterSnapshot(hostname="h", generated_at=0.0, plot_size_bytes=PLOT, drives=())
    families = parse(harvester_metrics(snap))
    assert "chia_pm_drive_plots" not in families
    assert values(families, "chia_pm_max_plots") == [({"harvester": "h"}, "0")]


def test_format_value() -> None:
    assert format_value(True) == "1"
    assert format_value(3) == "3"
    assert format_value(0.1) == "0.1"
    assert format_value(1e21) == "1e+21"
    assert format_value(float("nan")) == "NaN"
    assert format_value(float("-inf")) == "-Inf"
    assert format_value(12345678901234567890) == "12345678901234567890"
    for v in ("1e+21", "0.1", "NaN", "-Inf", "12345678901234567890"):
        assert re.fullmatch(_VALUE, v)


# -- plotter -----------------------------------------------------------------------------------------
def records() -> list[TransferRecord]:
    return [
        TransferRecord("p1.plot", "harv1", "/mnt/d1", 100_000_000, 1000.0, 10.0, True),
        TransferRecord("p2.plot", "harv1", "/mnt/d1", 200_000_000, 2000.0, 4.0, True),
        TransferRecord("p3.plot", "harv1", "/mnt/d2", 0, 3000.0, 1.0, False, "disk full"),
        TransferRecord("p4.plot", "harv2", None, 0, 1500.0, 2.0, False, "unreachable"),
        TransferRecord("p5.plot", "harv0", "/mnt/x", 300_000_000, 500.0, 0.0, True, None, 120_000_000),
    ]


def test_plotter_metrics() -> None:
    text = plotter_metrics("plot1", records(), now=4000.0)
    families = parse(text)
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    h0 = 'plotter="plot1",harvester="harv0"'
    h1 = 'plotter="plot1",harvester="harv1"'
    h2 = 'plotter="plot1",harvester="harv2"'
    assert samples == [
        f"chia_pm_plots_sent_total{{{h0}}} 1",
        f"chia_pm_plots_sent_total{{{h1}}} 2",
        f"chia_pm_plots_sent_total{{{h2}}} 0",
        f"chia_pm_bytes_sent_total{{{h0}}} 300000000",
        f"chia_pm_bytes_sent_total{{{h1}}} 300000000",
        f"chia_pm_bytes_sent_total{{{h2}}} 0",
        f"chia_pm_transfer_failures_total{{{h0}}} 0",
        f"chia_pm_transfer_failures_total{{{h1}}} 1",
        f"chia_pm_transfer_failures_total{{{h2}}} 1",
        f"chia_pm_bytes_saved_by_resume_total{{{h0}}} 120000000",
        f"chia_pm_bytes_saved_by_resume_total{{{h1}}} 0",
        f"chia_pm_bytes_saved_by_resume_total{{{h2}}} 0",
        f"chia_pm_last_transfer_mb_per_second{{{h0}}} 0.0",
        f"chia_pm_last_transfer_mb_per_second{{{h1}}} 50.0",
        f"chia_pm_last_transfer_timestamp_seconds{{{h0}}} 500.0",
        f"chia_pm_last_transfer_timestamp_seconds{{{h1}}} 2004.0",
        'chia_pm_export_timestamp_seconds{plotter="plot1"} 4000.0',
    ]
    assert families["chia_pm_plots_sent_total"]["type"] == "counter"
    assert families["chia_pm_last_transfer_mb_per_second"]["type"] == "gauge"
    # record order does not matter
    assert plotter_metrics("plot1", records()[::-1], now=4000.0) == text


def test_plotter_without_ok_transfers_omits_last_transfer() -> None:
    families = parse(plotter_metrics("p", [records()[3]], now=1.0))
    assert "chia_pm_last_transfer_mb_per_second" not in families
    assert "chia_pm_last_transfer_timestamp_seconds" not in families
    assert values(families, "chia_pm_transfer_failures_total") == [({"plotter": "p", "harvester": "harv2"}, "1")]
    empty = parse(plotter_metrics("p", [], now=2.5))
    assert list(empty) == ["chia_pm_export_timestamp_seconds"]


def test_prometheus_client_parses_output_if_available() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    snap = HarvesterSnapshot(
        hostname="h",
        generated_at=1.0,
        plot_size_bytes=PLOT,
        drives=(drive("d1", '/mnt/q"\\\n'),),
        receive_drive="d1",
        chia_plots=3,
    )
    for text in (harvester_metrics(snap, {"d1": 40}), plotter_metrics("p", records(), 9.0)):
        names = {fam.name for fam in parser.text_string_to_metric_families(text)}
        assert names


# -- write_textfile ----------------------------------------------------------------------------------
def test_write_textfile_creates_directory_and_replaces(tmp_path: Path) -> None:
    directory = tmp_path / "textfile" / "collector"
    old_umask = os.umask(0o077)
    try:
        path = write_textfile(directory, "chia_pm", "a 1\n")
    finally:
        os.umask(old_umask)
    assert path == directory / "chia_pm.prom"
    assert path.read_text() == "a 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert write_textfile(directory, "chia_pm.prom", "a 2\n") == path
    assert path.read_text() == "a 2\n"
    assert sorted(p.name for p in directory.iterdir()) == ["chia_pm.prom"]


def test_write_textfile_rejects_bad_names(tmp_path: Path) -> None:
    for bad in ("", "../x", "a/b", ".hidden", ".prom"):
        with pytest.raises(ValueError):
            write_textfile(tmp_path, bad, "x 1\n")


def test_write_textfile_cleans_up_on_failure(tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    (tmp_path / "m.prom").mkdir(parents=True)  # rename onto a directory fails
    with pytest.raises(OSError):
        write_textfile(tmp_path, "m", "x 1\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.prom"]


def test_write_textfile_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    versions = [f"# v{i}\n" + "x" * 200_000 + f"\nend {i}\n" for i in range(40)]
    target = tmp_path / "farm.prom"
    write_textfile(tmp_path, "farm", versions[0])
    stop = threading.Event()
    seen: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(target.read_text())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for text in versions[1:]:
            write_textfile(tmp_path, "farm", text)
    finally:
        stop.set()
        thread.join()
    allowed = set(versions)
    assert seen and all(text in allowed for text in seen)
    assert target.read_text() == versions[-1]
    assert [p.name for p in tmp_path.iterdir()] == ["farm.prom"]
