"""Write a chia ``debug.log`` the way chia does, and rotate it the ways it gets rotated.

Lines go through the standard ``logging.Formatter`` with chia's own format string
(``chia/util/chia_logging.py``): ``%(asctime)s.%(msecs)03d [version] service
%(name)-{33 - len(service)}s: %(levelname)-8s %(message)s``, date format
``%Y-%m-%dT%H:%M:%S``. The version field exists from chia 2.4.4 on and disappears again with
``log_backcompat: true``; ``version=None`` writes the 1.x shape.

The messages are built like chia builds them (f-strings copied in shape from chia's source,
with the multi-line pprint of 1.x Streamables and the Rust ``Debug`` form of 1.6+ coin
states), one helper per shape, named after the chia versions that wrote it.

Rotation like chia's ConcurrentRotatingFileHandler (size based, ``log_maxfilesrotation``
backups, ``log_use_gzip``): the live file is renamed to ``<log>.rotate.<n>``, gzipped if asked,
the backups shift up by one (the oldest falls off), and the temporary file becomes ``.1``
(``.1.gz``). ``copytruncate`` is logrotate's: copy the live file to ``.1``, then truncate it
in place (same inode).
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

CLOVER = "\U0001F340 \ufe0f"  # chia writes "🍀 ️Farmed": clover, space, VARIATION SELECTOR-16


@dataclass(frozen=True)
class ChiaVersion:
    """Which shapes a chia version writes."""

    name: str
    version_field: str | None  # the prefix's version field (2.4.4+), None before or with log_backcompat
    coin_format: str  # "adding" (1.1-1.3), "record" (1.3-1.5.0), "dict_state" (1.5.1), "rust_state" (1.6.1+)
    harvester_format: str  # "old" (up to 2.5.6) or "new" (2.5.7+)
    block_details: bool  # ", SP: n, validation time: ..., cost: ..." after the hash (1.2+)


CHIA_1_1 = ChiaVersion("1.1.7", None, "adding", "old", False)
CHIA_1_4 = ChiaVersion("1.4.0", None, "record", "old", True)
CHIA_1_5_1 = ChiaVersion("1.5.1", None, "dict_state", "old", True)
CHIA_1_8 = ChiaVersion("1.8.2", None, "rust_state", "old", True)
CHIA_2_4_4 = ChiaVersion("2.4.4", "2.4.4", "rust_state", "old", True)
CHIA_2_5_7 = ChiaVersion("2.5.7", "2.5.7", "rust_state", "new", True)
CHIA_2_5_7_BACKCOMPAT = ChiaVersion("2.5.7 (log_backcompat)", None, "rust_state", "new", True)
ALL_VERSIONS = (CHIA_1_1, CHIA_1_4, CHIA_1_5_1, CHIA_1_8, CHIA_2_4_4, CHIA_2_5_7, CHIA_2_5_7_BACKCOMPAT)

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR}


def _hex(seed: int, length: int = 64) -> str:
    return (f"{seed:08x}" * (length // 8 + 1))[:length]


class ChiaLogWriter:
    """Appends chia log records to ``path``; the clock advances 250 ms per record."""

    def __init__(
        self,
        path: Path,
        version: ChiaVersion = CHIA_2_5_7,
        start: datetime = datetime(2025, 11, 21, 7, 0, 0),
        max_bytes: int | None = None,
        backups: int = 7,
        use_gzip: bool = False,
    ) -> None:
        self.path = path
        self.version = version
        self.clock = start
        self.max_bytes = max_bytes
        self.backups = backups
        self.use_gzip = use_gzip
        self._rotations = 0
        path.parent.mkdir(parents=True, exist_ok=True)

    # -- formatting exactly like chia ------------------------------------------------------------
    def format(self, service: str, logger: str, level: str, message: str, at: datetime | None = None) -> str:
        version = f"{self.version.version_field} " if self.version.version_field else ""
        fmt = f"%(asctime)s.%(msecs)03d {version}{service} %(name)-{33 - len(service)}s: %(levelname)-8s %(message)s"
        formatter = logging.Formatter(fmt, datefmt="%Y-%m-%dT%H:%M:%S")
        moment = at or self.clock
        record = logging.makeLogRecord({"name": logger, "levelname": level, "levelno": _LEVELS[level], "msg": message})
        record.created = moment.timestamp()
        record.msecs = moment.microsecond // 1000
        return formatter.format(record)

    def write(self, service: str, logger: str, level: str, message: str) -> str:
        """Append one record (rotating first if the file reached max_bytes, like chia)."""
        if self.max_bytes is not None and self.path.exists() and self.path.stat().st_size >= self.max_bytes:
            self.rotate()
        line = self.format(service, logger, level, message)
        self.clock += timedelta(milliseconds=250)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        return line

    def write_raw(self, data: bytes) -> None:
        """Bytes as they are: garbage, NULs after a crash, half a line."""
        with open(self.path, "ab") as handle:
            handle.write(data)

    # -- rotation -------------------------------------------------------------------------------
    def rotate(self) -> None:
        """ConcurrentRotatingFileHandler.doRollover, step by step."""
        self._rotations += 1
        temp = self.path.with_name(f"{self.path.name}.rotate.{self._rotations:08d}")
        os.rename(self.path, temp)
        ext = ""
        if self.use_gzip:
            with open(temp, "rb") as source, gzip.open(f"{temp}.gz", "wb") as target:
                shutil.copyfileobj(source, target)
            os.remove(temp)
            ext = ".gz"
        for index in range(self.backups - 1, 0, -1):
            source = self.path.with_name(f"{self.path.name}.{index}{ext}")
            target = self.path.with_name(f"{self.path.name}.{index + 1}{ext}")
            if source.exists():
                os.replace(source, target)
        os.replace(f"{temp}{ext}", self.path.with_name(f"{self.path.name}.1{ext}"))

    def rotate_started(self) -> Path:
        """Only the first step of a rotation (the live file renamed away): what a run may see."""
        self._rotations += 1
        temp = self.path.with_name(f"{self.path.name}.rotate.{self._rotations:08d}")
        os.rename(self.path, temp)
        return temp

    def rotate_finished(self, temp: Path) -> None:
        for index in range(self.backups - 1, 0, -1):
            source = self.path.with_name(f"{self.path.name}.{index}")
            if source.exists():
                os.replace(source, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(temp, self.path.with_name(f"{self.path.name}.1"))

    def copytruncate(self) -> None:
        """logrotate's copytruncate: the live file keeps its inode and starts over."""
        for index in range(self.backups - 1, 0, -1):
            source = self.path.with_name(f"{self.path.name}.{index}")
            if source.exists():
                os.replace(source, self.path.with_name(f"{self.path.name}.{index + 1}"))
        shutil.copyfile(self.path, self.path.with_name(f"{self.path.name}.1"))
        with open(self.path, "r+b") as handle:
            handle.truncate(0)

    # -- chia's messages ------------------------------------------------------------------------
    def coin(self, seed: int, amount_mojos: int, height: int = 4_242_424, spent_height: int | None = None) -> str:
        """The wallet line(s) of a coin arriving, in this version's shape. Returns the coin id."""
        coin_id, parent, puzzle = _hex(seed), _hex(seed + 1), _hex(seed + 2)
        shape = self.version.coin_format
        if shape == "adding":
            # wallet_state_manager.coin_added: f"Adding coin: {coin} at {height}", Coin pprint-ed.
            message = (
                f"Adding coin: {{'amount': {amount_mojos},\n 'parent_coin_info': '0x{parent}',\n"
                f" 'puzzle_hash': '0x{puzzle}'}} at {height}"
            )
            self.write("wallet", "chia.wallet.wallet_state_manager", "INFO", message)
        elif shape == "record":
            message = (
                f"Adding record to state manager coin: {{'amount': {amount_mojos},\n 'parent_coin_info': '0x{parent}',\n"
                f" 'puzzle_hash': '0x{puzzle}'}} at {height}"
            )
            self.write("wallet", "chia.wallet.wallet_state_manager", "INFO", message)
        elif shape == "dict_state":
            spent = "None" if spent_height is None else str(spent_height)
            message = (
                f"request coin: {coin_id}{{'coin': {{'amount': {amount_mojos},\n"
                f"          'parent_coin_info': '0x{parent}',\n"
                f"          'puzzle_hash': '0x{puzzle}'}},\n"
                f" 'created_height': {height},\n 'spent_height': {spent}}}"
            )
            self.write("wallet", "chia.wallet.wallet_node", "INFO", message)
        else:
            spent = "None" if spent_height is None else f"Some({spent_height})"
            message = (
                f"request coin: {coin_id}CoinState {{ coin: Coin {{ parent_coin_info: {parent}, puzzle_hash: {puzzle}, "
                f"amount: {amount_mojos} }}, spent_height: {spent}, created_height: Some({height}) }}"
            )
            self.write("wallet", "chia.wallet.wallet_node", "INFO", message)
        return coin_id

    def block(self, seed: int, sp: int = 12) -> str:
        block_hash = _hex(seed + 7)
        message = f"{CLOVER}Farmed unfinished_block {block_hash}"
        if self.version.block_details:
            message += f", SP: {sp}, validation time: 0.06956624984741211, cost: 159432740"
        self.write("full_node", "chia.full_node.full_node", "INFO", message)
        return block_hash

    def not_our_block(self, seed: int) -> None:
        self.write(
            "full_node", "chia.full_node.full_node", "INFO",
            f"Added unfinished_block {_hex(seed + 9)}, not farmed by us, SP: 5 farmer response time: 8.4955, "
            f"Pool pk xch189rpsfgve6d7rcm4aamgur5munpzfaaca89jcfdjczfjhnvjzz8qw5k3ru, validation time: 0.1838, "
            f"cost: 560859505, percent full: 5.099%",
        )

    def harvester(self, eligible: int, proofs: int, seconds: float, total: int, seed: int = 1) -> None:
        challenge = _hex(seed + 11)[:10]
        if self.version.harvester_format == "new":
            message = (
                f"challenge_hash: {challenge} ...{eligible} plots were eligible for farming challenge"
                f"Found {proofs} V1 proofs and 0 V2 qualities. Time: {seconds:.5f} s. Total {total} plots"
            )
        else:
            message = (
                f"{eligible} plots were eligible for farming {challenge}... Found {proofs} proofs. "
                f"Time: {seconds:.5f} s. Total {total} plots"
            )
        self.write("harvester", "chia.harvester.harvester", "INFO", message)

    def pool_error(self, kind: str = "pooling") -> None:
        if kind == "pooling":
            message = f"Error in pooling: {(2, 'The partial is too late. Partial timestamp: 1638475393')}"
        elif kind == "sending":
            message = "Error sending partial to https://pool.example.net, 502"
        else:
            message = "Error connecting to pool: Cannot connect to host pool.example.net:443 ssl:default"
        self.write("farmer", "chia.farmer.farmer", "ERROR", message)

    def service_error(self, message: str = "Exception in harvester loop: [Errno 5] Input/output error") -> None:
        self.write("harvester", "chia.plotting.manager", "ERROR", message + "\nTraceback (most recent call last):\n"
                   '  File "chia/plotting/manager.py", line 280, in _refresh_task\nOSError: [Errno 5] Input/output error')

    def noise(self, count: int = 1) -> None:
        """Ordinary INFO lines nobody alerts on."""
        for index in range(count):
            self.write(
                "full_node", "chia.full_node.full_node", "INFO",
                f"\u23f2\ufe0f  Finished signage point {index % 64}/64: CC: {_hex(index)} RC: {_hex(index + 3)} ",
            )
