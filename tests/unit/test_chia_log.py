"""Parsing chia's harvester farming line, in every shape chia has written it."""

from __future__ import annotations

from datetime import datetime

import pytest

from utilities.chia_log import HarvesterCheck, last_farming_status, parse_harvester_line

# chia 1.x: "%(asctime)s.%(msecs)03d harvester %(name)-24s: %(levelname)-8s %(message)s"
OLD = (
    "2021-07-10T14:00:01.123 harvester chia.harvester.harvester: INFO     "
    "2 plots were eligible for farming 1a2b3c4d5e... Found 0 proofs. Time: 0.35142 s. "
    "Total 2943 plots"
)
# chia 2.4.4 added the version field in front of the service name.
OLD_WITH_VERSION = (
    "2024-10-31T07:46:53.981 2.4.4 harvester chia.harvester.harvester: INFO     "
    "13 plots were eligible for farming c014e359c1... Found 1 proofs. Time: 1.72367 s. "
    "Total 3135 plots"
)
# chia 2.5.7+: new message, pieces joined without spaces exactly as chia logs them.
NEW_WITH_VERSION = (
    "2025-11-21T07:36:34.206 2.5.7 harvester chia.harvester.harvester: INFO     "
    "challenge_hash: 4a7d3c97e3 ...2 plots were eligible for farming challengeFound 0 V1 "
    "proofs and 0 V2 qualities. Time: 0.07446 s. Total 295 plots"
)
# log_backcompat: true removes the version field again.
NEW_BACKCOMPAT = (
    "2025-12-09T12:02:10.467 harvester chia.harvester.harvester: INFO     "
    "challenge_hash: 37fe940f6b ...72 plots were eligible for farming challengeFound 3 V1 "
    "proofs and 1 V2 qualities. Time: 0.53012 s. Total 18321 plots"
)


def test_old_format():
    assert parse_harvester_line(OLD) == HarvesterCheck(
        timestamp=datetime(2021, 7, 10, 14, 0, 1, 123000),
        eligible=2,
        proofs=0,
        seconds=0.35142,
        total_plots=2943,
        total_size_bytes=None,
        v2_qualities=None,
        chia_version=None,
        challenge="1a2b3c4d5e",
    )


def test_old_format_with_version_field():
    check = parse_harvester_line(OLD_WITH_VERSION)
    assert check is not None
    assert (check.eligible, check.proofs, check.total_plots) == (13, 1, 3135)
    assert check.seconds == pytest.approx(1.72367)
    assert check.chia_version == "2.4.4"
    assert check.timestamp == datetime(2024, 10, 31, 7, 46, 53, 981000)


def test_new_format_with_version_field():
    check = parse_harvester_line(NEW_WITH_VERSION)
    assert check == HarvesterCheck(
        timestamp=datetime(2025, 11, 21, 7, 36, 34, 206000),
        eligible=2,
        proofs=0,
        seconds=0.07446,
        total_plots=295,
        total_size_bytes=None,
        v2_qualities=0,
        chia_version="2.5.7",
        challenge="4a7d3c97e3",
    )


def test_new_format_without_version_field():
    check = parse_harvester_line(NEW_BACKCOMPAT)
    assert check is not None
    assert (check.eligible, check.proofs, check.v2_qualities, check.total_plots) == (72, 3, 1, 18321)
    assert check.chia_version is None


@pytest.mark.parametrize(
    "line",
    [
        # pre-1.0.4 logger name, and a pre-release version string
        OLD.replace("chia.harvester.harvester", "src.harvester.harvester"),
        NEW_WITH_VERSION.replace(" 2.5.7 ", " 2.5.8rc1 "),
        OLD + "\n",
        "  " + OLD + "  ",
    ],
)
def test_variants_chia_really_writes_are_accepted(line):
    assert parse_harvester_line(line) is not None


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage",
        "2021-07-10T14:00:01.123 harvester chia.harvester.harvester: INFO     "
        "Loaded a total of 2943 plots of size 291.1 TiB, in 3.2 seconds",
        # the farmer's own line about proofs is not the harvester's check
        "2021-07-10T14:00:01.123 farmer chia.farmer.farmer: INFO     "
        "2 plots were eligible for farming 1a2b3c4d5e... Found 0 proofs. Time: 0.35142 s. "
        "Total 2943 plots",
        OLD.replace("INFO", "DEBUG"),
        OLD[:-10],  # cut off, as the first line of a tail often is
        OLD[40:],  # no timestamp
        OLD.replace("2021-07-10", "2021-13-45"),  # impossible date
        OLD.replace("Total 2943", "Total many"),
        # a mixture of the two shapes is not something chia writes
        OLD.replace("1a2b3c4d5e... Found 0 proofs", "1a2b3c4d5e... Found 0 V1 proofs and 0 V2 qualities"),
        "\x00\xff" * 50,
    ],
)
def test_other_and_malformed_lines_give_none(line):
    assert parse_harvester_line(line) is None


