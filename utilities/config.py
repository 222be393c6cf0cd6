"""Load and validate the one YAML config every role script shares, into its root ``Settings``.

``Settings`` is the whole file: its top-level keys, one section class each from
``utilities/settings/`` (one file per section), and the derived paths every role uses.

The YAML file belongs to the farmer: we only ever read it (the original rewrote it on every state
change, losing comments and racing overlapping cron runs). Everything the program learns lives in
the state database instead (``utilities/state.py``).

Loading is split in two so the rules can be tested without files: ``read_config_text`` does the
I/O and YAML parsing, ``validate_config`` is pure and turns a mapping into frozen typed settings,
or raises ``ConfigError`` listing one line per problem, each naming the key.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from utilities.errors import ConfigError
from utilities.plots import parse_plot_size_setting
from utilities.settings.base import Section, check_plain_name
from utilities.settings.dashboard import DashboardSettings
from utilities.settings.farm import FarmSettings
from utilities.settings.farmer import FarmerSettings
from utilities.settings.harvester import HarvesterSettings
from utilities.settings.log import LogSettings
from utilities.settings.notifications import NotificationSettings
from utilities.settings.plotter import PlotterSettings
from utilities.settings.sentry import SentrySettings

CONFIG_ENV = "PLOT_MANAGER_CONFIG"
DEFAULT_CONFIG = Path("~/.config/plot_manager/plot_manager.yaml")
CONFIG_VERSION = 1


class Settings(Section):
    """The whole validated config. Paths are expanded (``~``) and made absolute."""

    config_version: Literal[1] = CONFIG_VERSION
    hostname: str = Field(default_factory=socket.gethostname, min_length=1)
    state_dir: Path = Path("~/.local/state/plot_manager")
    # Size of one plot for capacity maths: "k32", "k32-c5", "k33" or a number of bytes.
    plot_size: str | int = "k32"
    log: LogSettings = LogSettings()
    sentry: SentrySettings = SentrySettings()
    notifications: NotificationSettings = NotificationSettings()
    harvester: HarvesterSettings = HarvesterSettings()
    plotter: PlotterSettings = PlotterSettings()
    farm: FarmSettings = FarmSettings()
    farmer: FarmerSettings = FarmerSettings()
    dashboard: DashboardSettings = DashboardSettings()

    @field_validator("plot_size")
    @classmethod
    def _plot_size_is_known(cls, value: str | int) -> str | int:
        parse_plot_size_setting(value)  # raises ValueError with the reason
        return value

    @field_validator("hostname")
    @classmethod
    def _hostname_is_plain(cls, value: str) -> str:
        return check_plain_name(value)

    # Derived values, so callers never repeat the defaulting rules.
    @property
    def plot_size_bytes(self) -> int:
        return parse_plot_size_setting(self.plot_size)

    @property
    def state_path(self) -> Path:
        return expand_path(self.state_dir)

    @property
    def log_dir(self) -> Path:
        return expand_path(self.log.directory) if self.log.directory else self.state_path / "logs"

    @property
    def export_path(self) -> Path:
        configured = self.harvester.export_file
        return expand_path(configured) if configured else self.state_path / "export" / "harvester.json"

    @property
    def database_path(self) -> Path:
        return self.state_path / "state.sqlite3"

    @property
    def chia_log_path(self) -> Path:
        return expand_path(self.harvester.chia_log)

    def smart_device(self, name: str, mountpoint: str, device: str) -> str:
        """The disk SMART should read for a drive: a configured override, else its device."""
        overrides = self.harvester.smart_devices
        return overrides.get(name) or overrides.get(mountpoint) or device

    @property
    def receive_script_path(self) -> Path:
        return expand_path(self.harvester.receive_script)


def expand_path(path: Path) -> Path:
    return Path(os.path.expanduser(str(path))).absolute()


def resolve_config_path(cli_path: str | None, environ: dict[str, str] | None = None) -> Path:
    """``--config`` wins, then ``$PLOT_MANAGER_CONFIG``, then the default location."""
    env = os.environ if environ is None else environ
    chosen = cli_path or env.get(CONFIG_ENV) or str(DEFAULT_CONFIG)
    return expand_path(Path(chosen))


def read_config_text(path: Path) -> dict[str, Any]:
    """Read and parse the YAML file; every failure names the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found: copy config/plot_manager.skel.yaml there "
            f"(install.sh does), or pass --config PATH / set {CONFIG_ENV}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" line {mark.line + 1} column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of keys")
    return data


def describe_validation_errors(exc: ValidationError) -> list[str]:
    """One human line per problem: ``key.path: what is wrong``."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"] if not str(part).startswith("function-"))
        kind = err["type"]
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "required value is missing"
        elif kind == "literal_error":
            message = f"{err['msg'].lower()}, got {err.get('input')!r}"
        elif kind == "value_error":
            message = str(err["msg"]).removeprefix("Value error, ")
        elif kind.endswith("_type") or kind.endswith("_parsing"):
            message = f"{err['msg'].lower()}, got {err.get('input')!r}"
        else:
            message = err["msg"]
        lines.append(f"{key or '(top level)'}: {message}")
    return lines


def validate_config(data: dict[str, Any], source: str = "config") -> Settings:
    """Pure: turn parsed YAML into ``Settings`` or raise one ConfigError listing every problem."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = describe_validation_errors(exc)
        raise ConfigError("\n".join(f"config error in {source}: {line}" for line in problems)) from None


def config_permission_warning(path: Path) -> str | None:
    """The config may hold SMTP/Twilio/Pushbullet secrets: it should be readable by its owner only."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"config file {path} is readable by others (mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
    return None


def load_settings(cli_path: str | None = None) -> tuple[Settings, Path]:
    """Find, read and validate the config; returns the settings and the file they came from."""
    path = resolve_config_path(cli_path)
    return validate_config(read_config_text(path), str(path)), path


def effective_settings_yaml(settings: Settings) -> str:
    """The settings after defaults, as YAML, with secrets masked (for ``--check-config``)."""
    data = settings.model_dump(mode="json")
    data["plot_size_bytes"] = settings.plot_size_bytes
    data["state_dir"] = str(settings.state_path)
    return yaml.safe_dump(_mask_secrets(data), sort_keys=False)


_SECRET_KEYS = {"password", "auth_token", "api_key", "dsn", "urls", "account_sid"}


def _mask_secrets(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask_secrets(v, k) for k, v in value.items()}
    if key in _SECRET_KEYS and value:
        return "********"
    if isinstance(value, list):
        return [_mask_secrets(v) for v in value]
    return value
