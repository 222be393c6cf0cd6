"""coin_monitor.py end to end: real chia log lines of several versions, rotated (plain and
gzip), truncated (copytruncate), with garbage in between, read by real processes one after
another (and one killed mid-run); mail goes to a real SMTP server on loopback.

Every coin and every block must be reported exactly once.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chia_log_writer import (
    CHIA_1_1,
    CHIA_1_5_1,
    CHIA_1_8,
    CHIA_2_4_4,
    CHIA_2_5_7,
    ChiaLogWriter,
)
from tests.support.smtp_server import ReceivedMail, SMTPTestServer, smtp_server
from tests.support.waiting import CHANNEL_TIMEOUT, DEADLINE
from utilities.config import validate_config
from utilities.farmer.monitor import run_monitor
from utilities.notify import Notifier
from utilities.state import StateDB

REPO = Path(__file__).resolve().parents[3]
MONITOR_EVENTS = ["coin_received", "block_farmed", "pool_error", "slow_lookup", "plot_count_dropped",
                  "harvester_silent", "chia_health"]
XCH = 10**12


@pytest.fixture
def smtp() -> Iterator[SMTPTestServer]:
    with smtp_server() as server:
        yield server


class Farm:
    """A farmer's files: our config, chia's config and chia's log directory."""

    def __init__(self, root: Path, smtp_port: int, chia_log_level: str | None = "INFO", **farmer: Any) -> None:
        self.root = root
        self.log = root / "chia" / "log" / "debug.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.chia_config = root / "chia" / "config" / "config.yaml"
        self.chia_config.parent.mkdir(parents=True, exist_ok=True)
        if chia_log_level is not None:
            # chia's layout: one anchored logging block that every service refers to.
            self.chia_config.write_text(
                f"logging: &id001\n  log_filename: log/debug.log\n  log_level: {chia_log_level}\n  log_stdout: false\n"
                "farmer:\n  logging: *id001\nharvester:\n  logging: *id001\nwallet:\n  logging: *id001\n"
            )
        self.state_dir = root / "state"
        self.data = {
            "hostname": "farmer1",
            "state_dir": str(self.state_dir),
            "notifications": {
                "email": {"enabled": True, "smtp_host": "127.0.0.1", "smtp_port": smtp_port,
                          "from_address": "farm@farm.test", "to": ["farmer@farm.test"], "timeout_seconds": CHANNEL_TIMEOUT},
                "events": {event: ["email"] for event in MONITOR_EVENTS},
            },
            "farmer": {"chia_log": str(self.log), "chia_config": str(self.chia_config), "start_at": "beginning",
                       **farmer},
        }
        self.config = root / "plot_manager.yaml"
        self.write_config()

    def write_config(self) -> None:
        self.config.write_text(yaml.safe_dump(self.data))
        self.config.chmod(0o600)

    def settings(self):  # noqa: ANN201
        return validate_config(self.data)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REPO / "coin_monitor.py"), "--config", str(self.config), *args],
            capture_output=True, text=True, timeout=DEADLINE,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(REPO / "coin_monitor.py"), "--config", str(self.config), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )


def _text(mail: ReceivedMail) -> str:
    part = mail.message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def _coin_amounts(mails: list[ReceivedMail]) -> list[str]:
    return sorted(str(m.message["Subject"]).split("received ")[1].split(" XCH")[0]
                  for m in mails if "received" in str(m.message["Subject"]))


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr
    return proc


