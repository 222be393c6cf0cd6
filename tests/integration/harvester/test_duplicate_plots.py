"""The same real plot on two harvesters (and twice on one) found in their exports, on loop drives.

Each harvester runs its real cron pass and writes its export; the farm view is built from
those export files as -fr builds it from what SSH fetched (tests/e2e/test_farm_report.py runs
the whole -fr across harvester namespaces).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.harvester_env import Harvester, harvester_config
from tests.support.loopdrives import LoopDrives, requires_root_and_loop
from tests.support.plotmaker import cached_plot, copy_plot
from utilities.harvester.farm_report import build_view, farm_report_data, farm_report_text
from utilities.harvester_export import parse_export
from utilities.plots import read_plot_header

pytestmark = [pytest.mark.root, requires_root_and_loop]


def _harvester(root: Path, name: str, plot_size: int) -> Harvester:
    harvester = Harvester(root, hostname=name)
    config = harvester_config(root, [str(root / "mnt" / "drive*")], plot_size)
    config["hostname"] = name
    harvester.write_config(config)
    return harvester


def test_two_harvesters_holding_the_same_plot_show_one_duplicate_counted_once(tmp_path: Path) -> None:
    plot_size = cached_plot("pool").stat().st_size
    roots = {name: tmp_path / name for name in ("chianas01", "chianas02")}
    with LoopDrives(roots["chianas01"] / "mnt", ["drive0", "drive1"], size_mb=64) as a, \
            LoopDrives(roots["chianas02"] / "mnt", ["drive0"], size_mb=64) as b:
        first, second = (_harvester(roots[n], n, plot_size) for n in roots)
        shared = copy_plot("pool", a.drives[0].mountpoint)
        shutil.copyfile(shared, b.drives[0].mountpoint / shared.name)  # the same plot, on chianas02 too
        og = copy_plot("og", a.drives[0].mountpoint)
        shutil.copyfile(og, a.drives[1].mountpoint / og.name)  # and an OG plot twice on chianas01
        copy_plot("pool", a.drives[1].mountpoint, patch_id=True)  # plots of their own
        copy_plot("pool", b.drives[0].mountpoint, patch_id=True)
        first.run()
        second.run()
        view = build_view(parse_export(first.export_file.read_bytes(), "chianas01"),
                          {"chianas02": parse_export(second.export_file.read_bytes(), "chianas02")})

        data = json.loads(json.dumps(farm_report_data(view)))
        shared_id, og_id = (read_plot_header(p).plot_id[:16] for p in (shared, og))
        assert sorted(data["duplicates"], key=lambda d: d["plot_id_prefix"]) == sorted([
            {"plot_id_prefix": shared_id, "copies": [{"harvester": "chianas01", "drive": "drive0"},
                                                     {"harvester": "chianas02", "drive": "drive0"}]},
            {"plot_id_prefix": og_id, "copies": [{"harvester": "chianas01", "drive": "drive0"},
                                                 {"harvester": "chianas01", "drive": "drive1"}]},
        ], key=lambda d: d["plot_id_prefix"])
        totals = data["totals"]
        assert (totals["plot_files"], totals["plots"], totals["duplicate_copies"]) == (6, 4, 2)
        text = farm_report_text(view).splitlines()
        assert f"{shared_id}: chianas01:drive0, chianas02:drive0" in text
        assert next(x for x in text if x.startswith("Total Number of Plots on Farm:")).split()[-1] == "4"
        assert next(x for x in text if x.startswith("Duplicate Plot Copies")).split()[-1] == "2"
        # Each harvester's own section still counts the files it holds.
        assert next(x for x in text if x.startswith("Total number of plots on chianas01:")).split()[-1] == "4"
