from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from utilities.config import (
    Settings,
    config_permission_warning,
    effective_settings_yaml,
    read_config_text,
    resolve_config_path,
    validate_config,
)
from utilities.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SKELETON = REPO / "config" / "plot_manager.skel.yaml"


def _error_lines(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_config(data, "test.yaml")
    assert info.value.exit_code == 2
    return str(info.value).splitlines()


def test_empty_config_gives_defaults() -> None:
    settings = validate_config({})
    assert settings.plot_size == "k32"
    assert settings.harvester.alerts.temperature_limit_c == 50
    assert settings.plot_size_bytes > 100 * 10**9


def test_unknown_key_is_named_with_its_path() -> None:
    lines = _error_lines({"harvester": {"drive_discovery": {"mountpoint_pattern": ["/mnt/x"]}}})
    assert lines == ["config error in test.yaml: harvester.drive_discovery.mountpoint_pattern: unknown key"]


def test_each_problem_gets_its_own_line() -> None:
    lines = _error_lines({"plot_size": "k99x", "log": {"level": "LOUD"}, "bogus": 1})
    assert len(lines) == 3
    assert any(line.endswith("bogus: unknown key") for line in lines)
    assert any("log.level" in line and "LOUD" in line for line in lines)
    assert any("plot_size" in line for line in lines)


def test_wrong_type_names_key_and_value() -> None:
    (line,) = _error_lines({"harvester": {"alerts": {"temperature_limit_c": "hot"}}})
    assert "harvester.alerts.temperature_limit_c" in line and "'hot'" in line


def test_hostname_with_shell_characters_rejected() -> None:
    (line,) = _error_lines({"hostname": "nas;rm -rf /"})
    assert line.startswith("config error in test.yaml: hostname:")


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("harvester:\n  reserve_slots: 1\n bad: [\n")
    with pytest.raises(ConfigError) as info:
        read_config_text(path)
    assert str(path) in str(info.value) and "line" in str(info.value)


def test_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        read_config_text(tmp_path / "nope.yaml")


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_config_text(path)


def test_config_path_precedence(tmp_path: Path) -> None:
    env = {"PLOT_MANAGER_CONFIG": str(tmp_path / "env.yaml")}
    assert resolve_config_path(str(tmp_path / "cli.yaml"), env) == tmp_path / "cli.yaml"
    assert resolve_config_path(None, env) == tmp_path / "env.yaml"
    assert resolve_config_path(None, {}).name == "plot_manager.yaml"


def test_skeleton_is_valid_and_documents_every_key() -> None:
    data = yaml.safe_load(SKELETON.read_text())
    validate_config(data, str(SKELETON))
    text = SKELETON.read_text()

    def walk(model: type, prefix: str = "") -> list[str]:
        keys = []
        for name, field in model.model_fields.items():
            keys.append(name)
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                keys += walk(annotation, prefix + name + ".")
        return keys

    undocumented = [key for key in walk(Settings) if f"{key}:" not in text]
    assert undocumented == []


def test_permission_warning(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("{}")
    path.chmod(0o644)
    assert "chmod 600" in (config_permission_warning(path) or "")
    path.chmod(0o600)
    assert config_permission_warning(path) is None


def test_effective_settings_mask_secrets() -> None:
    settings = validate_config(
        {"notifications": {"email": {"enabled": True, "username": "me", "password": "hunter2", "to": ["a@b.c"]}}}
    )
    text = effective_settings_yaml(settings)
    assert "hunter2" not in text and "********" in text
    assert "plot_size_bytes" in text


def test_receive_set_limits_have_defaults_and_bounds() -> None:
    harvester = validate_config({}).harvester
    assert (harvester.concurrent_receive_drives, harvester.receives_per_drive) == (4, 1)
    for key, bad, bound in (("concurrent_receive_drives", 0, "1"), ("concurrent_receive_drives", 65, "64"),
                            ("receives_per_drive", 0, "1"), ("receives_per_drive", 9, "8")):
        (line,) = _error_lines({"harvester": {key: bad}})
        assert f"harvester.{key}:" in line and line.endswith(bound)
