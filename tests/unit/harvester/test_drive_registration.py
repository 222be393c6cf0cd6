"""The new drive's records: next free mountpoint, the fstab line, chia's plot_directories edit.

Plain files in a temp directory; the whole ``prepare_drive`` on loop devices is
tests/integration/harvester/test_drive_prep.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.support.drive_prep_samples import CHIA_CONFIG, FSTAB_BEFORE, drive_prep_files
from utilities.errors import DriveError
from utilities.harvester.drive_registration import (
    add_fstab_entry,
    add_plot_directory,
    next_free_mountpoint,
    plan_plot_directory_edit,
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Path]:
    return drive_prep_files(tmp_path)


def test_next_free_mountpoint(env: dict[str, Path]) -> None:
    assert next_free_mountpoint(env["layout"]) == env["layout"] / "drive4"
    env["fstab"].write_text(FSTAB_BEFORE + f"UUID=x {env['layout']}/drive9 xfs defaults,nofail 0 0\n")
    assert next_free_mountpoint(env["layout"], env["fstab"]) == env["layout"] / "drive10"
    assert next_free_mountpoint(env["layout"] / "missing") == env["layout"] / "missing" / "drive1"


def test_plot_directory_edit_variants() -> None:
    # chia's initial config has an empty flow list: becomes a one-item block list.
    text = "harvester:\n  plot_directories: []\n  port: 8448\nfarmer: {}\n"
    new = plan_plot_directory_edit(text, "/mnt/drive1")
    assert new == "harvester:\n  plot_directories:\n  - /mnt/drive1\n  port: 8448\nfarmer: {}\n"
    # null value, indented-list style, last key of the section, CRLF line endings.
    assert plan_plot_directory_edit("harvester:\n  plot_directories:\nx: 1\n", "/a") == (
        "harvester:\n  plot_directories:\n  - /a\nx: 1\n"
    )
    assert plan_plot_directory_edit("harvester:\n  plot_directories:\n    - /a\n", "/b b") == (
        "harvester:\n  plot_directories:\n    - /a\n    - /b b\n"
    )
    assert plan_plot_directory_edit("harvester:\r\n  plot_directories:\r\n  - /a\r\n", "/b") == (
        "harvester:\r\n  plot_directories:\r\n  - /a\r\n  - /b\r\n"
    )
    assert plan_plot_directory_edit(CHIA_CONFIG, "/mnt/enclosure0/front/column0/drive1") is None
    for bad in ("harvester:\n  port: 1\n", "harvester: {plot_directories: []}\n", "farmer:\n  x: 1\n"):
        with pytest.raises(DriveError, match="by hand"):
            plan_plot_directory_edit(bad, "/a")




def test_fstab_entry_is_appended_once_keeping_the_file_mode(env: dict[str, Path]) -> None:
    mountpoint = env["layout"] / "drive 4"
    assert add_fstab_entry(env["fstab"], "abcd-1234", mountpoint, "xfs") is True
    line = f"UUID=abcd-1234 {env['layout']}/drive\\0404 xfs defaults,nofail 0 0\n"
    assert env["fstab"].read_text() == FSTAB_BEFORE + line
    assert oct(env["fstab"].stat().st_mode & 0o777) == oct(0o640)
    # The same UUID or the same mountpoint again: already done, nothing written.
    assert add_fstab_entry(env["fstab"], "abcd-1234", env["layout"] / "drive5", "xfs") is False
    assert add_fstab_entry(env["fstab"], "ffff-0000", mountpoint, "ext4") is False
    assert env["fstab"].read_text() == FSTAB_BEFORE + line
    assert not list(env["fstab"].parent.glob(".fstab.*"))  # no temporary file left


def test_edits_write_through_a_symlinked_file(env: dict[str, Path], tmp_path: Path) -> None:
    # /etc/fstab or chia's config may be a symlink: the file it names is edited, the link stays.
    link = tmp_path / "config-link.yaml"
    link.symlink_to(env["config"])
    assert add_plot_directory(link, "/mnt/new") is True
    assert link.is_symlink() and os.readlink(link) == str(env["config"])
    assert yaml.safe_load(env["config"].read_text())["harvester"]["plot_directories"][-1] == "/mnt/new"
    assert add_plot_directory(link, "/mnt/new") is False
