"""Tell the farmer what happened: e-mail, SMS (Twilio), Pushbullet and Apprise.

Every role script runs from cron, so a notification must never be the reason a run fails or
hangs: each channel runs in its own worker thread with a deadline, any failure is logged as one
warning line (secrets redacted) and reported as ``False`` in the result of ``Notifier.send``.

What is sent is decided in two places of the ``notifications:`` config section: a method must be
switched on globally (``email.enabled`` ...) *and* listed for the event under ``events``.
``events`` defaults to ``{}``: nothing is sent until the farmer opts in, so a fresh install never
mails or texts anyone by surprise.

E-mail bodies are Jinja2 templates in ``templates/<name>.txt.j2`` and ``<name>.html.j2``; SMS,
Pushbullet and Apprise carry the notification's one-line ``short_text``.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Every script imports this module (its settings are part of the config), but most cron runs
# send nothing: jinja2 and smtplib/ssl (about 35 ms together) are imported where a mail is
# actually rendered or sent, like the SMS, Pushbullet and Apprise libraries.
if TYPE_CHECKING:
    import jinja2

log = logging.getLogger(__name__)
# Twilio logs every request and response at INFO, several lines each; that would flood the
# farmer's cron log, so its client gets a logger of ours that only passes warnings.
_twilio_log = logging.getLogger(f"{__name__}.twilio_http")
_twilio_log.setLevel(logging.WARNING)

#: Every event a script may raise, with what it means. Add a line here to add an event; the
#: config validation and the generic e-mail fallback pick it up without further changes.
EVENTS: dict[str, str] = {
    "new_plot_drive": "The plotter switched to a new receive drive.",
    "daily_report": "Daily summary of drives, plots and plotting rate.",
    "drive_temperature": "One or more drives are above their temperature limit.",
    "drives_filling": "Free plot slots on this host are running low.",
    "no_receive_drive": "No drive with free space is left to receive plots.",
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

#: The repository's ``templates/`` directory, next to ``utilities/``.
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
#: Used when a notification names no template, or one that does not exist.
GENERIC_TEMPLATE = "generic"
#: Column where values start in report lines, so every value lines up in a monospaced font.
LEADER_WIDTH = 40
#: Shown for a value the caller did not supply, so a half-filled report still reads cleanly.
MISSING = "n/a"


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


class _Settings(BaseModel):
    """Strict and immutable: a misspelt key is an error, not a silently ignored setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _require_present(section: str, values: Mapping[str, object]) -> None:
    """Fail naming every value an enabled method cannot work without."""
    missing = [name for name, value in values.items() if value is None or value in ("", [])]
    if missing:
        names = ", ".join(f"{section}.{name}" for name in missing)
        raise ValueError(f"{section} is enabled but {names} is not set")


class EmailSettings(_Settings):
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


class SmsSettings(_Settings):
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


class PushbulletSettings(_Settings):
    """Pushbullet note to every device of the account owning ``api_key``."""

    enabled: bool = False
    api_key: str | None = Field(default=None, repr=False)
    timeout_seconds: float = Field(default=20, gt=0)

    @model_validator(mode="after")
    def _check_complete(self) -> PushbulletSettings:
        if self.enabled:
            _require_present("pushbullet", {"api_key": self.api_key})
        return self


class AppriseSettings(_Settings):
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


class NotificationSettings(_Settings):
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


# --------------------------------------------------------------------------------------------
# Notification and rendering (pure)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """One thing to tell the farmer.

    ``short_text`` is the single line used by SMS, Pushbullet and Apprise; ``context`` feeds the
    e-mail template named by ``template`` (without extension; ``None`` means the generic one).
    """

    event: str
    subject: str
    short_text: str
    context: Mapping[str, Any] = field(default_factory=dict)
    template: str | None = None

    def __post_init__(self) -> None:
        # A typo in an event name is a programming error; fail where it is made, not silently.
        if self.event not in EVENTS:
            raise ValueError(f"unknown notification event {self.event!r}")


def _is_undefined(value: object) -> bool:
    """A template variable Jinja2 could not resolve; none can exist before jinja2 is imported."""
    jinja2_module = sys.modules.get("jinja2")
    return jinja2_module is not None and isinstance(value, jinja2_module.Undefined)


def format_value(value: object) -> str:
    """Render one report value; anything missing becomes ``n/a`` rather than blank or ``None``."""
    if value is None or _is_undefined(value) or value == "":
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return MISSING if math.isnan(value) else f"{value:,.2f}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(format_value(item) for item in value) or MISSING
    return str(value)


def leader(label: object, value: object, unit: str = "", width: int = LEADER_WIDTH) -> str:
    """``Drive Size...........10.9T``: label, dots up to ``width``, value (+ unit if numeric).

    The unit is only appended to numbers so a caller passing a preformatted ``"41°C"`` does not
    get ``"41°C°C"``, and a missing value stays a bare ``n/a``.
    """
    text = format_value(value)
    if unit and isinstance(value, (int, float)) and not isinstance(value, bool) and text != MISSING:
        text += unit
    label_text = str(label)
    return label_text + "." * max(3, width - len(label_text)) + text


def labelize(key: object) -> str:
    """``free_slots`` -> ``Free slots``, for the generic template's key/value lines."""
    words = str(key).replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _autoescape(template_name: str | None) -> bool:
    return template_name is not None and template_name.endswith(".html.j2")


