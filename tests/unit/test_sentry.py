from __future__ import annotations

import sentry_sdk

from utilities.sentry import init_sentry
from utilities.settings.sentry import SentrySettings


def test_no_dsn_means_no_sentry() -> None:
    assert init_sentry(SentrySettings(), "drive_manager") is False


def test_dsn_configures_without_personal_data() -> None:
    try:
        assert init_sentry(SentrySettings(dsn="http://public@127.0.0.1:9/1"), "drive_manager") is True
        client = sentry_sdk.get_client()
        options = client.options
        assert client.should_send_default_pii() is False
        assert options["data_collection"]["user_info"] is False
        assert options["event_scrubber"] is not None
        assert options["include_local_variables"] is False
        assert not options["server_name"]
    finally:
        sentry_sdk.init()  # back to a disabled client
