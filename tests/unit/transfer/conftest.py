"""Fixtures the transfer unit tests share: a plot drive, and a plotter directory beside one."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def drive(tmp_path: Path) -> Path:
    path = tmp_path / "drive"
    path.mkdir()
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    source, dest = tmp_path / "out", tmp_path / "drive"
    source.mkdir()
    dest.mkdir()
    return source, dest
