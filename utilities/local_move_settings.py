"""The ``harvester.local_moves:`` config section (move_local_plots.py)."""

from __future__ import annotations

from utilities.settings_base import Section


class LocalMoveSettings(Section):
    """Where a harvester that also plots finds its finished plots, and how they are moved."""
