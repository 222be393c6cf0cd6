"""Replot at the final phase (exactly one old OG plot, once per job) and the periodic summary,
with a real state database, real plots on a nearly full tmpfs and a real SMTP server."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.plotmaker import copy_plot
from tests.support.smtp_server import SMTPTestServer, smtp_server
from tests.support.waiting import CHANNEL_TIMEOUT
from utilities.config import Settings, validate_config
from utilities.notify import Notifier
from utilities.plotter.jobs.progress import parse_progress
from utilities.plotter.jobs.runner import maybe_send_summary, replot_if_due
from utilities.plotter.jobs.store import COMPLETED, JobRecord, JobStore
from utilities.state import StateDB

PLOT_ID = "5" * 64
# What chia prints when a job enters its last phase (shortened to the lines that matter).
PHASE_LOG = {
    3: ["Starting plotting progress into temporary dirs: /t and /t", f"ID: {PLOT_ID}", "Plot size is: 18",
        "Starting phase 1/4: Forward Propagation into tmp files... Mon Nov 23 04:00:00 2026",
        "Starting phase 2/4: Backpropagation into tmp files... Mon Nov 23 04:00:01 2026",
        "Starting phase 3/4: Compression from tmp files into \"/t/x.plot.2.tmp\" ... Mon Nov 23 04:00:02 2026"],
}
PHASE_LOG[4] = [*PHASE_LOG[3], "Starting phase 4/4: Write Checkpoint tables into \"/t/x.plot.2.tmp\" ... Mon Nov 23 04:00:03 2026"]


@pytest.fixture
def full_drive(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs as a nearly full replot drive")
    drive = tmp_path / "replot"
    drive.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "plot_jobs_replot", str(drive)], check=True)
    try:
        yield drive
    finally:
        subprocess.run(["umount", str(drive)], check=True)


def _settings(tmp_path: Path, **jobs: object) -> Settings:
    return validate_config({"state_dir": str(tmp_path / "state"), "plotter": {"jobs": {"k": 18, **jobs}}})


def _job(tmp_path: Path, dest: Path, phase: int) -> JobRecord:
    log_path = tmp_path / "job.log"
    log_path.write_text("\n".join(PHASE_LOG[phase]) + "\n")
    return JobRecord("r1", 1, 0.0, time.time(), "chia", ("chia",), tmp_path, None, dest, log_path, replot=True)


def test_replot_deletes_one_og_plot_at_the_final_phase_once(tmp_path: Path, full_drive: Path) -> None:
    olds = [copy_plot("og", full_drive) for _ in range(2)]
    os.utime(olds[0], (1_600_000_000, 1_600_000_000))  # the oldest
    pool = copy_plot("pool", full_drive)
    filler = full_drive / "filler.bin"
    free = os.statvfs(full_drive).f_bavail * os.statvfs(full_drive).f_frsize
    filler.write_bytes(b"\0" * max(0, free - 1024 * 1024))  # less than one plot left
    settings = _settings(tmp_path, replot={"enabled": True, "directories": [str(full_drive)]})
    with StateDB(settings.database_path) as db:
        store = JobStore(db)
        job = _job(tmp_path, full_drive, 3)
        store.add(job)
        assert replot_if_due(settings, store, job, parse_progress("chia", PHASE_LOG[3]), db) is None
        assert all(p.exists() for p in [*olds, pool])  # phase 3: not yet

        job = _job(tmp_path, full_drive, 4)
        progress = parse_progress("chia", PHASE_LOG[4])
        deleted = replot_if_due(settings, store, job, progress, db)
        assert deleted == olds[0] and not olds[0].exists()
        assert olds[1].exists() and pool.exists()  # one OG plot only, never the pool plot
        again = store.get("r1")
        assert again is not None and again.replot_claimed_at is not None
        assert replot_if_due(settings, store, again, progress, db) is None  # never twice
        assert replot_if_due(settings, store, job, progress, db) is None  # not even from a stale record
        assert olds[1].exists()


def test_summary_every_period_with_the_figures(tmp_path: Path) -> None:
    with smtp_server() as server:
        _summary_case(tmp_path, server)


def _summary_case(tmp_path: Path, server: SMTPTestServer) -> None:
    settings = validate_config({
        "state_dir": str(tmp_path / "state"), "hostname": "plotter1",
        "plotter": {"jobs": {"summary_hours": 6}},
        "notifications": {"email": {"enabled": True, "smtp_host": server.host, "smtp_port": server.port,
                                    "to": ["farmer@example.org"], "timeout_seconds": CHANNEL_TIMEOUT},
                          "events": {"plot_job_summary": ["email"]}},
    })
    notifier = Notifier(settings.notifications)
    t0 = 1_700_000_000.0
    with StateDB(settings.database_path) as db:
        store = JobStore(db)
        assert maybe_send_summary(settings, db, store, notifier, t0) is None  # the first period starts
        for i, minutes in enumerate((40, 50, 60)):
            store.add(JobRecord(f"j{i}", 100 + i, t0, t0 + i, "chia", ("chia",), None, None, None, None,
                                state=COMPLETED, ended_at=t0 + 3600 * (i + 1), total_seconds=minutes * 60))
        store.add(JobRecord("old", 99, t0 - 9000, t0 - 9000, "chia", ("chia",), None, None, None, None,
                            state=COMPLETED, ended_at=t0 - 10, total_seconds=60))  # before the period
        assert maybe_send_summary(settings, db, store, notifier, t0 + 5 * 3600) is None  # not yet 6 h
        summary = maybe_send_summary(settings, db, store, notifier, t0 + 6 * 3600)
        assert summary is not None
        assert (summary.jobs_done, summary.average_plot_seconds, summary.plots_per_day) == (3, 3000.0, 12.0)
        (mail,) = server.wait_for(1)
        body = mail.message.get_body(("plain",)).get_content()
        assert "plotter1" in mail.message["Subject"] and "12.0" in body and "50.0 min" in body
        assert maybe_send_summary(settings, db, store, notifier, t0 + 6 * 3600 + 60) is None  # once per period
        assert len(server.received) == 1


def test_room_promised_to_another_job_is_not_taken(tmp_path: Path, full_drive: Path) -> None:
    """Job A's room was made already (its plot is not written yet); job B must not count that
    space as free: one more OG deletion cannot make room for both, so nothing is deleted."""
    olds = [copy_plot("og", full_drive) for _ in range(2)]
    free = os.statvfs(full_drive).f_bavail * os.statvfs(full_drive).f_frsize
    (full_drive / "filler.bin").write_bytes(b"\0" * max(0, free - 1024 * 1024))
    settings = _settings(tmp_path, replot={"enabled": True, "directories": [str(full_drive)]})
    progress = parse_progress("chia", PHASE_LOG[4])
    with StateDB(settings.database_path) as db:
        store = JobStore(db)
        a = _job(tmp_path, full_drive, 4)
        store.add(a)
        assert store.claim_replot(a.job_id)
        b = JobRecord("r2", 2, 0.0, time.time(), "chia", ("chia",), tmp_path, None, full_drive, a.log_path, replot=True)
        store.add(b)
        assert replot_if_due(settings, store, b, progress, db, [(a, progress), (b, progress)]) is None
        assert all(p.exists() for p in olds)
        result = store.get("r2")
        assert result is not None and (result.replot_result or "").startswith("error:")
