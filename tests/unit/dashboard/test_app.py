"""The web app in-process (Flask's test client): escaping, auth, read-only, never a 500."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser

import pytest
from flask.testing import FlaskClient

from tests.unit.dashboard.samples import drive, snapshot
from utilities.config import validate_config
from utilities.dashboard.app import create_app
from utilities.dashboard.auth import SESSION_COOKIE
from utilities.dashboard.model import Page, add_farm
from utilities.harvester.farm_report import FarmView

TOKEN = "sixteen-chars-or-more"
EVIL = '<script>alert("x")</script>'


class Tags(HTMLParser):
    """Every start tag of a page, to prove no injected element exists."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def farm_page() -> Page:
    page = Page(generated_at=1_000_100.0, refresh_seconds=30, hostname="chianas01")
    view = FarmView(
        {"chianas01": snapshot("chianas01", (drive("drive0"), drive(EVIL, offline=True)), extra={
            "receiving": [{"drive": "drive0", "plot": EVIL, "size": 100, "received": 40}]}),
         "chianas02": snapshot("chianas02", (drive("drive0", plots_og=0, plots_pool=7),))},
        {"chianas03": f"chianas03 (10.0.0.3): unreachable: {EVIL}"},
    )
    add_farm(page, view, hot_limit_c=50)
    return page


def client(page_source: Callable[[], Page] = farm_page, **dashboard: object) -> FlaskClient:
    settings = validate_config({"hostname": "chianas01", "dashboard": {"refresh_seconds": 30, **dashboard}})
    return create_app(settings, page_source).test_client()


def test_the_page_shows_the_farm_with_every_value_escaped() -> None:
    response = client().get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert EVIL not in html and "&lt;script&gt;" in html
    tags = Tags()
    tags.feed(html)
    assert "script" not in tags.tags
    assert re.search(r'id="total-plots" data-value="13">13<', html)
    assert 'data-harvester="chianas03"' in html and "UNREACHABLE" in html
    assert '<meta http-equiv="refresh" content="30">' in html
    assert "receiving &lt;script&gt;" in html and "40.0 %" in html
    assert "script-src" not in response.headers["Content-Security-Policy"]  # default-src 'none': no script at all


def test_one_gathering_serves_every_viewer_within_the_interval() -> None:
    calls: list[int] = []

    def source() -> Page:
        calls.append(1)
        return farm_page()

    viewer = client(source)
    for _ in range(5):
        assert viewer.get("/").status_code == 200
    assert len(calls) == 1


def test_a_broken_part_is_named_on_the_page() -> None:
    page = farm_page()
    page.problems.append("transfers: DatabaseError: database is locked")
    html = client(lambda: page).get("/").get_data(as_text=True)
    assert "Could not read transfers: DatabaseError: database is locked" in html


def test_nothing_but_reading_is_allowed() -> None:
    viewer = client()
    for method in ("post", "put", "delete", "patch"):
        assert getattr(viewer, method)("/").status_code == 405


def test_with_a_secret_the_page_needs_a_header_or_a_login() -> None:
    viewer = client(auth_token=TOKEN)
    assert viewer.get("/", headers={"Accept": "application/json"}).status_code == 401
    assert viewer.get("/", headers={"Accept": "text/html"}).headers["Location"] == "/login"
    assert viewer.get(f"/?token={TOKEN}", headers={"Accept": "application/json"}).status_code == 401  # never in a URL
    assert viewer.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert viewer.post("/login", data={"secret": "wrong"}).status_code == 403
    login = viewer.post("/login", data={"secret": TOKEN})
    assert login.status_code == 303
    cookie = login.headers["Set-Cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    assert viewer.get("/").status_code == 200  # the client keeps the cookie
    assert viewer.get("/static/dashboard.css").status_code == 200


@pytest.mark.parametrize("secret", [{"password": "correct horse"}, {"auth_token": TOKEN}])
def test_the_login_form_takes_the_token_or_the_password(secret: dict[str, str]) -> None:
    viewer = client(**secret)
    assert viewer.post("/login", data={"secret": next(iter(secret.values()))}).status_code == 303
    assert viewer.get("/").status_code == 200


def test_without_a_secret_login_goes_to_the_page() -> None:
    assert client().get("/login").headers["Location"] == "/"
