"""Plot job command lines: argv lists from the settings, optional groups, shell-safe joining."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from utilities.config import validate_config
from utilities.errors import ConfigError
from utilities.plotter.jobs.commands import JobPlacement, build_command, remote_command, render_template
from utilities.settings.plot_jobs import PlotJobSettings

FARMER = "a" * 96
POOL_PK = "b" * 96
CONTRACT = "xch1" + "q" * 58


def _settings(**jobs: object) -> PlotJobSettings:
    base = {"farmer_public_key": FARMER, "pool_contract_address": CONTRACT, "k": 32, "threads": 4,
            "buffer": 4000, "buckets": 64}
    return validate_config({"plotter": {"jobs": {**base, **jobs}}}).plotter.jobs


def test_chia_command_has_the_real_flags_and_no_private_key() -> None:
    argv = build_command(_settings(), JobPlacement(temp=Path("/mnt/t1"), dest=Path("/mnt/out")))
    assert argv == ["chia", "plots", "create", "-k", "32", "-n", "1", "-t", "/mnt/t1", "-d", "/mnt/out",
                    "-r", "4", "-b", "4000", "-u", "64", "-f", FARMER, "-c", CONTRACT, "-x"]


def test_small_k_gets_override_k_for_chia() -> None:
    argv = build_command(_settings(k=18), JobPlacement(Path("/t"), Path("/d")))
    assert argv[-2:] == ["-x", "--override-k"]


def test_temp2_and_pool_key_groups_appear_only_when_set() -> None:
    settings = _settings(pool_contract_address=None, pool_public_key=POOL_PK)
    argv = build_command(settings, JobPlacement(Path("/t"), Path("/d"), Path("/t2")))
    assert argv[argv.index("-2") + 1] == "/t2"
    assert argv[argv.index("-p") + 1] == POOL_PK and "-c" not in argv


def test_madmax_directories_end_in_slash() -> None:
    argv = build_command(_settings(program="madmax", executable="/opt/mm/chia_plot"),
                         JobPlacement(Path("/mnt/t1"), Path("/mnt/out")))
    assert argv[0] == "/opt/mm/chia_plot"
    assert argv[argv.index("-t") + 1] == "/mnt/t1/" and argv[argv.index("-d") + 1] == "/mnt/out/"
    assert "-2" not in argv


def test_bladebit_puts_global_options_before_cudaplot_and_dest_last() -> None:
    argv = build_command(_settings(program="bladebit", compression=7), JobPlacement(Path("/t"), Path("/d")))
    assert argv[0] == "bladebit_cuda" and argv[-1] == "/d"
    assert argv.index("--compress") < argv.index("cudaplot") < argv.index("-t1")
    assert argv[argv.index("--compress") + 1] == "7"


def test_awkward_directory_names_stay_one_argument() -> None:
    temp = Path("/mnt/my temp; rm -rf ~")
    argv = build_command(_settings(), JobPlacement(temp, Path("/d")))
    assert str(temp) in argv
    assert shlex.split(remote_command(argv)) == argv


def test_custom_template_overrides_the_builtin_one() -> None:
    settings = _settings(command_templates={"chia": ["{executable}", "plots", "create", "-t", "{temp}",
                                                      ["-2", "{temp2}"], "-d", "{dest}", "--nobitfield"]})
    assert build_command(settings, JobPlacement(Path("/t"), Path("/d"))) == [
        "chia", "plots", "create", "-t", "/t", "-d", "/d", "--nobitfield"]


def test_plain_word_with_unset_value_is_an_error_not_an_empty_argument() -> None:
    with pytest.raises(ValueError, match="temp2"):
        render_template(("{executable}", "-2", "{temp2}"), {"executable": "x", "temp2": ""})


@pytest.mark.parametrize(
    ("jobs", "key", "text"),
    [
        ({"command_templates": {"chia": ["{executable}", "{secret_key}"]}}, "plotter.jobs.command_templates", "secret_key"),
        ({"command_templates": {"madmax": ["chia_plot"]}}, "plotter.jobs.command_templates", "{executable}"),
        ({"farmer_public_key": "abc"}, "plotter.jobs.farmer_public_key", "96 hex"),
        ({"pool_contract_address": "xch1nope"}, "plotter.jobs.pool_contract_address", "contract"),
        ({"pool_public_key": POOL_PK, "pool_contract_address": CONTRACT}, "plotter.jobs", "not both"),
        ({"enabled": True}, "plotter.jobs", "temp_directories"),
        ({"temp_directories": [{"path": "relative"}]}, "plotter.jobs.temp_directories.0.path", "absolute"),
        ({"temp_directories": [{"path": "/t"}, {"path": "/t"}]}, "plotter.jobs.temp_directories", "more than once"),
        ({"program": "gigahorse"}, "plotter.jobs.program", "gigahorse"),
        ({"replot": {"enabled": True}}, "plotter.jobs.replot", "replot.directories"),
        ({"remote_plotters": [{"name": "all", "host": "h"}]}, "plotter.jobs.remote_plotters", "reserved"),
        ({"max_jobs": 0}, "plotter.jobs.max_jobs", ""),
        ({"enabled": True, "program": "bladebit", "temp_directories": [{"path": "/t"}], "output_directories": ["/o"],
          "farmer_public_key": FARMER, "pool_contract_address": CONTRACT}, "plotter.jobs", "compression 1-9"),
    ],
)
def test_bad_job_settings_name_their_key(jobs: dict, key: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config({"plotter": {"jobs": jobs}}, "c.yaml")
    (line,) = str(info.value).splitlines()
    assert line.startswith(f"config error in c.yaml: {key}:") and text in line
