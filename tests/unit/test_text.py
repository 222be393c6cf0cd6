"""The report formatters (utilities/text.py): the exact text reports and e-mails show."""

from __future__ import annotations

import datetime as dt

import pytest

from utilities.text import (
    LEADER_WIDTH,
    REPORT_WIDTH,
    banner,
    binary_size,
    format_size,
    format_value,
    health_text,
    labelize,
    leader,
    report_line,
    temperature_text,
)


def test_banner_frames_the_title_in_rules() -> None:
    top, title, bottom = banner("chianas01 Plot Report")
    assert top == bottom == "#" * REPORT_WIDTH
    assert title == "################## chianas01 Plot Report ###################"
    assert [len(line) for line in banner("x", 80)] == [80, 80, 80]


def test_report_line_right_aligns_the_value() -> None:
    line = report_line("Total Number of Plots on chianas01:", 4321)
    assert line == "Total Number of Plots on chianas01:                     4321"
    assert len(line) == REPORT_WIDTH
    assert report_line("Current Plot Storage Mountpoint:", None).endswith(" n/a")
    # A value longer than the room left still gets one space, never runs into the label.
    assert report_line("Label:", "v" * 70) == "Label: " + "v" * 70


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "n/a"),
        ("", "n/a"),
        (float("nan"), "n/a"),
        ([], "n/a"),
        (True, "yes"),
        (False, "no"),
        (0, "0"),
        (12.5, "12.50"),
        (1234567.891, "1,234,567.89"),
        (dt.datetime(2024, 5, 1, 12, 0, 7), "2024-05-01 12:00:07"),
        (dt.date(2024, 5, 1), "2024-05-01"),
        (["sdb", None, 2.0], "sdb, n/a, 2.00"),
        ("41°C", "41°C"),
    ],
)
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


def test_undefined_template_variables_read_n_a() -> None:
    import jinja2

    assert format_value(jinja2.ChainableUndefined()) == "n/a"
    assert leader("Serial number", jinja2.ChainableUndefined()) == "Serial number" + "." * 27 + "n/a"


def test_leader_dots_up_to_the_value_column() -> None:
    assert leader("Drive size", "10.9T") == "Drive size" + "." * (LEADER_WIDTH - 10) + "10.9T"
    assert leader("x" * 50, 1) == "x" * 50 + "...1"  # at least three dots
    assert leader("Temperature", 38, "°C").endswith("...38°C")
    assert leader("Temperature", "41°C", "°C").endswith("...41°C")  # preformatted: no second unit
    assert leader("Temperature", None, "°C").endswith("...n/a")
    assert leader("Farm size", 494.8, " TiB").endswith("...494.80 TiB")
    assert leader("Replace", True, " x").endswith("...yes")  # booleans are not numbers here


def test_labelize() -> None:
    assert labelize("free_slots") == "Free slots"
    assert labelize("amount_xch") == "Amount xch"
    assert labelize("") == ""


@pytest.mark.parametrize(
    ("num_bytes", "short", "binary"),
    [
        (0, "0B", "0 B"),
        (1023, "1023B", "1023 B"),
        (1536, "1.5K", "1.5 KiB"),
        (2**30, "1.0G", "1.0 GiB"),
        (12 * 2**40 - 2**39, "11.5T", "11.5 TiB"),
        (3 * 2**50, "3.0P", "3.0 PiB"),
        (5 * 2**60, "5120.0P", "5120.0 PiB"),
    ],
)
def test_sizes(num_bytes: int, short: str, binary: str) -> None:
    assert format_size(num_bytes) == short
    assert binary_size(num_bytes) == binary


def test_temperature_and_health() -> None:
    assert temperature_text("active", 41) == "41°C"
    assert temperature_text("active", None) == "n/a"
    assert temperature_text("standby", None) == "standby"
    assert temperature_text("unavailable", 41) == "n/a"
    assert health_text("active", "PASSED") == "PASSED"
    assert health_text("active", None) == "n/a"
    assert health_text("standby", None) == "standby"
    assert health_text("unavailable", "PASSED") == "n/a"
