"""The ``plotter.jobs:`` config section (plot job management in plot_manager.py)."""

from __future__ import annotations

from utilities.settings_base import Section


class PlotJobSettings(Section):
    """Which plotter program runs, with what limits, on which temp and output directories."""
