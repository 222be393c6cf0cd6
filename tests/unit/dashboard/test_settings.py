"""The dashboard: section: loopback by default, any other address only with a secret."""

from __future__ import annotations

import pytest

from utilities.config import validate_config
from utilities.errors import ConfigError
from utilities.settings.dashboard import bind_refusal, is_loopback


def test_defaults_listen_on_loopback_only() -> None:
    settings = validate_config({}).dashboard
    assert (settings.bind, settings.port, settings.refresh_seconds, settings.secrets) == ("127.0.0.1", 8744, 60, ())


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_addresses(bind: str) -> None:
    assert is_loopback(bind)


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "10.213.77.2", "example.com"])
def test_other_addresses(bind: str) -> None:
    assert not is_loopback(bind)


def test_another_address_without_a_secret_is_one_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as failure:
        validate_config({"dashboard": {"bind": "0.0.0.0"}})
    (line,) = str(failure.value).splitlines()
    assert line.startswith("config error in config: dashboard: bind 0.0.0.0 is reachable from other machines")
    assert validate_config({"dashboard": {"bind": "0.0.0.0", "auth_token": "x" * 16}}).dashboard.secrets == ("x" * 16,)


@pytest.mark.parametrize(("section", "key"), [
    ({"bind": "farm.example"}, "dashboard.bind: not an IP address"),
    ({"auth_token": "short"}, "dashboard.auth_token:"),
    ({"password": "short"}, "dashboard.password:"),
    ({"refresh_seconds": 1}, "dashboard.refresh_seconds:"),
    ({"port": 0}, "dashboard.port:"),
    ({"colour": "red"}, "dashboard.colour: unknown key"),
])
def test_bad_values_name_their_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        validate_config({"dashboard": section})


def test_the_flag_is_named_when_it_asks_for_another_address() -> None:
    settings = validate_config({}).dashboard
    assert (bind_refusal("10.0.0.1", settings) or "").startswith("--bind 10.0.0.1 is reachable")
    assert bind_refusal("127.0.0.1", settings) is None


def test_secrets_are_masked_by_check_config() -> None:
    from utilities.config import effective_settings_yaml

    text = effective_settings_yaml(validate_config({"dashboard": {"auth_token": "t" * 16, "password": "p" * 8}}))
    assert "t" * 16 not in text and "p" * 8 not in text