def test_every_coin_and_block_exactly_once_across_versions_rotation_truncation_and_garbage(
    tmp_path: Path, smtp: SMTPTestServer
) -> None:
    farm = Farm(tmp_path, smtp.port, min_coin_xch="0.0001")
    writer = ChiaLogWriter(farm.log, CHIA_1_1)
    expected_coins: list[str] = []
    expected_blocks: list[str] = []

    def coin(seed: int, amount: str, **kwargs: Any) -> None:
        writer.coin(seed, int(Decimal(amount) * XCH), **kwargs)
        expected_coins.append(amount)

    # chia 1.1: the pprint-ed "Adding coin" lines.
    coin(1, "1.75")
    coin(2, "0.25")
    expected_blocks.append(writer.block(3))
    writer.not_our_block(4)
    writer.noise(20)
    _ok(farm.run())
    assert len(smtp.wait_for(3)) == 3
    _ok(farm.run())  # nothing new: nothing sent

    # Upgraded to 1.5.1, then the log rotates, then 1.8.
    writer.version = CHIA_1_5_1
    coin(10, "0.5")
    writer.rotate()
    writer.version = CHIA_1_8
    coin(11, "0.125")
    expected_blocks.append(writer.block(12))
    _ok(farm.run())

    # Garbage, half a line of garbage, invalid UTF-8; then chia 2.4.4; then copytruncate.
    writer.write_raw(b"\x00" * 512 + b"\n\xff\xfe garbage \x80 Farmed unfinished_block zz\n2025-11-21T07:")
    writer.write_raw(b"\n")
    writer.version = CHIA_2_4_4
    coin(20, "2")
    writer.copytruncate()
    coin(21, "0.0625")
    writer.coin(22, 1)  # one mojo of dust: below min_coin_xch, neither sent nor counted
    _ok(farm.run())

    # chia 2.5.7 gzipping its backups; two rotations between runs.
    writer.version = CHIA_2_5_7
    writer.use_gzip = True
    coin(30, "0.03125")
    expected_blocks.append(writer.block(31))
    writer.rotate()
    coin(32, "1.5")
    writer.rotate()
    coin(33, "0.75")
    # A coin line caught half-written by the run ...
    line = writer.format("wallet", "chia.wallet.wallet_node", "INFO",
                         "request coin: " + "3a" * 32 + "CoinState { coin: Coin { parent_coin_info: " + "3b" * 32
                         + ", puzzle_hash: " + "3c" * 32 + ", amount: 4000000000000 }, spent_height: None, "
                         "created_height: Some(6000000) }")
    writer.write_raw(line[:70].encode())
    _ok(farm.run())
    writer.write_raw(line[70:].encode() + b"\n")  # ... and finished after it
    expected_coins.append("4")
    # The wallet hears again of coins it has (resync) and of a spend: nothing new.
    writer.coin(32, int(Decimal("1.5") * XCH))
    writer.coin(33, int(Decimal("0.75") * XCH), spent_height=6_000_100)
    _ok(farm.run())
    _ok(farm.run())

    mails = smtp.wait_for(len(expected_coins) + len(expected_blocks))
    assert _coin_amounts(mails) == sorted(expected_coins)
    block_mails = [m for m in mails if "farmed a block" in str(m.message["Subject"])]
    assert sorted(h for m in block_mails for h in expected_blocks if h in _text(m)) == sorted(expected_blocks)
    assert len(block_mails) == len(expected_blocks)
    assert len(mails) == len(expected_coins) + len(expected_blocks)

    total = sum(Decimal(amount) for amount in expected_coins)
    last_coin = next(m for m in reversed(mails) if "received 4 XCH" in str(m.message["Subject"]))
    body = _text(last_coin)
    assert "3a" * 32 in body and f"{len(expected_coins)}" in body and f"{total.normalize():f} XCH" in body
    html = last_coin.message.get_body(preferencelist=("html",))
    assert html is not None and "4 XCH" in str(html.get_content())

    summary = json.loads(_ok(farm.run("--summary", "--json", "--last", "50")).stdout)
    assert summary["coins"] == len(expected_coins)
    assert Decimal(summary["total_xch"]) == total
    assert summary["small_coins_ignored"] == 1
    assert summary["blocks_farmed"] == len(expected_blocks)
    text = _ok(farm.run("--summary")).stdout
    assert f"{len(expected_coins)} ({total.normalize():f} XCH)" in text and "coin_received" in text


