"""The last 24 hours of transfers, summed once for ``plot_manager.py --history`` and the
dashboard, so the two can never disagree (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from utilities.state import TransferRecord

DAY = 24 * 3600


@dataclass(frozen=True)
class TransferSummary:
    """Plots moved, failed attempts, bytes moved and saved by resumes, average MB/s."""

    plots_moved: int
    failed_attempts: int
    bytes_moved: int
    average_mb_per_second: float | None
    bytes_saved_by_resume: int = 0

    @property
    def gigabytes(self) -> float:
        return round(self.bytes_moved / 1e9, 1)


def last_day_summary(records: Iterable[TransferRecord], now: float) -> TransferSummary:
    """The records of the 24 hours before ``now`` summed; the average is over successful
    transfers only (a failed one moved nothing)."""
    recent = [r for r in records if r.started_at >= now - DAY]
    done = [r for r in recent if r.ok]
    total_bytes = sum(r.bytes for r in done)
    total_seconds = sum(r.seconds for r in done)
    return TransferSummary(
        plots_moved=len(done),
        failed_attempts=len(recent) - len(done),
        bytes_moved=total_bytes,
        average_mb_per_second=round(total_bytes / 1e6 / total_seconds, 1) if total_seconds else None,
        bytes_saved_by_resume=sum(r.saved for r in done),
    )
