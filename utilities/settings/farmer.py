"""The ``farmer:`` config section (coin_monitor.py)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field

from utilities.settings.base import Section

MOJOS_PER_XCH = 10**12


class FarmerSettings(Section):
    """What coin_monitor.py watches and when it tells the farmer."""

    # chia's debug.log on this farmer, and chia's own config (only read, to check log_level).
    chia_log: Path = Path("~/.chia/mainnet/log/debug.log")
    chia_config: Path = Path("~/.chia/mainnet/config/config.yaml")
    # Where the very first run starts: "end" (only what chia logs from now on) or
    # "beginning" (the whole current debug.log, reporting everything in it once).
    start_at: Literal["end", "beginning"] = "end"
    # Coins smaller than this (in XCH) are neither reported nor counted (dust spam).
    min_coin_xch: Decimal = Field(default=Decimal(0), ge=0)
    # A harvester lookup slower than this many seconds is reported (chia itself warns at 5).
    slow_lookup_seconds: float = Field(default=5.0, gt=0)
    # Report when chia's plot count drops by at least this many plots between two checks.
    plot_drop_min: int = Field(default=1, ge=1)
    # Report when the harvester wrote no farming line for this many minutes (0: never).
    harvester_silent_minutes: int = Field(default=10, ge=0)
    # Back-off for conditions that come and go (pool errors, slow lookups, plot drops,
    # service errors, a silent harvester): after one notification of a kind, the next waits
    # at least this many minutes, doubling while the condition keeps recurring, up to
    # backoff_max_minutes. What happened in between is counted in the next notification.
    backoff_minutes: int = Field(default=15, ge=0)
    backoff_max_minutes: int = Field(default=240, ge=0)
    # ERROR/CRITICAL lines containing any of these texts are not reported as chia_health
    # (peer connection noise of the full node).
    health_ignore: tuple[str, ...] = ("full_node_server", "CancelledError", "Failed to fetch block")

    @property
    def min_coin_mojos(self) -> int:
        return int(self.min_coin_xch * MOJOS_PER_XCH)
