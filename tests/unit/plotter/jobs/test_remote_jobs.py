"""Remote plotters: the command run there, and what its answer must look like."""

from __future__ import annotations

import json

import pytest

from utilities.config import validate_config
from utilities.errors import UsageError
from utilities.plotter.jobs.remote_jobs import choose_remotes, parse_jobs_answer, remote_argv
from utilities.remote import CommandResult, RemoteError

SETTINGS = validate_config({"plotter": {"jobs": {"remote_plotters": [
    {"name": "p2", "host": "10.0.0.2", "install_dir": "/opt/plot_manager/", "config": "/etc/pm.yaml"},
    {"name": "p3", "host": "10.0.0.3"},
]}}})


def test_remote_command_uses_the_install_dir_and_config() -> None:
    p2, p3 = SETTINGS.plotter.jobs.remote_plotters
    assert remote_argv(p2, "--jobs", "--json") == [
        "/opt/plot_manager/.venv/bin/python", "/opt/plot_manager/plot_manager.py", "--config", "/etc/pm.yaml",
        "--jobs", "--json"]
    assert remote_argv(p3, "--stop", "ab; rm -rf /")[-1] == "ab; rm -rf /"  # one word; remote.run quotes it


def test_choose_remotes() -> None:
    assert [r.name for r in choose_remotes(SETTINGS, "all")] == ["p2", "p3"]
    assert [r.name for r in choose_remotes(SETTINGS, "p3")] == ["p3"]
    with pytest.raises(UsageError, match="'p9' is not in plotter.jobs.remote_plotters"):
        choose_remotes(SETTINGS, "p9")


def test_answer_rows_are_tagged_with_the_plotter() -> None:
    rows = parse_jobs_answer("p2", CommandResult(0, json.dumps([{"job_id": "x", "host": ""}]), ""))
    assert rows == [{"job_id": "x", "host": "p2"}]


@pytest.mark.parametrize(
    ("result", "text"),
    [
        (CommandResult(2, "", "config error in /etc/pm.yaml: plotter.jobs.k: bad\n"), "exit 2): config error"),
        (CommandResult(0, "Traceback ...", ""), "did not answer JSON"),
        (CommandResult(0, json.dumps({"job_id": "x"}), ""), "other than a list"),
    ],
)
def test_bad_answers_name_the_plotter(result: CommandResult, text: str) -> None:
    with pytest.raises(RemoteError, match="p2") as info:
        parse_jobs_answer("p2", result)
    assert text in str(info.value)


def test_remote_paths_must_be_absolute() -> None:
    from utilities.errors import ConfigError

    with pytest.raises(ConfigError, match="remote_plotters.0.install_dir"):
        validate_config({"plotter": {"jobs": {"remote_plotters": [{"name": "p", "host": "h", "install_dir": "pm"}]}}})
