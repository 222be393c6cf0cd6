"""Plot jobs across the farm: a finished job's plot is sent on by the normal cron transfer, and
another plotter's jobs are listed, stopped and cleaned up over real SSH (host keys checked), in namespaces."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.e2e_farm import PYTHON, REPO, SSH_CONNECT_TIMEOUT, TRANSFER_IDLE_TIMEOUT, E2EFarm
from tests.support.fake_plotter import fail
from tests.support.fake_plotter import held_at as fake_held_at
from tests.support.loopdrives import requires_root_and_loop
from tests.support.netns_farm import requires_netns
from tests.support.plot_job_env import JobsFarm, alive, files_with, wait_until
from tests.support.plotmaker import cached_plot
from tests.support.waiting import DEADLINE
from utilities.plots import is_finished_plot_name

pytestmark = [pytest.mark.root, requires_root_and_loop, requires_netns]

REMOTE = "chianas01"


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[E2EFarm]:
    with E2EFarm(tmp_path / "farm", {REMOTE: 2}, cached_plot("pool").stat().st_size) as farm:
        yield farm


@pytest.fixture
def plotters(tmp_path: Path) -> Iterator[tuple[JobsFarm, JobsFarm]]:
    """This plotter and a second one (reached over SSH in the harvester's namespace)."""
    local, remote = JobsFarm(tmp_path / "local"), JobsFarm(tmp_path / "remote")
    try:
        yield local, remote
    finally:
        local.kill_everything()
        remote.kill_everything()


def _farm_sections(farm: E2EFarm, connect_timeout: float = SSH_CONNECT_TIMEOUT) -> dict:
    ssh = {"key_file": str(farm.net.client_key), "known_hosts": str(farm.net.known_hosts),
           "connect_timeout_seconds": connect_timeout}
    return {"farm": {"harvesters": farm.plotter.harvesters, "ssh": ssh}}


def test_finished_job_plot_goes_out_with_the_cron_transfer(farm: E2EFarm, plotters: tuple[JobsFarm, JobsFarm]) -> None:
    local, _remote = plotters
    # One job only (a long stagger), so the cron runs below start exactly one.
    local.configure(top=_farm_sections(farm),
                    plotter={"transfer": {"idle_timeout_seconds": TRANSFER_IDLE_TIMEOUT, "port_count": 20}},
                    min_minutes_between_starts=600)
    local.open_gate("all", 4)
    first = local.run()  # the plain cron pass: starts the job, nothing to send yet
    assert first.returncode == 0, first.stdout + first.stderr
    ((_job_id, pid, created, *_),) = local.records()
    wait_until("the job to finish", lambda: not alive(pid, created))
    made = [p.name for p in local.out.iterdir() if is_finished_plot_name(p.name)]
    assert len(made) == 1

    second = local.run()  # the next cron pass sends it to the harvester, verified
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"sent {made[0]} to {REMOTE}" in second.stdout
    assert [p.name for p in farm.harvesters[REMOTE].plots()] == made
    assert list(local.out.iterdir()) == []
    assert len(local.records()) == 1  # the stagger held: no second job


def test_remote_plotter_jobs_listed_and_stopped_over_ssh(farm: E2EFarm, plotters: tuple[JobsFarm, JobsFarm]) -> None:
    local, remote = plotters
    remote.configure(max_jobs=1)
    started = farm.net.exec_in(REMOTE, [PYTHON, str(REPO / "plot_manager.py"), "--config", str(remote.config_path),
                                        "--start-jobs"], env=remote.env)
    assert started.returncode == 0, started.stderr
    ((job_id, pid, created, *_),) = remote.records()
    remote.open_gate(pid, 2)
    wait_until("the remote job held before phase 3", lambda: remote.held_at(pid, 3))

    local.configure(top={**_farm_sections(farm), "hostname": "chiaplot01"}, max_jobs=1,
                    remote_plotters=[{"name": REMOTE, "host": farm.net.host(REMOTE).address, "user": "root",
                                      "install_dir": str(REPO), "config": str(remote.config_path)}])
    assert local.run("--start-jobs").returncode == 0
    ((local_id, *_),) = local.records()

    listing = local.run("--jobs", "--host", "all", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {(row["host"], row["job_id"]): row for row in json.loads(listing.stdout)}
    assert set(rows) == {("chiaplot01", local_id), (REMOTE, job_id)}
    assert rows[(REMOTE, job_id)]["phase"] == 2 and rows[(REMOTE, job_id)]["pid"] == pid
    table = local.run("--jobs", "--host", REMOTE)
    assert table.returncode == 0 and job_id in table.stdout and local_id not in table.stdout

    plot_id = rows[(REMOTE, job_id)]["plot_id"]
    assert files_with(remote.temps[0], plot_id)
    stop = local.run("--stop", job_id, "--host", REMOTE)
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.startswith(f"{REMOTE}: job {job_id}") and "stopped" in stop.stdout
    wait_until("the remote job gone", lambda: not alive(pid, created))
    assert files_with(remote.temps[0], plot_id) == []
    assert alive(local.records()[0][1], local.records()[0][2])  # the local job is untouched

    # A plotter that cannot be reached is named, the others still answer; it is given up at its
    # 3 s connect timeout, not after the minutes a connect can hang without one.
    local.configure(top={**_farm_sections(farm, connect_timeout=3), "hostname": "chiaplot01"}, max_jobs=1,
                    remote_plotters=[{"name": "ghost", "host": "10.213.77.250", "user": "root", "install_dir": str(REPO)}])
    started_at = time.monotonic()
    partial = local.run("--jobs", "--host", "all")
    assert partial.returncode == 1 and local_id in partial.stdout and "ghost" in partial.stdout
    assert time.monotonic() - started_at < DEADLINE / 2


def test_remote_aborted_job_files_removed_over_ssh(farm: E2EFarm, plotters: tuple[JobsFarm, JobsFarm]) -> None:
    """--remove-aborted --host NAME cleans exactly the dead job's files on that plotter: not its
    held neighbour's there, not this plotter's own aborted job's."""
    local, remote = plotters
    remote.configure(max_jobs=2)
    started = farm.net.exec_in(REMOTE, [PYTHON, str(REPO / "plot_manager.py"), "--config", str(remote.config_path),
                                        "--start-jobs"], env=remote.env)
    assert started.returncode == 0, started.stderr
    (doomed, doomed_pid, doomed_created, *_), (held, held_pid, held_created, *_) = remote.records()
    for pid in (doomed_pid, held_pid):
        remote.open_gate(pid, 1)  # phase 1 writes the temp files, then each waits before phase 2
    wait_until("both remote jobs held before phase 2", lambda: len(fake_held_at(remote.gates, 2)) == 2)
    ids = {pid: plot_id for plot_id, pid in fake_held_at(remote.gates, 2).items()}
    fail(remote.gates, 2, str(doomed_pid))
    remote.open_gate(doomed_pid, 2)
    wait_until("the remote job to crash", lambda: not alive(doomed_pid, doomed_created))

    def remote_files(plot_id: str) -> list[str]:
        return [name for d in (*remote.temps, remote.out) for name in files_with(d, plot_id)]

    doomed_files, held_files = remote_files(ids[doomed_pid]), remote_files(ids[held_pid])
    assert doomed_files and held_files

    # This plotter has an aborted job of its own: --host NAME must leave it alone.
    local.configure(top={**_farm_sections(farm), "hostname": "chiaplot01"}, max_jobs=1,
                    remote_plotters=[{"name": REMOTE, "host": farm.net.host(REMOTE).address, "user": "root",
                                      "install_dir": str(REPO), "config": str(remote.config_path)}])
    local.open_gate("all", 4)
    assert local.run("--start-jobs", env={**local.env, "FAKE_PLOTTER_FAIL_AT": "phase2"}).returncode == 0
    ((_local_id, local_pid, local_created, *_),) = local.records()
    wait_until("the local job to crash", lambda: not alive(local_pid, local_created))
    local_leftovers = sorted(p.name for p in local.temps[0].iterdir())
    assert local_leftovers

    removed = local.run("--remove-aborted", "--host", REMOTE)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert removed.stdout.splitlines() == [f"{REMOTE}: job {doomed} (failed): deleted {len(doomed_files)} temporary file(s)"]
    assert remote_files(ids[doomed_pid]) == []
    assert remote_files(ids[held_pid]) == held_files and alive(held_pid, held_created)
    assert sorted(p.name for p in local.temps[0].iterdir()) == local_leftovers
    again = local.run("--remove-aborted", "--host", REMOTE)
    assert again.returncode == 0 and again.stdout.strip() == f"{REMOTE}: no ended job has temporary files left"
    assert held not in removed.stdout + again.stdout

    for host, named in (("nosuch", "'nosuch' is not in plotter.jobs.remote_plotters"), ("all", "--host all")):
        refused = local.run("--remove-aborted", "--host", host)
        assert refused.returncode == 2 and refused.stdout == ""
        (line,) = refused.stderr.strip().splitlines()
        assert named in line
