"""The ``harvester.local_moves:`` config section (move_local_plots.py)."""

from __future__ import annotations

from pydantic import Field, model_validator

from utilities.settings.base import Section

#: State key of the drive reservation: drive_manager.py's pass writes it, move_local_plots.py reads
#: it. Kept here, in the light module both already import, so neither imports the other.
LOCAL_RECEIVE_KEY = "local_receive_drive"


class LocalMoveSettings(Section):
    """Where a harvester that also plots finds its finished plots, and how they are moved."""

    # Off by default: drive_manager.py only reserves a local drive when a farmer asks for it.
    enabled: bool = False
    # The plotter's output directories (globs), where finished local plots appear.
    plot_directories: tuple[str, ...] = ()
    # Plotting temp directories (globs): only watched for the disk usage alert.
    temp_directories: tuple[str, ...] = ()
    # A copy that moves no byte for this long is stalled: aborted, cleaned up, retried next run.
    stall_seconds: float = Field(default=120, gt=0, le=86400)
    # After this many failed moves of one plot: alert once and leave it until --clear-error.
    failures_before_alert: int = Field(default=3, ge=1)
    # Read the copy back from the disk (not the page cache) and compare hashes before the
    # source is deleted. Doubles the disk reads; switch off only for disks you trust.
    verify_after_copy: bool = True
    # Limit the copy to this many MB/s (0: as fast as the disks go), so plotting on the same
    # disks keeps its I/O.
    max_mb_per_second: float = Field(default=0, ge=0)
    # Disk usage alert with hysteresis: alert when a temp or output directory's filesystem is
    # at or above usage_critical_percent; alert again only after it fell below
    # usage_clear_percent first.
    usage_critical_percent: float = Field(default=90, gt=0, le=100)
    usage_clear_percent: float = Field(default=80, ge=0, lt=100)

    @model_validator(mode="after")
    def _check(self) -> LocalMoveSettings:
        if self.usage_clear_percent >= self.usage_critical_percent:
            raise ValueError(
                f"usage_clear_percent ({self.usage_clear_percent:g}) must be below "
                f"usage_critical_percent ({self.usage_critical_percent:g})"
            )
        if self.enabled and not self.plot_directories:
            raise ValueError("enabled is true but plot_directories is empty: list the plotter's output directories")
        return self
