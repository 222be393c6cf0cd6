"""Parsing chia's log lines into farm events, for every chia version's shape, and garbage."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.support.chia_log_writer import (
    ALL_VERSIONS,
    CHIA_1_1,
    CHIA_1_5_1,
    CHIA_2_5_7,
    ChiaLogWriter,
    ChiaVersion,
)
from utilities.chia_log import HarvesterCheck
from utilities.farmer.events import (
    BlockFarmed,
    CoinReceived,
    PoolError,
    ServiceError,
    SlowPlotLookup,
    parse_event,
    parse_prefix,
)


def _events(path: Path) -> list[object]:
    return [event for line in path.read_text(encoding="utf-8").splitlines() if (event := parse_event(line))]


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=lambda v: v.name)
def test_every_version_gives_the_same_events(tmp_path: Path, version: ChiaVersion) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log", version)
    coin_id = writer.coin(1, 1_750_000_000_000, height=5_000_000)
    writer.noise(3)
    block = writer.block(2, sp=33)
    writer.not_our_block(3)
    writer.harvester(eligible=4, proofs=1, seconds=0.61, total=1200)
    writer.pool_error("sending")
    writer.service_error()

    events = _events(tmp_path / "debug.log")
    kinds = [type(event).__name__ for event in events]
    assert kinds == ["CoinReceived", "BlockFarmed", "HarvesterCheck", "PoolError", "ServiceError"]
    coin, farmed, check, pool, error = events
    assert isinstance(coin, CoinReceived) and coin.amount_mojos == 1_750_000_000_000
    assert coin.timestamp == datetime(2025, 11, 21, 7, 0, 0)
    if version.coin_format in ("dict_state", "rust_state"):
        assert coin.coin_id == coin_id and coin.key == coin_id
    else:
        assert coin.coin_id is None and coin.key == "2025-11-21T07:00:00|1750000000000"
    if version.coin_format == "rust_state":
        assert coin.height == 5_000_000
    assert isinstance(farmed, BlockFarmed) and farmed.block_hash == block
    assert farmed.signage_point == (33 if version.block_details else None)
    assert isinstance(check, HarvesterCheck) and (check.eligible, check.proofs, check.total_plots) == (4, 1, 1200)
    assert check.chia_version == version.version_field
    assert isinstance(pool, PoolError) and pool.message == "Error sending partial to https://pool.example.net, 502"
    assert isinstance(error, ServiceError) and error.service == "harvester" and error.logger == "chia.plotting.manager"


def test_a_spent_coin_state_is_not_a_coin_received(tmp_path: Path) -> None:
    writer = ChiaLogWriter(tmp_path / "debug.log", CHIA_2_5_7)
    writer.coin(1, 10, spent_height=5_000_001)
    assert _events(tmp_path / "debug.log") == []


def test_real_chia_2_5_line_with_version_field() -> None:
    # The shape of a chia 2.5.0 wallet line as reported in chia-blockchain issue 19232.
    line = (
        "2025-02-04T14:13:00.401 2.5.0 wallet chia.wallet.wallet_node    : INFO     request coin: "
        + "ab" * 32 + "CoinState { coin: Coin { parent_coin_info: " + "e0" * 32 + ", puzzle_hash: " + "5f" * 32
        + ", amount: 1000 }, spent_height: None, created_height: Some(2030282) }"
    )
    assert parse_event(line) == CoinReceived(datetime(2025, 2, 4, 14, 13, 0, 401000), 1000, "ab" * 32, 2030282)


def test_pool_error_shapes() -> None:
    prefix = "2021-12-02T20:03:13.395 farmer chia.farmer.farmer         : ERROR    "
    pooling = parse_event(prefix + "Error in pooling: (2, 'The partial is too late.')")
    connect = parse_event(prefix + "Error connecting to pool: Cannot connect to host pool.example.net:443")
    assert isinstance(pooling, PoolError) and pooling.message.startswith("Error in pooling: (2,")
    assert isinstance(connect, PoolError)
    # An INFO line about the pool is no error.
    assert parse_event(prefix.replace("ERROR   ", "INFO    ") + "Pool response: {'new_difficulty': 10}") is None


def test_chia_s_own_slow_lookup_warning_names_the_plot() -> None:
    line = (
        "2021-06-01T10:00:00.123 harvester chia.harvester.harvester: WARNING  Looking up qualities on "
        "/mnt/enclosure0/front/column0/drive3/plot-k32-2021-05-30-11-22-abc.plot took: 12.51. This should be "
        "below 5 seconds to minimize risk of losing rewards."
    )
    event = parse_event(line)
    assert isinstance(event, SlowPlotLookup)
    assert event.plot.endswith("plot-k32-2021-05-30-11-22-abc.plot") and event.seconds == pytest.approx(12.51)


def test_harvester_2_5_7_singular_words_and_timezone() -> None:
    line = (
        "2025-12-09T12:02:58.100+02:00 2.5.7 harvester chia.harvester.harvester: INFO     challenge_hash: 486db1449e "
        "...80 plots were eligible for farming challengeFound 1 V1 proof and 1 V2 quality. Time: 0.52000 s. "
        "Total 18321 plots"
    )
    event = parse_event(line)
    assert isinstance(event, HarvesterCheck)
    assert (event.eligible, event.proofs, event.v2_qualities, event.total_plots) == (80, 1, 1, 18321)
    assert event.timestamp == datetime(2025, 12, 9, 12, 2, 58, 100000, tzinfo=timezone(timedelta(hours=2)))


def test_prefix_fields() -> None:
    head = parse_prefix("2024-10-31T07:46:53.981 2.4.4 full_node full_node_server        : WARNING  Banning peer")
    assert head is not None
    assert (head.version, head.service, head.logger, head.level, head.message) == (
        "2.4.4", "full_node", "full_node_server", "WARNING", "Banning peer"
    )


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\x00\x00\x00\x00\x00\x00",
        "Traceback (most recent call last):",
        " 'parent_coin_info': '0x3333',",
        "2021-04-24T14:16:11.298 wallet chia.wallet.wallet_state_manager: INFO     Adding coin: {'amount': ",
        "2021-04-24T14:16:11.298 wallet chia.wallet.wallet_node    : INFO     request coin: zz{'coin': {'amount': 5,",
        "2021-04-24T14:16:11.298 wallet chia.wallet.wallet_node    : INFO     request coin: " + "a" * 64 + "CoinState { coin",
        "2021-13-45T99:99:99.999 farmer chia.farmer.farmer: ERROR    Error in pooling: (1, 'x')",
        "2021-05-26T09:37:13.872 full_node chia.full_node.full_node: INFO     🍀 ️Farmed unfinished_block 6b2a92",
        "2021-05-26T09:37:13.872 full_node chia.full_node.full_node: INFO     Added unfinished_block " + "a" * 64 + ", not farmed",
        "2021-05-26T09:37:13.872 harvester chia.harvester.harvester: INFO     2 plots were eligible for farming 1a2b",
        "\ufffd\ufffd ERROR coin Farmed unfinished_block eligible for farming",
        "2021-05-26T09:37:13.872 coin",
        "9" * 10_000,
    ],
)
def test_garbage_and_fragments_are_skipped(line: str) -> None:
    assert parse_event(line) is None


def test_version_1_1_multi_line_coin_continuation_lines_are_not_events(tmp_path: Path) -> None:
    for version in (CHIA_1_1, CHIA_1_5_1):
        path = tmp_path / f"{version.name}.log"
        writer = ChiaLogWriter(path, version)
        writer.coin(1, 5)
        lines = path.read_text().splitlines()
        assert len(lines) > 1  # chia pprint-ed the coin over several lines
        assert [parse_event(line) is not None for line in lines] == [True] + [False] * (len(lines) - 1)