class _SilentSMTP:
    """Accepts connections and never greets: a client sending mail hangs there until killed."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        try:
            while True:
                conn, _ = self.sock.accept()
                self.connections.append(conn)
                self.accepted.set()
        except OSError:
            return

    def close(self) -> None:
        for conn in self.connections:
            conn.close()
        self.sock.close()


def test_a_run_killed_while_notifying_loses_nothing_and_overlapping_runs_wait(
    tmp_path: Path, smtp: SMTPTestServer
) -> None:
    silent = _SilentSMTP()
    process: subprocess.Popen[str] | None = None
    try:
        farm = Farm(tmp_path, silent.port)  # its first mail hangs (up to CHANNEL_TIMEOUT) until it is killed
        writer = ChiaLogWriter(farm.log, CHIA_2_5_7)
        coins = [writer.coin(seed, (seed + 1) * XCH) for seed in range(3)]
        block = writer.block(9)
        process = farm.start()
        assert silent.accepted.wait(DEADLINE), "the run never tried to send its first mail"
        # The first run holds the lock while it hangs in SMTP: an overlapping cron run leaves
        # at once and reads nothing.
        overlapping = _ok(farm.run())
        assert overlapping.stderr == ""
        os.kill(process.pid, signal.SIGKILL)
        process.wait(DEADLINE)
        process = None
        # Everything it read is recorded and still pending: the next run sends it, once.
        farm.data["notifications"]["email"]["smtp_port"] = smtp.port
        farm.write_config()
        _ok(farm.run())
        _ok(farm.run())
        mails = smtp.wait_for(4)
        assert len(mails) == 4
        assert _coin_amounts(mails) == ["1", "2", "3"]
        assert any(block in _text(m) for m in mails)
        assert all(any(c in _text(m) for m in mails) for c in coins)
    finally:
        if process is not None:
            process.kill()
            process.wait(DEADLINE)
        silent.close()


def test_conditions_are_notified_with_back_off(tmp_path: Path, smtp: SMTPTestServer) -> None:
    farm = Farm(tmp_path, smtp.port, backoff_minutes=15, backoff_max_minutes=60, harvester_silent_minutes=10,
                slow_lookup_seconds=5, plot_drop_min=5)
    settings = farm.settings()
    writer = ChiaLogWriter(farm.log, CHIA_2_5_7)
    clock = [writer.clock.timestamp()]

    def run() -> None:
        with StateDB(settings.database_path) as db:
            run_monitor(settings.farmer, db, Notifier(settings.notifications), "farmer1", now=lambda: clock[0])

    def advance(minutes: float) -> None:
        clock[0] += minutes * 60
        writer.clock += timedelta(minutes=minutes)

    def subjects() -> list[str]:
        return [str(m.message["Subject"]) for m in smtp.received]

    writer.harvester(eligible=3, proofs=0, seconds=0.4, total=100)
    for _ in range(3):
        writer.pool_error("pooling")
    run()
    smtp.wait_for(1)
    assert subjects() == ["farmer1: pool errors (3x)"]

    advance(1)
    writer.pool_error("sending")
    writer.pool_error("connect")
    writer.harvester(eligible=3, proofs=0, seconds=7.5, total=100)  # slow
    writer.harvester(eligible=3, proofs=0, seconds=0.3, total=98)  # -2: below plot_drop_min
    writer.harvester(eligible=3, proofs=0, seconds=0.3, total=90)  # -8: dropped
    writer.service_error()
    writer.write("full_node", "full_node_server", "ERROR", "Exception: Failed to fetch block 613170, timed out")
    run()
    smtp.wait_for(4)
    assert sorted(subjects()[1:]) == ["farmer1: chia service errors", "farmer1: plot count dropped",
                                      "farmer1: slow harvester lookups"]
    assert "held" not in " ".join(subjects())  # the two new pool errors wait for the back-off

    advance(16)  # the back-off (15 min) has passed: the held pool errors go out in one mail
    writer.harvester(eligible=3, proofs=0, seconds=0.3, total=90)
    run()
    mails = smtp.wait_for(5)
    assert subjects()[4] == "farmer1: pool errors (2x)"
    assert "previous notification" in _text(mails[4])

    advance(5)
    writer.pool_error("sending")
    writer.harvester(eligible=3, proofs=0, seconds=0.3, total=90)
    run()
    advance(20)  # 25 min after the last pool mail: the interval has doubled to 30 min
    writer.harvester(eligible=3, proofs=0, seconds=0.3, total=90)
    run()
    assert len(smtp.received) == 5
    advance(6)
    writer.harvester(eligible=3, proofs=0, seconds=0.3, total=90)
    run()
    smtp.wait_for(6)
    assert subjects()[5] == "farmer1: pool errors"

    # The harvester goes quiet: one mail, however many runs see the silence.
    advance(11)
    run()
    smtp.wait_for(7)
    assert subjects()[6] == "farmer1: harvester silent"
    advance(1)
    run()
    assert len(smtp.received) == 7

    with StateDB(settings.database_path) as db:
        counts = dict(db.query("SELECT kind, COUNT(*) FROM farm_events GROUP BY kind"))
        statuses = {row[0] for row in db.query("SELECT DISTINCT status FROM farm_events")}
    assert counts == {"pool_error": 6, "slow_lookup": 1, "plot_count_dropped": 1, "chia_health": 1,
                      "harvester_silent": 1}
    assert statuses == {"notified"}


def test_warns_when_chia_logs_at_warning(tmp_path: Path, smtp: SMTPTestServer) -> None:
    farm = Farm(tmp_path, smtp.port, chia_log_level="WARNING")
    ChiaLogWriter(farm.log, CHIA_2_5_7).noise(1)
    first = _ok(farm.run())
    assert "chia logs at WARNING" in first.stderr
    assert "log_level: INFO" in first.stderr and "restart chia" in first.stderr
    assert str(farm.chia_config) in first.stderr
    assert _ok(farm.run()).stderr == ""  # from cron: once a day, not every minute
    assert "chia logs at WARNING" in _ok(farm.run("--summary")).stderr  # asked by hand: always

    farm.chia_config.write_text(farm.chia_config.read_text().replace("WARNING", "INFO"))
    assert _ok(farm.run("--summary")).stderr == ""
    farm.chia_config.unlink()
    assert "was not found" in _ok(farm.run("--summary")).stderr


def test_farm_log_prints_recent_lines_of_one_kind(tmp_path: Path, smtp: SMTPTestServer) -> None:
    farm = Farm(tmp_path, smtp.port)
    writer = ChiaLogWriter(farm.log, CHIA_2_4_4)
    writer.harvester(eligible=2, proofs=0, seconds=0.4, total=50)
    writer.service_error("first error")
    writer.write("farmer", "chia.farmer.farmer", "WARNING", "Respond plots came too late from: 10.0.0.5")
    writer.noise(5)
    writer.rotate()
    writer.service_error("second error")
    writer.harvester(eligible=4, proofs=1, seconds=0.5, total=50)

    errors = _ok(farm.run("--farm-log")).stdout.splitlines()
    assert "first error" in errors[0] and errors[1] == "Traceback (most recent call last):"
    assert sum("ERROR" in line for line in errors) == 2 and "second error" in errors[4]
    assert "OSError: [Errno 5]" in errors[-1]
    one = _ok(farm.run("--farm-log", "error", "--lines", "1")).stdout
    assert "second error" in one and "first error" not in one
    warning = _ok(farm.run("--farm-log", "warning")).stdout.splitlines()
    assert len(warning) == 1 and "Respond plots came too late" in warning[0]
    eligible = _ok(farm.run("--farm-log", "eligible")).stdout.splitlines()
    assert len(eligible) == 2 and all("plots were eligible for farming" in line for line in eligible)


def test_bad_flags_and_missing_log_are_one_line_errors(tmp_path: Path, smtp: SMTPTestServer) -> None:
    farm = Farm(tmp_path, smtp.port)
    proc = farm.run("--json")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --json goes with --summary"
    proc = farm.run("--farm-log", "error", "--lines", "0")
    assert proc.returncode == 2 and "--lines" in proc.stderr
    proc = farm.run("--farm-log")
    assert proc.returncode == 2 and "farmer.chia_log" in proc.stderr and str(farm.log) in proc.stderr
    farm.data["farmer"]["min_coin_xch"] = -1
    farm.write_config()
    proc = farm.run()
    assert proc.returncode == 2 and "farmer.min_coin_xch" in proc.stderr


def test_events_without_a_notification_method_are_recorded_quietly(tmp_path: Path, smtp: SMTPTestServer) -> None:
    farm = Farm(tmp_path, smtp.port)
    farm.data["notifications"]["events"] = {"block_farmed": ["email"]}
    farm.write_config()
    writer = ChiaLogWriter(farm.log, CHIA_2_5_7)
    writer.coin(1, 2 * XCH)
    block = writer.block(2)
    _ok(farm.run())
    (mail,) = smtp.wait_for(1)
    assert block in _text(mail)
    summary = json.loads(_ok(farm.run("--summary", "--json")).stdout)
    assert [(e["event"], e["status"]) for e in summary["last_events"]] == [
        ("coin_received", "quiet"), ("block_farmed", "notified")
    ]
    assert summary["coins"] == 1 and summary["total_xch"] == "2"


def test_missing_log_is_told_once_and_a_gzipped_backup_alone_is_not_missing(tmp_path: Path, smtp: SMTPTestServer) -> None:
    farm = Farm(tmp_path, smtp.port)
    first, second = _ok(farm.run()), _ok(farm.run())
    assert "does not exist" in first.stderr and "does not exist" not in second.stderr  # told once
    gzipped = farm.log.with_name("debug.log.1.gz")
    with gzip.open(gzipped, "wt") as handle:  # chia rotated with log_use_gzip and has not logged since
        handle.write("2026-11-23T05:00:00.000 harvester chia.harvester.harvester: INFO     hello\n")
    fresh = Farm(tmp_path / "other", smtp.port)
    fresh.log.parent.mkdir(parents=True, exist_ok=True)
    gzipped.rename(fresh.log.with_name("debug.log.1.gz"))
    assert "does not exist" not in _ok(fresh.run()).stderr