def test_non_string_gives_none():
    assert parse_harvester_line(None) is None  # type: ignore[arg-type]
    assert parse_harvester_line(b"bytes") is None  # type: ignore[arg-type]


# ------------------------------------------------------------------ last_farming_status


def _line(minute: int, total: int) -> str:
    return (
        f"2025-06-01T10:{minute:02d}:00.000 2.5.7 harvester chia.harvester.harvester: INFO     "
        f"challenge_hash: 0123456789 ...1 plots were eligible for farming challengeFound 0 V1 "
        f"proofs and 0 V2 qualities. Time: 0.10000 s. Total {total} plots\n"
    )


NOISE = "2025-06-01T10:00:00.500 2.5.7 full_node chia.full_node.full_node: INFO     " + "x" * 200 + "\n"


def test_missing_log_gives_none(tmp_path):
    assert last_farming_status(tmp_path / "debug.log") is None


def test_newest_line_wins_in_a_file_larger_than_the_tail_window(tmp_path):
    log = tmp_path / "debug.log"
    with log.open("w") as handle:
        handle.write(_line(1, 100))
        handle.write(NOISE * 3000)  # ~0.7 MB, well past the window
        handle.write(_line(2, 200))
        handle.write(NOISE * 50)
        handle.write(_line(3, 300))
        handle.write(NOISE * 50)
    assert log.stat().st_size > 600_000
    check = last_farming_status(log, max_tail_bytes=64 * 1024)
    assert check is not None
    assert check.total_plots == 300
    assert check.timestamp.minute == 3


def test_line_outside_the_tail_window_is_not_found(tmp_path):
    log = tmp_path / "debug.log"
    log.write_text(_line(1, 100) + NOISE * 1000)
    assert last_farming_status(log, max_tail_bytes=16 * 1024) is None
    assert last_farming_status(log).total_plots == 100


def test_line_cut_by_the_window_start_is_not_misread(tmp_path):
    log = tmp_path / "debug.log"
    full = _line(5, 4321)
    log.write_text(NOISE + full + NOISE)
    # Window begins inside the farming line's timestamp: the fragment must be ignored.
    window = len(NOISE) + len(full) - 20
    assert last_farming_status(log, max_tail_bytes=window) is None
    assert last_farming_status(log, max_tail_bytes=window + 40).total_plots == 4321


def test_window_starting_exactly_at_a_line_keeps_that_line(tmp_path):
    log = tmp_path / "debug.log"
    full = _line(6, 777)
    log.write_text(NOISE + full + NOISE)
    assert last_farming_status(log, max_tail_bytes=len(full) + len(NOISE)).total_plots == 777


def test_lines_longer_than_a_read_block_are_reassembled(tmp_path):
    log = tmp_path / "debug.log"
    huge_noise = "2025-06-01T10:00:00.500 wallet x: INFO " + "y" * 200_000 + "\n"
    log.write_text(_line(7, 55) + huge_noise)
    assert last_farming_status(log).total_plots == 55


def test_falls_back_to_rotated_log(tmp_path):
    log = tmp_path / "debug.log"
    log.write_text(NOISE * 10)  # freshly rotated: no farming line yet
    (tmp_path / "debug.log.1").write_text(_line(8, 111) + _line(9, 222) + NOISE)
    check = last_farming_status(str(log))
    assert check is not None
    assert check.total_plots == 222


def test_current_log_is_preferred_over_rotated_log(tmp_path):
    log = tmp_path / "debug.log"
    log.write_text(OLD + "\n")
    (tmp_path / "debug.log.1").write_text(_line(9, 222))
    assert last_farming_status(log).total_plots == 2943


def test_invalid_utf8_in_the_log_does_not_break_reading(tmp_path):
    log = tmp_path / "debug.log"
    log.write_bytes(_line(10, 12).encode() + b"\xff\xfe broken bytes\n")
    assert last_farming_status(log).total_plots == 12
