"""Tell the farmer what happened: e-mail, SMS (Twilio), Pushbullet and Apprise.

Every role script runs from cron, so a notification must never be the reason a run fails or
hangs: each channel runs in its own worker thread with a deadline, any failure is logged as one
warning line (secrets redacted) and reported as ``False`` in the result of ``Notifier.send``.

Which methods an event goes to is the ``notifications:`` config section's decision
(``utilities/settings/notifications.py``, nothing by default). E-mail bodies are rendered from
the Jinja2 templates by ``utilities/notify_templates.py``; SMS, Pushbullet and Apprise carry the
notification's one-line ``short_text``. This module holds the notification, the four transports
and the dispatch.
"""

from __future__ import annotations

import functools
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from utilities.install_paths import TEMPLATES_DIR
from utilities.notify_templates import build_environment, render_email
from utilities.settings.notifications import (
    EVENTS,
    METHODS,
    AppriseSettings,
    EmailSettings,
    NotificationSettings,
    PushbulletSettings,
    SmsSettings,
)

# Most cron runs send nothing: jinja2 (notify_templates.build_environment), smtplib/ssl and the
# SMS, Pushbullet and Apprise libraries are imported only where a message is rendered or sent.
if TYPE_CHECKING:
    import jinja2

log = logging.getLogger(__name__)
# Twilio logs every request and response at INFO, several lines each; that would flood the
# farmer's cron log, so its client gets a logger of ours that only passes warnings.
_twilio_log = logging.getLogger(f"{__name__}.twilio_http")
_twilio_log.setLevel(logging.WARNING)


# --------------------------------------------------------------------------------------------
# The notification and its message (pure)
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


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


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
        return self._bodies(notification)[0]

    def _bodies(self, notification: Notification) -> tuple[str, str]:
        """The (plain text, HTML) e-mail bodies."""
        return render_email(self._env, notification.template, template_variables(notification))

    def _secrets(self) -> list[str | None]:
        s = self.settings
        return [s.email.password, s.sms.auth_token, s.pushbullet.api_key, *s.apprise.urls]

    def _action(self, method: str, notification: Notification) -> Callable[[], None]:
        s = self.settings
        short = one_line(notification.short_text)
        if method == "email":
            text, html = self._bodies(notification)
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
