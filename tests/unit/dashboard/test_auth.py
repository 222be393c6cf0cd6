"""Who may see the page: open without a secret, else a bearer header or the login cookie."""

from __future__ import annotations

from utilities.dashboard.auth import allowed, bearer_ok, cookie_ok, secret_ok, session_value

TOKEN = "a-token-of-sixteen-chars"


def test_without_a_secret_the_page_is_open() -> None:
    assert allowed((), None, None)


def test_a_secret_is_needed_in_a_header_or_a_cookie() -> None:
    secrets = (TOKEN, "password1")
    assert not allowed(secrets, None, None)
    assert allowed(secrets, f"Bearer {TOKEN}", None) and allowed(secrets, "bearer password1", None)
    assert not allowed(secrets, f"Basic {TOKEN}", None) and not allowed(secrets, "Bearer wrong", None)
    assert allowed(secrets, None, session_value(TOKEN)) and allowed(secrets, None, session_value("password1"))
    assert not allowed(secrets, None, TOKEN)  # the cookie holds an HMAC, never the secret itself
    assert not allowed(secrets, None, session_value("other"))


def test_empty_answers_never_match() -> None:
    assert not secret_ok("", ("",)) and not secret_ok(None, (TOKEN,))
    assert not bearer_ok("Bearer ", (TOKEN,)) and not cookie_ok("", (TOKEN,))
