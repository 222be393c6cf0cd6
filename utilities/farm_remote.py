"""Ask every harvester of the farm for its export, in parallel, over SSH (host keys checked).

Used by the plotter (where to send) and by the farm-wide report. A harvester that is down, too
slow or answers garbage comes back as a RemoteError with the reason, never as an exception.
"""

from __future__ import annotations

from utilities.config import FarmSettings, HarvesterTarget
from utilities.farm import parse_export
from utilities.remote import RemoteError, connect, fan_out, run
from utilities.snapshot import HarvesterSnapshot

MAX_EXPORT_BYTES = 16 * 1024 * 1024  # a harvester with 1,000 drives writes well under 1 MiB


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
