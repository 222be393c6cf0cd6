"""The ``plotter.jobs:`` config section (plot job management in plot_manager.py).

Plot jobs run for hours and a wrong argument wastes all of them, so everything a job's command
line is made of is checked here, when the config is loaded, with the key named: the program,
the keys (public keys or a pool contract address only: no private key ever needs to be on a
plotter), the directories, the limits and each program's command template.

A command template is a list of argv words with ``{placeholders}``. A word may also be a list of
words (a *group*, such as ``["-2", "{temp2}"]``): the whole group is left out when any value it
refers to is not set, which is how optional flags (temp2, pool key or contract) are written
without any shell or string splicing.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from utilities.settings.base import Section

ProgramName = Literal["chia", "madmax", "bladebit"]

#: The executable each program runs when ``executable`` is not set (looked up on PATH).
DEFAULT_EXECUTABLES: dict[str, str] = {"chia": "chia", "madmax": "chia_plot", "bladebit": "bladebit_cuda"}

#: Values a command template may refer to.
PLACEHOLDERS = frozenset({
    "executable", "k", "compression", "threads", "buffer", "buckets", "temp", "temp2", "dest",
    "farmer_public_key", "pool_public_key", "pool_contract_address", "override_k",
})

TemplateWord = str | list[str]

# The programs' own command-line shapes (chia plots create; madMAx chia_plot; bladebit_cuda's
# global options, then the cudaplot command with its disk-hybrid temp directory, then the
# destination). madMAx wants directories with a trailing slash. chia refuses k < 32 unless told
# ``--override-k`` ({override_k} is that flag for such k, else empty).
DEFAULT_TEMPLATES: dict[str, tuple[TemplateWord, ...]] = {
    "chia": (
        "{executable}", "plots", "create", "-k", "{k}", "-n", "1", "-t", "{temp}", ["-2", "{temp2}"],
        "-d", "{dest}", "-r", "{threads}", "-b", "{buffer}", "-u", "{buckets}",
        ["-f", "{farmer_public_key}"], ["-p", "{pool_public_key}"], ["-c", "{pool_contract_address}"], "-x",
        ["{override_k}"],
    ),
    "madmax": (
        "{executable}", "-n", "1", "-k", "{k}", "-r", "{threads}", "-u", "{buckets}", "-t", "{temp}/",
        ["-2", "{temp2}/"], "-d", "{dest}/",
        ["-f", "{farmer_public_key}"], ["-p", "{pool_public_key}"], ["-c", "{pool_contract_address}"],
    ),
    "bladebit": (
        "{executable}", "-n", "1", "-t", "{threads}", "--compress", "{compression}",
        ["-f", "{farmer_public_key}"], ["-p", "{pool_public_key}"], ["-c", "{pool_contract_address}"],
        "cudaplot", "--disk-128", "-t1", "{temp}", ["-t2", "{temp2}"], "{dest}",
    ),
}

_HEX48 = re.compile(r"(0x)?[0-9a-fA-F]{96}")
_CONTRACT = re.compile(r"t?xch1[02-9ac-hj-np-z]{58}")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def template_fields(word: str) -> list[str]:
    """The placeholder names in one template word (``"{temp}/"`` -> ``["temp"]``)."""
    names = []
    for _literal, name, spec, conversion in string.Formatter().parse(word):
        if name is None:
            continue
        if spec or conversion or name not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {{{name}}} in {word!r}; known: {', '.join(sorted(PLACEHOLDERS))}")
        names.append(name)
    return names


def _absolute(path: Path, key: str) -> Path:
    if not path.expanduser().is_absolute():
        raise ValueError(f"{key} must be an absolute path, got {str(path)!r}")
    return path


class TempDirectory(Section):
    """One temporary directory (usually one fast SSD) and its own limits."""

    path: Path
    # Jobs at once in this directory, and of those, how many may be in phase 1.
    max_jobs: int = Field(default=1, ge=1, le=64)
    max_phase1_jobs: int | None = Field(default=None, ge=1, le=64)
    # Minutes between two starts in this directory (0: only the global stagger applies).
    min_minutes_between_starts: float = Field(default=0, ge=0, le=7 * 24 * 60)

    @field_validator("path")
    @classmethod
    def _path_absolute(cls, value: Path) -> Path:
        return _absolute(value, "path")

    @property
    def phase1_limit(self) -> int:
        return self.max_jobs if self.max_phase1_jobs is None else self.max_phase1_jobs


class ReplotSettings(Section):
    """Replotting: jobs write to drives full of old OG plots, deleting one per new plot."""

    enabled: bool = False
    directories: tuple[Path, ...] = ()

    @model_validator(mode="after")
    def _directories_when_on(self) -> ReplotSettings:
        if self.enabled and not self.directories:
            raise ValueError("replot.enabled is true but replot.directories is empty")
        for path in self.directories:
            _absolute(path, "replot.directories")
        return self


class RemotePlotter(Section):
    """Another plotter whose jobs plot_manager.py shows and stops over SSH (no daemon there)."""

    name: str = Field(min_length=1)
    host: str = Field(min_length=1)
    ssh_port: int = Field(default=22, ge=1, le=65535)
    user: str = "root"
    # Where plot_manager is installed there (its .venv/bin/python runs plot_manager.py).
    install_dir: str = "/root/plot_manager"
    # Its config file there (default: its own default, ~/.config/plot_manager/plot_manager.yaml).
    config: str | None = None

    @field_validator("install_dir", "config")
    @classmethod
    def _absolute_remote_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or "\0" in value or "\n" in value):
            raise ValueError(f"must be an absolute path on that plotter, got {value!r}")
        return value

    @field_validator("name", "host", "user")
    @classmethod
    def _plain(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"only letters, digits, '-', '_' and '.' are allowed, got {value!r}")
        return value


class PlotJobSettings(Section):
    """Which plotter program runs, with what limits, on which temp and output directories."""

    # Off: plot_manager.py never starts a job (it still shows and stops running ones).
    enabled: bool = False
    program: ProgramName = "chia"
    # Path of the plotter program (default: chia, chia_plot or bladebit_cuda on PATH).
    executable: str | None = None
    # argv template per program, overriding the built-in one (see DEFAULT_TEMPLATES).
    command_templates: dict[ProgramName, tuple[TemplateWord, ...]] = {}
    # Keys the plots are made for. Public keys and a pool contract address only.
    farmer_public_key: str | None = None
    pool_public_key: str | None = None
    pool_contract_address: str | None = None
    k: int = Field(default=32, ge=18, le=50)
    compression: int = Field(default=0, ge=0, le=9)
    threads: int = Field(default=2, ge=1, le=1024)
    buffer: int = Field(default=3390, ge=1, le=1 << 20)  # MiB, chia's -b
    buckets: int = Field(default=128, ge=16, le=1024)
    # Temp space one job needs, in GiB (default: from program and k, e.g. 239 GiB for chia k32).
    temp_space_gib: float | None = Field(default=None, gt=0)
    temp_directories: tuple[TempDirectory, ...] = ()
    temp2_directory: Path | None = None
    output_directories: tuple[Path, ...] = ()
    # Limits over all temp directories.
    max_jobs: int = Field(default=1, ge=1, le=256)
    max_phase1_jobs: int | None = Field(default=None, ge=1, le=256)
    min_minutes_between_starts: float = Field(default=0, ge=0, le=7 * 24 * 60)
    # A job past this phase (1-4) no longer counts against the limits (0: every job counts).
    start_early_phase: int = Field(default=0, ge=0, le=4)
    # Where each job's output goes (default: <state_dir>/plot_jobs).
    log_directory: Path | None = None
    replot: ReplotSettings = ReplotSettings()
    # Send plot_job_summary every this many hours (0: never).
    summary_hours: float = Field(default=0, ge=0, le=24 * 31)
    # plot_manager.py --loop: seconds between scheduling passes.
    loop_seconds: float = Field(default=60, ge=1, le=3600)
    # --stop: seconds between SIGTERM and SIGKILL.
    stop_grace_seconds: float = Field(default=30, ge=0, le=600)
    remote_plotters: tuple[RemotePlotter, ...] = ()

    @field_validator("farmer_public_key", "pool_public_key")
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        if value is not None and not _HEX48.fullmatch(value):
            raise ValueError("must be a 48-byte public key in hex (96 hex digits, from `chia keys show`)")
        return value

    @field_validator("pool_contract_address")
    @classmethod
    def _contract(cls, value: str | None) -> str | None:
        if value is not None and not _CONTRACT.fullmatch(value):
            raise ValueError("must be a pool contract address (xch1... from `chia plotnft show`)")
        return value

    @field_validator("executable")
    @classmethod
    def _executable(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\0" in value or "\n" in value):
            raise ValueError(f"not a usable program path: {value!r}")
        return value

    @field_validator("command_templates")
    @classmethod
    def _templates(cls, value: dict[str, tuple[TemplateWord, ...]]) -> dict[str, tuple[TemplateWord, ...]]:
        for program, words in value.items():
            if not words or words[0] != "{executable}":
                raise ValueError(f"{program}: a template starts with \"{{executable}}\"")
            for word in words:
                for part in [word] if isinstance(word, str) else word:
                    try:
                        template_fields(part)
                    except ValueError as exc:
                        raise ValueError(f"{program}: {exc}") from None
        return value

    @field_validator("temp_directories")
    @classmethod
    def _unique_temps(cls, value: tuple[TempDirectory, ...]) -> tuple[TempDirectory, ...]:
        paths = [str(t.path) for t in value]
        repeated = sorted({p for p in paths if paths.count(p) > 1})
        if repeated:
            raise ValueError(f"listed more than once: {', '.join(repeated)}")
        return value

    @field_validator("temp2_directory", "log_directory")
    @classmethod
    def _dirs_absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else _absolute(value, "a directory")

    @field_validator("output_directories")
    @classmethod
    def _outputs_absolute(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        for path in value:
            _absolute(path, "each output directory")
        return value

    @field_validator("remote_plotters")
    @classmethod
    def _unique_remotes(cls, value: tuple[RemotePlotter, ...]) -> tuple[RemotePlotter, ...]:
        names = [r.name for r in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"names must be unique, repeated: {', '.join(repeated)}")
        if "all" in names:
            raise ValueError("'all' is reserved for --host all")
        return value

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> PlotJobSettings:
        if self.pool_public_key and self.pool_contract_address:
            raise ValueError("set pool_public_key (OG plots) or pool_contract_address (pool plots), not both")
        if not self.enabled:
            return self
        missing = []
        if not self.temp_directories:
            missing.append("temp_directories")
        if not (self.output_directories or self.replot.enabled):
            missing.append("output_directories")
        if not self.farmer_public_key:
            missing.append("farmer_public_key")
        if not (self.pool_public_key or self.pool_contract_address):
            missing.append("pool_contract_address (or pool_public_key)")
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            raise ValueError(f"enabled is true but {', '.join(missing)} {verb} not set")
        if self.program != "bladebit" and self.compression:
            raise ValueError(f"compression needs program: bladebit ({self.program} makes uncompressed plots)")
        if self.program == "bladebit" and not self.compression and "bladebit" not in self.command_templates:
            raise ValueError("bladebit_cuda's disk mode (--disk-128, which uses the temp directories) makes "
                             "compressed plots only: set compression 1-9, or a command_templates.bladebit")
        return self

    # -- derived values ----------------------------------------------------------------------
    @property
    def executable_path(self) -> str:
        return self.executable or DEFAULT_EXECUTABLES[self.program]

    def template(self, program: str | None = None) -> tuple[TemplateWord, ...]:
        chosen = program or self.program
        return self.command_templates.get(chosen) or DEFAULT_TEMPLATES[chosen]  # type: ignore[call-overload]

    @property
    def phase1_limit(self) -> int:
        return self.max_jobs if self.max_phase1_jobs is None else self.max_phase1_jobs

    @property
    def destinations(self) -> tuple[Path, ...]:
        """Where new plots go: the replot drives when replotting, else the output directories."""
        return self.replot.directories if self.replot.enabled else self.output_directories

    def temp_bytes_per_job(self) -> int:
        """Temp space one job needs; measured peaks at k32, scaled by 2**(k-32) for other k."""
        if self.temp_space_gib is not None:
            return int(self.temp_space_gib * 2**30)
        k32_gib = {"chia": 239, "madmax": 256, "bladebit": 130}[self.program]
        return int(k32_gib * 2**30 * 2.0 ** (self.k - 32))
