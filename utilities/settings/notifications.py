"""The ``notifications:`` config section: four delivery methods, and which events use which.

What is sent is decided in two places: a method must be switched on globally
(``email.enabled`` ...) *and* listed for the event under ``events``. ``events`` defaults to
``{}``: nothing is sent until the farmer opts in, so a fresh install never mails or texts anyone
by surprise. An enabled method must have everything it needs (host, recipients, keys), so a
half-filled section fails when the config is loaded, not at the first alert months later.

``EVENTS`` and ``METHODS`` live here because the section is validated against them;
``utilities/notify.py`` sends (and refuses a notification for an event not listed here).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, field_validator, model_validator

from utilities.settings.base import Section

#: Every event a script may raise, with what it means. Add a line here to add an event; the
#: config validation and the generic e-mail fallback pick it up without further changes.
EVENTS: dict[str, str] = {
    "new_plot_drive": "The plotter switched to a new receive drive.",
    "daily_report": "Daily summary of drives, plots and plotting rate.",
    "drive_temperature": "One or more drives are above their temperature limit.",
    "drive_held_back": "A plot drive left the receive set (SMART FAIL, growing bad sectors, too hot), or a hot one returned.",
    "drives_filling": "Free plot slots on this host are running low.",
    "no_receive_drive": "No drive with free space is left to receive plots.",
    "drive_missing": "A plot drive vanished (unmounted, dead, its plots no longer visible), or came back.",
    "plot_check_failed": "A plot failed its check (drive_manager.py --check-plots): no proofs, or chiapos cannot read it.",
    "farm_update": "Plot count or farm size changed since the last check.",
    "harvester_unreachable": "A harvester could not be reached over SSH or the network.",
    "transfer_failed": "A plot transfer to a harvester failed.",
    "plot_transferred": "A plot was transferred to a harvester.",
    "coin_received": "The farm wallet received coins.",
    "block_farmed": "The farm won a block.",
    "chia_health": "The Chia services report a problem (sync, farmer, harvester).",
    "pool_error": "The pool rejected partials or could not be reached.",
    "slow_lookup": "The harvester took longer than the threshold to look up proofs.",
    "plot_count_dropped": "The number of plots chia farms went down.",
    "harvester_silent": "The harvester wrote no eligibility line for too long.",
    "job_event": "A plotting or maintenance job started, finished or failed.",
    "local_move_failed": "A local plot move failed repeatedly and is no longer retried.",
    "disk_usage": "A plot temp or output directory is fuller than its critical mark.",
    "plot_job_started": "A plot job was started.",
    "plot_job_failed": "A plot job failed or was aborted.",
    "no_plot_destination": "No output directory has room for another plot: no job started.",
    "plot_job_summary": "Periodic summary of plot jobs: done, average time, plots per day.",
}

#: Delivery methods, in the order ``Notifier.send`` tries (and reports) them.
METHODS: tuple[str, ...] = ("email", "sms", "pushbullet", "apprise")


def _require_present(section: str, values: Mapping[str, object]) -> None:
    """Fail naming every value an enabled method cannot work without."""
    missing = [name for name, value in values.items() if value is None or value in ("", [])]
    if missing:
        names = ", ".join(f"{section}.{name}" for name in missing)
        raise ValueError(f"{section} is enabled but {names} is not set")


class EmailSettings(Section):
    """SMTP delivery. ``ssl`` is implicit TLS (port 465), ``starttls`` upgrades a plain link."""

    enabled: bool = False
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    from_address: str = "plot_manager@localhost"
    to: list[str] = []
    timeout_seconds: float = Field(default=20, gt=0)

    @model_validator(mode="after")
    def _check_complete(self) -> EmailSettings:
        if self.ssl and self.starttls:
            raise ValueError("email.ssl and email.starttls exclude each other; choose one")
        if self.enabled:
            _require_present("email", {"smtp_host": self.smtp_host, "from_address": self.from_address, "to": self.to})
            if (self.username is None) != (self.password is None):
                raise ValueError("email.username and email.password must be set together")
        return self


class SmsSettings(Section):
    """Twilio SMS; one message per number in ``to_numbers``."""

    enabled: bool = False
    account_sid: str | None = None
    auth_token: str | None = Field(default=None, repr=False)
    from_number: str | None = None
    to_numbers: list[str] = []
    timeout_seconds: float = Field(default=20, gt=0)

    @model_validator(mode="after")
    def _check_complete(self) -> SmsSettings:
        if self.enabled:
            _require_present(
                "sms",
                {
                    "account_sid": self.account_sid,
                    "auth_token": self.auth_token,
                    "from_number": self.from_number,
                    "to_numbers": self.to_numbers,
                },
            )
        return self


class PushbulletSettings(Section):
    """Pushbullet note to every device of the account owning ``api_key``."""

    enabled: bool = False
    api_key: str | None = Field(default=None, repr=False)
    timeout_seconds: float = Field(default=20, gt=0)

    @model_validator(mode="after")
    def _check_complete(self) -> PushbulletSettings:
        if self.enabled:
            _require_present("pushbullet", {"api_key": self.api_key})
        return self


class AppriseSettings(Section):
    """Any service Apprise supports (Discord, Telegram, ntfy, ...), one URL each."""

    enabled: bool = False
    # Apprise URLs usually embed tokens, hence repr=False.
    urls: list[str] = Field(default=[], repr=False)
    timeout_seconds: float = Field(default=20, gt=0)

    @model_validator(mode="after")
    def _check_complete(self) -> AppriseSettings:
        if self.enabled:
            _require_present("apprise", {"urls": self.urls})
            for index, url in enumerate(self.urls):
                # Only the shape is checked here: importing apprise to parse the URL would slow
                # every config load, and its parser logs the (secret-bearing) URL on failure.
                if "://" not in url:
                    raise ValueError(f"apprise.urls[{index}] is not a URL (expected scheme://...)")
        return self


class NotificationSettings(Section):
    """The ``notifications:`` section: the four methods and which events use which method."""

    email: EmailSettings = EmailSettings()
    sms: SmsSettings = SmsSettings()
    pushbullet: PushbulletSettings = PushbulletSettings()
    apprise: AppriseSettings = AppriseSettings()
    events: dict[str, list[str]] = {}

    @field_validator("events")
    @classmethod
    def _check_events(cls, events: dict[str, list[str]]) -> dict[str, list[str]]:
        for event, methods in events.items():
            if event not in EVENTS:
                raise ValueError(f"unknown event {event!r}; known events: {', '.join(EVENTS)}")
            for method in methods:
                if method not in METHODS:
                    raise ValueError(f"events.{event}: unknown method {method!r}; choose from {', '.join(METHODS)}")
        return events

    def methods_for(self, event: str) -> list[str]:
        """Methods that are both switched on globally and listed for ``event``, in METHODS order."""
        wanted = set(self.events.get(event, ()))
        return [m for m in METHODS if m in wanted and getattr(self, m).enabled]
