"""farm_dashboard.py's action: check where it may listen, then serve the page with waitress."""

from __future__ import annotations

import argparse
import ipaddress
import logging
from pathlib import Path

from utilities.config import Settings
from utilities.errors import UsageError
from utilities.settings.dashboard import bind_refusal, is_loopback

log = logging.getLogger(__name__)

#: Worker threads: viewers wait on one gathering anyway (cache.Every); a few serve the stylesheet.
THREADS = 4


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def listen_address(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    """The address and port from the flags or the config; UsageError for a bind that needs a
    secret the config does not have (before anything listens)."""
    bind = args.bind if args.bind is not None else settings.dashboard.bind
    port = args.port if args.port is not None else settings.dashboard.port
    if not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a TCP port (1-65535)")
    if args.bind is not None and not (is_loopback(bind) or _is_address(bind)):
        raise UsageError(f"--bind {bind!r} is not an IP address (or localhost)")
    refusal = bind_refusal(bind, settings.dashboard, "--bind" if args.bind is not None else "dashboard.bind")
    if refusal:
        raise UsageError(refusal)
    return bind, port


def run_dashboard(args: argparse.Namespace, settings: Settings, config_path: Path) -> int:
    bind, port = listen_address(args, settings)
    from waitress import serve

    from utilities.dashboard.app import create_app

    app = create_app(settings)
    shown = f"[{bind}]" if ":" in bind else bind
    log.info("farm dashboard on http://%s:%d/ (refresh every %d s)", shown, port, settings.dashboard.refresh_seconds)
    print(f"farm_dashboard.py: serving http://{shown}:{port}/", flush=True)
    serve(app, host=bind, port=port, threads=THREADS, ident="plot_manager", clear_untrusted_proxy_headers=True)
    return 0
