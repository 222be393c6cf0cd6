"""The Grafana dashboard in grafana/: valid, and built only on metrics the product writes."""

from __future__ import annotations

import json
import re

from tests.unit.dashboard.documented_metrics import DOCUMENTED
from tests.unit.dashboard.samples import drive, snapshot
from utilities.install_paths import INSTALL_DIR
from utilities.metrics import harvester_metrics, plotter_metrics
from utilities.state import TransferRecord

DASHBOARD = INSTALL_DIR / "grafana" / "plot_manager.json"
METRIC = re.compile(r"\bchia_pm_[a-z0-9_]+\b")


def _rendered_names() -> set[str]:
    snap = snapshot("chianas01", (drive("drive0", plots_last_24h=2),), chia_plots=3, receives_available=1)
    text = harvester_metrics(snap, {"drive0": 40}) + plotter_metrics(
        "chiaplot01", [TransferRecord("p.plot", "chianas01", None, 10, 1.0, 1.0, True)], 2.0)
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_the_readme_metrics_are_what_the_product_writes() -> None:
    assert set(DOCUMENTED) == _rendered_names()


def test_every_panel_queries_documented_metrics_only() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        for target in panel["targets"]:
            found = set(METRIC.findall(target["expr"]))
            assert found, f"{panel['title']}: {target['expr']}"
            used |= found
    assert used <= set(DOCUMENTED), used - set(DOCUMENTED)


def test_the_panels_a_farmer_expects_are_there() -> None:
    panels = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in json.loads(DASHBOARD.read_text())["panels"]}
    assert "chia_pm_plots" in panels["Plots by harvester"] and "by (harvester)" in panels["Plots by harvester"]
    assert "chia_pm_slots_until_full" in panels["Free slots by harvester"]
    assert "chia_pm_drive_temperature_celsius" in panels["Drive temperatures"]
    assert "chia_pm_bytes_sent_total" in panels["Transfer MB/s"]
