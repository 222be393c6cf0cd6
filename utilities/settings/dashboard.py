"""The ``dashboard:`` config section: where farm_dashboard.py listens and who may look.

The page is read-only, but it shows the whole farm (harvester addresses, drive names, coins), so
it binds to the loopback address unless the farmer chooses another address, and then only with a
secret (``auth_token`` or ``password``) that a browser or script must present. The key names
match the ones ``--check-config`` masks.
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator, model_validator

from utilities.settings.base import Section

#: Bind names that never leave this machine.
LOOPBACK_NAMES = ("localhost",)


def is_loopback(bind: str) -> bool:
    """True for an address (or ``localhost``) only this machine can reach."""
    if bind.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


class DashboardSettings(Section):
    # Address and port the web server listens on. Anything but a loopback address needs
    # auth_token or password below.
    bind: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8744, ge=1, le=65535)
    # How often the page reloads itself, and at most how often the harvesters are asked for
    # their exports (every page load in between is served from the last fetch).
    refresh_seconds: int = Field(default=60, ge=5, le=3600)
    # A secret for scripts (header "Authorization: Bearer TOKEN") and for the login form.
    auth_token: str | None = Field(default=None, min_length=16)
    # A password for the login form.
    password: str | None = Field(default=None, min_length=8)
    # Show this machine's own plot drives, as drive_manager.py -fr does (the totals then equal
    # -fr's). Off on a farmer or plotter that has no plot drives.
    include_this_machine: bool = True
    # Days of transfer and daily statistics the charts show.
    history_days: int = Field(default=30, ge=1, le=366)

    @field_validator("bind")
    @classmethod
    def _bind_is_an_address(cls, value: str) -> str:
        if value.lower() in LOOPBACK_NAMES:
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"not an IP address (or localhost): {value!r}") from None
        return value

    @model_validator(mode="after")
    def _others_need_a_secret(self) -> DashboardSettings:
        refusal = bind_refusal(self.bind, self, "bind")
        if refusal:
            raise ValueError(refusal)
        return self

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.auth_token, self.password) if s)


def bind_refusal(bind: str, settings: DashboardSettings, named: str = "--bind") -> str | None:
    """Pure: why the dashboard must not listen on ``bind`` with these settings, or None.

    ``named`` is where the address came from (the config key or the flag), for the message.
    """
    if is_loopback(bind) or settings.secrets:
        return None
    return (
        f"{named} {bind} is reachable from other machines: set dashboard.auth_token or "
        "dashboard.password first, or listen on 127.0.0.1"
    )
