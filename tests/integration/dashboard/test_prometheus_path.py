"""The real metrics path: drive_manager.py and plot_manager.py write their textfiles, Debian's
prometheus-node-exporter serves them with its textfile collector, and a scrape over loopback
parses (prometheus_client's parser) with every metric the README lists, sample for sample."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.chia_log_writer import ChiaLogWriter
from tests.support.harvester_env import REPO, Harvester, harvester_config
from tests.support.loopdrives import LoopDrives, requires_root_and_loop
from tests.support.plotmaker import cached_plot, copy_plot
from tests.support.smtp_server import free_port
from tests.support.waiting import DEADLINE, wait_until
from tests.unit.dashboard.documented_metrics import DOCUMENTED, HARVESTER_METRICS, PLOTTER_METRICS
from utilities.state import StateDB, TransferRecord
from utilities.transfer.claims import CLAIMS_DIRNAME, try_claim

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"
pytestmark = [
    requires_root_and_loop,
    pytest.mark.skipif(not Path(NODE_EXPORTER).exists(),
                       reason="needs Debian's prometheus-node-exporter (scripts/bootstrap.sh dev installs it)"),
]
parser = pytest.importorskip("prometheus_client.parser")


@pytest.fixture
def node_exporter(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """node_exporter with only its textfile collector, on loopback, reading ``textfile/``."""
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [NODE_EXPORTER, "--collector.disable-defaults", "--collector.textfile",
         f"--collector.textfile.directory={textfile}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until("node_exporter to answer", lambda: proc.poll() is not None or _scrape(url, quiet=True))
        assert proc.poll() is None, proc.communicate()[1]
        yield textfile, url
    finally:
        proc.terminate()
        proc.communicate(timeout=DEADLINE)


def _scrape(url: str, quiet: bool = False) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=DEADLINE) as response:
            return response.read().decode("utf-8")
    except OSError:
        if quiet:
            return None
        raise


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser.text_string_to_metric_families(text) for s in family.samples
    }


def _plotter_textfile(tmp_path: Path, textfile: Path) -> None:
    """plot_manager.py's run writes its file from the transfers in its state database."""
    root = tmp_path / "plotter"
    (root / "plots").mkdir(parents=True)
    with StateDB(root / "state" / "state.sqlite3") as db:
        now = time.time()
        db.record_transfer(TransferRecord("plot-k18-a.plot", "chianas01", "/mnt/d0", 4_000_000, now - 60, 2.0, True))
        db.record_transfer(TransferRecord("plot-k18-b.plot", "chianas01", None, 0, now - 30, 1.0, False, "link down"))
    config = {
        "hostname": "chiaplot01", "state_dir": str(root / "state"),
        # A harvester nothing answers for: the run skips it and still writes its metrics.
        "farm": {"harvesters": [{"name": "chianas01", "host": "127.0.0.1", "ssh_port": free_port()}],
                 "ssh": {"known_hosts": str(root / "known_hosts"), "connect_timeout_seconds": 5}},
        "plotter": {"plot_directories": [str(root / "plots")], "metrics_dir": str(textfile)},
    }
    (root / "known_hosts").write_text("")
    path = root / "plot_manager.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    proc = subprocess.run([sys.executable, str(REPO / "plot_manager.py"), "--config", str(path)],
                          capture_output=True, text=True, timeout=DEADLINE)
    assert (textfile / "plot_manager_plotter.prom").exists(), proc.stderr


def test_node_exporter_serves_every_documented_metric(tmp_path: Path, node_exporter: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.fake_smartctl import SATA_HDD, FakeSmartctl

    textfile, url = node_exporter
    root = tmp_path / "harvester"
    root.mkdir()
    with LoopDrives(root / "mnt", ["enclosure0/front/column0/drive0", "enclosure0/front/column0/drive1"], size_mb=64) as drives:
        FakeSmartctl(tmp_path).add("/dev/sdb", SATA_HDD, temperature=41).install(monkeypatch)
        config = harvester_config(root, [str(root / "mnt" / "enclosure*/*/column*/drive*")], cached_plot("pool").stat().st_size)
        config["harvester"].update(metrics_dir=str(textfile), smart_devices={"drive0": "/dev/sdb"},
                                   alerts={"temperature_check_minutes": 0})
        harvester = Harvester(root)
        harvester.write_config(config)
        copy_plot("og", drives.drives[0].mountpoint)
        copy_plot("pool", drives.drives[1].mountpoint)
        ChiaLogWriter(root / "chia" / "debug.log").harvester(eligible=1, proofs=0, seconds=0.2, total=2)
        harvester.run("-off", "drive1")
        claim = try_claim(root / "state" / CLAIMS_DIRNAME, "drive0", 1)  # as a receiver writing there holds it
        assert claim is not None
        try:
            claim.record("plot-k32-2026-12-04-10-00-" + "a" * 64 + ".plot", 4 * 10**6, 10**6, time.time() - 10, force=True)
            harvester.run()
        finally:
            claim.release()
    _plotter_textfile(tmp_path, textfile)

    written = {}
    for prom in sorted(textfile.glob("*.prom")):
        written.update(_samples(prom.read_text()))  # our own files parse
    served = _samples(_scrape(url) or "")
    assert served[("node_textfile_scrape_error", ())] == 0
    missing = {key: value for key, value in written.items() if served.get(key) != value}
    assert missing == {}, f"written but not served as written: {missing}"
    names = {name for name, _ in served}
    assert [m for m in DOCUMENTED if m not in names] == []
    assert set(HARVESTER_METRICS) <= {n for n, labels in served if ("harvester", "chianas01") in labels}
    assert set(PLOTTER_METRICS) <= {n for n, labels in served if ("plotter", "chiaplot01") in labels}
    temp = [v for (n, labels), v in served.items() if n == "chia_pm_drive_temperature_celsius"]
    assert temp == [41.0]
    offline = {dict(labels)["drive"]: v for (n, labels), v in served.items() if n == "chia_pm_drive_offline"}
    assert offline == {"drive0": 0.0, "drive1": 1.0}
    receiving = {dict(labels)["drive"]: v for (n, labels), v in served.items() if n == "chia_pm_drive_receives_in_flight"}
    assert receiving == {"drive0": 1.0, "drive1": 0.0}
