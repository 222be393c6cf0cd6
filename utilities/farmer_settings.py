"""The ``farmer:`` config section (coin_monitor.py)."""

from __future__ import annotations

from utilities.settings_base import Section


class FarmerSettings(Section):
    """What coin_monitor.py watches and when it tells the farmer."""
