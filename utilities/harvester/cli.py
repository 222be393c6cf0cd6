"""drive_manager.py's actions: each takes parsed flags and settings, returns an exit status."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from utilities.config import Settings
from utilities.errors import DriveError, UsageError
from utilities.harvester.drive_health import REASON_TEXT
from utilities.harvester.drives import discover_drives, find_drive
from utilities.harvester.farm_report import (
    FarmView,
    build_view,
    farm_report_data,
    farm_report_text,
    find_uuid,
    uuid_report_text,
    validate_uuid,
)
from utilities.harvester.minute_pass import read_drive_smart, run_harvester_pass, scan_harvester
from utilities.harvester.receive_set import RECEIVE_KEY
from utilities.harvester.reports import (
    daily_report_context,
    plot_report_data,
    plot_report_text,
    plot_size_label,
    temperature_report_text,
    temperature_rows,
)
from utilities.harvester.smart import SmartInfo, read_smart
from utilities.harvester.smart_history import grown_drives, load_trends, reading_from_smart
from utilities.locking import exclusive_lock
from utilities.notify import Notification, Notifier
from utilities.replace import make_room_for
from utilities.state import DailyStats, StateDB

log = logging.getLogger(__name__)


def _lock_path(settings: Settings) -> Path:
    return settings.state_path / "drive_manager.lock"


def cron_pass(settings: Settings, config_path: Path, db: StateDB, wait: bool = False) -> None:
    with exclusive_lock(_lock_path(settings), "drive_manager.py cron run", wait=wait):
        run_harvester_pass(settings, config_path, db, Notifier(settings.notifications))


def _report_data(settings: Settings, db: StateDB) -> tuple[dict[str, Any], SmartInfo | None]:
    snap = scan_harvester(settings, db).snapshot
    receive = snap.drive(snap.receive_drive)
    smart = (
        read_smart(settings.smart_device(receive.name, receive.mountpoint, receive.device), smartctl=settings.harvester.smartctl)
        if receive else None
    )
    from utilities.harvester.plot_check_store import failing_plots

    return plot_report_data(snap, smart, [r.to_dict() for r in failing_plots(db)]), smart


def plot_report(args: argparse.Namespace, settings: Settings, db: StateDB) -> int:
    data, _ = _report_data(settings, db)
    print(json.dumps(data, indent=2) if args.json else plot_report_text(data, plot_size_label(settings.plot_size)))
    return 0


def check_temps(args: argparse.Namespace, settings: Settings, db: StateDB) -> int:
    snap = scan_harvester(settings, db).snapshot
    mounted = [d for d in snap.drives if d.mounted]
    smart = read_drive_smart(settings, mounted)
    limit = settings.harvester.alerts.temperature_limit_c
    live = {name: reading_from_smart(name, info, snap.generated_at) for name, info in smart.items()}
    trends = load_trends(db, [d.name for d in mounted], snap.generated_at, live)
    held = {h["name"]: REASON_TEXT.get(h["reason"], h["reason"]) for h in snap.held_back}
    rows = temperature_rows(mounted, smart, limit, trends, held)
    if args.json:
        print(json.dumps({"hostname": snap.hostname, "limit_c": limit, "drives": rows}, indent=2))
    else:
        print(temperature_report_text(snap.hostname, rows, limit))
    return 0


def daily_report(args: argparse.Namespace, settings: Settings, db: StateDB) -> int:
    data, smart = _report_data(settings, db)
    trends = load_trends(db, [d["name"] for d in data["drives"] if d["mounted"]], time.time())
    context = daily_report_context(data, smart, grown_drives(trends.values()))
    if settings.farm.harvesters and settings.notifications.events.get("farm_update"):
        context["farm_report_text"] = farm_report_text(_farm_view(settings, db))
    notifier = Notifier(settings.notifications)
    notification = Notification(
        event="daily_report",
        subject=f"{settings.hostname}: daily plot report",
        short_text=f"{settings.hostname}: {data['total_plots']} plots, {data['plots_last_24h']} in 24 h, {data['slots_until_full']} slots left",
        context=context,
        template="daily_report",
    )
    print(notifier.render_text(notification))
    delivered = notifier.send(notification)
    if not delivered:
        print("(daily_report is not switched on for any notification method: nothing sent)")
    for method, ok in delivered.items():
        print(f"{method}: {'sent' if ok else 'FAILED (see the log)'}")
    return 0 if all(delivered.values()) else 1


def update_daily(args: argparse.Namespace, settings: Settings, db: StateDB) -> int:
    snap = scan_harvester(settings, db).snapshot
    stats = DailyStats(
        day=date.fromtimestamp(snap.generated_at).isoformat(),
        recorded_at=time.time(),
        total_plots=snap.total_plots,
        og_plots=snap.og_plots,
        pool_plots=snap.pool_plots,
        new_plots=snap.plots_last_24h,
    )
    db.record_daily(stats)
    print(f"recorded {stats.day}: {stats.total_plots} plots, {stats.new_plots} new in the last 24 hours")
    return 0


def offline_drive(args: argparse.Namespace, settings: Settings, config_path: Path, db: StateDB) -> int:
    drive = find_drive(discover_drives(settings.harvester.drive_discovery), args.offline_hdd)
    if not db.set_offline(drive.name, drive.mountpoint):
        raise DriveError(f"drive {drive.name} ({drive.mountpoint}) is already offline")
    print(f"{drive.name} ({drive.mountpoint}) is now offline: no more plots will be written to it")
    cron_pass(settings, config_path, db, wait=True)  # move the receive script off it now
    return 0


def online_drive(args: argparse.Namespace, settings: Settings, config_path: Path, db: StateDB) -> int:
    offline = db.offline_drives()
    wanted = args.online_hdd.rstrip("/")
    name = next((n for n, mp in offline.items() if wanted in (n, mp.rstrip("/"))), None)
    from utilities.harvester.drive_holds import release_hold

    released = release_hold(db, args.online_hdd)  # held back for its SMART health or heat
    if released is not None:
        print(f"{released.drive} was held back ({REASON_TEXT[released.reason]}: {released.detail}); "
              "it may receive plots again")
        if name is None:
            cron_pass(settings, config_path, db, wait=True)
            return 0
    if name is None:
        from utilities.harvester.drive_presence import forget_drive

        forgotten = forget_drive(db, args.online_hdd)  # a missing drive the farmer knows is not coming back
        if forgotten is not None:
            print(f"{forgotten.name} ({forgotten.mountpoint}) was missing with {forgotten.plots} plots: "
                  "forgotten, no longer listed as missing")
            return 0
    if name is None:  # named, whether or not any drive is offline: the farmer sees which one
        others = f"offline drives: {', '.join(offline)}" if offline else "no drive is offline"
        raise DriveError(f"drive {args.online_hdd!r} is not offline ({others})")
    db.set_online(name)
    print(f"{name} ({offline[name]}) is back online")
    cron_pass(settings, config_path, db, wait=True)
    return 0


def replace_plot(args: argparse.Namespace, settings: Settings, db: StateDB) -> int:
    """-rp: delete one old OG plot on the receive drive, only if it has no room for one more plot."""
    if not settings.harvester.replace_non_pool_plots:
        raise UsageError("-rp needs harvester.replace_non_pool_plots: true in the config")
    record = db.get(RECEIVE_KEY) or {}
    if not record.get("receive_dir"):
        raise DriveError("no receive drive is selected (run drive_manager.py first)")
    deleted = make_room_for(Path(record["receive_dir"]), settings.plot_size_bytes)
    if deleted is None:
        print(f"no plot deleted: {record['receive_dir']} still has room for a plot")
        return 0
    db.record_replaced(str(deleted), "drive_manager.py -rp")
    print(f"deleted old OG plot {deleted}")
    return 0


def _farm_view(settings: Settings, db: StateDB) -> FarmView:
    # paramiko is imported only here: the minute job never talks SSH (bench/: start-up cost).
    from utilities.remote import fetch_exports

    local = scan_harvester(settings, db).snapshot
    return build_view(local, fetch_exports(settings.farm))


def farm_report(args: argparse.Namespace, settings: Settings, db: StateDB) -> int:
    view = _farm_view(settings, db)
    print(json.dumps(farm_report_data(view), indent=2) if args.json else farm_report_text(view))
    return 0


def check_uuid(args: argparse.Namespace, settings: Settings, db: StateDB) -> int:
    uuid = validate_uuid(args.check_uuid)
    view = _farm_view(settings, db)
    found = find_uuid(view, uuid)
    print(uuid_report_text(uuid, found, view.problems))
    return 0 if found else 1


def prepare(args: argparse.Namespace, settings: Settings, db: StateDB) -> int:
    prep = settings.harvester.drive_prep
    if prep.layout_root is None:
        raise UsageError("--prepare-drive needs harvester.drive_prep.layout_root in the config")

    def ask(question: str) -> bool:
        if args.yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError("--prepare-drive: no terminal to confirm on; pass --yes to go ahead")
        return input(f"{question} ").strip().lower() == "yes"


    from utilities.harvester.drive_prep import prepare_drive

    drive = prepare_drive(
        args.prepare_drive, layout_root=prep.layout_root, fstype=prep.fstype, confirm=ask, fstab=prep.fstab,
        protected=prep.protected_devices, chia_config=prep.chia_config,
    )
    print(f"{drive.device}: {drive.fstype} on {drive.partition} (UUID={drive.uuid}) mounted at {drive.mountpoint}, in {prep.fstab}")
    return 0


def check_plots(args: argparse.Namespace, settings: Settings, db: StateDB) -> int:
    # Imported here: chiapos and the checker are not needed by the minute pass.
    from utilities.harvester.plot_check_run import run_plot_checks

    return run_plot_checks(args, settings, db)


def run_drive_manager(args: argparse.Namespace, settings: Settings, config_path: Path) -> int:
    if args.json and not (args.plot_report or args.check_temps or args.farm_report or args.check_plots):
        raise UsageError("--json goes with -pr/--plot_report, -ct/--check_temps, -fr/--farm_report or --check-plots")
    if (args.challenges or args.budget_minutes) and not args.check_plots:
        raise UsageError("--challenges and --budget-minutes go with --check-plots")
    if args.yes and not args.prepare_drive:
        raise UsageError("--yes goes with --prepare-drive")
    with StateDB(settings.database_path) as db:
        for flag, action in ACTIONS:
            if getattr(args, flag):
                return action(args, settings, config_path, db)
        cron_pass(settings, config_path, db)
        return 0


Action = Callable[[argparse.Namespace, Settings, Path, StateDB], int]

# One flag, one action (flags are mutually exclusive); no flag means the cron pass.
ACTIONS: tuple[tuple[str, Action], ...] = (
    ("plot_report", lambda a, s, c, db: plot_report(a, s, db)),
    ("check_temps", lambda a, s, c, db: check_temps(a, s, db)),
    ("daily_report", lambda a, s, c, db: daily_report(a, s, db)),
    ("update_daily", lambda a, s, c, db: update_daily(a, s, db)),
    ("replace_plot", lambda a, s, c, db: replace_plot(a, s, db)),
    ("farm_report", lambda a, s, c, db: farm_report(a, s, db)),
    ("check_uuid", lambda a, s, c, db: check_uuid(a, s, db)),
    ("prepare_drive", lambda a, s, c, db: prepare(a, s, db)),
    ("offline_hdd", offline_drive),
    ("online_hdd", online_drive),
    ("check_plots", lambda a, s, c, db: check_plots(a, s, db)),
)
