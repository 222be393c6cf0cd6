"""The ``plotter:`` config section (plot_manager.py): where finished plots appear, how they are
sent to the harvesters, and metrics.

Its ``jobs:`` subsection (the plot jobs this plotter runs) lives in ``settings/plot_jobs.py``;
the harvesters it sends to are the ``farm:`` section (``settings/farm.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from utilities.settings.base import Section
from utilities.settings.plot_jobs import PlotJobSettings


class TransferSettings(Section):
    # TCP ports the receivers listen on: port_base .. port_base + port_count - 1.
    port_base: int = Field(default=4040, ge=1024, le=65000)
    port_count: int = Field(default=100, ge=1, le=1000)
    # Receiver sessions at once (to different harvesters, or drives); 1 is the original's
    # behaviour. A harvester takes at most as many as its export says it has receives available.
    max_concurrent_transfers: int = Field(default=1, ge=1, le=32)
    # When the harvesters with room answer nothing but busy (every drive of their receive sets
    # taken by other plotters), keep trying within the run this long; then the plots wait for
    # the next run. Busy is never a failed transfer.
    busy_wait_seconds: float = Field(default=600, gt=0)
    # Abort a transfer when no byte moved for this long (a dropped link never hangs a run).
    idle_timeout_seconds: float = Field(default=60, gt=0)
    # Tell the farmer after this many failed attempts at the same plot.
    failures_before_alert: int = Field(default=3, ge=1)
    # How the plot bytes leave the plotter: "nc" pipes them into netcat; "python" writes the
    # same raw TCP stream from plot_manager.py itself, which skips a pipe hop (bench/: faster
    # on a busy plotter). The receiver takes either.
    stream_with: Literal["nc", "python"] = "python"
    # A dropped transfer resumes where it stopped on a harvester that journals (its export says
    # receive_protocol 3): only the missing chunks are sent again (plot_manager.py --no-resume).
    resume: bool = True
    # Prefix "portable." to the name of pool plots on the harvester (as the original did).
    portable_prefix: bool = False
    # A harvester export older than this is not trusted (its drive_manager.py cron is not running).
    max_export_age_minutes: float = Field(default=10, gt=0)


class PlotterSettings(Section):
    # Where finished plots appear (globs, like chia's plot directories).
    plot_directories: tuple[str, ...] = ()
    # fill: the harvester with the most free slots; replace: the most replaceable old OG plots.
    priority: Literal["fill", "replace"] = "fill"
    transfer: TransferSettings = TransferSettings()
    # node_exporter textfile collector directory for Prometheus metrics (off when unset).
    metrics_dir: Path | None = None
    # Plot jobs this plotter starts, watches and stops (plot_manager.py --jobs ...).
    jobs: PlotJobSettings = PlotJobSettings()
