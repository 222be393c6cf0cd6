"""Turn one line of chia's ``debug.log`` into a farm event, for every chia version we know.

Pure and total: ``parse_event(line)`` returns an event or ``None``; garbage, half-written lines,
continuation lines of a multi-line record and lines of versions we do not know are ``None``,
never an exception, because the log is written by another program and may hold anything.

The line prefix (``chia/util/chia_logging.py``) is ``%(asctime)s.%(msecs)03d [version]
service logger: LEVEL message``. The logger name is padded with spaces to a width that
depends on the service, the version field exists from chia 2.4.4 on (not with
``log_backcompat: true``), and some set-ups log an ISO timezone after the milliseconds; all of
that is optional here.

What each event comes from, as chia writes it:

* coins received (service ``wallet``): ``Adding coin: {'amount': N,`` from
  ``wallet_state_manager`` (chia 1.1 - 1.3, a pprint-ed dict continued on the next lines),
  ``Adding record to state manager coin: {'amount': N,`` (1.3 - 1.5.0), ``request coin:
  <coin id>{'coin': {'amount': N,`` from ``wallet_node`` (1.5.1), and ``request coin: <coin
  id>CoinState { coin: Coin { ..., amount: N }, spent_height: None, created_height: Some(H)
  }`` (1.6.1 and every 2.x). A ``CoinState`` with a ``spent_height`` is the wallet hearing
  about a spend, not a receipt, and is skipped (1.5.1 puts ``spent_height`` on a continuation
  line, so there a spend notice of a coin we never saw arrive counts as received). Change
  coins of the farmer's own payments look like any other coin arriving.
* blocks farmed (service ``full_node``): ``🍀 ️Farmed unfinished_block <hash>`` (the clover is
  followed by an invisible U+FE0F), from 1.2 on with ``, SP: n, validation time: ..., cost:
  ...`` after the hash. ``Added unfinished_block <hash>, not farmed`` is someone else's block.
* pool errors (service ``farmer``, level ERROR): ``Error in pooling: (code, 'message')``,
  ``Error sending partial to <pool url>, <http status>`` and ``Error connecting to pool: <e>``.
* harvester checks: see ``utilities/chia_log.py``; plus chia's own WARNING ``Looking up
  qualities on <plot> took: <s>. This should be below 5 seconds ...``, which names the plot
  and is written even at chia's default WARNING level.
* service errors: any other ERROR or CRITICAL line of any chia service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from utilities.chia_log import HarvesterCheck, parse_harvester_line

_PREFIX = re.compile(
    r"(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\s+"
    r"(?:(?P<version>\d[\w.+-]*)\s+)?"
    r"(?P<service>[A-Za-z_][\w-]*)\s+"
    r"(?P<logger>[^\s:][^:]*?)\s*:\s+"
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+"
    r"(?P<message>.*)"
)


@dataclass(frozen=True)
class LogLine:
    """The prefix fields of one chia log line, and its message."""

    timestamp: datetime
    version: str | None
    service: str
    logger: str
    level: str
    message: str


@dataclass(frozen=True)
class CoinReceived:
    timestamp: datetime
    amount_mojos: int
    coin_id: str | None = None
    height: int | None = None

    @property
    def key(self) -> str:
        """The coin's identity: its id where chia logs it, else when and how much (1.x)."""
        return self.coin_id or f"{self.timestamp.isoformat()}|{self.amount_mojos}"


@dataclass(frozen=True)
class BlockFarmed:
    timestamp: datetime
    block_hash: str
    signage_point: int | None = None

    @property
    def key(self) -> str:
        return self.block_hash


@dataclass(frozen=True)
class PoolError:
    timestamp: datetime
    message: str


@dataclass(frozen=True)
class SlowPlotLookup:
    """chia's own warning about one plot whose lookup took too long."""

    timestamp: datetime
    plot: str
    seconds: float


@dataclass(frozen=True)
class ServiceError:
    timestamp: datetime
    service: str
    logger: str
    level: str
    message: str


FarmEvent = CoinReceived | BlockFarmed | PoolError | SlowPlotLookup | ServiceError | HarvesterCheck


def parse_prefix(line: str) -> LogLine | None:
    """Split a log line into its prefix fields; ``None`` if it does not start like chia's."""
    if not line or not line[:1].isdigit():
        return None
    match = _PREFIX.match(line.rstrip("\r\n"))
    if match is None:
        return None
    try:
        timestamp = datetime.fromisoformat(match["ts"].replace("Z", "+00:00"))
    except ValueError:
        return None
    return LogLine(timestamp, match["version"], match["service"], match["logger"], match["level"], match["message"])


