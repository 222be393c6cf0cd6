"""A notification (utilities/notify.py) is checked where it is made; sending is tested end to end
in tests/integration/test_notify.py."""

from __future__ import annotations

import pytest

from utilities.notify import Notification


def test_unknown_notification_event_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown notification event"):
        Notification("new_plot_drvie", "s", "t")
