"""Load and validate the one YAML config every role script shares.

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
from utilities.notify import NotificationSettings
from utilities.plots import parse_plot_size_setting
from utilities.settings.base import Section, check_plain_name, repeated
from utilities.settings.farmer import FarmerSettings
from utilities.settings.local_moves import LocalMoveSettings
from utilities.settings.plot_jobs import PlotJobSettings

CONFIG_ENV = "PLOT_MANAGER_CONFIG"
DEFAULT_CONFIG = Path("~/.config/plot_manager/plot_manager.yaml")
CONFIG_VERSION = 1
INSTALL_DIR = Path(__file__).resolve().parent.parent


_Section = Section


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    directory: Path | None = None  # default: <state_dir>/logs
    max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    backup_count: int = Field(default=5, ge=0)


class SentrySettings(_Section):
    dsn: str | None = None
    environment: str = "production"


class DriveDiscoverySettings(_Section):
    # Shell-style globs (fnmatch) on psutil's device and mountpoint of each mounted filesystem.
    device_patterns: tuple[str, ...] = (
        "/dev/sd*",
        "/dev/nvme*",
        "/dev/mapper/*",
        "/dev/dm-*",
        "/dev/md*",
        "/dev/vd*",
    )
    mountpoint_patterns: tuple[str, ...] = ("/mnt/enclosure*/*/column*/drive*",)
    # Directories given as globs, like chia's own plot_directories; one drive per filesystem.
    plot_directories: tuple[str, ...] = ()
    # Filesystem types never taken as plot drives, whatever the patterns say.
    exclude_fstypes: tuple[str, ...] = ("proc", "sysfs", "devtmpfs", "squashfs", "overlay")


class HarvesterAlertSettings(_Section):
    # Alert once when the free plot slots of all online drives drop to this many or fewer.
    free_slots_low_water: int = Field(default=50, ge=0)
    # A drive at or above this temperature (Celsius) is marked in -ct and alerted once.
    temperature_limit_c: int = Field(default=50, ge=20, le=90)
    # How often the cron run reads drive temperatures (SMART costs time on big JBODs).
    temperature_check_minutes: int = Field(default=10, ge=0)  # 0: every run


class DrivePrepSettings(_Section):
    # New drives are mounted at the next free <layout_root>/driveN.
    layout_root: Path | None = None
    fstype: Literal["xfs", "ext4"] = "xfs"
    fstab: Path = Path("/etc/fstab")
    # Devices never to be touched, whatever is asked (system disks, ...).
    protected_devices: tuple[str, ...] = ()
    # chia's config.yaml: the new mountpoint is added to harvester.plot_directories when set.
    chia_config: Path | None = None


class HarvesterSettings(_Section):
    drive_discovery: DriveDiscoverySettings = DriveDiscoverySettings()
    # fill_in_order: fill drives one by one in natural mountpoint order; most_free: spread out.
    receive_drive_policy: Literal["fill_in_order", "most_free"] = "fill_in_order"
    # Plot slots kept free on each drive (room for filesystem growth); 0 fills drives completely.
    reserve_slots: int = Field(default=0, ge=0)
    # Where drive_manager.py writes the script the plotter starts over SSH.
    receive_script: Path = INSTALL_DIR / "receive_plot.sh"
    # Where the harvester export (JSON snapshot for plotters and farm reports) is written.
    export_file: Path | None = None  # default: <state_dir>/export/harvester.json
    # chia's debug.log, read for the number of plots chia itself is farming.
    chia_log: Path = Path("~/.chia/mainnet/log/debug.log")
    smartctl: str = "smartctl"
    # A receiver gives up (and removes its partial file) when no byte arrives for this long.
    receive_idle_timeout_seconds: float = Field(default=120, gt=0, le=86400)
    # Replace old OG plots one by one with incoming pool plots (the plot count never drops by
    # more than one); with fill_empty_drives_first, free space is filled first until the free
    # slots of all drives fall to empty_drives_low_water_mark.
    replace_non_pool_plots: bool = False
    fill_empty_drives_first: bool = True
    empty_drives_low_water_mark: int = Field(default=0, ge=0)
    # Disk to ask for SMART data per drive (name or mountpoint -> device), where the mounted
    # device hides the disk (LUKS on multipath, some RAID or USB set-ups).
    smart_devices: dict[str, str] = {}
    alerts: HarvesterAlertSettings = HarvesterAlertSettings()
    # node_exporter textfile collector directory for Prometheus metrics (off when unset).
    metrics_dir: Path | None = None
    drive_prep: DrivePrepSettings = DrivePrepSettings()
    # move_local_plots.py: plots made on this harvester, moved onto its own plot drives.
    local_moves: LocalMoveSettings = LocalMoveSettings()


class SshSettings(_Section):
    # The plotter's private key and the known_hosts file that pins every harvester's host key
    # (host keys are always checked; add them with ssh-keyscan after checking fingerprints).
    key_file: Path | None = None  # default: the SSH agent and ~/.ssh/id_* keys
    known_hosts: Path = Path("~/.ssh/known_hosts")
    connect_timeout_seconds: float = Field(default=10, gt=0)


class HarvesterTarget(_Section):
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


class TransferSettings(_Section):
    # TCP ports the receivers listen on: port_base .. port_base + port_count - 1.
    port_base: int = Field(default=4040, ge=1024, le=65000)
    port_count: int = Field(default=100, ge=1, le=1000)
    # Plots sent at once (to different harvesters, or drives); 1 is the original's behaviour.
    max_concurrent_transfers: int = Field(default=1, ge=1, le=32)
    # Abort a transfer when no byte moved for this long (a dropped link never hangs a run).
    idle_timeout_seconds: float = Field(default=60, gt=0)
    # Tell the farmer after this many failed attempts at the same plot.
    failures_before_alert: int = Field(default=3, ge=1)
    # How the plot bytes leave the plotter: "nc" pipes them into netcat; "python" writes the
    # same raw TCP stream from plot_manager.py itself, which skips a pipe hop (bench/: faster
    # on a busy plotter). The receiver takes either.
    stream_with: Literal["nc", "python"] = "python"
    # Prefix "portable." to the name of pool plots on the harvester (as the original did).
    portable_prefix: bool = False
    # A harvester export older than this is not trusted (its drive_manager.py cron is not running).
    max_export_age_minutes: float = Field(default=10, gt=0)


class FarmSettings(_Section):
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


class PlotterSettings(_Section):
    # Where finished plots appear (globs, like chia's plot directories).
    plot_directories: tuple[str, ...] = ()
    # fill: the harvester with the most free slots; replace: the most replaceable old OG plots.
    priority: Literal["fill", "replace"] = "fill"
    transfer: TransferSettings = TransferSettings()
    # node_exporter textfile collector directory for Prometheus metrics (off when unset).
    metrics_dir: Path | None = None
    # Plot jobs this plotter starts, watches and stops (plot_manager.py --jobs ...).
    jobs: PlotJobSettings = PlotJobSettings()


class Settings(_Section):
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
