"""drive_manager.py --check-plots on real loop-mounted drives holding real chiapos plots.

One plot has half of a table flipped (tests/support/plot_damage.py); the intact ones must pass,
the new-format files must say "cannot check", and the failure must reach -pr and one mail.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.harvester_env import Harvester, harvester_config
from tests.support.loopdrives import LoopDrives, requires_root_and_loop
from tests.support.plot_damage import flip_table
from tests.support.plotmaker import cached_plot, copy_plot
from tests.support.smtp_server import SMTPTestServer

pytestmark = [pytest.mark.root, requires_root_and_loop]

ENCLOSURE = ["enclosure0/front/column0/drive0", "enclosure0/front/column0/drive1"]
PLOT2_NAME = "plot-k28-2026-01-02-03-04-" + "ab" * 32 + ".plot2"
GROUP_NAME = "farm-group-0001.gplot"


@dataclass
class Farm:
    harvester: Harvester
    drives: LoopDrives
    good: list[Path]  # drive0's intact plot, then drive1's
    bad: Path  # on drive0
    plot2: Path
    group: Path

    def run(self, *args: str):  # noqa: ANN201 - CompletedProcess
        return self.harvester.run(*args, check=False)

    def rows(self) -> dict[str, tuple]:
        with sqlite3.connect(self.harvester.state_dir / "state.sqlite3") as conn:
            return {r[0]: r[1:] for r in conn.execute("SELECT plot, drive, result, proofs, challenges, error FROM plot_checks")}


@pytest.fixture
def farm(tmp_path: Path, mail: SMTPTestServer) -> Iterator[Farm]:
    root = tmp_path / "farm"
    root.mkdir()
    with LoopDrives(root / "mnt", ENCLOSURE, size_mb=64) as drives:
        d0, d1 = (Path(d.mountpoint) for d in drives.drives)
        good = [copy_plot("pool", d0), copy_plot("og", d1)]
        bad = copy_plot("pool", d0)
        flip_table(bad, 3)
        plot2 = d1 / PLOT2_NAME
        plot2.write_bytes(b"pos2" + bytes([1]) + bytes(32) + bytes([28, 2]) + bytes(4000))
        group = d1 / GROUP_NAME
        group.write_bytes(b"PoS2" + bytes(4000))
        harvester = Harvester(root)
        config = harvester_config(root, [str(root / "mnt" / "enclosure*/*/column*/drive*")],
                                  cached_plot("pool").stat().st_size, mail.port)
        config["notifications"]["events"]["plot_check_failed"] = ["email"]
        harvester.write_config(config)
        yield Farm(harvester, drives, good, bad, plot2, group)


def _line_for(stdout: str, name: str) -> str:
    (line,) = [line for line in stdout.splitlines() if line.endswith(name)]
    return line


def test_flipped_plot_fails_intact_plots_pass_new_formats_cannot_be_checked(farm: Farm, mail: SMTPTestServer) -> None:
    proc = farm.run("--check-plots")
    assert proc.returncode == 1, proc.stderr  # a plot failed
    out = proc.stdout
    for plot in farm.good:
        assert _line_for(out, plot.name).startswith("OK ")
    assert _line_for(out, farm.bad.name).startswith("READ ERROR ")
    assert _line_for(out, farm.plot2.name).startswith("CANNOT CHECK ")
    assert _line_for(out, farm.group.name).startswith("CANNOT CHECK ")
    assert "5 plots checked" in out and "2 ok, 1 failing, 2 cannot check" in out
    rows = farm.rows()
    assert rows[farm.bad.name][:2] == ("drive0", "read_error") and rows[farm.bad.name][4]
    assert {rows[p.name][1] for p in farm.good} == {"ok"}
    assert all(rows[p.name][2] > 0 and rows[p.name][3] == 30 for p in farm.good)
    assert rows[farm.plot2.name][1] == rows[farm.group.name][1] == "cannot_check"

    (msg,) = mail.wait_for(1)
    assert "1 plot(s) failed their check" in msg.message["Subject"]
    body = msg.message.get_body(("plain",)).get_content()
    assert farm.bad.name in body and "read error" in body
    assert not any(p.name in body for p in farm.good) and farm.plot2.name not in body

    report = farm.run("-pr")
    assert report.returncode == 0, report.stderr
    section = report.stdout[report.stdout.index("Plots Failing Their Check:"):]
    assert section.splitlines()[0].rstrip().endswith("1")
    assert farm.bad.name in section and farm.good[0].name not in report.stdout
    data = json.loads(farm.run("-pr", "--json").stdout)
    assert [(f["plot"], f["drive"], f["result"]) for f in data["failing_plot_checks"]] == [(farm.bad.name, "drive0", "read_error")]

    # The next cron run has nothing left to do this month, and mails nothing more.
    again = farm.run("--check-plots")
    assert again.returncode == 0
    assert "no plot to check" in again.stdout and "5 plots checked within 30 days were skipped" in again.stdout
    # Naming the drive checks it again anyway; still failing, still no second mail.
    named = farm.run("--check-plots", "drive0", "--json")
    assert named.returncode == 1
    result = json.loads(named.stdout)
    assert result["summary"]["plots_checked"] == 2 and result["summary"]["failing"] == 1
    assert {p["plot"]: p["alerted"] for p in result["plots"]} == {farm.good[0].name: False, farm.bad.name: False}
    assert len(mail.received) == 1


def test_a_failing_plot_replaced_with_a_good_copy_leaves_the_report(farm: Farm, mail: SMTPTestServer) -> None:
    assert farm.run("--check-plots", "drive0").returncode == 1
    mail.wait_for(1)
    farm.bad.unlink()
    shutil.copyfile(cached_plot("pool"), farm.bad)  # same name, a new file
    proc = farm.run("--check-plots")
    assert proc.returncode == 0, proc.stdout
    assert _line_for(proc.stdout, farm.bad.name).startswith("OK ")
    assert "Plots Failing Their Check:" in (text := farm.run("-pr").stdout)
    assert farm.bad.name not in text
    # Damaged again later: a new failure, so a new mail.
    flip_table(farm.bad, 5)
    assert farm.run("--check-plots", "drive0").returncode == 1
    assert len(mail.wait_for(2)) == 2


def test_the_budget_checks_a_slice_per_run_oldest_first(farm: Farm) -> None:
    seen: list[str] = []
    for _ in range(2):
        proc = farm.run("--check-plots", "drive0", "--budget-minutes", "0.0001", "--json")
        result = json.loads(proc.stdout)
        assert result["summary"]["plots_checked"] == 1  # the first plot is always checked, then the budget is spent
        seen += [p["plot"] for p in result["plots"]]
    assert result["summary"]["left_for_next_run"] == 1  # named drive: the plot checked first is due again
    assert sorted(seen) == sorted([farm.good[0].name, farm.bad.name])  # the second run took the unchecked one


def test_challenges_flag_and_bad_arguments(farm: Farm) -> None:
    proc = farm.run("--check-plots", str(farm.drives.drives[1].mountpoint), "--challenges", "5")
    assert proc.returncode == 0, proc.stderr
    assert "/5 proofs" in _line_for(proc.stdout, farm.good[1].name)
    assert farm.rows()[farm.good[1].name][3] == 5
    assert farm.good[0].name not in proc.stdout  # only the drive asked for

    for args, code, message in (
        (("--check-plots", "drive9"), 3, "error: drive 'drive9' is not a mounted plot drive"),
        (("--check-plots", "--challenges", "0"), 2, "--challenges: must be above 0"),
        (("--check-plots", "--budget-minutes", "-1"), 2, "--budget-minutes: must be above 0"),
        (("--challenges", "5"), 2, "error: --challenges and --budget-minutes go with --check-plots"),
    ):
        bad = farm.run(*args)
        assert bad.returncode == code, (args, bad.stdout, bad.stderr)
        lines = [line for line in bad.stderr.splitlines() if not line.startswith("WARNING")]
        assert len(lines) == 1 and message in lines[0], (args, bad.stderr)
    assert len(farm.rows()) == 3  # the refused runs checked nothing


def test_checks_have_their_own_lock_apart_from_the_minute_pass(farm: Farm) -> None:
    state = farm.harvester.state_dir
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "plot_check.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        busy = farm.run("--check-plots")
        cron = farm.run()  # the minute pass does not wait for a check
    assert busy.returncode == 0 and "already running" in busy.stdout and "nothing checked" in busy.stdout
    assert cron.returncode == 0 and farm.harvester.receive_script.exists()
    assert not (state / "state.sqlite3").exists() or not _has_checks(state)
    with open(state / "drive_manager.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        checked = farm.run("--check-plots")  # a minute pass in progress does not stop a check
    assert checked.returncode == 1 and "5 plots checked" in checked.stdout


def _has_checks(state: Path) -> bool:
    with sqlite3.connect(state / "state.sqlite3") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return "plot_checks" in tables and conn.execute("SELECT count(*) FROM plot_checks").fetchone()[0] > 0
