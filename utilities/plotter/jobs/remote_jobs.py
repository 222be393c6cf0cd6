"""Plot jobs on other plotters: the same plot_manager.py commands, run there over SSH.

Nothing runs on the other plotter but its own plot_manager.py (no daemon, no agent): ``--jobs``
asks for ``--jobs --json`` there and merges the rows, ``--stop JOB --host NAME`` runs ``--stop``
there. Host keys are checked (``utilities/remote.py``), every word is quoted for the remote shell.
"""

from __future__ import annotations

import json
from typing import Any

from utilities.config import Settings
from utilities.errors import UsageError
from utilities.remote import CommandResult, RemoteError, connect, fan_out, run
from utilities.settings.farm import HarvesterTarget
from utilities.settings.plot_jobs import RemotePlotter

REMOTE_TIMEOUT_SECONDS = 120


def remote_argv(remote: RemotePlotter, *args: str) -> list[str]:
    base = remote.install_dir.rstrip("/")
    config = ["--config", remote.config] if remote.config else []
    return [f"{base}/.venv/bin/python", f"{base}/plot_manager.py", *config, *args]


def _target(remote: RemotePlotter) -> HarvesterTarget:
    return HarvesterTarget(name=remote.name, host=remote.host, ssh_port=remote.ssh_port, user=remote.user)


def choose_remotes(settings: Settings, host: str) -> list[RemotePlotter]:
    """The remote plotters ``--host`` names ("all": every one)."""
    remotes = settings.plotter.jobs.remote_plotters
    if host == "all":
        return list(remotes)
    chosen = [r for r in remotes if r.name == host]
    if not chosen:
        known = ", ".join(r.name for r in remotes) or "none configured"
        raise UsageError(f"--host: {host!r} is not in plotter.jobs.remote_plotters (known: {known}, or 'all')")
    return chosen


def run_remote(settings: Settings, remote: RemotePlotter, *args: str) -> CommandResult:
    client = connect(_target(remote), settings.farm.ssh)
    try:
        return run(client, remote_argv(remote, *args), timeout=REMOTE_TIMEOUT_SECONDS)
    finally:
        client.close()


def parse_jobs_answer(name: str, result: CommandResult) -> list[dict[str, Any]]:
    """Rows from a remote ``--jobs --json``, each tagged with the plotter's name."""
    if result.exit_status != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RemoteError(f"{name}: plot_manager.py --jobs failed (exit {result.exit_status}): {last}")
    try:
        rows = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise RemoteError(f"{name}: plot_manager.py --jobs --json did not answer JSON") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise RemoteError(f"{name}: plot_manager.py --jobs --json answered something other than a list of jobs")
    return [{**row, "host": name} for row in rows]


def remote_jobs(settings: Settings, remotes: list[RemotePlotter]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows from every chosen plotter in parallel, and a problem line per plotter that failed."""
    by_name = {r.name: r for r in remotes}

    def ask(target: HarvesterTarget) -> list[dict[str, Any]]:
        return parse_jobs_answer(target.name, run_remote(settings, by_name[target.name], "--jobs", "--json"))

    rows: list[dict[str, Any]] = []
    problems: dict[str, str] = {}
    for name, answer in fan_out([_target(r) for r in remotes], ask, REMOTE_TIMEOUT_SECONDS).items():
        if isinstance(answer, RemoteError):
            problems[name] = str(answer)
        else:
            rows += answer
    return rows, problems
