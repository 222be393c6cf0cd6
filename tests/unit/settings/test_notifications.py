"""The ``notifications:`` section (utilities/settings/notifications.py): what it accepts, what it
refuses, which methods an event goes to, and that its secrets stay out of its repr."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from utilities.settings.notifications import NotificationSettings

TWILIO_SID = "AC0123456789abcdef0123456789abcdef"
TWILIO_TOKEN = "twilio-secret-token"
PUSHBULLET_KEY = "o.pushbullet-secret-key"


def settings(**sections: Any) -> NotificationSettings:
    return NotificationSettings.model_validate(sections)


def sms_section(**extra: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "account_sid": TWILIO_SID,
        "auth_token": TWILIO_TOKEN,
        "from_number": "+15550000000",
        "to_numbers": ["+15551111111"],
        **extra,
    }


def test_methods_for_keeps_fixed_order_and_drops_disabled() -> None:
    s = settings(
        email={"enabled": True, "to": ["a@b.c"]},
        sms=sms_section(),
        apprise={"enabled": False},
        events={"block_farmed": ["apprise", "sms", "email"]},
    )
    assert s.methods_for("block_farmed") == ["email", "sms"]
    assert s.methods_for("coin_received") == []


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"events": {"new_plot_dirve": ["email"]}}, "unknown event 'new_plot_dirve'"),
        ({"events": {"new_plot_drive": ["email", "telegram"]}}, "unknown method 'telegram'"),
        ({"sms": {"enabled": True, "auth_token": "t", "from_number": "+1", "to_numbers": ["+2"]}}, "sms.account_sid"),
        ({"sms": {"enabled": True}}, "sms.auth_token"),
        ({"pushbullet": {"enabled": True}}, "pushbullet.api_key"),
        ({"apprise": {"enabled": True}}, "apprise.urls"),
        ({"apprise": {"enabled": True, "urls": ["not a url"]}}, "apprise.urls[0]"),
        ({"email": {"enabled": True}}, "email.to"),
        ({"email": {"ssl": True, "starttls": True}}, "exclude each other"),
        ({"email": {"enabled": True, "to": ["a@b.c"], "username": "u"}}, "email.password"),
        ({"email": {"smtp_server": "mail"}}, "smtp_server"),
        ({"whatsapp": {}}, "whatsapp"),
    ],
)
def test_invalid_settings_are_rejected(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        NotificationSettings.model_validate(sections)
    assert message in str(excinfo.value)


def test_disabled_methods_need_no_credentials_and_settings_are_frozen() -> None:
    s = settings(sms={"enabled": False}, events={"job_event": ["sms"]})
    assert s.methods_for("job_event") == []
    with pytest.raises(ValidationError):
        s.email.enabled = True  # type: ignore[misc]


def test_secrets_stay_out_of_repr() -> None:
    s = settings(
        email={"enabled": True, "to": ["a@b.c"], "username": "u", "password": "pw-in-repr?"},
        sms=sms_section(),
        pushbullet={"enabled": True, "api_key": PUSHBULLET_KEY},
        apprise={"enabled": True, "urls": ["tgram://bot-token-secret/123"]},
    )
    text = repr(s)
    for secret in ("pw-in-repr?", TWILIO_TOKEN, PUSHBULLET_KEY, "bot-token-secret"):
        assert secret not in text
