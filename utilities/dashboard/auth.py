"""Who may look: the dashboard's secret, presented as a header or a login cookie, never in a URL.

With no ``dashboard.auth_token`` or ``dashboard.password`` configured the page is open, which
the settings allow only on a loopback address. With one, every page asks for it: scripts send
``Authorization: Bearer TOKEN``; browsers post it once to the login form and get a cookie. The
cookie holds an HMAC of the secret, not the secret; it is HttpOnly and SameSite=Strict. The
secret is never accepted from a query string, so it cannot end up in a proxy's or browser's URL
history. Comparisons take constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

SESSION_COOKIE = "plot_manager_dashboard"
_SESSION_MESSAGE = b"plot_manager dashboard session v1"


def session_value(secret: str) -> str:
    """The cookie value a login with ``secret`` earns (changing the secret logs everyone out)."""
    return hmac.new(secret.encode("utf-8"), _SESSION_MESSAGE, hashlib.sha256).hexdigest()


def _matches(given: str, candidates: Sequence[str]) -> bool:
    # Every candidate is compared, so the time taken says nothing about which one matched.
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(given.encode("utf-8"), candidate.encode("utf-8"))
    return found


def secret_ok(given: str | None, secrets: Sequence[str]) -> bool:
    """A login form's token or password."""
    return bool(given) and _matches(given or "", secrets)


def bearer_ok(header: str | None, secrets: Sequence[str]) -> bool:
    """An ``Authorization: Bearer <secret>`` header."""
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and secret_ok(value.strip(), secrets)


def cookie_ok(cookie: str | None, secrets: Sequence[str]) -> bool:
    return bool(cookie) and _matches(cookie or "", [session_value(s) for s in secrets])


def allowed(secrets: Sequence[str], authorization: str | None, cookie: str | None) -> bool:
    """Pure: may this request see the page?"""
    if not secrets:
        return True
    return bearer_ok(authorization, secrets) or cookie_ok(cookie, secrets)
