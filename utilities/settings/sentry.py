"""The ``sentry:`` config section: where every role script reports its crashes (off without a DSN)."""

from __future__ import annotations

from utilities.settings.base import Section


class SentrySettings(Section):
    dsn: str | None = None
    environment: str = "production"
