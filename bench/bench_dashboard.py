#!/usr/bin/env python3
"""The dashboard on a big farm: 10 harvesters x 100 drives of generated exports.

Prints, median of --runs:
  - the page's time: the model from the farm view (add_farm) and the HTML (template + SVG),
    against the peer on the same data: ``drive_manager.py -fr --json``'s own output
    (farm_report_data + json.dumps), as a ratio;
  - the server's memory: farm_dashboard's app under waitress in its own process, serving the
    generated farm, RSS after --requests page loads (and the high-water mark), against a bare
    Python interpreter;
  - how often the farm was gathered for those loads (the harvesters' work): once per interval.

    .venv/bin/python bench/bench_dashboard.py [--harvesters 10] [--drives 100] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utilities.config import validate_config  # noqa: E402
from utilities.dashboard.model import Page, add_farm  # noqa: E402
from utilities.harvester.farm_report import FarmView, farm_report_data  # noqa: E402
from utilities.harvester_export import DriveSummary, HarvesterSnapshot  # noqa: E402
from utilities.state import DailyStats, TransferRecord  # noqa: E402

GIB = 1024**3
PLOT = 108_837_910_528  # a k32 plot


def generated_view(harvesters: int, drives: int, now: float) -> FarmView:
    """A farm of full-size exports: 18 TB drives, plots of both kinds, one receive per harvester."""
    snaps = {}
    for h in range(harvesters):
        name = f"chianas{h + 1:02d}"
        cells = tuple(
            DriveSummary(
                name=f"drive{d}", mountpoint=f"/mnt/enclosure{d // 60}/front/column{d % 60 // 12}/drive{d}",
                device=f"/dev/sd{d}", uuid=f"{h:08x}-0000-4000-8000-{d:012x}", fstype="xfs",
                total_bytes=18_000 * 10**9, free_bytes=(d * 7919 % 160) * PLOT, plots_og=60 + d % 40,
                plots_pool=d % 100, plots_unknown=d % 17 == 0, plots_last_24h=d % 3, free_slots=d * 7919 % 160,
                offline=d % 50 == 49, mounted=True,
            )
            for d in range(drives)
        )
        receiving = [{"drive": "drive3", "plot": "plot-k32-2026-12-04-10-00-" + "a" * 64 + ".plot", "size": PLOT,
                      "received": PLOT // 3, "started_at": now - 200, "updated_at": now - 1}]
        snaps[name] = HarvesterSnapshot(
            hostname=name, generated_at=now - 30, plot_size_bytes=PLOT, drives=cells, receive_drive="drive3",
            chia_plots=sum(c.plot_count for c in cells), extra={"receiving": receiving, "temperatures": {
                f"drive{d}": 30 + d % 25 for d in range(drives)}},
        )
    return FarmView(snaps, {"chianas99": "chianas99 (10.0.0.99): unreachable: [Errno 113] No route to host"})


def generated_page(harvesters: int, drives: int) -> Page:
    now = time.time()
    page = Page(generated_at=now, refresh_seconds=60, hostname="chiafarm", version="bench")
    add_farm(page, generated_view(harvesters, drives, now), hot_limit_c=50)
    from utilities.dashboard.model import daily_points, last_day_summary

    records = [TransferRecord(f"p{i}.plot", "chianas01", None, PLOT, now - i * 1800, 250.0, True) for i in range(1440)]
    page.transfers = last_day_summary(records, now)
    page.days = daily_points(records, [DailyStats("2026-12-01", now, 1, 1, 0, 40)], now, 30)
    return page


def _median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f}"


def time_render(harvesters: int, drives: int, runs: int) -> None:
    from utilities.dashboard.app import create_app, page_charts

    settings = validate_config({"hostname": "chiafarm"})
    now = time.time()
    view = generated_view(harvesters, drives, now)
    app = create_app(settings, lambda: generated_page(harvesters, drives))
    model, html, peer = [], [], []
    size = 0
    for _ in range(runs):
        start = time.perf_counter()
        page = generated_page(harvesters, drives)
        model.append(time.perf_counter() - start)
        with app.test_request_context("/"):
            from flask import render_template

            start = time.perf_counter()
            text = render_template("farm.html", page=page, charts=page_charts(page))
            html.append(time.perf_counter() - start)
            size = len(text.encode())
        start = time.perf_counter()
        json.dumps(farm_report_data(view), indent=2)
        peer.append(time.perf_counter() - start)
    ours = statistics.median(model) + statistics.median(html)
    print(f"farm: {harvesters} harvesters x {drives} drives ({harvesters * drives} drive cells), page {size / 1024:.0f} KiB")
    print(f"| what (median of {runs}) | ms | x -fr --json |")
    print("|---|--:|--:|")
    print(f"| page model (add_farm, transfers, days) | {_median_ms(model)} | {statistics.median(model) / statistics.median(peer):.2f} |")
    print(f"| page HTML (template + SVG charts) | {_median_ms(html)} | {statistics.median(html) / statistics.median(peer):.2f} |")
    print(f"| whole page | {ours * 1000:.1f} | {ours / statistics.median(peer):.2f} |")
    print(f"| -fr --json output (farm_report_data + json.dumps) | {_median_ms(peer)} | 1.00 |")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _memory(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def measure_server(harvesters: int, drives: int, requests: int) -> None:
    port = _free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--harvesters", str(harvesters),
                               "--drives", str(drives)], stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "static/dashboard.css", timeout=10).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the bench server did not start") from None
                time.sleep(0.05)
        idle = _memory(server.pid)[0]
        times = []
        for _ in range(requests):
            start = time.perf_counter()
            urllib.request.urlopen(url, timeout=60).read()
            times.append(time.perf_counter() - start)
        rss, hwm = _memory(server.pid)
        gathered = urllib.request.urlopen(url + "bench-gathered", timeout=10).read().decode()
    finally:
        server.terminate()
        server.communicate(timeout=60)
    bare = subprocess.run([sys.executable, "-c", "import pathlib; print(pathlib.Path('/proc/self/status').read_text())"],
                          capture_output=True, text=True, check=True).stdout
    bare_rss = int(next(line for line in bare.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024
    print()
    print(f"| server (waitress, {requests} page loads) | MiB | x bare python |")
    print("|---|--:|--:|")
    print(f"| RSS started, before the first page | {idle:.1f} | {idle / bare_rss:.1f} |")
    print(f"| RSS after the loads | {rss:.1f} | {rss / bare_rss:.1f} |")
    print(f"| peak RSS (VmHWM) | {hwm:.1f} | {hwm / bare_rss:.1f} |")
    print(f"| bare python interpreter | {bare_rss:.1f} | 1.0 |")
    print()
    print(f"page load over HTTP: median {_median_ms(times)} ms (first, which gathers: {times[0] * 1000:.1f} ms)")
    print(f"farm gathered {gathered} time(s) for {requests} page loads within one refresh interval")


def serve(port: int, harvesters: int, drives: int) -> None:
    """The child: the real app and waitress, with the generated farm as its page source."""
    from waitress import serve as waitress_serve

    from utilities.dashboard.app import create_app

    settings = validate_config({"hostname": "chiafarm", "dashboard": {"refresh_seconds": 3600}})
    app = create_app(settings, lambda: generated_page(harvesters, drives))

    @app.get("/bench-gathered")
    def gathered() -> str:
        return str(app.extensions["plot_manager_pages"].produced)

    waitress_serve(app, host="127.0.0.1", port=port, threads=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harvesters", type=int, default=10)
    parser.add_argument("--drives", type=int, default=100)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.harvesters, args.drives)
        return
    time_render(args.harvesters, args.drives, args.runs)
    measure_server(args.harvesters, args.drives, args.requests)


if __name__ == "__main__":
    main()