def build_environment(templates_dir: Path = TEMPLATES_DIR) -> jinja2.Environment:
    """Jinja2 environment for the e-mail templates; HTML is autoescaped, text is not.

    ``ChainableUndefined`` lets ``{{ drive.serial }}`` on a missing ``drive`` render as missing
    instead of raising, which is what keeps a report with gaps sendable.
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=_autoescape,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["leader"] = leader
    env.filters["na"] = format_value
    env.filters["labelize"] = labelize
    return env


def template_variables(notification: Notification) -> dict[str, Any]:
    """Context keys plus ``subject``, ``event``, ``event_description`` and ``context`` itself.

    The reserved names win over context keys of the same name so every template can rely on them.
    ``hostname`` defaults to this machine's name: scripts run on the host they report on.
    """
    variables = {"hostname": socket.gethostname(), **notification.context}
    variables.update(
        subject=notification.subject,
        event=notification.event,
        event_description=EVENTS[notification.event],
        context=dict(notification.context),
    )
    return variables


def render_email(env: jinja2.Environment, notification: Notification) -> tuple[str, str]:
    """Return (plain text, HTML) bodies, falling back to the generic pair if either is missing.

    Both parts come from the same template name so the two views of one mail never disagree.
    """
    import jinja2

    variables = template_variables(notification)
    name = notification.template or GENERIC_TEMPLATE
    try:
        text_template = env.get_template(f"{name}.txt.j2")
        html_template = env.get_template(f"{name}.html.j2")
    except jinja2.TemplateNotFound:
        if name == GENERIC_TEMPLATE:
            raise
        log.warning("e-mail template %r not found, using the generic template", name)
        text_template = env.get_template(f"{GENERIC_TEMPLATE}.txt.j2")
        html_template = env.get_template(f"{GENERIC_TEMPLATE}.html.j2")
    return text_template.render(variables), html_template.render(variables)


def build_email(settings: EmailSettings, subject: str, text: str, html: str) -> EmailMessage:
    """multipart/alternative message: plain text first, HTML second (clients show the last)."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.from_address
    message["To"] = ", ".join(settings.to)
    message["Date"] = formatdate(localtime=True)
    # An explicit domain avoids make_msgid's getfqdn() DNS lookup, which can stall on a bad resolver.
    domain = settings.from_address.rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def one_line(text: str) -> str:
    """Collapse whitespace so SMS and push texts are a single line whatever the caller passed."""
    return " ".join(text.split())


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_URL_CREDENTIALS = re.compile(r"://[^/@\s]+@")


def describe_failure(exc: BaseException, secrets: Iterable[str | None] = ()) -> str:
    """One log-safe line: exception type and message, secrets and URL credentials masked."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _URL_CREDENTIALS.sub("://***@", _ANSI.sub("", text))
    text = one_line(text)
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------------------------
# Channels (I/O)
# --------------------------------------------------------------------------------------------


def send_email(settings: EmailSettings, message: EmailMessage) -> None:
    """Deliver via SMTP; ``timeout_seconds`` bounds every socket operation."""
    import smtplib
    import ssl

    timeout = settings.timeout_seconds
    client: smtplib.SMTP
    if settings.ssl:
        client = smtplib.SMTP_SSL(
            settings.smtp_host, settings.smtp_port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    with client:
        if settings.starttls:
            client.starttls(context=ssl.create_default_context())
        if settings.username is not None and settings.password is not None:
            client.login(settings.username, settings.password)
        refused = client.send_message(message)
    if refused:
        raise RuntimeError(f"{len(refused)} of {len(settings.to)} recipient(s) refused")


def send_sms(settings: SmsSettings, text: str) -> None:
    """One Twilio message per number; every number is tried even if an earlier one fails."""
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    client = Client(
        settings.account_sid,
        settings.auth_token,
        http_client=TwilioHttpClient(timeout=settings.timeout_seconds, logger=_twilio_log),
    )
    failures: list[BaseException] = []
    for number in settings.to_numbers:
        try:
            client.messages.create(body=text, from_=settings.from_number, to=number)
        except Exception as exc:  # keep trying the remaining numbers
            failures.append(exc)
    if failures:
        last = failures[-1]
        raise RuntimeError(
            f"{len(failures)} of {len(settings.to_numbers)} SMS failed, last: {type(last).__name__}: {last}"
        )


def send_pushbullet(settings: PushbulletSettings, title: str, text: str) -> None:
    """Push a note; pushbullet.py has no timeout option, the caller's deadline bounds it."""
    from pushbullet import Pushbullet

    Pushbullet(settings.api_key).push_note(title, text)


