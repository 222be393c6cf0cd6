"""Notifications end to end: real SMTP and HTTP servers on loopback, Twilio/Pushbullet at the HTTP layer.

E-mail goes through a real aiosmtpd server and is parsed back, so the multipart structure and the
rendered templates are what a mail client would see.  Twilio and Pushbullet are checked with
``responses`` at the exact HTTP request the libraries make (URL, method, form or JSON body), and
Apprise posts to a tiny ``http.server`` on 127.0.0.1.  An autouse guard fails any test that tries
to resolve or connect to anything but loopback, so nothing here can reach the internet.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
import responses

from tests.support.smtp_server import SMTPTestServer, free_port, smtp_server
from tests.support.waiting import CHANNEL_TIMEOUT, DEADLINE
from utilities.notify import Notification, Notifier
from utilities.settings.notifications import EVENTS, NotificationSettings

TWILIO_SID = "AC0123456789abcdef0123456789abcdef"
TWILIO_TOKEN = "twilio-secret-token"
TWILIO_URL = f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
PUSHBULLET_KEY = "o.pushbullet-secret-key"
PB_API = "https://api.pushbullet.com/v2"


# ---------------------------------------------------------------------------------------------
# Guards and helpers
# ---------------------------------------------------------------------------------------------


def _is_loopback(host: object) -> bool:
    text = str(host)
    return text in ("localhost", "::1") or text.startswith("127.")


@pytest.fixture(autouse=True)
def no_external_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse (and record) DNS lookups and connects to anything but loopback.

    Refusing alone is not enough: a channel swallows the error and reports False, which a test
    expecting failure would accept.  So every attempt is recorded and fails the test afterwards.
    """
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback(host):
            attempts.append(f"getaddrinfo({host!r})")
            raise OSError(f"test guard: no lookups of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            attempts.append(f"connect({address!r})")
            raise OSError(f"test guard: no connections to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    yield attempts
    assert attempts == [], f"a test tried to reach the network: {attempts}"


@pytest.fixture
def mail_server() -> Iterator[SMTPTestServer]:
    with smtp_server() as server:
        yield server


def settings(**sections: Any) -> NotificationSettings:
    return NotificationSettings.model_validate(sections)


def email_section(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "from_address": "plots@farm.test",
        "to": ["farmer@farm.test", "partner@farm.test"],
        "timeout_seconds": CHANNEL_TIMEOUT,  # a deadline for a hung server, not a measure: a busy machine is slow
        **extra,
    }


def sms_section(**extra: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "account_sid": TWILIO_SID,
        "auth_token": TWILIO_TOKEN,
        "from_number": "+15550000000",
        "to_numbers": ["+15551111111"],
        "timeout_seconds": CHANNEL_TIMEOUT,
        **extra,
    }


def bodies(message: EmailMessage) -> tuple[str, str]:
    """The text/plain and text/html alternatives, failing if either is missing."""
    assert message.get_content_type() == "multipart/alternative"
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    assert text_part is not None and text_part.get_content_type() == "text/plain"
    assert html_part is not None and html_part.get_content_type() == "text/html"
    # On the wire lines end in CRLF; compare with the templates' LF.
    return tuple(part.get_content().replace("\r\n", "\n") for part in (text_part, html_part))  # type: ignore[return-value]


def report_line(label: str, value: str) -> re.Pattern[str]:
    """A whole ``Label.....value`` line (at least three dots)."""
    return re.compile(rf"^{re.escape(label)}\.{{3,}}{re.escape(value)}$", re.MULTILINE)


NEW_PLOT_DRIVE_CONTEXT: dict[str, Any] = {
    "hostname": "chia-plotter-01",
    "time": "2024-05-01 12:00:00",
    "previous_drive": "/mnt/enclosure0/front/column0/drive3",
    "previous_drive_plots": 107,
    "new_drive_mountpoint": "/mnt/enclosure0/front/column0/drive4",
    "new_drive_device": "/dev/sdq1",
    "drive_size": "10.9T",
    "free_slots": 108,
    "serial": "ZL2<B>&7",  # must be escaped in HTML, verbatim in text
    "temperature": 38,
    "health": "PASSED",
    "total_plots": 4321,
    "drive_count": 41,
    # slots_until_full deliberately missing: must show n/a
    "max_plots": 4428,
    "days_to_fill": 12.5,
}


def new_plot_drive() -> Notification:
    return Notification(
        event="new_plot_drive",
        subject="New plot drive on chia-plotter-01",
        short_text="chia-plotter-01: now plotting to\n/mnt/enclosure0/front/column0/drive4",
        context=NEW_PLOT_DRIVE_CONTEXT,
        template="new_plot_drive",
    )


@contextmanager
def json_sink(status: int = 200) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """A tiny HTTP server on loopback recording every POSTed JSON body (for apprise json://)."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server hook name
            length = int(self.headers.get("Content-Length", "0"))
            received.append({"path": self.path, "json": json.loads(self.rfile.read(length))})
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def mock_pushbullet_account(mock: responses.RequestsMock) -> None:
    """The four GETs pushbullet.py makes in its constructor, with an empty account."""
    mock.get(f"{PB_API}/devices", json={"devices": []})
    mock.get(f"{PB_API}/chats", json={"chats": []})
    mock.get(f"{PB_API}/users/me", json={"iden": "ujfarmer", "name": "Farmer"})
    mock.get(f"{PB_API}/channels", json={"channels": []})


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ---------------------------------------------------------------------------------------------
# E-mail through a real SMTP server
# ---------------------------------------------------------------------------------------------


def test_new_plot_drive_mail_has_subject_and_both_rendered_parts(mail_server: SMTPTestServer) -> None:
    notifier = Notifier(settings(email=email_section(mail_server.port), events={"new_plot_drive": ["email"]}))

    assert notifier.send(new_plot_drive()) == {"email": True}

    (mail,) = mail_server.wait_for(1)
    assert mail.rcpt_tos == ("farmer@farm.test", "partner@farm.test")
    message = mail.message
    assert message["Subject"] == "New plot drive on chia-plotter-01"
    assert message["From"] == "plots@farm.test"
    text, html = bodies(message)

    for body in (text, html):
        assert report_line("Drive size", "10.9T").search(body)
        assert report_line("Mount point", "/mnt/enclosure0/front/column0/drive4").search(body)
        assert report_line("Plots on drive", "107").search(body)
        assert report_line("Temperature", "38°C").search(body)
        assert report_line("Days until all drives are full", "12.50").search(body)
        assert report_line("Plot slots left", "n/a").search(body)
        assert "chia-plotter-01" in body
    assert report_line("Serial number", "ZL2<B>&7").search(text)
    assert report_line("Serial number", "ZL2&lt;B&gt;&amp;7").search(html)
    assert "<B>" not in html


def test_daily_report_mail_appends_farm_report_only_when_given(mail_server: SMTPTestServer) -> None:
    notifier = Notifier(settings(email=email_section(mail_server.port), events={"daily_report": ["email"]}))
    context = {
        "hostname": "chia-plotter-01",
        "time": "2024-05-02 07:00:00",
        "receive_drive_mountpoint": "/mnt/enclosure1/rear/column2/drive7",
        "receive_drive_device": "/dev/sdx1",
        "receive_drive_size": "16.4T",
        "serial": "ZR5ABC",
        "temperature": 41,
        "health": "PASSED",
        "total_plots": 5000,
        "og_plots": 1200,
        "pool_plots": 3800,
        "drive_count": 48,
        "slots_until_full": 640,
        "max_plots": 5640,
        "chia_plots": 4998,
        "chia_tib": 494.8,
        "plots_last_24h": 52,
        "plots_per_hour": 2.1667,
        "tib_per_day": 5.15,
        "days_to_fill": 12.3,
    }
    with_farm = Notification(
        "daily_report",
        "Daily report",
        "daily",
        {**context, "farm_report_text": "Farming status: Farming <ok>"},
        "daily_report",
    )
    without_farm = Notification("daily_report", "Daily report 2", "daily", context, "daily_report")

    assert notifier.send(with_farm) == {"email": True}
    assert notifier.send(without_farm) == {"email": True}

    first, second = mail_server.wait_for(2)
    text, html = bodies(first.message)
    for body in (text, html):
        assert report_line("Mount point", "/mnt/enclosure1/rear/column2/drive7").search(body)
        assert report_line("Solo (OG) plots", "1200").search(body)
        assert report_line("Portable (pool) plots", "3800").search(body)
        assert report_line("Farm size", "494.80 TiB").search(body)
        assert report_line("Plots per hour", "2.17").search(body)
        assert report_line("Plots in the last 24 hours", "52").search(body)
        assert "Farm report" in body
    assert "Farming status: Farming <ok>" in text
    assert "Farming status: Farming &lt;ok&gt;" in html

    text2, html2 = bodies(second.message)
    assert "Farm report" not in text2 and "Farm report" not in html2
    assert second.message["Subject"] == "Daily report 2"


def test_drive_temperature_mail_lists_every_hot_drive(mail_server: SMTPTestServer) -> None:
    notifier = Notifier(settings(email=email_section(mail_server.port), events={"drive_temperature": ["email"]}))
    drives = [
        {"mountpoint": "/mnt/d1", "device": "/dev/sdb", "serial": "S1", "temperature": 55, "limit": 50},
        {"mountpoint": "/mnt/d2", "device": "/dev/sdc", "serial": None, "temperature": 61, "limit": 50},
    ]
    note = Notification(
        "drive_temperature", "Drives too hot", "2 drives hot", {"hostname": "h1", "drives": drives}, "drive_temperature"
    )

    assert notifier.send(note) == {"email": True}

    text, html = bodies(mail_server.wait_for(1)[0].message)
    for body in (text, html):
        assert "2 drive(s) on h1" in body
        assert "/mnt/d1 (/dev/sdb)" in body and "/mnt/d2 (/dev/sdc)" in body
        assert report_line("Temperature", "61°C").search(body)
        assert report_line("Limit", "50°C").search(body)
        assert report_line("Serial number", "n/a").search(body)


@pytest.mark.parametrize("template", [None, "no_such_template"])
def test_missing_template_falls_back_to_generic(mail_server: SMTPTestServer, template: str | None) -> None:
    notifier = Notifier(settings(email=email_section(mail_server.port), events={"coin_received": ["email"]}))
    note = Notification(
        "coin_received", "Coins received", "1.75 XCH", {"amount_xch": 1.75, "wallet_id": 1, "memo": None}, template
    )

    assert notifier.send(note) == {"email": True}

    message = mail_server.wait_for(1)[0].message
    assert message["Subject"] == "Coins received"
    text, html = bodies(message)
    for body in (text, html):
        assert "Coins received" in body
        assert report_line("Amount xch", "1.75").search(body)
        assert report_line("Wallet id", "1").search(body)
        assert report_line("Memo", "n/a").search(body)


def test_smtp_login_is_used_when_credentials_are_set() -> None:
    with smtp_server(credentials=("farmer", "hunter2-smtp")) as server:
        section = email_section(server.port, username="farmer", password="hunter2-smtp")
        notifier = Notifier(settings(email=section, events={"new_plot_drive": ["email"]}))
        assert notifier.send(new_plot_drive()) == {"email": True}
        assert server.wait_for(1)[0].login == "farmer"


def test_wrong_smtp_password_is_a_logged_failure(caplog: pytest.LogCaptureFixture) -> None:
    with smtp_server(credentials=("farmer", "right-password")) as server:
        section = email_section(server.port, username="farmer", password="wrong-password-xyz")
        notifier = Notifier(settings(email=section, events={"new_plot_drive": ["email"]}))
        with caplog.at_level(logging.WARNING, logger="utilities.notify"):
            assert notifier.send(new_plot_drive()) == {"email": False}
        assert server.received == []
    assert "SMTPAuthenticationError" in caplog.text
    assert "wrong-password-xyz" not in caplog.text


# ---------------------------------------------------------------------------------------------
# Switching per event and per method
# ---------------------------------------------------------------------------------------------


def test_event_not_enabled_for_email_sends_no_mail(mail_server: SMTPTestServer) -> None:
    notifier = Notifier(settings(email=email_section(mail_server.port), events={"daily_report": ["email"]}))

    # send() is synchronous: had it mailed, the server would already hold the message.
    assert notifier.send(new_plot_drive()) == {}
    assert notifier.send(Notification("daily_report", "Only this one", "x", {}, "daily_report")) == {"email": True}

    mails = mail_server.wait_for(1)
    assert [m.message["Subject"] for m in mails] == ["Only this one"]


def test_globally_disabled_method_sends_nothing(mail_server: SMTPTestServer) -> None:
    section = {**email_section(mail_server.port), "enabled": False}
    notifier = Notifier(settings(email=section, events={"new_plot_drive": ["email", "sms"]}))

    with responses.RequestsMock() as mock:  # any HTTP call would raise: none is registered
        assert notifier.send(new_plot_drive()) == {}
        assert len(mock.calls) == 0
    assert mail_server.received == []


def test_default_settings_send_nothing() -> None:
    defaults = NotificationSettings()
    assert defaults.events == {}
    assert all(defaults.methods_for(event) == [] for event in EVENTS)
    assert Notifier(defaults).send(new_plot_drive()) == {}


# ---------------------------------------------------------------------------------------------
# One failing channel never stops the others
# ---------------------------------------------------------------------------------------------


def test_dead_smtp_port_fails_email_but_apprise_still_delivers(caplog: pytest.LogCaptureFixture) -> None:
    dead_port = free_port()  # nothing listens there: connection refused at once
    with json_sink() as (http_port, posted):
        notifier = Notifier(
            settings(
                email=email_section(dead_port, username="farmer", password="smtp-secret-pw"),
                apprise={"enabled": True, "urls": [f"json://127.0.0.1:{http_port}/"],
                         "timeout_seconds": CHANNEL_TIMEOUT},
                events={"new_plot_drive": ["email", "apprise"]},
            )
        )
        with caplog.at_level(logging.WARNING, logger="utilities.notify"):
            assert notifier.send(new_plot_drive()) == {"email": False, "apprise": True}

    assert len(posted) == 1
    warnings = [r for r in caplog.records if r.name == "utilities.notify" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    assert "\n" not in line
    assert "new_plot_drive via email failed" in line
    assert "ConnectionRefusedError" in line
    assert "smtp-secret-pw" not in caplog.text


def test_exceptions_in_sms_and_pushbullet_do_not_stop_email(
    mail_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(
        settings(
            email=email_section(mail_server.port),
            sms=sms_section(),
            pushbullet={"enabled": True, "api_key": PUSHBULLET_KEY, "timeout_seconds": CHANNEL_TIMEOUT},
            events={"new_plot_drive": ["email", "sms", "pushbullet"]},
        )
    )
    with responses.RequestsMock() as mock, caplog.at_level(logging.WARNING, logger="utilities.notify"):
        mock.post(TWILIO_URL, status=500, json={"code": 20500, "message": "Internal Server Error"})
        mock.get(f"{PB_API}/devices", status=401, json={"error": {"message": "invalid key"}})
        result = notifier.send(new_plot_drive())

    assert result == {"email": True, "sms": False, "pushbullet": False}
    assert mail_server.wait_for(1)[0].message["Subject"] == "New plot drive on chia-plotter-01"
    assert "via sms failed" in caplog.text and "via pushbullet failed" in caplog.text
    assert "InvalidKeyError" in caplog.text
    assert TWILIO_TOKEN not in caplog.text and PUSHBULLET_KEY not in caplog.text
    assert "\x1b[" not in caplog.text


def test_hung_channel_is_abandoned_at_its_deadline(
    mail_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pushbullet

    release = threading.Event()

    class HangingPushbullet:
        def __init__(self, api_key: str) -> None:
            release.wait(DEADLINE)  # stands in for a server that never answers (released when the test ends)

        def push_note(self, title: str, body: str) -> None:
            raise AssertionError("should never get here")

    monkeypatch.setattr(pushbullet, "Pushbullet", HangingPushbullet)
    notifier = Notifier(
        settings(
            email=email_section(mail_server.port),
            pushbullet={"enabled": True, "api_key": PUSHBULLET_KEY, "timeout_seconds": 0.5},
            events={"new_plot_drive": ["pushbullet", "email"]},
        )
    )
    try:
        started = time.monotonic()
        result = notifier.send(new_plot_drive())
        elapsed = time.monotonic() - started
    finally:
        release.set()

    assert result == {"email": True, "pushbullet": False}
    # Abandoned at its 0.5 s deadline, not waited for: had send() waited, it would have taken
    # the whole hang (DEADLINE).  Half of that leaves a busy machine all the time it needs.
    assert elapsed < DEADLINE / 2
    assert len(mail_server.wait_for(1)) == 1


def test_apprise_exception_is_logged_with_secrets_masked(
    mail_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import apprise

    url = "json://user:apprise-pass@127.0.0.1:9/hook-secret-token"

    def exploding_notify(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"cannot post to {url}\nsecond line")

    monkeypatch.setattr(apprise.Apprise, "notify", exploding_notify)
    notifier = Notifier(
        settings(
            email=email_section(mail_server.port),
            apprise={"enabled": True, "urls": [url], "timeout_seconds": CHANNEL_TIMEOUT},
            events={"new_plot_drive": ["email", "apprise"]},
        )
    )
    with caplog.at_level(logging.WARNING, logger="utilities.notify"):
        assert notifier.send(new_plot_drive()) == {"email": True, "apprise": False}

    (record,) = [r for r in caplog.records if r.name == "utilities.notify"]
    line = record.getMessage()
    assert "RuntimeError: cannot post to ***" in line
    assert "\n" not in line
    assert "apprise-pass" not in caplog.text and "hook-secret-token" not in caplog.text


# ---------------------------------------------------------------------------------------------
# Twilio and Pushbullet at the HTTP layer, Apprise against a loopback server
# ---------------------------------------------------------------------------------------------


def test_sms_posts_one_twilio_message_per_number() -> None:
    notifier = Notifier(
        settings(sms=sms_section(to_numbers=["+15551111111", "+15552222222"]), events={"new_plot_drive": ["sms"]})
    )
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.post(TWILIO_URL, status=201, json={"sid": "SM1", "status": "queued"})
        assert notifier.send(new_plot_drive()) == {"sms": True}

        assert len(mock.calls) == 2
        for call, number in zip(mock.calls, ["+15551111111", "+15552222222"], strict=True):
            assert call.request.method == "POST"
            assert call.request.url == TWILIO_URL
            assert call.request.headers["Authorization"] == basic_auth(TWILIO_SID, TWILIO_TOKEN)
            form = parse_qs(call.request.body if isinstance(call.request.body, str) else call.request.body.decode())
            assert form == {
                "From": ["+15550000000"],
                "To": [number],
                "Body": ["chia-plotter-01: now plotting to /mnt/enclosure0/front/column0/drive4"],
            }


def test_pushbullet_pushes_a_note() -> None:
    notifier = Notifier(
        settings(
            pushbullet={"enabled": True, "api_key": PUSHBULLET_KEY, "timeout_seconds": CHANNEL_TIMEOUT},
            events={"new_plot_drive": ["pushbullet"]},
        )
    )
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock_pushbullet_account(mock)
        mock.post(f"{PB_API}/pushes", json={"iden": "push1", "type": "note"})
        assert notifier.send(new_plot_drive()) == {"pushbullet": True}

        (push,) = [c for c in mock.calls if c.request.method == "POST"]
        assert push.request.url == f"{PB_API}/pushes"
        assert push.request.headers["Authorization"] == basic_auth(PUSHBULLET_KEY, "")
        assert json.loads(push.request.body) == {
            "type": "note",
            "title": "New plot drive on chia-plotter-01",
            "body": "chia-plotter-01: now plotting to /mnt/enclosure0/front/column0/drive4",
        }


def test_pushbullet_rejected_push_is_false() -> None:
    notifier = Notifier(
        settings(
            pushbullet={"enabled": True, "api_key": PUSHBULLET_KEY, "timeout_seconds": CHANNEL_TIMEOUT},
            events={"new_plot_drive": ["pushbullet"]},
        )
    )
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock_pushbullet_account(mock)
        mock.post(f"{PB_API}/pushes", status=400, json={"error": {"message": "bad"}})
        assert notifier.send(new_plot_drive()) == {"pushbullet": False}


def test_apprise_posts_json_to_loopback_server() -> None:
    with json_sink() as (port, posted):
        notifier = Notifier(
            settings(
                apprise={"enabled": True, "urls": [f"json://127.0.0.1:{port}/farm-hook"],
                         "timeout_seconds": CHANNEL_TIMEOUT},
                events={"new_plot_drive": ["apprise"]},
            )
        )
        assert notifier.send(new_plot_drive()) == {"apprise": True}

    (request,) = posted
    assert request["path"] == "/farm-hook"
    body = request["json"]
    assert body["title"] == "New plot drive on chia-plotter-01"
    assert body["message"] == "chia-plotter-01: now plotting to /mnt/enclosure0/front/column0/drive4"
    assert body["type"] == "info"


def test_apprise_server_error_is_false() -> None:
    with json_sink(status=500) as (port, posted):
        notifier = Notifier(
            settings(
                apprise={"enabled": True, "urls": [f"json://127.0.0.1:{port}/"], "timeout_seconds": CHANNEL_TIMEOUT},
                events={"new_plot_drive": ["apprise"]},
            )
        )
        assert notifier.send(new_plot_drive()) == {"apprise": False}
    assert len(posted) == 1
