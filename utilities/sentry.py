"""Optional error reporting to Sentry, only when the farmer configured a DSN.

No personal data leaves the machine: no default PII, no local variables (they could hold
config secrets), no hostname, no request bodies.
"""

from __future__ import annotations

from utilities import __version__
from utilities.settings.sentry import SentrySettings


def init_sentry(settings: SentrySettings, role: str) -> bool:
    if not settings.dsn:
        return False
    import sentry_sdk

    sentry_sdk.init(
        dsn=settings.dsn,
        release=f"plot_manager@{__version__}",
        environment=settings.environment,
        # send_default_pii is left unset: unset means no PII, and sentry-sdk 2.x warns that
        # setting it at all is deprecated (data_collection replaces it).
        include_local_variables=False,
        server_name="",
        max_breadcrumbs=20,
    )
    sentry_sdk.set_tag("role", role)
    return True
