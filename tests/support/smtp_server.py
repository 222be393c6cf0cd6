"""A real SMTP server on 127.0.0.1 for integration tests of e-mail notifications.

Mocking ``smtplib`` would only prove that we call it the way we think; a real aiosmtpd server
proves the message survives an actual SMTP dialogue (EHLO, optional AUTH, MAIL/RCPT/DATA) and
parses back into the multipart structure a mail client will see.

Usage::

    with smtp_server() as server:
        send_something(host=server.host, port=server.port)
        (mail,) = server.wait_for(1)

``wait_for`` blocks on a ``threading.Condition`` that the server's DATA handler signals, so
tests never guess with sleeps.  The server is stopped when the ``with`` block exits, also when
the test fails; ``smtp_server`` can be wrapped in a pytest fixture with ``yield from`` or a
plain ``with``.
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.waiting import DEADLINE

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the server got it: envelope, parsed message and the AUTH login, if any."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    login: str | None


class _CollectingHandler:
    """aiosmtpd handler that parses every accepted message and wakes up waiting tests."""

    def __init__(self) -> None:
        self.received: list[ReceivedMail] = []
        self.condition = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd hook name
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        mail = ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), message, login)
        with self.condition:
            self.received.append(mail)
            self.condition.notify_all()
        return "250 OK"


class SMTPTestServer:
    """Handle on a running server: where it listens and what it has received."""

    def __init__(self, port: int, handler: _CollectingHandler) -> None:
        self.host = HOST
        self.port = port
        self._handler = handler

    @property
    def received(self) -> list[ReceivedMail]:
        """A snapshot of the messages received so far."""
        with self._handler.condition:
            return list(self._handler.received)

    def wait_for(self, count: int, timeout: float = DEADLINE) -> list[ReceivedMail]:
        """Block until at least ``count`` messages arrived; fail the test after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._handler.condition:
            while len(self._handler.received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} message(s) within {timeout:g} s, got {len(self._handler.received)}"
                    )
                self._handler.condition.wait(remaining)
            return list(self._handler.received)


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick for an ephemeral bind).

    Also what tests use as a "dead" SMTP port: connecting to it is refused at once.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _authenticator(credentials: tuple[str, str]) -> Any:
    expected = LoginPassword(credentials[0].encode(), credentials[1].encode())

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        # handled=False: let aiosmtpd answer 535 itself on failure (True would leave the client
        # waiting for a reply that never comes).
        return AuthResult(success=auth_data == expected, handled=False, auth_data=auth_data)

    return authenticate


@contextmanager
def smtp_server(credentials: tuple[str, str] | None = None) -> Iterator[SMTPTestServer]:
    """Run an SMTP server on a free loopback port for the duration of the ``with`` block.

    With ``credentials`` the server advertises AUTH (without TLS, loopback only) and accepts
    exactly that user/password pair.  aiosmtpd's Controller cannot bind port 0 (it connects to
    its own port to check readiness), so a free port is picked first; the tiny race with another
    process grabbing it in between is covered by retrying.
    """
    handler = _CollectingHandler()
    extra: dict[str, Any] = {}
    if credentials is not None:
        extra = {"authenticator": _authenticator(credentials), "auth_require_tls": False}
    last_error: Exception | None = None
    for _attempt in range(5):
        port = free_port()
        controller = Controller(handler, hostname=HOST, port=port, ready_timeout=DEADLINE, **extra)
        try:
            controller.start()
        except Exception as exc:  # port taken in the meantime: try another
            last_error = exc
            controller.stop(no_assert=True)
            continue
        try:
            yield SMTPTestServer(port, handler)
        finally:
            controller.stop()
        return
    raise RuntimeError(f"could not start the test SMTP server: {last_error}")
