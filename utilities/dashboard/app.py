"""The dashboard's web application (Flask): one read-only page, a login form, a stylesheet.

Nothing on the page acts on the farm: the only routes are GET pages and the login POST. Jinja2
autoescapes every value (a drive name or a harvester's answer may hold HTML), and the
Content-Security-Policy allows no script at all, so even a value that slipped through could not
run. The page reloads itself with a ``<meta refresh>``; the farm is gathered at most once per
refresh interval (``cache.Every``) whatever the number of viewers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from flask import Flask, Response, make_response, redirect, render_template, request
from markupsafe import Markup

from utilities.config import Settings
from utilities.dashboard import charts
from utilities.dashboard.auth import SESSION_COOKIE, allowed, secret_ok, session_value
from utilities.dashboard.cache import Every
from utilities.dashboard.model import Page, shown
from utilities.install_paths import INSTALL_DIR, TEMPLATES_DIR
from utilities.text import binary_size

STATIC_DIR = INSTALL_DIR / "static" / "dashboard"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def ago(seconds: float | None) -> str:
    """"12 s", "4 min", "3 h", "2 d": how old a figure is."""
    if seconds is None:
        return "n/a"
    for limit, unit, div in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / div:.0f} {unit}"
    return f"{seconds / 86400:.0f} d"


def when(timestamp: float | None) -> str:
    return "n/a" if not timestamp else dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def page_charts(page: Page) -> dict[str, Markup]:
    """The SVG charts of the page (charts.py escapes every text it draws)."""
    days = [(p.day[5:], p) for p in page.days]
    result = {
        "plots": charts.bar_chart("Plots moved per day", [(d, float(p.plots_moved)) for d, p in days]),
        "speed": charts.line_chart("Average MB/s per day", [(d, p.mb_per_second) for d, p in days], " MB/s"),
    }
    if any(p.new_plots is not None for _, p in days):
        result["new_plots"] = charts.bar_chart(
            "New plots per day on this harvester (-ud)", [(d, p.new_plots) for d, p in days], colour="#8250df"
        )
    return {name: Markup(svg) for name, svg in result.items()}  # noqa: S704 - escaped by charts.py


def create_app(settings: Settings, page_source: Callable[[], Page] | None = None) -> Flask:
    """The app for ``settings``; ``page_source`` gathers a page (default: ``gather_page``)."""
    if page_source is None:
        from utilities.dashboard.gather import gather_page

        def page_source() -> Page:
            return gather_page(settings)

    app = Flask(
        __name__, template_folder=str(TEMPLATES_DIR / "dashboard"), static_folder=str(STATIC_DIR),
        static_url_path="/static",
    )
    app.jinja_env.filters.update(shown=shown, size=binary_size, ago=ago, when=when)
    pages = Every(page_source, settings.dashboard.refresh_seconds)
    app.extensions["plot_manager_pages"] = pages
    secrets = settings.dashboard.secrets

    @app.before_request
    def _check_access() -> Response | None:
        if request.endpoint in ("login", "static"):
            return None
        if allowed(secrets, request.headers.get("Authorization"), request.cookies.get(SESSION_COOKIE)):
            return None
        if request.accept_mimetypes.accept_html:
            return redirect("/login", code=303)  # type: ignore[return-value]
        return make_response("login required: send Authorization: Bearer <dashboard.auth_token>\n", 401)

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    rendered: list[tuple[Page, str]] = []  # the last page and its HTML: one render per gathering

    @app.get("/")
    def farm() -> str:
        page = pages.get()
        last = rendered[-1] if rendered else None
        if last is None or last[0] is not page:
            last = (page, render_template("farm.html", page=page, charts=page_charts(page)))
            rendered[:] = [last]
        return last[1]

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Response | str:
        if not secrets:
            return redirect("/", code=303)  # type: ignore[return-value]
        if request.method == "POST":
            given = request.form.get("secret")
            if secret_ok(given, secrets):
                response = redirect("/", code=303)
                response.set_cookie(
                    SESSION_COOKIE, session_value(next(s for s in secrets if secret_ok(given, [s]))),
                    httponly=True, samesite="Strict", secure=request.is_secure, max_age=30 * 86400,
                )
                return response  # type: ignore[return-value]
            return make_response(render_template("login.html", failed=True), 403)  # type: ignore[return-value]
        return render_template("login.html", failed=False)

    return app
