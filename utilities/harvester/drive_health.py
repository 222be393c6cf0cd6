"""Pure: which plot drives are held back from receiving plots, and why, from their SMART history.

A plot written onto a dying disk is hours of compute lost with it, and a disk at its
temperature limit only gets hotter when a plot is written onto it. So a drive leaves the
receive set (and the local-moves drive) when

* ``failing``: its SMART overall assessment is FAIL;
* ``sectors``: its pending, reallocated or uncorrectable counts grew by at least the
  configured limit within ``window_hours`` (growth, not the count: many disks carry a few
  remapped sectors for years; a disk that gains them now is the one about to go);
* ``hot``: its temperature is at or above ``alerts.temperature_limit_c``.

A hot drive returns by itself once it is read below the limit less ``hot_hysteresis_c`` (so a
drive hovering at the limit does not flap in and out every read). A failing or
sector-growth hold stays until the farmer says otherwise with ``drive_manager.py -on DRIVE``
(a ``Release``): the evidence up to then is accepted, and only new growth, or a FAIL on a drive
released from a sector hold, holds it again.

A drive in standby, or whose SMART cannot be read, keeps whatever it had: nothing new is known.
Every decision here takes the readings and the time as arguments; ``drive_holds.py`` does the
storing, the alerts and the release.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from utilities.harvester.smart_history import COUNTER_LABELS, Reading, baseline, growth, growth_text, latest_active

HoldReason = Literal["failing", "sectors", "hot"]
REASON_TEXT = {
    "failing": "SMART assessment FAIL",
    "sectors": "bad sectors growing",
    "hot": "too hot",
}


@dataclass(frozen=True)
class HealthPolicy:
    """The thresholds of the held-back rule (``harvester.health`` and the temperature limit)."""

    temperature_limit_c: int = 50
    hot_hysteresis_c: int = 5
    window_hours: float = 24.0
    pending_growth_limit: int = 1
    reallocated_growth_limit: int = 8
    uncorrectable_growth_limit: int = 1

    @property
    def resume_below_c(self) -> int:
        return self.temperature_limit_c - self.hot_hysteresis_c

    def growth_limits(self) -> dict[str, int]:
        """Counter -> growth that holds a drive (CRC errors are a cable's, not the disk's)."""
        return {
            "pending": self.pending_growth_limit,
            "reallocated": self.reallocated_growth_limit,
            "offline_uncorrectable": self.uncorrectable_growth_limit,
        }


@dataclass(frozen=True)
class Hold:
    """A drive held back: why (``reason`` and a one-line ``detail``) and since when."""

    drive: str
    reason: HoldReason
    detail: str
    since: float
    mountpoint: str | None = None

    @property
    def sticky(self) -> bool:
        """Only ``-on`` ends it (a hot drive returns by itself)."""
        return self.reason != "hot"

    @property
    def text(self) -> str:
        """"drive3: bad sectors growing (pending sectors 0 -> 3 in 24 h, limit +1)"."""
        return f"{self.drive}: {REASON_TEXT[self.reason]} ({self.detail})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.drive, "reason": self.reason, "detail": self.detail, "since": self.since,
                "mountpoint": self.mountpoint}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hold | None:
        """A stored hold; None for an entry this code cannot read (it is dropped, not trusted)."""
        reason = data.get("reason")
        if reason not in REASON_TEXT or not isinstance(data.get("name"), str):
            return None
        return cls(data["name"], reason, str(data.get("detail") or ""), float(data.get("since") or 0.0),
                   data.get("mountpoint"))


@dataclass(frozen=True)
class Release:
    """``-on DRIVE`` for a held drive: the evidence up to ``at`` is accepted (a FAIL too, when
    the hold it ended was for that)."""

    drive: str
    at: float
    reason: HoldReason

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "reason": self.reason}

    @classmethod
    def from_dict(cls, drive: str, data: Mapping[str, Any]) -> Release | None:
        if data.get("reason") not in REASON_TEXT:
            return None
        return cls(drive, float(data.get("at") or 0.0), data["reason"])


@dataclass(frozen=True)
class HoldDecision:
    """The holds after one SMART read, with what changed (one alert each)."""

    holds: dict[str, Hold]
    new: list[Hold] = field(default_factory=list)  # held now, or held for a graver reason
    returned: list[tuple[Hold, Reading]] = field(default_factory=list)  # hot drives that cooled down


def sick_reason(
    readings: Sequence[Reading], policy: HealthPolicy, release: Release | None = None
) -> tuple[HoldReason, str] | None:
    """Pure: why the drive's latest reading holds it for good (``failing`` / ``sectors``), or None.

    Growth is measured from the newest reading of the same disk at or before the start of the
    window, or from the release if that is later (what the farmer accepted), else from the
    oldest reading there is.
    """
    latest = latest_active(readings)
    if latest is None:
        return None
    if latest.health == "FAIL" and not (release and release.reason == "failing"):
        return "failing", "overall-health self-assessment FAILED"
    since = latest.read_at - policy.window_hours * 3600
    if release is not None:
        since = max(since, release.at)
    grown = growth(latest, baseline(readings, since, latest))
    limits = policy.growth_limits()
    over = {name: span for name, span in grown.items() if name in limits and span[1] - span[0] >= limits[name]}
    if not over:
        return None
    hours = f"{policy.window_hours:g} h"
    limit_text = ", ".join(f"+{limits[name]} {COUNTER_LABELS[name]}" for name in over)
    return "sectors", f"{growth_text(over)} within {hours} (limit {limit_text})"


def decide_holds(
    histories: Mapping[str, Sequence[Reading]],
    current: Mapping[str, Reading],
    previous: Mapping[str, Hold],
    releases: Mapping[str, Release],
    policy: HealthPolicy,
    now: float,
    mountpoints: Mapping[str, str] | None = None,
) -> HoldDecision:
    """Pure: the holds after this SMART read.

    ``current`` is this read per drive; ``histories`` the drive's readings including it (at
    least those ``sick_reason`` picks); ``previous`` the holds before. A drive not read now
    (standby, unreadable, gone) keeps its hold; a sticky hold is never lifted here.
    """
    mountpoints = mountpoints or {}
    holds = dict(previous)
    new: list[Hold] = []
    returned: list[tuple[Hold, Reading]] = []
    for drive, reading in current.items():
        if not reading.active:
            continue
        held = holds.get(drive)
        if held is not None and held.sticky:
            continue
        sick = sick_reason(histories.get(drive, [reading]), policy, releases.get(drive))
        mountpoint = mountpoints.get(drive)
        if sick is not None:
            holds[drive] = Hold(drive, sick[0], sick[1], now, mountpoint)
            new.append(holds[drive])
            continue
        temperature = reading.temperature_c
        if temperature is None:
            continue
        if held is None and temperature >= policy.temperature_limit_c:
            detail = f"{temperature}°C, limit {policy.temperature_limit_c}°C; returns below {policy.resume_below_c}°C"
            holds[drive] = Hold(drive, "hot", detail, now, mountpoint)
            new.append(holds[drive])
        elif held is not None and temperature < policy.resume_below_c:
            del holds[drive]
            returned.append((held, reading))
    return HoldDecision(holds, new, returned)
