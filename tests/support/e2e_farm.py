"""A whole farm for end-to-end tests: harvesters in namespaces with loop drives, and plotters.

Each harvester gets its own loop-mounted drives, config, state directory and a real
``drive_manager.py`` cron pass run inside its namespace; the plotter (root namespace) gets a
config listing every harvester with the farm's SSH key and known_hosts, so host keys are checked.
More plotters (``add_plotter``) share the root namespace, as two plotting machines share a LAN.

``throttle`` slows a harvester's link for plot data only (SSH goes past the queue), so a test can
act while several plots stream without every control line waiting behind them; ``ReceiveWatch``
samples a harvester's receives (drive claims and part files) the whole time a test runs, so a
moment when two receives shared a drive is seen even if it lasted a few milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.harvester_env import harvester_config
from tests.support.hashing import sha256
from tests.support.loopdrives import LoopDrives
from tests.support.netns_farm import NetnsFarm

#: SSH connect timeout for harvesters that are up: a busy machine may take seconds to answer.
SSH_CONNECT_TIMEOUT = 30
#: The transfer's idle limit: long enough for a busy machine, short enough for the tests that
#: cut a link mid-stream (they wait it out).
TRANSFER_IDLE_TIMEOUT = 20

#: Data ports ``throttle`` slows, each block of THROTTLE_BLOCK ports on its own (a power of two,
#: the range aligned to it); ``THROTTLED_TRANSFER`` gives a plotter exactly this range, so its
#: concurrent sessions (each on the first port of its own slice) land in different blocks.
THROTTLED_PORTS = range(4096, 4096 + 64)
THROTTLE_BLOCK = 16
THROTTLED_TRANSFER = {"port_base": THROTTLED_PORTS.start, "port_count": len(THROTTLED_PORTS)}

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@dataclass
class FarmHarvester:
    name: str
    root: Path
    drives: LoopDrives

    @property
    def config_path(self) -> Path:
        return self.root / "plot_manager.yaml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def export_file(self) -> Path:
        return self.state_dir / "export" / "harvester.json"

    @property
    def claims_dir(self) -> Path:
        """Where receivers hold their drive claims (utilities.transfer.claims.CLAIMS_DIRNAME)."""
        return self.state_dir / "receiving"

    def plots(self) -> list[Path]:
        """Every finished plot on this harvester's drives."""
        return sorted(p for d in self.drives.drives for p in d.mountpoint.iterdir() if p.name.endswith(".plot"))

    def leftovers(self) -> list[Path]:
        """Anything a transfer may leave behind: hidden part files and the like."""
        return sorted(p for d in self.drives.drives for p in d.mountpoint.iterdir() if p.name.startswith(".") and p.name.endswith(".part"))

    def parts_per_drive(self) -> dict[Path, list[str]]:
        """Part files on each drive now (a drive unmounted or raced away lists nothing)."""
        found: dict[Path, list[str]] = {}
        for drive in self.drives.drives:
            with contextlib.suppress(OSError):
                found[drive.mountpoint] = sorted(
                    e.name for e in os.scandir(drive.mountpoint) if e.name.startswith(".") and e.name.endswith(".part")
                )
        return found

    def receives(self) -> list[Any]:
        """The receives in flight now, read from the claims as reports read them (no lock taken)."""
        from utilities.transfer.claims import receives_in_flight

        return receives_in_flight(self.claims_dir)

    def drive_dirs(self) -> dict[str, Path]:
        """Drive name (as claims and the export name it) -> mountpoint, from the last export."""
        export = json.loads(self.export_file.read_text())
        return {d["name"]: Path(d["mountpoint"]) for d in export["drives"]}

    def configure(self, **harvester_keys: Any) -> None:
        """Change keys of the config's harvester section (the next drive_manager.py pass reads them)."""
        config = yaml.safe_load(self.config_path.read_text())
        config["harvester"].update(harvester_keys)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


@dataclass
class Plotter:
    root: Path
    harvesters: list[dict[str, Any]]
    farm: NetnsFarm
    transfer: dict[str, Any] = field(default_factory=dict)
    notifications: dict[str, Any] = field(default_factory=dict)
    hostname: str = "chiaplot01"

    @property
    def plot_dir(self) -> Path:
        return self.root / "plots"

    @property
    def config_path(self) -> Path:
        return self.root / "plot_manager.yaml"

    @property
    def log_file(self) -> Path:
        return self.root / "state" / "logs" / "plot_manager.log"

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def waiting_plots(self) -> list[Path]:
        """Finished plots still in the plotter's directory (not sent, or not deleted yet)."""
        return sorted(p for p in self.plot_dir.iterdir() if p.name.endswith(".plot"))

    def history(self) -> dict[str, Any]:
        """``plot_manager.py --history --json``: what the state database recorded of the transfers."""
        proc = self.run("--history", "--json")
        if proc.returncode != 0:
            raise AssertionError(f"plot_manager.py --history exited {proc.returncode}: {proc.stderr}")
        return json.loads(proc.stdout)

    def write_config(self, **plotter_extra: Any) -> None:
        self.plot_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "hostname": self.hostname,
            "state_dir": str(self.root / "state"),
            "notifications": self.notifications,
            "farm": {
                "harvesters": self.harvesters,
                "ssh": {"key_file": str(self.farm.client_key), "known_hosts": str(self.farm.known_hosts),
                        "connect_timeout_seconds": SSH_CONNECT_TIMEOUT},
            },
            "plotter": {
                "plot_directories": [str(self.plot_dir)],
                "transfer": {"idle_timeout_seconds": TRANSFER_IDLE_TIMEOUT, "port_count": 20, **self.transfer},
                **plotter_extra,
            },
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.config_path.chmod(0o600)

    def command(self, *args: str) -> list[str]:
        return [PYTHON, str(REPO / "plot_manager.py"), "--config", str(self.config_path), *args]

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


