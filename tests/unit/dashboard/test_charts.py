"""Server-side SVG charts: valid SVG, every label escaped, missing days are gaps."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from utilities.dashboard.charts import bar_chart, line_chart, nice_ceiling

SVG = "{http://www.w3.org/2000/svg}"


def test_axis_tops_are_round() -> None:
    assert [nice_ceiling(v) for v in (0, 0.3, 1, 7, 12, 99, 101, 480)] == [1.0, 0.5, 1.0, 10.0, 20.0, 100.0, 200.0, 500.0]


def test_labels_are_escaped_and_the_svg_parses() -> None:
    svg = bar_chart("<b>title</b>", [("<script>alert(1)</script>", 3.0), ("b&c", 1.0)], unit="\"q")
    root = ET.fromstring(svg)  # well-formed: nothing raw got in
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "<b>title</b>" in texts and "<script>alert(1)</script>" in texts
    assert len(list(root.iter(f"{SVG}rect"))) == 2


def test_a_day_without_data_is_a_gap() -> None:
    svg = line_chart("MB/s", [("a", 10.0), ("b", 20.0), ("c", None), ("d", 5.0), ("e", 6.0)])
    root = ET.fromstring(svg)
    assert len(list(root.iter(f"{SVG}circle"))) == 4
    assert len(list(root.iter(f"{SVG}polyline"))) == 2  # broken at the missing day
    bars = ET.fromstring(bar_chart("plots", [("a", 0.0), ("b", None), ("c", 2.0)]))
    assert len(list(bars.iter(f"{SVG}rect"))) == 1


def test_no_data_says_so() -> None:
    assert "no data yet" in bar_chart("plots", []) and "no data yet" in line_chart("MB/s", [("a", None)])
