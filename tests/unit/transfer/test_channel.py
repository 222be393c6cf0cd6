"""The control channel on a local process: lines with timeouts, EOF, stderr for reasons."""

from __future__ import annotations

import io

import pytest

from utilities.transfer.channel import LocalExec, ReplyReader, one_line

LONG = 30.0  # only ends a hung test


def test_local_receiver_lines_eof_status_and_stderr() -> None:
    run = LocalExec()
    process = run("echo 'READY 45000'; read verify; echo \"got $verify\"; echo 'it  broke\n badly' >&2; exit 3")
    try:
        reader = ReplyReader(process.stdout).start()
        assert reader.next_line(LONG) == "READY 45000"
        with pytest.raises(TimeoutError):
            reader.next_line(0.05)  # the receiver waits for us
        process.stdin.write(b"VERIFY 1 x\n")
        process.stdin.flush()
        assert reader.next_line(LONG) == "got VERIFY 1 x"
        assert reader.next_line(LONG) is None
        assert reader.next_line(LONG) is None  # and stays ended
        assert process.wait(LONG) == 3
        assert process.stderr_text() == "it broke badly"
    finally:
        process.kill()
    assert run.started == [process]


def test_reader_takes_bytes_or_text_and_strips_line_ends() -> None:
    reader = ReplyReader(io.BytesIO(b"OK ab\r\n\xff\n")).start()
    assert reader.next_line(LONG) == "OK ab"
    assert reader.next_line(LONG) == "\ufffd"
    assert reader.next_line(LONG) is None


def test_one_line_keeps_the_tail() -> None:
    assert one_line(b"a\n  b\tc") == "a b c"
    assert one_line(b"x" * 10 + b"tail", limit=4) == "tail"
