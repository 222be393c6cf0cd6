"""Gather one page from the functions the reports use: the edge where the dashboard reads.

The farm is ``drive_manager.py -fr``'s own view: this machine's live scan
(``scan_harvester``) plus every harvester's export fetched over SSH (``fetch_exports``), put
together by ``farm_report.build_view`` and totalled by ``farm_report.farm_totals``. Transfers,
daily statistics, coins and alerts are read from this machine's state database, as
``plot_manager.py --history``, ``drive_manager.py -ud`` and ``coin_monitor.py --summary`` keep
them. A part that cannot be read (a locked database, a broken harvester) is named on the page
instead; gathering never raises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from utilities import __version__
from utilities.config import Settings
from utilities.dashboard.model import DAY, Alert, Page, add_farm, daily_points, last_day_summary
from utilities.harvester.farm_report import FarmView, build_view
from utilities.harvester_export import HarvesterSnapshot
from utilities.state import StateDB

log = logging.getLogger(__name__)

#: Alerts older than this are not "lately".
ALERT_DAYS = 7
ALERT_ROWS = 30
COIN_EVENTS = 10


def farm_view(settings: Settings, db: StateDB) -> FarmView:
    """The farm as ``-fr`` sees it (without this machine when the dashboard is told so)."""
    # paramiko and the drive scan are imported here, as -fr imports them: only when asked.
    from utilities.harvester.minute_pass import scan_harvester
    from utilities.remote import fetch_exports

    if settings.dashboard.include_this_machine:
        local = scan_harvester(settings, db).snapshot
        return build_view(local, fetch_exports(settings.farm))
    return remote_view(fetch_exports(settings.farm))


def remote_view(answers: Mapping[str, HarvesterSnapshot | Exception]) -> FarmView:
    """``build_view`` without a local harvester: the other harvesters' answers only."""
    harvesters = {n: a for n, a in sorted(answers.items()) if not isinstance(a, Exception)}
    problems = {n: str(a) for n, a in sorted(answers.items()) if isinstance(a, Exception)}
    return FarmView(harvesters, problems)


def _local_temperatures(db: StateDB) -> dict[str, object]:
    from utilities.harvester.minute_pass import TEMPERATURES_KEY

    value = db.get(TEMPERATURES_KEY, {})
    return value if isinstance(value, dict) else {}


def _farm(page: Page, settings: Settings, db: StateDB) -> None:
    view = farm_view(settings, db)
    local = settings.hostname if settings.dashboard.include_this_machine else None
    add_farm(page, view, settings.harvester.alerts.temperature_limit_c, local, _local_temperatures(db))


def _transfers(page: Page, settings: Settings, db: StateDB) -> None:
    records = db.transfers_since(page.generated_at - settings.dashboard.history_days * DAY)
    page.transfers = last_day_summary(records, page.generated_at)
    page.days = daily_points(records, db.daily_history(settings.dashboard.history_days), page.generated_at,
                             settings.dashboard.history_days)


def _coins(page: Page, settings: Settings, db: StateDB) -> None:
    """Coins and blocks only where coin_monitor.py keeps its state (its table exists)."""
    if not db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'farm_events'"):
        return
    from utilities.farmer.cli import summary_data

    page.coins = summary_data(settings, db, COIN_EVENTS)


def _alerts(page: Page, settings: Settings, db: StateDB) -> None:
    rows = db.query(
        "SELECT key, active, changed_at, COALESCE(detail, '') FROM alerts WHERE changed_at >= ? "
        "ORDER BY changed_at DESC LIMIT ?",
        (page.generated_at - ALERT_DAYS * DAY, ALERT_ROWS),
    )
    page.alerts = [Alert(str(key), bool(active), float(at), str(detail)) for key, active, at, detail in rows]


PARTS = (("farm", _farm), ("transfers", _transfers), ("coins", _coins), ("alerts", _alerts))


def gather_page(settings: Settings, now: float | None = None) -> Page:
    """The whole page; a part that fails is reported on the page and in the log, not raised."""
    page = Page(
        generated_at=time.time() if now is None else now,
        refresh_seconds=settings.dashboard.refresh_seconds,
        hostname=settings.hostname,
        version=__version__,
    )
    try:
        db = StateDB(settings.database_path)
    except Exception as exc:  # noqa: BLE001 - the page says why instead of failing
        page.problems.append(f"state database {settings.database_path}: {exc}")
        return page
    with db:
        for what, part in PARTS:
            try:
                part(page, settings, db)
            except Exception as exc:  # noqa: BLE001 - one broken part must not hide the others
                log.warning("dashboard: %s could not be read: %s", what, exc, exc_info=True)
                page.problems.append(f"{what}: {type(exc).__name__}: {exc}")
    return page