_OLD_COIN = re.compile(r"^(?:Adding coin|Adding record to state manager coin): \{'amount': (?P<amount>\d+)[,}]")
_DICT_STATE = re.compile(r"^request coin: (?P<id>[0-9a-f]{64})\{'coin': \{'amount': (?P<amount>\d+)[,}]")
_RUST_STATE = re.compile(
    r"^request coin: (?P<id>[0-9a-f]{64})CoinState \{ coin: Coin \{ parent_coin_info: [0-9a-f]{64}, "
    r"puzzle_hash: [0-9a-f]{64}, amount: (?P<amount>\d+) \}, spent_height: (?P<spent>None|Some\(\d+\)), "
    r"created_height: (?:None|Some\((?P<height>\d+)\))"
)
_OLD_HEIGHT = re.compile(r"\} at (\d+)")
_BLOCK = re.compile(r"Farmed unfinished_block (?:0x)?(?P<hash>[0-9a-f]{64})(?:, SP: (?P<sp>\d+))?")
_POOL_ERRORS = ("Error in pooling", "Error sending partial to", "Error connecting to pool")
_INTERESTING = ("coin", "Farmed unfinished_block", "eligible for farming", "Looking up qualities", "ERROR", "CRITICAL")
_SLOW_PLOT = re.compile(r"^Looking up qualities on (?P<plot>.+?) took: (?P<seconds>\d+(?:\.\d+)?)")


def parse_event(line: str) -> FarmEvent | None:
    """The farm event on one log line, or ``None`` (see the module docstring for the formats)."""
    if not isinstance(line, str) or not any(word in line for word in _INTERESTING):
        return None  # most lines: a few substring tests instead of a regex (bench/)
    head = parse_prefix(line)
    if head is None:
        return None
    try:
        return _classify(head, line)
    except (ValueError, OverflowError):
        return None


def _classify(head: LogLine, line: str) -> FarmEvent | None:
    message, service, level = head.message, head.service, head.level
    if service == "wallet" and level == "INFO":
        return _coin(head)
    if service == "full_node" and level == "INFO" and "Farmed unfinished_block" in message:
        match = _BLOCK.search(message)
        if match is None:
            return None
        sp = int(match["sp"]) if match["sp"] is not None else None
        return BlockFarmed(head.timestamp, match["hash"], sp)
    if service == "harvester":
        if level == "INFO" and "plots were eligible for farming" in message:
            return parse_harvester_line(line)
        if level == "WARNING" and message.startswith("Looking up qualities on"):
            match = _SLOW_PLOT.match(message)
            return SlowPlotLookup(head.timestamp, match["plot"], float(match["seconds"])) if match else None
    if level in ("ERROR", "CRITICAL"):
        if service == "farmer" and message.startswith(_POOL_ERRORS):
            return PoolError(head.timestamp, message.strip())
        return ServiceError(head.timestamp, service, head.logger, level, message.strip())
    return None


def _coin(head: LogLine) -> CoinReceived | None:
    message = head.message
    if message.startswith("request coin: "):
        match = _RUST_STATE.match(message)
        if match is not None:
            if match["spent"] != "None":
                return None  # the wallet hearing about a spend, not a coin arriving
            height = int(match["height"]) if match["height"] is not None else None
            return CoinReceived(head.timestamp, int(match["amount"]), match["id"], height)
        match = _DICT_STATE.match(message)
        if match is not None:
            return CoinReceived(head.timestamp, int(match["amount"]), match["id"])
        return None
    if message.startswith("Adding"):
        match = _OLD_COIN.match(message)
        if match is None:
            return None
        height_match = _OLD_HEIGHT.search(message)
        height = int(height_match.group(1)) if height_match else None
        return CoinReceived(head.timestamp, int(match["amount"]), None, height)
    return None


def candidate_lines(lines: list[str]) -> list[str]:
    """The lines that may hold an event, in order; every other line cannot.

    A cron run parses megabytes at a time and nearly every line is of no interest: one C-speed
    ``str.find`` per keyword over the joined text replaces a Python-level test per line
    (bench/bench_log_follow.py).
    """
    text = "\n".join(lines)
    spans: set[tuple[int, int]] = set()
    for word in _INTERESTING:
        position = text.find(word)
        while position >= 0:
            start = text.rfind("\n", 0, position) + 1
            end = text.find("\n", position)
            end = len(text) if end < 0 else end
            spans.add((start, end))
            position = text.find(word, end)
    return [text[start:end] for start, end in sorted(spans)]


def is_eligibility_line(line: str) -> bool:
    """Cheap test for ``--farm-log eligible`` and the silence check."""
    return "plots were eligible for farming" in line