file_hash = sha256  # content identity, independent of the product's xxh3


class E2EFarm:
    """NetnsFarm + drives per harvester + a plotter. Use as a context manager."""

    def __init__(
        self,
        root: Path,
        drives_per_harvester: dict[str, int],
        plot_size: int,
        drive_mb: int = 64,
        harvester_settings: Mapping[str, Any] | None = None,
    ) -> None:
        """``harvester_settings``: extra keys of every harvester's config section (e.g. the
        receive set's ``concurrent_receive_drives``), in place before the first pass runs."""
        self.root = root
        self.layout = drives_per_harvester
        self.plot_size = plot_size
        self.drive_mb = drive_mb
        self.harvester_settings = dict(harvester_settings or {})
        self._stack = ExitStack()
        self.harvesters: dict[str, FarmHarvester] = {}

    def __enter__(self) -> E2EFarm:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.net = self._stack.enter_context(NetnsFarm(self.root, list(self.layout)))
            for name, count in self.layout.items():
                hroot = self.root / name
                hroot.mkdir()
                mountpoints = [f"enclosure0/front/column0/drive{i}" for i in range(count)]
                drives = self._stack.enter_context(LoopDrives(hroot / "mnt", mountpoints, size_mb=self.drive_mb))
                harvester = FarmHarvester(name, hroot, drives)
                config = harvester_config(
                    hroot, [str(hroot / "mnt" / "enclosure*/*/column*/drive*")], self.plot_size, **self.harvester_settings
                )
                config["hostname"] = name
                harvester.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
                harvester.config_path.chmod(0o600)
                self.harvesters[name] = harvester
                self.harvester_pass(name)
            self.plotter = self.add_plotter("plotter")
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def add_plotter(self, name: str, hostname: str = "chiaplot01", **transfer: Any) -> Plotter:
        """Another plotting machine (its own directory, config and state) that knows every
        harvester; ``transfer`` keys go to its ``plotter.transfer`` section."""
        plotter = Plotter(
            self.root / name,
            [
                {"name": hname, "host": self.net.host(hname).address, "user": "root",
                 "receive_script": str(h.root / "receive_plot.sh"), "export_file": str(h.export_file)}
                for hname, h in self.harvesters.items()
            ],
            self.net,
            transfer=dict(transfer),
            hostname=hostname,
        )
        plotter.write_config()
        return plotter

    # -- the link to a harvester ------------------------------------------------------------

    def throttle(self, name: str, rate: str) -> None:
        """Limit each plot stream to ``name`` to ``rate`` (tc syntax, e.g. "500kbit"), as if
        every drive wrote that slowly; SSH and anything else are not limited.

        htb on the bridge side of the harvester's veth, one class per block of
        ``THROTTLE_BLOCK`` data ports in ``THROTTLED_PORTS``: a plotter configured with that
        range (``THROTTLED_TRANSFER``) gives each concurrent session its own block, so each
        stream crawls at its own rate. One shared class would not do: local senders share a
        qdisc very unfairly (the kernel holds a socket back instead of dropping), so one stream
        took all the rate while the others' first bytes waited. Control lines and a second
        plotter's login never queue behind plot data either. Called again, it changes the rate
        of the running streams.
        """
        veth = self.net.host(name).veth_host_side
        blocks = range(len(THROTTLED_PORTS) // THROTTLE_BLOCK)
        shown = subprocess.run(["tc", "qdisc", "show", "dev", veth], capture_output=True, text=True, check=True).stdout
        commands: list[list[str]] = []
        verb = "change" if "htb 1:" in shown else "add"
        if verb == "add":
            commands += [
                ["qdisc", "replace", "dev", veth, "root", "handle", "1:", "htb", "default", "1"],
                ["class", "add", "dev", veth, "parent", "1:", "classid", "1:1", "htb", "rate", "10gbit"],
            ]
        for block in blocks:
            classid = f"1:{0x10 + block:x}"
            commands.append(["class", verb, "dev", veth, "parent", "1:", "classid", classid, "htb", "rate", rate, "ceil", rate])
            if verb == "add":
                first = THROTTLED_PORTS.start + block * THROTTLE_BLOCK
                commands.append(["filter", "add", "dev", veth, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                                 "match", "ip", "dport", str(first), f"{0xFFFF & ~(THROTTLE_BLOCK - 1):#x}", "flowid", classid])
        for command in commands:
            subprocess.run(["tc", *command], check=True, capture_output=True)

    def unthrottle(self, name: str) -> None:
        subprocess.run(["tc", "qdisc", "del", "dev", self.net.host(name).veth_host_side, "root"], check=False,
                       capture_output=True)

    @contextlib.contextmanager
    def throttled(self, name: str, rate: str) -> Iterator[None]:
        """``throttle`` for the block; the link is whole again after it, whatever happened."""
        self.throttle(name, rate)
        try:
            yield
        finally:
            self.unthrottle(name)

    def harvester_pass(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """drive_manager.py inside the harvester's namespace, as its cron would run it."""
        harvester = self.harvesters[name]
        proc = self.net.exec_in(name, [PYTHON, str(REPO / "drive_manager.py"), "--config", str(harvester.config_path), *args])
        if proc.returncode != 0:
            raise AssertionError(f"drive_manager.py on {name} exited {proc.returncode}: {proc.stderr}")
        return proc

    def export(self, name: str) -> dict[str, Any]:
        return json.loads(self.harvesters[name].export_file.read_text())

    def receivers(self, name: str) -> list[int]:
        """Pids of receive_plot.py processes running on a harvester."""
        from tests.support.netns_farm import pids_in_netns

        pids = []
        for pid in pids_in_netns(self.net.host(name).namespace):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(part.endswith(b"receive_plot.py") for part in cmdline):
                pids.append(pid)
        return pids


def part_has_data(path: Path) -> bool:
    """Whether a part file's first bytes have arrived: the receiver reserves the whole plot with
    fallocate first (reads as zeros), so non-zero bytes at its start are the stream's."""
    try:
        with open(path, "rb") as handle:
            return any(handle.read(512))
    except OSError:
        return False


def drives_receiving(receives: list[Any], dirs: Mapping[str, Path]) -> set[str]:
    """Drives receiving a plot now: a live claim names the plot, and the plot's bytes are
    arriving in its part file on that drive (a claim alone may still be waiting for the
    plotter to connect; a part file alone may be a dead receiver's)."""
    from utilities.transfer.part_files import part_name

    return {
        r.drive for r in receives
        if r.plot and r.drive in dirs and part_has_data(dirs[r.drive] / part_name(r.plot))
    }


class ReceiveWatch:
    """Samples a harvester's receives in a thread, from before a run starts until after it ends.

    Each sample reads the drive claims (``receives_in_flight``, as reports do, taking no lock)
    and lists the part files of every drive. What the tests assert on is kept: the most drives
    seen receiving a plot at once, and every sample in which a drive held more claims than
    ``per_drive`` or more part files than ``per_drive``. Use as a context manager; an error in
    the sampler is raised at exit, so a broken watch never passes silently.
    """

    def __init__(self, harvester: FarmHarvester, per_drive: int = 1, interval: float = 0.02) -> None:
        self.harvester = harvester
        self.per_drive = per_drive
        self.interval = interval
        self.samples = 0
        self.most_receiving = 0
        self.crowded_claims: list[str] = []
        self.crowded_parts: list[str] = []
        self.plots_seen: set[str] = set()
        self._dirs = harvester.drive_dirs()  # names and mountpoints never change during a test
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def receiving(self) -> set[str]:
        """Drives receiving a plot now (read afresh, not from the last sample)."""
        return drives_receiving(self.harvester.receives(), self._dirs)

    def _sample(self) -> None:
        from utilities.transfer.claims import claims_per_drive

        receives = self.harvester.receives()
        parts = self.harvester.parts_per_drive()
        self.samples += 1
        self.plots_seen.update(r.plot for r in receives if r.plot)
        for drive, count in claims_per_drive(receives).items():
            if count > self.per_drive:
                self.crowded_claims.append(f"{drive}: {[r.to_dict() for r in receives if r.drive == drive]}")
        for mountpoint, names in parts.items():
            if len(names) > self.per_drive:
                self.crowded_parts.append(f"{mountpoint}: {names}")
        self.most_receiving = max(self.most_receiving, len(drives_receiving(receives, self._dirs)))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._sample()
                self._stop.wait(self.interval)
        except BaseException as exc:  # noqa: BLE001 - raised in the test's thread at exit
            self._error = exc

    def __enter__(self) -> ReceiveWatch:
        self._thread = threading.Thread(target=self._run, name="receive-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None and exc[0] is None:
            raise AssertionError(f"the receive watch failed: {self._error!r}") from self._error


def env_without_tty() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TERM"}
