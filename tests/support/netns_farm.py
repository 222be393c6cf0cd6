"""A whole Chia farm on one machine: harvesters are network namespaces running real ``sshd``.

The plotter is the root network namespace.  Every harvester is a namespace ``pmh-<suffix>-<n>``
with one veth whose other end sits in a farm bridge ``pmbr<suffix>`` (10.213.77.1/24), so the
plotter reaches every harvester and harvesters reach each other, exactly like machines on
one LAN.  Each harvester runs its own ``/usr/sbin/sshd`` on 10.213.77.(10+n):22 with a
per-farm host key; a per-farm client key, ``authorized_keys`` and ``known_hosts`` let SSH
host-key checking stay on in tests (paramiko ``RejectPolicy``, OpenSSH
``StrictHostKeyChecking yes``).

Traffic never leaves 10.213.77.0/24: the namespaces have no default route and only the
bridge's connected route exists in the root namespace.

Facts measured on this machine (Debian 12, kernel 6.18, iproute2 6.1.0, OpenSSH 9.2p1,
paramiko 5.1.0) that the code relies on:

* ``ip netns exec NS cmd`` unshares the mount namespace and marks every mount in the copy
  ``slave`` (recursively) before exec'ing ``cmd`` in the same process (so ``Popen.pid`` *is*
  sshd's pid).  A private directory (``/`` is private here) therefore never shows mounts
  made after the sshd started: seen, a tmpfs mounted under a plain directory was missing
  from ``/proc/<sshd>/mountinfo``.  Binding the farm root on itself and making it shared
  (``mount --bind R R; mount --make-shared R``) turns the namespace's copy into
  ``master:N`` of our peer group, and later mounts *and unmounts* under ``R`` propagate
  into every harvester.  ``/`` itself is never touched.
* That bind is not recursive on purpose: mounts already under ``R`` would be copied into the
  bind (and the originals hidden), which confuses whoever owns them.  So ``NetnsFarm``
  refuses to start while anything is mounted below ``R``: enter the farm first, then mount
  drives (``LoopDrives``) inside the ``with`` block.
* ``sshd`` 9.2 needs ``/run/sshd`` (privilege separation) and, for SFTP (paramiko's and
  scp's), an explicit ``Subsystem sftp /usr/lib/openssh/sftp-server``; without it the client
  only sees "Connection closed".
* Killing the listening sshd leaves already-open session processes alive (as
  ``systemctl stop ssh`` does on Debian).  Cleanup therefore kills every process found in
  the namespace (``/proc/<pid>/ns/net`` is the namespace's inode): all of them were started
  by this farm, directly or by its sshd.
* The OpenSSH client creates ``~/.ssh`` from the *passwd* home (``/root``), ignoring
  ``$HOME``, unless ``-F`` is given; ``ssh -F farm.ssh_config`` therefore writes nothing
  outside the farm's state directory.
* br_netfilter is loaded here (``bridge-nf-call-iptables=1``) but no iptables rules exist,
  so bridged harvester-to-harvester traffic flows; the self-test checks it does.

Only one farm can own 10.213.77.1 at a time: ``NetnsFarm`` holds an exclusive ``flock`` on
``/run/lock/plot-manager-netns.lock`` from before it adds the address until after the bridge
is gone, so parallel test runs wait for each other (up to ``lock_timeout``) instead of
clashing.  An address of the /24 still present after the lock was taken is a leftover of a
killed run: that fails clearly instead of being deleted (it may not be ours).

Cleanup (``with`` exit, exception, or setup failing half way) kills our processes by pid,
deletes veths, namespaces and the bridge, unmounts the bind and removes the state directory;
the ``atexit`` backstop of ``loopdrives`` covers a process exiting without ``__exit__``
(not SIGKILL or ``os._exit``, e.g. pytest-timeout's ``thread`` method).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.loopdrives import (
    CleanupError,
    _Cleanable,
    mounts,
    register_active,
    unregister_active,
)
from tests.support.waiting import DEADLINE

log = logging.getLogger(__name__)

#: The one private network the farm may use; nothing else ever gets traffic.
NETWORK = ipaddress.ip_network("10.213.77.0/24")
#: The plotter's (root namespace) address on the farm bridge.
BRIDGE_ADDRESS = "10.213.77.1"
#: Harvester n (1-based) gets 10.213.77.(HOST_OFFSET + n).
HOST_OFFSET = 10
MAX_HARVESTERS = 254 - HOST_OFFSET - 1
SSH_PORT = 22

LOCK_PATH = Path("/run/lock/plot-manager-netns.lock")
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
SSHD_PRIVSEP_DIR = Path("/run/sshd")
#: Set in every SSH session, since the hostname is not namespaced.
HARVESTER_ENV = "FARM_HARVESTER_NAME"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_SUFFIX_RE = re.compile(r"^[a-z0-9]{1,6}$")
#: After SIGTERM: then SIGKILL.  After SIGKILL a process is only waited for (a busy machine may
#: take a while to tear it down), up to the deadline.
_TERM_GRACE = 5.0


class FarmError(RuntimeError):
    """The farm cannot be set up (lock held too long, address taken, sshd did not start...)."""


@dataclass(frozen=True)
class FarmHost:
    """One harvester as the plotter sees it."""

    name: str
    namespace: str
    address: str
    veth_host_side: str


# --- small helpers ---------------------------------------------------------------------------


def _run(cmd: Sequence[str], *, check: bool = True, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise FarmError(
            f"{' '.join(cmd)} failed with exit status {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def _link_exists(ifname: str) -> bool:
    return Path("/sys/class/net", ifname).exists()


def _netns_exists(ns: str) -> bool:
    return Path("/run/netns", ns).exists()


def _netns_inode(ns: str) -> tuple[int, int] | None:
    try:
        st = os.stat(Path("/run/netns", ns))
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in_netns(ns: str) -> list[int]:
    """Pids of all processes whose network namespace is ``ns`` (what ``ip netns pids`` does)."""
    ident = _netns_inode(ns)
    if ident is None:
        return []
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == ident:
            found.append(int(entry.name))
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as gone: it holds no sockets or mounts any more.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def port_open(address: str, port: int = SSH_PORT, timeout: float = 1.0) -> bool:
    """Whether a TCP connect to ``address:port`` succeeds within ``timeout`` seconds."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _farm_addresses_in_use() -> list[str]:
    """Interfaces of the root namespace holding any address of the farm /24."""
    out = json.loads(_run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    taken = []
    for link in out:
        for info in link.get("addr_info", []):
            if info.get("family") == "inet" and ipaddress.ip_address(info["local"]) in NETWORK:
                taken.append(f"{info['local']}/{info['prefixlen']} on {link['ifname']}")
    return taken


def _write_private(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)


def _ed25519_keypair(comment: str) -> tuple[bytes, str]:
    """Return an OpenSSH private key file's bytes and the ``ssh-ed25519 AAAA... comment`` line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode()} {comment}"


def _is_under(path: str, root: Path) -> bool:
    return path != str(root) and Path(path).is_relative_to(root)


# --- the lock --------------------------------------------------------------------------------


class _FarmLock:
    """Exclusive flock on ``LOCK_PATH``: one farm owns 10.213.77.0/24 at a time.

    The kernel drops a flock when its holder dies, so there are no stale locks; the holder
    writes its pid and farm suffix into the file so a waiter can say whom it waited for.
    """

    #: Farm held by the current thread: waiting for the lock again from that thread could
    #: only ever time out (e.g. a module-scoped farm fixture still up), so that fails at once.
    _held = threading.local()

    def __init__(self, path: Path = LOCK_PATH) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, timeout: float, who: str) -> None:
        mine = getattr(self._held, "farm", None)
        if mine is not None:
            raise FarmError(
                f"this thread already runs the netns farm {mine}, and only one farm may own {NETWORK}: "
                "leave it before starting another (a module/class-scoped farm fixture stays up until its teardown)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise FarmError(
                    f"another test farm holds {self.path} (holder: {holder}) for more than {timeout:.0f}s; "
                    f"only one farm may own {NETWORK} at a time"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} farm {who}\n".encode(), 0)
        self._fd = fd
        self._held.farm = who

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        self._held.farm = None


# --- skip marker -----------------------------------------------------------------------------


def _probe_netns() -> str | None:
    """Return why a netns farm cannot run here, or None if it can.

    Creating a namespace with a veth pair and a bridge inside it is the only reliable test
    (a container may have ``ip`` but forbid namespaces); all of it lives in the probe
    namespace, so deleting that removes everything.
    """
    if os.geteuid() != 0:
        return "needs root to create network namespaces, veths, a bridge and bind mounts"
    missing = [tool for tool in ("ip", "mount", "umount") if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (apt-get install iproute2 util-linux)"
    for path, package in ((SSHD, "openssh-server"), (SFTP_SERVER, "openssh-sftp-server")):
        if not os.access(path, os.X_OK):
            return f"{path} missing (apt-get install {package})"
    ns = f"pmh-probe{secrets.token_hex(2)}"
    try:
        proc = _run(["ip", "netns", "add", ns], check=False)
        if proc.returncode != 0:
            return f"cannot create network namespaces: {proc.stderr.strip()}"
        for cmd in (
            ["ip", "-n", ns, "link", "add", "pa", "type", "veth", "peer", "name", "pb"],
            ["ip", "-n", ns, "link", "add", "pbr", "type", "bridge"],
        ):
            proc = _run(cmd, check=False)
            if proc.returncode != 0:
                return f"{' '.join(cmd[3:])} fails: {proc.stderr.strip()}"
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot create network namespaces: {exc}"
    finally:
        if _netns_exists(ns):
            _run(["ip", "netns", "del", ns], check=False)


NETNS_UNAVAILABLE_REASON: str | None = _probe_netns()

#: Put on tests (or ``pytestmark``) that need a ``NetnsFarm``.
requires_netns = pytest.mark.skipif(
    NETNS_UNAVAILABLE_REASON is not None,
    reason=f"netns farm unavailable: {NETNS_UNAVAILABLE_REASON}",
)


# --- the farm --------------------------------------------------------------------------------


@dataclass
class _Harvester:
    """Setup progress of one harvester, so cleanup undoes exactly what happened."""

    host: FarmHost
    index: int
    sshd_config: Path
    log_path: Path
    pid_file: Path
    netns_created: bool = False
    veth_created: bool = False
    sshd: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None


class NetnsFarm(_Cleanable):
    """Context manager for a farm of SSH-reachable harvester namespaces.

    ``with NetnsFarm(tmp_path / "farm", ["chianas01", "chianas02"]) as farm:`` gives
    ``farm.harvesters`` (``FarmHost`` in the order given), ``farm.ssh(name)`` (a connected,
    host-key-checked ``paramiko.SSHClient``), ``farm.run(name, cmd)``, ``farm.exec_in(name,
    argv)`` and link/sshd switches to simulate failures.  Mount drives under ``root`` only
    inside the ``with`` block (see module docstring).
    """

    def __init__(
        self,
        root: Path,
        harvesters: Sequence[str],
        *,
        suffix: str | None = None,
        lock_timeout: float = 1800.0,  # another whole test run (a CI run in a fresh root, say) may hold the farm
        start_timeout: float = DEADLINE,
    ) -> None:
        names = list(harvesters)
        if not names:
            raise ValueError("a farm needs at least one harvester")
        if len(names) > MAX_HARVESTERS:
            raise ValueError(f"at most {MAX_HARVESTERS} harvesters fit in {NETWORK}")
        bad = [n for n in names if not _NAME_RE.match(n)]
        if bad:
            raise ValueError(f"harvester names must match {_NAME_RE.pattern}: {bad!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate harvester names in {names!r}")
        self.suffix = suffix if suffix is not None else secrets.token_hex(3)
        if not _SUFFIX_RE.match(self.suffix):
            raise ValueError(f"suffix must match {_SUFFIX_RE.pattern} (interface names max 15 chars)")
        self.root = Path(root).resolve()
        self.bridge = f"pmbr{self.suffix}"
        self.state_dir = self.root / f".netns-farm-{self.suffix}"
        self.client_key = self.state_dir / "client_ed25519"
        self.known_hosts = self.state_dir / "known_hosts"
        self.authorized_keys = self.state_dir / "authorized_keys"
        #: ``ssh -F farm.ssh_config chianas01 cmd`` works from the plotter and any harvester.
        self.ssh_config = self.state_dir / "ssh_config"
        self.lock_timeout = lock_timeout
        self.start_timeout = start_timeout
        self._names = names
        self._slots: dict[str, _Harvester] = {}
        for i, name in enumerate(names, start=1):
            host = FarmHost(
                name=name,
                namespace=f"pmh-{self.suffix}-{i}",
                address=str(NETWORK.network_address + HOST_OFFSET + i),
                veth_host_side=f"pmv{self.suffix}h{i}",
            )
            self._slots[name] = _Harvester(
                host=host,
                index=i,
                sshd_config=self.state_dir / f"sshd_config.{name}",
                log_path=self.state_dir / f"sshd.{name}.log",
                pid_file=self.state_dir / f"sshd.{name}.pid",
            )
        self._lock = _FarmLock()
        self._locked = False
        self._bind_mounted = False
        self._root_mounts_before = 0
        self._state_created = False
        self._bridge_created = False
        self._clients: list[paramiko.SSHClient] = []
        self._clients_lock = threading.Lock()
        self._closed = True
        #: Seconds the last ``__enter__`` / ``close`` took (for reports and benchmarks).
        self.up_seconds: float | None = None
        self.down_seconds: float | None = None

    def __repr__(self) -> str:
        return f"NetnsFarm(root={str(self.root)!r}, suffix={self.suffix!r}, harvesters={self._names!r})"

    # -- lookups ----------------------------------------------------------------------------

    @property
    def harvesters(self) -> list[FarmHost]:
        return [s.host for s in self._slots.values()]

    def host(self, name: str) -> FarmHost:
        return self._slot(name).host

    def _slot(self, name: str) -> _Harvester:
        try:
            return self._slots[name]
        except KeyError:
            raise KeyError(f"no harvester {name!r} in {self!r}") from None

    def sshd_pid(self, name: str) -> int | None:
        """Pid of the harvester's listening sshd, or None while it is stopped."""
        proc = self._slot(name).sshd
        return proc.pid if proc is not None and proc.poll() is None else None

    def sshd_log(self, name: str) -> str:
        """What the harvester's sshd logged so far (``-e``: to stderr, captured here)."""
        try:
            return self._slot(name).log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- setup ------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if NETNS_UNAVAILABLE_REASON is not None:
            raise FarmError(f"netns farm unavailable: {NETNS_UNAVAILABLE_REASON}")
        started = time.monotonic()
        self._activate()
        self.up_seconds = time.monotonic() - started
        log.info("%r up in %.2fs", self, self.up_seconds)
        return self

    def _setup(self) -> None:
        if not self.root.is_dir():
            raise FarmError(f"farm root {self.root} is not a directory")
        below = [mp for _, mp, _ in mounts() if _is_under(mp, self.root)]
        if below:
            raise FarmError(f"already mounted under {self.root}: {below}; enter NetnsFarm before mounting drives there")
        self.state_dir.mkdir(mode=0o700)
        self._state_created = True
        self._write_keys_and_configs()

        self._lock.acquire(self.lock_timeout, f"{self.suffix} root {self.root}")
        self._locked = True
        taken = _farm_addresses_in_use()
        if taken:
            raise FarmError(
                f"{NETWORK} is already in use in the root namespace ({', '.join(taken)}) although we hold "
                f"{LOCK_PATH}: a leftover of a killed test run? Remove it by hand (ip link del <bridge>)"
            )

        SSHD_PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        self._root_mounts_before = self._mounts_at_root()
        _run(["mount", "--bind", str(self.root), str(self.root)])
        self._bind_mounted = True
        _run(["mount", "--make-shared", str(self.root)])

        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._bridge_created = True
        self._quiet_ipv6(self.bridge)
        _run(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/{NETWORK.prefixlen}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])

        for slot in self._slots.values():
            self._add_harvester_network(slot)
        for slot in self._slots.values():
            self._spawn_sshd(slot)
        deadline = time.monotonic() + self.start_timeout
        for slot in self._slots.values():
            self._wait_sshd(slot, deadline)

    def _write_keys_and_configs(self) -> None:
        private, public = _ed25519_keypair(f"plotter@farm-{self.suffix}")
        _write_private(self.client_key, private)
        _write_private(self.client_key.with_suffix(".pub"), public + "\n", 0o644)
        _write_private(self.authorized_keys, public + "\n", 0o644)
        known: list[str] = []
        ssh_config = [
            f"# netns test farm {self.suffix}: use with ssh -F {self.ssh_config}",
        ]
        for slot in self._slots.values():
            h = slot.host
            host_key = self.state_dir / f"ssh_host_ed25519_key.{h.name}"
            private, public = _ed25519_keypair(f"root@{h.name}")
            _write_private(host_key, private)
            _write_private(host_key.with_name(host_key.name + ".pub"), public + "\n", 0o644)
            known.append(f"{h.address} {' '.join(public.split()[:2])}")
            ssh_config += [f"Host {h.name}", f"    HostName {h.address}"]
            _write_private(slot.sshd_config, self._sshd_config_text(h, host_key, slot.pid_file), 0o644)
        ssh_config += [
            "Host *",
            "    User root",
            f"    IdentityFile {self.client_key}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {self.known_hosts}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    UpdateHostKeys no",
            "    BatchMode yes",
            "    ConnectTimeout 5",
        ]
        _write_private(self.known_hosts, "\n".join(known) + "\n", 0o644)
        _write_private(self.ssh_config, "\n".join(ssh_config) + "\n", 0o644)

    def _sshd_config_text(self, h: FarmHost, host_key: Path, pid_file: Path) -> str:
        return "\n".join(
            [
                f"# sshd of test harvester {h.name} ({h.namespace}), netns farm {self.suffix}",
                "AddressFamily inet",
                f"ListenAddress {h.address}",
                f"Port {SSH_PORT}",
                f"HostKey {host_key}",
                f"PidFile {pid_file}",
                f"AuthorizedKeysFile {self.authorized_keys}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "UseDNS no",
                "PrintMotd no",
                "PrintLastLog no",
                "X11Forwarding no",
                "MaxStartups 64:30:128",
                "MaxSessions 32",
                "LogLevel INFO",
                "AcceptEnv LANG LC_* PLOT_MANAGER_*",
                f"SetEnv {HARVESTER_ENV}={h.name}",
                f"Subsystem sftp {SFTP_SERVER}",
                "",
            ]
        )

    @staticmethod
    def _quiet_ipv6(ifname: str) -> None:
        """No IPv6 on the plotter's side of the farm: IPv4 only, no router solicitations."""
        knob = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
        if knob.exists():
            knob.write_text("1\n")

    def _add_harvester_network(self, slot: _Harvester) -> None:
        h = slot.host
        _run(["ip", "netns", "add", h.namespace])
        slot.netns_created = True
        # The peer is created straight inside the namespace under its final name.
        _run(["ip", "link", "add", h.veth_host_side, "type", "veth", "peer", "name", "eth0", "netns", h.namespace])
        slot.veth_created = True
        self._quiet_ipv6(h.veth_host_side)
        _run(["ip", "link", "set", h.veth_host_side, "master", self.bridge, "up"])
        ns = ["ip", "-n", h.namespace]
        _run([*ns, "link", "set", "lo", "up"])
        _run([*ns, "addr", "add", f"{h.address}/{NETWORK.prefixlen}", "dev", "eth0"])
        _run([*ns, "link", "set", "eth0", "up"])

    def _spawn_sshd(self, slot: _Harvester) -> None:
        h = slot.host
        if slot.sshd is not None and slot.sshd.poll() is None:
            raise RuntimeError(f"sshd of {h.name} is already running (pid {slot.sshd.pid})")
        if slot.log_file is None:
            slot.log_file = open(slot.log_path, "ab")  # noqa: SIM115 - closed in close()
        # ip netns exec exec()s sshd in place, so this pid is sshd's own.  Its own session
        # keeps a Ctrl-C at the terminal from reaching it before our cleanup does.
        slot.sshd = subprocess.Popen(
            ["ip", "netns", "exec", h.namespace, *self._fresh_shell_rc_argv(), SSHD, "-D", "-e", "-f", str(slot.sshd_config)],
            stdin=subprocess.DEVNULL,
            stdout=slot.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _fresh_shell_rc_argv(self) -> list[str]:
        """Give the harvesters a fresh Debian root's ``~/.bashrc`` instead of this machine's.

        Every SSH command runs through the login user's ``bash -c``, and Debian's bash sources
        ``~/.bashrc`` for SSH commands. The development machine's root ``.bashrc`` runs
        ``pyenv init`` (about 100 processes, 0.15 CPU-s per SSH command), which a real harvester
        does not have and which made every test and benchmark pay for it. ``ip netns exec`` runs
        sshd in its own mount namespace (mounts there never reach the host), so the bind mount
        below is seen by that sshd and its sessions only and disappears with it.
        """
        rc = Path(os.path.expanduser("~root")) / ".bashrc"
        if not rc.is_file():
            return []
        fresh = self.state_dir / "harvester_root_bashrc"
        if not fresh.exists():
            _write_private(fresh, "# fresh Debian root: nothing to run for SSH commands\n", 0o644)
        script = 'mount --bind "$1" "$2" || echo "netns farm: cannot hide $2" >&2; shift 2; exec "$@"'
        return ["sh", "-c", script, "sh", str(fresh), str(rc)]

    def _wait_sshd(self, slot: _Harvester, deadline: float) -> None:
        """Poll a TCP connect until sshd accepts; fail early if it exited."""
        h = slot.host
        assert slot.sshd is not None
        while True:
            if slot.sshd.poll() is not None:
                raise FarmError(
                    f"sshd of {h.name} in {h.namespace} exited with {slot.sshd.returncode}:\n{self.sshd_log(h.name)}"
                )
            if port_open(h.address, SSH_PORT, timeout=0.5):
                return
            if time.monotonic() >= deadline:
                raise FarmError(
                    f"sshd of {h.name} did not accept on {h.address}:{SSH_PORT} within {self.start_timeout}s:\n"
                    f"{self.sshd_log(h.name)}"
                )
            time.sleep(0.02)

    # -- SSH from the plotter ---------------------------------------------------------------

    def ssh(self, name: str, *, timeout: float = DEADLINE, known_hosts: Path | None = None) -> paramiko.SSHClient:
        """A paramiko client logged in as root on ``name``, host key checked against known_hosts.

        The farm closes the clients it handed out on exit; closing them earlier is fine.
        ``known_hosts`` overrides the farm's file (to test that a wrong/empty one is rejected).
        """
        h = self.host(name)
        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts or self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        with self._clients_lock:
            self._clients.append(client)
        try:
            client.connect(
                h.address,
                port=SSH_PORT,
                username="root",
                key_filename=str(self.client_key),
                look_for_keys=False,
                allow_agent=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
            )
        except BaseException:
            client.close()
            raise
        return client

    def run(self, name: str, command: str, *, timeout: float = DEADLINE) -> tuple[int, str, str]:
        """Run ``command`` through the harvester's login shell over SSH: ``(rc, stdout, stderr)``.

        A fresh connection each time, so a previous ``link_down``/``stop_sshd`` leaves no
        stale state behind.  ``rc`` is -1 if the server sent no exit status.
        """
        client = self.ssh(name, timeout=timeout)
        try:
            stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
            stdin.close()
            stdin.channel.shutdown_write()
            err_chunks: list[bytes] = []
            # stderr is drained concurrently: both streams share one SSH window, so reading
            # only stdout could stall a command that writes a lot to stderr.
            reader = threading.Thread(target=lambda: err_chunks.append(stderr.read()), daemon=True)
            reader.start()
            out = stdout.read()
            reader.join(timeout)
            rc = stdout.channel.recv_exit_status()
            return rc, out.decode(errors="replace"), b"".join(err_chunks).decode(errors="replace")
        finally:
            client.close()
            with self._clients_lock:
                if client in self._clients:
                    self._clients.remove(client)

    # -- processes in a namespace (test setup) ----------------------------------------------

    def _netns_argv(self, name: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.host(name).namespace, *argv]

    def exec_in(
        self,
        name: str,
        argv: Sequence[str],
        *,
        check: bool = False,
        timeout: float = DEADLINE,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` directly inside the harvester's namespace (no SSH), output captured."""
        full_env = {**os.environ, HARVESTER_ENV: name, **(env or {})}
        proc = subprocess.run(
            self._netns_argv(name, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=full_env,
            check=False,
        )
        if check and proc.returncode != 0:
            raise FarmError(f"{name}: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def popen_in(self, name: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a background process in the harvester's namespace; the farm kills it on exit."""
        env = {**os.environ, HARVESTER_ENV: name, **kwargs.pop("env", {})}
        return subprocess.Popen(self._netns_argv(name, argv), env=env, **kwargs)

    # -- failure simulation -----------------------------------------------------------------

    def link_down(self, name: str) -> None:
        """Pull the harvester's cable: its bridge-side veth goes down (nothing reaches it)."""
        _run(["ip", "link", "set", self.host(name).veth_host_side, "down"])

    def link_up(self, name: str, *, wait: bool = True, timeout: float = DEADLINE) -> None:
        """Plug the cable back in; with ``wait``, until its sshd (if running) accepts again."""
        _run(["ip", "link", "set", self.host(name).veth_host_side, "up"])
        if wait and self.sshd_pid(name) is not None:
            self.wait_reachable(name, timeout=timeout)

    def wait_reachable(self, name: str, *, timeout: float = DEADLINE) -> None:
        """Poll until the harvester's sshd accepts a TCP connection from the plotter."""
        h = self.host(name)
        deadline = time.monotonic() + timeout
        while not port_open(h.address, SSH_PORT, timeout=0.5):
            if time.monotonic() >= deadline:
                raise FarmError(f"{name} ({h.address}:{SSH_PORT}) not reachable after {timeout}s")
            time.sleep(0.02)

    def stop_sshd(self, name: str) -> None:
        """Stop the harvester's listening sshd (like ``systemctl stop ssh``: open sessions live on)."""
        slot = self._slot(name)
        if slot.sshd is not None:
            self._terminate(slot.sshd.pid, popen=slot.sshd)
            slot.sshd = None
        slot.pid_file.unlink(missing_ok=True)

    def start_sshd(self, name: str) -> None:
        """Start the harvester's sshd again after ``stop_sshd`` and wait until it accepts."""
        slot = self._slot(name)
        self._spawn_sshd(slot)
        self._wait_sshd(slot, time.monotonic() + self.start_timeout)

    # -- cleanup ----------------------------------------------------------------------------

    @staticmethod
    def _terminate(pid: int, *, popen: subprocess.Popen[Any] | None = None, netns: str | None = None) -> bool:
        """SIGTERM, wait, SIGKILL one pid of ours; returns whether it is gone.

        With ``netns`` the pid is only signalled while it is still in that namespace, so a
        recycled pid of someone else's process is never hit.
        """
        ident = _netns_inode(netns) if netns is not None else None

        def still_ours() -> bool:
            if popen is not None:
                return popen.poll() is None
            if ident is None:
                return False
            try:
                st = os.stat(f"/proc/{pid}/ns/net")
            except OSError:
                return False
            return (st.st_dev, st.st_ino) == ident and _pid_alive(pid)

        for sig, grace in ((signal.SIGTERM, _TERM_GRACE), (signal.SIGKILL, DEADLINE)):
            if not still_ours():
                return True
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + grace
            while still_ours() and time.monotonic() < deadline:
                if popen is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        popen.wait(timeout=0.05)
                else:
                    time.sleep(0.02)
        return not still_ours()

    def close(self) -> None:
        """Undo everything this farm made; safe to call twice.

        Every step runs even if an earlier one failed; what could not be removed is raised
        at the end as ``CleanupError`` (and the atexit backstop tries again).
        """
        if self._closed:
            return
        started = time.monotonic()
        problems: list[str] = []
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception as exc:  # pragma: no cover - paramiko close does not raise
                problems.append(f"closing SSH client: {exc}")

        for slot in self._slots.values():
            h = slot.host
            if slot.sshd is not None:
                if not self._terminate(slot.sshd.pid, popen=slot.sshd):
                    problems.append(f"sshd pid {slot.sshd.pid} of {h.name} survived SIGKILL")
                slot.sshd = None
            if slot.netns_created:
                # Sessions of sshd, processes of exec_in/popen_in: all ours, all in our netns.
                for pid in pids_in_netns(h.namespace):
                    if not self._terminate(pid, netns=h.namespace):
                        problems.append(f"pid {pid} in {h.namespace} survived SIGKILL")
            if slot.log_file is not None:
                slot.log_file.close()
                slot.log_file = None

        for slot in self._slots.values():
            h = slot.host
            if slot.veth_created:
                if _link_exists(h.veth_host_side):
                    _run(["ip", "link", "del", h.veth_host_side], check=False)
                if _link_exists(h.veth_host_side):
                    problems.append(f"veth {h.veth_host_side} still exists")
                else:
                    slot.veth_created = False
            if slot.netns_created:
                if _netns_exists(h.namespace):
                    proc = _run(["ip", "netns", "del", h.namespace], check=False)
                    if proc.returncode != 0:
                        problems.append(f"ip netns del {h.namespace}: {proc.stderr.strip()}")
                if not _netns_exists(h.namespace):
                    slot.netns_created = False

        if self._bridge_created:
            if _link_exists(self.bridge):
                _run(["ip", "link", "del", self.bridge], check=False)
            if _link_exists(self.bridge):
                problems.append(f"bridge {self.bridge} still exists")
            else:
                self._bridge_created = False

        if self._bind_mounted:
            self._unbind(problems)

        if self._state_created and not self._bind_mounted:
            # After the unbind: the files sit on the underlying directory either way, but a
            # failed unbind means something still uses the farm; leave its files alone then.
            shutil.rmtree(self.state_dir, ignore_errors=True)
            if self.state_dir.exists():
                problems.append(f"could not remove {self.state_dir}")
            else:
                self._state_created = False

        # The lock goes last: until here, another farm could clash with our leftovers.
        if self._locked and not self._bridge_created:
            self._lock.release()
            self._locked = False

        self.down_seconds = time.monotonic() - started
        if problems:
            # Stay registered, at the end of the registry: the atexit backstop works through
            # it in order, so drives mounted under root inside the farm are released first.
            unregister_active(self)
            register_active(self)
            raise CleanupError(f"{self!r} leaked: " + "; ".join(problems))
        self._closed = True
        unregister_active(self)
        log.info("%r down in %.2fs", self, self.down_seconds)

    def _mounts_at_root(self) -> int:
        """How many mounts are stacked on root (ours is the top one while the farm is up)."""
        return sum(1 for _, mp, _ in mounts() if mp == str(self.root))

    def _unbind(self, problems: list[str]) -> None:
        """Remove our bind mount of root, but never a drive someone else mounted under it."""
        below = [mp for _, mp, _ in mounts() if _is_under(mp, self.root)]
        if below:
            problems.append(f"still mounted under {self.root} (unmount drives before leaving the farm): {below}")
            return
        # Busy while the namespaces of the killed sshd sessions are still being torn down: retried
        # until that is over, not a fixed number of times (a busy machine takes longer).
        deadline = time.monotonic() + DEADLINE
        delay = 0.05
        while self._mounts_at_root() > self._root_mounts_before:
            proc = _run(["umount", str(self.root)], check=False)
            if proc.returncode == 0:
                break
            if time.monotonic() > deadline:
                problems.append(f"umount {self.root} kept failing: {proc.stderr.strip()}")
                return
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        self._bind_mounted = False
