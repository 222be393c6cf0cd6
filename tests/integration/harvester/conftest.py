"""Fixtures every harvester integration test uses: the plot size unit and a real SMTP server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.plotmaker import cached_plot
from tests.support.smtp_server import SMTPTestServer, smtp_server


@pytest.fixture(scope="module")
def plot_size() -> int:
    """Capacity unit for the tests: the size of a real k=18 plot made by chiapos."""
    return cached_plot("pool").stat().st_size


@pytest.fixture
def mail() -> Iterator[SMTPTestServer]:
    """A real SMTP server on loopback that keeps what it receives."""
    with smtp_server() as server:
        yield server
