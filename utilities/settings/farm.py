"""The ``farm:`` config section: the other harvesters of the farm and how SSH reaches them.

The plotter sends plots to these harvesters; the harvester's ``-fr``/``-uuid`` reports ask them
for their exports.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from utilities.settings.base import Section, check_plain_name, repeated


class SshSettings(Section):
    # The plotter's private key and the known_hosts file that pins every harvester's host key
    # (host keys are always checked; add them with ssh-keyscan after checking fingerprints).
    key_file: Path | None = None  # default: the SSH agent and ~/.ssh/id_* keys
    known_hosts: Path = Path("~/.ssh/known_hosts")
    connect_timeout_seconds: float = Field(default=10, gt=0)


class HarvesterTarget(Section):
    """One harvester the plotter may send plots to."""

    name: str = Field(min_length=1)
    host: str = Field(min_length=1)  # address for SSH (control)
    # Address the plot data goes to, if different (e.g. a dedicated 10GbE network).
    data_host: str | None = None
    ssh_port: int = Field(default=22, ge=1, le=65535)
    user: str = "root"
    # The harvester's receive_plot.sh (written by its drive_manager.py) and its export file.
    receive_script: str = "plot_manager/receive_plot.sh"
    export_file: str = ".local/state/plot_manager/export/harvester.json"
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name_is_plain(cls, value: str) -> str:
        return check_plain_name(value)


class FarmSettings(Section):
    """The other harvesters of the farm: where the plotter sends plots, and what -fr/-uuid ask."""

    harvesters: tuple[HarvesterTarget, ...] = ()
    ssh: SshSettings = SshSettings()

    @field_validator("harvesters")
    @classmethod
    def _unique_names(cls, value: tuple[HarvesterTarget, ...]) -> tuple[HarvesterTarget, ...]:
        duplicates = repeated(h.name for h in value)
        if duplicates:
            raise ValueError(f"harvester names must be unique, repeated: {', '.join(duplicates)}")
        return value
