"""One log record is one line: control characters in what a record carries are escaped."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from system_logging import EscapeControlCharacters, escape_controls, escape_on_every_handler

Logged = tuple[logging.Logger, list[io.StringIO], list[logging.Handler]]


@pytest.fixture
def logged() -> Iterator[Logged]:
    """A child logger propagating to a parent with two handlers, as the role scripts' loggers
    propagate to root's file and console handlers."""
    parent = logging.getLogger("escaping_test")
    parent.propagate = False
    parent.setLevel(logging.DEBUG)
    streams = [io.StringIO(), io.StringIO()]
    handlers: list[logging.Handler] = []
    for stream in streams:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        parent.addHandler(handler)
        handlers.append(handler)
    escape_on_every_handler(parent)
    escape_on_every_handler(parent)  # twice: still one filter per handler
    yield parent.getChild("child"), streams, handlers
    for handler in handlers:
        parent.removeHandler(handler)


def test_escape_controls_writes_them_as_python_literals() -> None:
    assert escape_controls("a\nb\rc\td\x1b[2Ke\x00f\x7fg\x85h\u2028i") == "a\\nb\\rc\\td\\x1b[2Ke\\x00f\\x7fg\\x85h\\u2028i"
    assert escape_controls("plain é ü 中 \\n stays") == "plain é ü 中 \\n stays"


def test_an_argument_cannot_add_a_line_on_any_handler(logged: Logged) -> None:
    log, streams, handlers = logged
    log.info("not sending %s (%d bytes)", "/plots/x.plot\nERROR forged", 5)
    for stream in streams:
        assert stream.getvalue() == "INFO not sending /plots/x.plot\\nERROR forged (5 bytes)\n"
    assert all(len(h.filters) == 1 for h in handlers)


def test_a_message_built_by_the_caller_is_escaped_too(logged: Logged) -> None:
    log, streams, _ = logged
    name = "x\r\nERROR forged"
    log.warning(f"got {name} at 100%")  # no args: the % must not be taken for a format
    assert streams[0].getvalue() == "WARNING got x\\r\\nERROR forged at 100%\n"


def test_a_traceback_keeps_its_own_lines(logged: Logged) -> None:
    log, streams, _ = logged
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed on %s", "a\nb")
    text = streams[0].getvalue()
    assert text.startswith("ERROR failed on a\\nb\nTraceback (most recent call last):\n")
    assert text.rstrip().endswith("ValueError: boom")


def test_the_filter_never_drops_a_record() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("ok",), None)
    assert EscapeControlCharacters().filter(record) and record.getMessage() == "ok"
