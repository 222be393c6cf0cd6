"""Real plot jobs: plot_manager.py starts the fake plotters (real chiapos k=18 plots) detached,
holds them at phases with gate files, and the limits, stagger, start early, adoption, --stop
and --remove-aborted are checked against what really runs.

No sleeps stand in for synchronisation: every wait polls a condition (a gate marker file, a
process state, a database row) with a deadline. Every job any test started is killed in the
fixture's teardown, by the pid and create_time recorded for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.plot_job_env import (
    CONTRACT,
    CREATE_TIME_RESOLUTION,
    FARMER_KEY,
    JobsFarm,
    alive,
    files_with,
    process_clock,
    wait_until,
    wall_to_process_clock,
)
from tests.support.smtp_server import SMTPTestServer, smtp_server
from tests.support.waiting import CHANNEL_TIMEOUT, DEADLINE
from utilities.plots import is_finished_plot_name


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[JobsFarm]:
    plotter = JobsFarm(tmp_path / "plotter")
    try:
        yield plotter
    finally:
        plotter.kill_everything()


@pytest.fixture
def mail() -> Iterator[SMTPTestServer]:
    with smtp_server() as server:
        yield server


def _email_to(server: SMTPTestServer, *events: str) -> dict[str, Any]:
    return {"email": {"enabled": True, "smtp_host": server.host, "smtp_port": server.port, "to": ["farmer@example.org"],
                      "timeout_seconds": CHANNEL_TIMEOUT},
            "events": {event: ["email"] for event in events}}


def test_limits_and_start_early_hold_in_real_starts(farm: JobsFarm) -> None:
    farm.configure(
        max_jobs=2, start_early_phase=1,
        temp_directories=[{"path": str(farm.temps[0]), "max_jobs": 1},
                          {"path": str(farm.temps[1]), "max_jobs": 2, "max_phase1_jobs": 1}],
    )
    first = farm.run("--start-jobs")
    assert first.returncode == 0, first.stderr
    records = farm.records()
    assert [r[4] for r in records] == [str(farm.temps[0]), str(farm.temps[1])]  # one per directory, then max_jobs
    a_pid, a_created, b_pid = records[0][1], records[0][2], records[1][1]
    assert all(alive(r[1], r[2]) for r in records)

    again = farm.run("--start-jobs")
    assert "no job started: max_jobs reached (2 of 2)" in again.stdout
    assert len(farm.records()) == 2

    # Job A goes past phase 1 (held before phase 3): start early lets a third job in, on t1
    # (A no longer counts there), not on t2 (B is in phase 1 there, whose phase-1 limit is 1).
    farm.open_gate(a_pid, 2)
    wait_until("job A held before phase 3", lambda: farm.held_at(a_pid, 3))
    a_moved_on = process_clock()  # the clock create_time() reads, not time.time()
    third = farm.run("--start-jobs")
    assert third.returncode == 0, third.stderr
    records = farm.records()
    assert len(records) == 3 and records[2][4] == str(farm.temps[0])
    assert records[2][2] >= a_moved_on - CREATE_TIME_RESOLUTION  # the process really started only after A moved on
    assert "max_jobs reached (2 of 2)" in third.stdout or "started job" in third.stdout
    assert len(farm.records()) == 3 and farm.run("--start-jobs").stdout.startswith("no job started: max_jobs")

    table = farm.run("--jobs")
    assert table.returncode == 0, table.stderr
    assert str(a_pid) in table.stdout and str(b_pid) in table.stdout
    shown = {row["pid"]: row for row in farm.jobs()}
    assert shown[a_pid]["phase"] == 2 and shown[a_pid]["state"] == "running"
    assert shown[b_pid]["phase"] is None and shown[b_pid]["cpu_percent"] is not None
    assert alive(a_pid, a_created)


def test_stagger_holds_and_killing_the_loop_leaves_jobs_running(farm: JobsFarm) -> None:
    stagger_minutes = 0.02  # 1.2 s between starts
    farm.configure(min_minutes_between_starts=stagger_minutes, max_jobs=3)
    loop = subprocess.Popen(farm.command("--loop", "0.1"), env=farm.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    farm.extra_pids.append((loop.pid, psutil.Process(loop.pid).create_time()))
    try:
        records = wait_until("three jobs started by --loop", lambda: len(farm.records()) >= 3 and farm.records())
    finally:
        loop.send_signal(signal.SIGKILL)
        loop.wait(DEADLINE)
        assert loop.stderr is not None
        loop.stderr.close()
    starts = [r[3] for r in records]  # time.time() of each start decision
    created = [r[2] for r in records]  # psutil create_time() of each process
    gap = stagger_minutes * 60
    assert all(b - a >= gap for a, b in zip(starts, starts[1:], strict=False)), starts
    # Each process itself started at least the stagger after the previous start decision, both
    # on psutil's clock (time.time() is up to 1 s apart from it; 1 ms for moving onto it).
    decided = [wall_to_process_clock(s) for s in starts]
    slack = CREATE_TIME_RESOLUTION + 0.001
    assert all(c - d >= gap - slack for d, c in zip(decided, created[1:], strict=False)), (decided, created)
    assert len(records) == 3  # max_jobs held

    # The manager was SIGKILLed: the jobs (own sessions) still run, and the next run finds them.
    assert all(alive(r[1], r[2]) for r in records)
    rows = {row["job_id"]: row for row in farm.jobs()}
    assert set(rows) == {r[0] for r in records}
    assert all(row["state"] == "running" and not row["adopted"] for row in rows.values())


def _start_stranger(farm: JobsFarm, log_path: Path) -> subprocess.Popen[bytes]:
    """A plot job started by hand (not by plot_manager.py), output into its own log file."""
    argv = [str(farm.bin / "chia"), "plots", "create", "-k", "18", "-n", "1", "-t", str(farm.temps[0]),
            "-d", str(farm.out), "-f", FARMER_KEY, "-c", CONTRACT, "--override-k"]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=farm.env)
    farm.extra_pids.append((proc.pid, psutil.Process(proc.pid).create_time()))
    return proc


def test_adopts_a_job_it_did_not_start_and_stop_removes_only_its_files(farm: JobsFarm) -> None:
    farm.configure(max_jobs=2)
    started = farm.run("--start-jobs")
    assert started.returncode == 0, started.stderr
    ours = farm.records()
    assert len(ours) == 2
    farm.open_gate(ours[0][1], 2)  # ours[0] works next to the stranger; ours[1] waits before phase 1
    stranger = _start_stranger(farm, farm.root / "by_hand.log")
    farm.open_gate(stranger.pid, 2)
    for pid in (ours[0][1], stranger.pid):
        wait_until(f"job {pid} held before phase 3", lambda pid=pid: farm.held_at(pid, 3))

    rows = {row["pid"]: row for row in farm.jobs()}
    adopted = rows[stranger.pid]
    assert adopted["adopted"] is True and adopted["log_path"] == str(farm.root / "by_hand.log")
    assert adopted["phase"] == 2 and adopted["plot_id"] and adopted["temp_bytes"] > 0
    neighbour = rows[ours[0][1]]
    before = files_with(farm.temps[0], neighbour["plot_id"])
    assert before and files_with(farm.temps[0], adopted["plot_id"])

    stop = farm.run("--stop", str(stranger.pid))
    assert stop.returncode == 0, stop.stderr
    assert "stopped" in stop.stdout
    assert stranger.wait(DEADLINE) == -signal.SIGTERM
    assert files_with(farm.temps[0], adopted["plot_id"]) == []
    assert files_with(farm.out, adopted["plot_id"]) == []
    assert files_with(farm.temps[0], neighbour["plot_id"]) == before  # the other jobs' files are untouched
    assert alive(ours[0][1], ours[0][2]) and alive(ours[1][1], ours[1][2])

    # Our own job, stopped by its id: its process group goes, its temp files too.
    job_id, pid, created = ours[0][:3]
    stop = farm.run("--stop", job_id)
    assert stop.returncode == 0, stop.stderr
    wait_until("stopped job gone", lambda: not alive(pid, created))
    assert files_with(farm.temps[0], neighbour["plot_id"]) == [] and files_with(farm.out, neighbour["plot_id"]) == []
    states = {row["job_id"]: row["state"] for row in farm.jobs()}
    assert states[job_id] == "stopped" and states[ours[1][0]] == "running"
    unknown = farm.run("--stop", "nosuchjob")
    assert unknown.returncode == 1 and "no plot job 'nosuchjob'" in unknown.stderr


def test_failed_job_alerts_once_and_remove_aborted_cleans_up(farm: JobsFarm, mail: SMTPTestServer) -> None:
    farm.notifications = _email_to(mail, "plot_job_started", "plot_job_failed")
    farm.configure(max_jobs=1)
    env = {**farm.env, "FAKE_PLOTTER_FAIL_AT": "phase2"}
    farm.open_gate("all", 4)
    started = farm.run("--start-jobs", env=env)
    assert started.returncode == 0, started.stderr
    ((job_id, pid, created, *_),) = farm.records()
    wait_until("the job to fail", lambda: not alive(pid, created))
    rows = farm.jobs()
    assert [(r["job_id"], r["state"]) for r in rows] == [(job_id, "failed")]
    plot_id = rows[0]["plot_id"]
    assert files_with(farm.temps[0], plot_id)  # a crashed plotter leaves its temp files
    farm.jobs()  # a second look must not alert again
    subjects = [m.message["Subject"] for m in mail.wait_for(2)]
    assert any("started" in s for s in subjects) and sum("failed" in s for s in subjects) == 1

    cleaned = farm.run("--remove-aborted")
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"job {job_id} (failed): deleted" in cleaned.stdout
    assert files_with(farm.temps[0], plot_id) == [] and files_with(farm.out, plot_id) == []
    assert "no ended job has temporary files left" in farm.run("--remove-aborted").stdout
    assert len(mail.received) == 2


def test_finished_job_leaves_a_plot_for_the_transfer(farm: JobsFarm) -> None:
    farm.configure(max_jobs=1)
    farm.open_gate("all", 4)
    assert farm.run("--start-jobs").returncode == 0
    ((job_id, pid, created, *_),) = farm.records()
    wait_until("the job to finish", lambda: not alive(pid, created))
    (row,) = farm.jobs()
    assert row["state"] == "completed" and row["temp_bytes"] == 0
    plots = [p for p in farm.out.iterdir() if is_finished_plot_name(p.name)]
    assert [p.name for p in plots] == [row["plot_name"]]
    assert os.listdir(farm.temps[0]) == []


def test_no_destination_alerts_once_per_episode(farm: JobsFarm, mail: SMTPTestServer) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tiny tmpfs as a full output drive")
    farm.notifications = _email_to(mail, "no_plot_destination")
    full = farm.root / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "plot_jobs_test", str(full)], check=True)
    try:
        farm.configure(output_directories=[str(full)])
        for _ in range(3):
            proc = farm.run("--start-jobs")
            assert proc.returncode == 0, proc.stderr
            assert "no job started: no output directory has room" in proc.stdout
        assert farm.records() == []
        (message,) = mail.wait_for(1)
        assert "no room" in message.message["Subject"]
        assert len(mail.received) == 1
    finally:
        subprocess.run(["umount", str(full)], check=True)


def test_job_flags_are_checked(farm: JobsFarm) -> None:
    farm.configure()
    bad = farm.run("--json")
    assert bad.returncode == 2 and "--json goes with --history or --jobs" in bad.stderr
    host = farm.run("--jobs", "--host", "plotter9")
    assert host.returncode == 2 and "plotter9" in host.stderr and "remote_plotters" in host.stderr
    both = farm.run("--jobs", "--stop", "x")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    farm.configure(enabled=False)
    off = farm.run("--start-jobs")
    assert off.returncode == 2 and "plotter.jobs.enabled" in off.stderr


def test_madmax_job_runs_and_reports_its_phases(farm: JobsFarm) -> None:
    """madMAx's command line from the built-in template, its phases read back from its log."""
    farm.configure(program="madmax", max_jobs=1)
    assert farm.run("--start-jobs").returncode == 0
    ((job_id, pid, created, *_),) = farm.records()
    farm.open_gate(pid, 2)
    wait_until("madmax job held before phase 3", lambda: farm.held_at(pid, 3))
    (row,) = farm.jobs()
    assert (row["job_id"], row["program"], row["phase"], row["state"]) == (job_id, "madmax", 2, "running")
    farm.open_gate(pid, 4)
    wait_until("madmax job to finish", lambda: not alive(pid, created))
    (row,) = farm.jobs()
    assert row["state"] == "completed", row
    assert [p.name for p in farm.out.iterdir() if is_finished_plot_name(p.name)] == [row["plot_name"]]


def test_bladebit_job_phases_and_stop_cleans_temp_files_without_plot_id(farm: JobsFarm) -> None:
    farm.configure(program="bladebit", compression=1, max_jobs=1)
    assert farm.run("--start-jobs").returncode == 0
    ((job_id, pid, created, *_),) = farm.records()
    farm.open_gate(pid, 2)
    wait_until("bladebit job held before phase 3", lambda: farm.held_at(pid, 3))
    (row,) = farm.jobs()
    assert (row["job_id"], row["program"], row["phase"], row["state"]) == (job_id, "bladebit", 2, "running")
    leftovers = sorted(p.name for p in farm.temps[0].iterdir())
    assert leftovers and not any(len(name) > 64 for name in leftovers)  # table_l_2.tmp ...: no id
    stop = farm.run("--stop", job_id)
    assert stop.returncode == 0, stop.stderr
    assert not alive(pid, created)
    assert list(farm.temps[0].iterdir()) == []
    assert [p.name for p in farm.out.iterdir()] == []  # its unfinished .plot.tmp too
