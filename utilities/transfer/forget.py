"""Kept parts whose source is gone: the plotter's word that a part will never be resumed.

A part waiting for a resume holds a plot's whole space (100 GiB for a k32) for up to
``harvester.resume_keep_hours``.  Only the plotter that sent it can resume it (the journal names
that plotter's source file by size, mtime, inode and device), so when that plotter no longer has
the source (the farmer deleted it, or it went elsewhere) the part is garbage at once.  The
plotter then runs ``receive_plot.sh --forget NAME`` on the harvester that holds the part; the
receiver only appends the name to a request file beside its drive claims, and the next minute
pass's sweep removes a part of that name that no writer holds, journal or not (the same
flock rules as any stale part, so a live receive is never touched).

The request file is small and append-only: each request is one ``NAME\\n`` written with one
``write`` (O_APPEND), so concurrent receivers never interleave.  The sweep renames the file
before reading it; a request appended to the renamed file after the read is lost, and that part
then simply waits out its keep time, as it would have without the request.
"""

from __future__ import annotations

import contextlib
import os

from utilities.errors import PlotFileError
from utilities.plots import validate_plot_name

REQUESTS_FILENAME = "forget-requests"
_TAKEN_SUFFIX = ".taken"
# More requests than this in one pass are left for later passes' keep-time expiry.
MAX_REQUESTS = 10_000
_MAX_BYTES = 4 << 20


def request_forget(claims_dir: str, name: str) -> None:
    """Append the request that ``name``'s kept part be removed (the name is validated first;
    PlotFileError if it is no plot name).  OSError when the claims directory cannot take it."""
    validate_plot_name(name)
    fd = os.open(
        os.path.join(claims_dir, REQUESTS_FILENAME), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
    )
    try:
        os.write(fd, f"{name}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_requests(data: bytes) -> set[str]:
    """The valid plot names in a request file's bytes; anything else is dropped (pure)."""
    names: set[str] = set()
    for line in data.decode(errors="replace").splitlines():
        try:
            validate_plot_name(line)
        except PlotFileError:
            continue
        names.add(line)
        if len(names) >= MAX_REQUESTS:
            break
    return names


def take_requests(claims_dir: str) -> set[str]:
    """The plot names whose kept parts are to be removed, taken out of the request file (the
    minute pass calls this once per pass).  Missing or unreadable: no requests."""
    path = os.path.join(claims_dir, REQUESTS_FILENAME)
    taken = path + _TAKEN_SUFFIX
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, taken)
    try:
        with open(taken, "rb") as handle:
            data = handle.read(_MAX_BYTES)
    except OSError:
        return set()
    with contextlib.suppress(OSError):
        os.unlink(taken)
    return parse_requests(data)
