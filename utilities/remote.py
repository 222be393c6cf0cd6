"""SSH to harvesters with paramiko: run a command, read a file, ask many hosts at once.

Host keys are always checked against the configured known_hosts file (``RejectPolicy``): a
plotter that blindly trusted any key would hand plots, and the authority to delete them, to
whoever answered on the harvester's address.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import paramiko

from utilities.harvester_export import HarvesterSnapshot, parse_export
from utilities.settings.farm import FarmSettings, HarvesterTarget, SshSettings

T = TypeVar("T")


class RemoteError(Exception):
    """A harvester could not be reached or answered badly; the message says which and why."""


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


def connect(target: HarvesterTarget, ssh: SshSettings) -> paramiko.SSHClient:
    """An authenticated connection with the host key checked; RemoteError otherwise."""
    client = paramiko.SSHClient()
    known_hosts = Path(os.path.expanduser(str(ssh.known_hosts)))
    try:
        client.load_host_keys(str(known_hosts))
    except OSError as exc:
        raise RemoteError(f"{target.name}: cannot read known_hosts {known_hosts}: {exc.strerror}") from None
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key_file = os.path.expanduser(str(ssh.key_file)) if ssh.key_file else None
    try:
        client.connect(
            target.host,
            port=target.ssh_port,
            username=target.user,
            key_filename=key_file,
            timeout=ssh.connect_timeout_seconds,
            banner_timeout=ssh.connect_timeout_seconds,
            auth_timeout=ssh.connect_timeout_seconds,
            allow_agent=key_file is None,
            look_for_keys=key_file is None,
        )
    except paramiko.SSHException as exc:
        client.close()
        if "not found in known_hosts" in str(exc) or isinstance(exc, paramiko.BadHostKeyException):
            raise RemoteError(f"{target.name} ({target.host}): host key not trusted: {exc}") from None
        raise RemoteError(f"{target.name} ({target.host}): SSH failed: {exc}") from None
    except OSError as exc:
        client.close()
        raise RemoteError(f"{target.name} ({target.host}): unreachable: {exc}") from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)
    return client


def run(client: paramiko.SSHClient, argv: list[str], timeout: float = 60) -> CommandResult:
    """Run a command given as argv; every word is quoted for the remote shell."""
    command = " ".join(shlex.quote(word) for word in argv)
    _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode("utf-8", "replace")
    err = stderr.read().decode("utf-8", "replace")
    return CommandResult(stdout.channel.recv_exit_status(), out, err)


def fan_out(
    targets: Iterable[HarvesterTarget], work: Callable[[HarvesterTarget], T], timeout: float
) -> dict[str, T | RemoteError]:
    """Run ``work`` for every harvester in parallel; a slow or failing one never holds up the rest.

    Each result is the value or a RemoteError saying what went wrong with that harvester.
    """
    targets = list(targets)
    results: dict[str, T | RemoteError] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, min(32, len(targets))), thread_name_prefix="ssh")
    try:
        futures = {t.name: pool.submit(work, t) for t in targets}
        for name, future in futures.items():
            try:
                results[name] = future.result(timeout=timeout)
            except FutureTimeout:
                results[name] = RemoteError(f"{name}: no answer within {timeout:.0f} s")
            except RemoteError as exc:
                results[name] = exc
            except Exception as exc:  # noqa: BLE001 - one broken harvester must not break the run
                results[name] = RemoteError(f"{name}: {type(exc).__name__}: {exc}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return results


# -- the farm's exports ------------------------------------------------------------------------

MAX_EXPORT_BYTES = 16 * 1024 * 1024  # 1,000 drives with 100,000 plots (their id prefixes) write about 1.4 MB


def fetch_export(target: HarvesterTarget, farm: FarmSettings) -> HarvesterSnapshot:
    client = connect(target, farm.ssh)
    try:
        # A plain `head -c` on an exec channel: no sftp-server to start on the harvester, which
        # made the parallel fan-out cost scale with the number of harvesters (bench/).
        result = run(client, ["head", "-c", str(MAX_EXPORT_BYTES + 1), "--", target.export_file],
                     timeout=farm.ssh.connect_timeout_seconds * 2)
    finally:
        client.close()
    if result.exit_status != 0:
        raise RemoteError(f"{target.name}: cannot read export {target.export_file}: {result.stderr.strip()[:200]}")
    raw = result.stdout.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_EXPORT_BYTES:
        raise RemoteError(f"{target.name}: export {target.export_file} is larger than {MAX_EXPORT_BYTES} bytes")
    try:
        return parse_export(raw, target.name)
    except ValueError as exc:
        raise RemoteError(f"{target.name}: {exc}") from None


def fetch_exports(farm: FarmSettings) -> dict[str, HarvesterSnapshot | RemoteError]:
    """Every enabled harvester's export or the reason it could not be had, by harvester name."""
    targets = [t for t in farm.harvesters if t.enabled]
    return fan_out(targets, lambda t: fetch_export(t, farm), timeout=farm.ssh.connect_timeout_seconds * 3 + 5)