def send_apprise(settings: AppriseSettings, title: str, text: str) -> None:
    """Notify every configured Apprise URL; rejected URLs are logged by index, never by value."""
    import apprise

    client = apprise.Apprise()
    for index, url in enumerate(settings.urls):
        if not client.add(url):
            log.warning("apprise: apprise.urls[%d] was not accepted, skipping it", index)
    if len(client) == 0:
        raise RuntimeError("none of the apprise URLs was accepted")
    result = client.notify(
        body=text,
        title=title,
        body_format=apprise.NotifyFormat.TEXT,
        timeout=settings.timeout_seconds,
    )
    if not result:
        raise RuntimeError("apprise reported the notification as not delivered")


class _Attempt:
    """One channel running in a daemon worker thread, so a hung library cannot hang the run.

    A worker still blocked at the deadline is abandoned (daemon threads die with the process).
    """

    def __init__(self, method: str, action: Callable[[], None], timeout: float) -> None:
        self.method = method
        self.timeout = timeout
        self.error: BaseException | None = None
        self._action = action
        self._started = 0.0
        self._thread = threading.Thread(target=self._run, name=f"notify-{method}", daemon=True)

    def _run(self) -> None:
        try:
            self._action()
        except Exception as exc:  # reported by the caller, never raised
            self.error = exc

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def wait(self) -> BaseException | None:
        """Join until this channel's own deadline; return its failure, or None on success."""
        self._thread.join(max(0.0, self._started + self.timeout - time.monotonic()))
        if self._thread.is_alive():
            return TimeoutError(f"no answer within {self.timeout:g} s")
        return self.error


class Notifier:
    """Sends ``Notification``s over every method the settings switch on for their event."""

    def __init__(self, settings: NotificationSettings, templates_dir: Path = TEMPLATES_DIR) -> None:
        self.settings = settings
        self._templates_dir = templates_dir

    @functools.cached_property
    def _env(self) -> jinja2.Environment:
        """Built on first render: a run that sends nothing never imports jinja2."""
        return build_environment(self._templates_dir)

    def render_text(self, notification: Notification) -> str:
        """The plain-text email body, for printing the same report on a terminal."""
        return render_email(self._env, notification)[0]

    def _secrets(self) -> list[str | None]:
        s = self.settings
        return [s.email.password, s.sms.auth_token, s.pushbullet.api_key, *s.apprise.urls]

    def _action(self, method: str, notification: Notification) -> Callable[[], None]:
        s = self.settings
        short = one_line(notification.short_text)
        if method == "email":
            text, html = render_email(self._env, notification)
            message = build_email(s.email, notification.subject, text, html)
            return lambda: send_email(s.email, message)
        if method == "sms":
            return lambda: send_sms(s.sms, short)
        if method == "pushbullet":
            return lambda: send_pushbullet(s.pushbullet, notification.subject, short)
        if method == "apprise":
            return lambda: send_apprise(s.apprise, notification.subject, short)
        raise ValueError(f"unknown method {method!r}")

    def send(self, notification: Notification) -> dict[str, bool]:
        """Deliver over each enabled method; return ``{method: delivered}`` for those tried.

        Channels run in parallel, each bounded by its own ``timeout_seconds``; no failure escapes.
        An event no method is enabled for returns ``{}``.
        """
        attempts: list[_Attempt] = []
        results: dict[str, bool] = {}
        for method in self.settings.methods_for(notification.event):
            try:
                action = self._action(method, notification)
            except Exception as exc:  # e.g. a template error
                self._report(method, notification, exc)
                results[method] = False
                continue
            attempts.append(_Attempt(method, action, getattr(self.settings, method).timeout_seconds))
        for attempt in attempts:
            attempt.start()
        for attempt in attempts:
            error = attempt.wait()
            if error is not None:
                self._report(attempt.method, notification, error)
            else:
                log.info("notification %s sent via %s", notification.event, attempt.method)
            results[attempt.method] = error is None
        return {method: results[method] for method in METHODS if method in results}

    def _report(self, method: str, notification: Notification, error: BaseException) -> None:
        log.warning(
            "notification %s via %s failed: %s",
            notification.event,
            method,
            describe_failure(error, self._secrets()),
        )
