"""farm_dashboard.py in a real headless browser against the namespace farm.

One harvester (chianas01) also plots and runs coin_monitor.py, so every part of the page has
real data: its dashboard listens on its farm address behind a token; the browser logs in with
the form; the figures on the page equal ``drive_manager.py -fr --json`` run in the same place;
a drive whose name holds ``<script>`` is shown as text; a harvester taken down turns up as
unreachable with its reason; reloading never makes the harvesters do more than one export
fetch per refresh interval. The page is saved as a screenshot (``UPDATE_SCREENSHOT=1`` puts it
in docs/dashboard.png for the README).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from tests.support.chia_log_writer import ChiaLogWriter
from tests.support.e2e_farm import PYTHON, REPO, SSH_CONNECT_TIMEOUT, TRANSFER_IDLE_TIMEOUT, E2EFarm
from tests.support.loopdrives import LoopDrives, requires_root_and_loop
from tests.support.netns_farm import port_open, requires_netns
from tests.support.plotmaker import cached_plot, copy_plot
from tests.support.waiting import DEADLINE, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
requires_browser = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (scripts/bootstrap.sh dev installs them)",
)
pytestmark = [pytest.mark.root, requires_root_and_loop, requires_netns, requires_browser, pytest.mark.timeout(600)]

TOKEN = "e2e-dashboard-token-0123456789"
PORT = 8744
REFRESH = 5
SCRIPT_DRIVE = "drive1<script>alert(1)"
SCREENSHOT = REPO / "docs" / "dashboard.png"
#: The -fr figures the page shows, by the key of ``-fr --json``'s totals.
TOTALS = (
    "plots", "og_plots", "pool_plots", "chia_plots", "chia_tib", "drives", "slots_until_full", "max_plots",
    "plots_last_24h", "plots_per_hour", "tib_per_day", "days_to_fill", "harvesters",
)


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[E2EFarm]:
    size = cached_plot("pool").stat().st_size
    with E2EFarm(tmp_path / "farm", {"chianas01": 1, "chianas02": 1, "chianas03": 1}, size) as farm:
        for name, harvester in farm.harvesters.items():
            config = yaml.safe_load(harvester.config_path.read_text())
            config["farm"] = {
                "harvesters": [h for h in farm.plotter.harvesters if h["name"] != name],
                "ssh": {"key_file": str(farm.net.client_key), "known_hosts": str(farm.net.known_hosts),
                        "connect_timeout_seconds": SSH_CONNECT_TIMEOUT},
            }
            harvester.config_path.write_text(yaml.safe_dump(config))
        yield farm


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _configure_chianas01(farm: E2EFarm, root: Path) -> Path:
    """chianas01 also plots (sends to the others), follows a chia log and serves the page."""
    harvester = farm.harvesters["chianas01"]
    plots = root / "plotter-output"
    plots.mkdir()
    log = ChiaLogWriter(root / "chia" / "debug.log")
    log.coin(1, 1_750_000_000_000)
    log.block(2)
    config = yaml.safe_load(harvester.config_path.read_text())
    config["plotter"] = {"plot_directories": [str(plots)],
                         "transfer": {"idle_timeout_seconds": TRANSFER_IDLE_TIMEOUT, "port_count": 20}}
    config["farmer"] = {"chia_log": str(log.path), "chia_config": str(root / "chia" / "config.yaml"),
                        "start_at": "beginning", "harvester_silent_minutes": 0}
    config["dashboard"] = {"bind": farm.net.host("chianas01").address, "port": PORT,
                           "refresh_seconds": REFRESH, "auth_token": TOKEN}
    harvester.config_path.write_text(yaml.safe_dump(config))
    return plots


def _in_chianas01(farm: E2EFarm, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = str(farm.harvesters["chianas01"].config_path)
    proc = farm.net.exec_in("chianas01", [PYTHON, str(REPO / script), "--config", config, *args])
    assert proc.returncode == 0, f"{script} {args}: {proc.stderr}"
    return proc


def _accepted_sessions(farm: E2EFarm, name: str) -> int:
    return farm.net.sshd_log(name).count("Accepted publickey")


def _shown_totals(driver: object) -> dict[str, object]:
    from selenium.webdriver.common.by import By

    return {key: json.loads(driver.find_element(By.ID, f"total-{key}").get_attribute("data-value"))  # type: ignore[attr-defined]
            for key in TOTALS}


def test_the_dashboard_shows_the_farm_as_the_farm_report_does(farm: E2EFarm, browser: object, tmp_path: Path) -> None:
    with ExitStack() as stack:
        _the_dashboard_shows_the_farm(farm, browser, tmp_path, stack)


def _the_dashboard_shows_the_farm(farm: E2EFarm, driver: object, tmp_path: Path, stack: ExitStack) -> None:
    from selenium.webdriver.common.by import By

    plots_dir = _configure_chianas01(farm, tmp_path)
    copy_plot("og", farm.harvesters["chianas01"].drives.drives[0].mountpoint, patch_id=True)
    for _ in range(2):
        copy_plot("pool", farm.harvesters["chianas02"].drives.drives[0].mountpoint, patch_id=True)
    copy_plot("pool", farm.harvesters["chianas03"].drives.drives[0].mountpoint, patch_id=True)
    # A drive named with markup on chianas02: mounted under that name, scanned, exported, fetched.
    chianas02 = farm.harvesters["chianas02"]
    named = stack.enter_context(LoopDrives(chianas02.root / "mnt", [f"enclosure0/front/column0/{SCRIPT_DRIVE}"], size_mb=64))
    copy_plot("og", named.drives[0].mountpoint, patch_id=True)
    for name in farm.harvesters:
        farm.harvester_pass(name)
    # chianas01 sends one plot of its own to the harvester with the most room, for real.
    copy_plot("pool", plots_dir, patch_id=True)
    _in_chianas01(farm, "plot_manager.py")
    _in_chianas01(farm, "coin_monitor.py")
    for name in farm.harvesters:
        farm.harvester_pass(name)

    address = farm.net.host("chianas01").address
    config = str(farm.harvesters["chianas01"].config_path)
    server = farm.net.popen_in("chianas01", [PYTHON, str(REPO / "farm_dashboard.py"), "--config", config],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until("the dashboard to listen", lambda: server.poll() is not None or port_open(address, PORT))
        assert server.poll() is None, server.communicate()
        url = f"http://{address}:{PORT}/"

        # The token goes in the login form, never in the URL.
        driver.get(url)  # type: ignore[attr-defined]
        assert driver.current_url.endswith("/login")  # type: ignore[attr-defined]
        driver.find_element(By.ID, "secret").send_keys(TOKEN)  # type: ignore[attr-defined]
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()  # type: ignore[attr-defined]
        wait_until("the farm page", lambda: driver.find_elements(By.ID, "totals"))  # type: ignore[attr-defined]
        assert TOKEN not in driver.current_url  # type: ignore[attr-defined]

        report = json.loads(_in_chianas01(farm, "drive_manager.py", "-fr", "--json").stdout)
        assert report["totals"]["plots"] == 6 and report["totals"]["unreachable"] == {}
        assert _shown_totals(driver) == {key: report["totals"][key] for key in TOTALS}
        shown = {e.get_attribute("data-harvester") for e in driver.find_elements(By.CSS_SELECTOR, "article.harvester")}  # type: ignore[attr-defined]
        assert shown == set(report["harvesters"])
        for name, data in report["harvesters"].items():
            cells = driver.find_elements(By.CSS_SELECTOR, f"article[data-harvester='{name}'] .drive")  # type: ignore[attr-defined]
            assert sorted(c.get_attribute("data-drive") for c in cells) == sorted(d["name"] for d in data["drives"])

        # The markup in the drive name is text: shown as written, and no script element exists.
        names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "article[data-harvester='chianas02'] .drive-name")]  # type: ignore[attr-defined]
        assert any(SCRIPT_DRIVE in text for text in names)
        assert driver.find_elements(By.TAG_NAME, "script") == []  # type: ignore[attr-defined]

        # The transfer chianas01 made, as plot_manager.py --history counts it, and its coin.
        history = json.loads(_in_chianas01(farm, "plot_manager.py", "--history", "--json").stdout)
        assert history["plots_moved_24h"] == 1
        assert driver.find_element(By.ID, "transfers-plots").text == "1"  # type: ignore[attr-defined]
        assert json.loads(driver.find_element(By.ID, "transfers-mbps").get_attribute("data-value")) == history["average_mb_per_second"]  # type: ignore[attr-defined]
        assert driver.find_element(By.ID, "coins-count").text == "1"  # type: ignore[attr-defined]
        assert driver.find_element(By.ID, "coins-blocks").text == "1"  # type: ignore[attr-defined]
        assert len(driver.find_elements(By.CSS_SELECTOR, "#transfers svg.chart")) == 2  # type: ignore[attr-defined]
        _screenshot(driver, tmp_path)

        # Reloading as fast as one can never asks the harvesters more than once per interval.
        before, started = _accepted_sessions(farm, "chianas02"), time.monotonic()
        for _ in range(5):
            driver.refresh()  # type: ignore[attr-defined]
        fetches, elapsed = _accepted_sessions(farm, "chianas02") - before, time.monotonic() - started
        assert fetches <= 1 + int(elapsed // REFRESH), (fetches, elapsed)

        # chianas03 goes down: the page says so, with the reason, and still equals -fr.
        farm.net.stop_sshd("chianas03")

        def unreachable_shown() -> bool:
            driver.refresh()  # type: ignore[attr-defined]
            return bool(driver.find_elements(By.CSS_SELECTOR, "li.unreachable[data-harvester='chianas03']"))  # type: ignore[attr-defined]

        wait_until("chianas03 shown as unreachable", unreachable_shown, interval=1.0)
        reason = driver.find_element(By.CSS_SELECTOR, "li.unreachable[data-harvester='chianas03'] .reason").text  # type: ignore[attr-defined]
        assert "chianas03" in reason and "unreachable" in reason.lower()
        report = json.loads(_in_chianas01(farm, "drive_manager.py", "-fr", "--json").stdout)
        assert set(report["totals"]["unreachable"]) == {"chianas03"}
        assert _shown_totals(driver) == {key: report["totals"][key] for key in TOTALS}
        assert server.poll() is None  # a harvester down is a line on the page, not a crash
    finally:
        server.terminate()
        try:
            server.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


def _screenshot(driver: object, tmp_path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")  # type: ignore[attr-defined]
    driver.set_window_size(1400, min(int(height) + 40, 4000))  # type: ignore[attr-defined]
    shot = tmp_path / "dashboard.png"
    driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
