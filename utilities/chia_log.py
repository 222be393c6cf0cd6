"""Read what the Chia harvester says about farming from its ``debug.log``.

For every signage point (about every 9 seconds) the harvester logs one INFO line saying how
many plots passed the plot filter, how many proofs were found, how long the lookup took and
how many plots it is farming.  The total is the number that matters to a drive manager: when
it drops, a drive has gone missing; when the lookup time climbs past a few seconds, a drive is
dying or a USB hub is saturated.

Chia has written that line in two shapes, both handled here exactly as chia writes them:

* chia 1.x up to 2.5.6 (``chia/harvester/harvester_api.py``)::

      f"{len(awaitables)} plots were eligible for farming {challenge_hash.hex()[:10]}..."
      f" Found {total_proofs_found} proofs. Time: {found_time:.5f} s. "
      f"Total {plot_count} plots"

* chia 2.5.7 and later, after the V2 plot format work (same file)::

      f"challenge_hash: {challenge_hash.hex()[:10]} ..."
      f"{eligible} plots were eligible for farming challenge"
      f"Found {total_proofs_found} V1 proofs and {total_v2_partial_proofs_found} V2 qualities."
      f" Time: {time_taken:.5f} s. Total {plot_count} plots"

  Note the missing spaces ("...2 plots", "challengeFound"): the f-string pieces are joined
  without separators, and this is what really lands in the log.

Singular forms ("1 V1 proof", "1 V2 quality") and an ISO timezone after the milliseconds (set-ups
that log aware timestamps) are accepted too; the timestamp is then timezone-aware.

The line prefix comes from ``chia/util/chia_logging.py``:
``%(asctime)s.%(msecs)03d {__version__} {service_name} %(name)-{33 - len(service_name)}s:
%(levelname)-8s %(message)s`` with ``datefmt="%Y-%m-%dT%H:%M:%S"``.  The ``{__version__}``
field (e.g. ``2.4.4``) was added in chia 2.4.4; ``log_backcompat: true`` in chia's config
drops it again, and chia 1.x never had it, so it is optional here.  Before chia 1.0.4 the
logger was ``src.harvester.harvester`` instead of ``chia.harvester.harvester``.

Neither shape carries the plots' total size, so ``HarvesterCheck.total_size_bytes`` is
``None`` for both; it exists so that a caller can fill it from another source later without
changing the type.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

DEFAULT_MAX_TAIL_BYTES = 4 * 1024 * 1024
"""How far back from the end of a log we look: chia rotates ``debug.log`` at 50 MiB by
default and a harvester writes its farming line every few seconds, so 4 MiB is hours of log
even on a busy node, while still bounding the work for a cron job."""

_BLOCK_BYTES = 64 * 1024

_PREFIX = (
    r"^(?P<timestamp>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:?\d{2})?)\s+"
    r"(?:(?P<version>\d\S*)\s+)?"
    r"harvester\s+(?:chia|src)\.harvester\.harvester\s*:\s+INFO\s+"
)
# One pattern for both message shapes: the 2.5.7+ shape adds a "challenge_hash: X ..." head,
# replaces the hash after "farming" with the word "challenge" and splits the proofs count
# into V1 proofs and V2 qualities.  Everything else (numbers, "Time: ... s.", "Total N
# plots") is the same, so one pattern keeps the two from drifting apart.
_MESSAGE = (
    r"(?:challenge_hash:\s*(?P<new_hash>[0-9a-f]+)\s*\.\.\.\s*)?"
    r"(?P<eligible>\d+) plots were eligible for farming\s*"
    r"(?:(?P<old_hash>[0-9a-f]+)\.\.\.|challenge)\s*"
    r"Found (?P<proofs>\d+) (?:(?P<v1>V1) )?proofs?"
    r"(?: and (?P<v2>\d+) V2 qualit(?:ies|y))?\.\s*"
    r"Time: (?P<seconds>\d+(?:\.\d+)?) s\.\s*"
    r"Total (?P<total>\d+) plots\s*$"
)
_HARVESTER_LINE = re.compile(_PREFIX + _MESSAGE)


@dataclass(frozen=True)
class HarvesterCheck:
    """One signage-point check by the harvester, as logged.

    ``timestamp`` is naive local time, like chia's log.  ``proofs`` counts proofs of space the
    harvester found (chia's ``found_proofs``); on chia 2.5.7+ the separately reported V2
    qualities are in ``v2_qualities`` (``None`` on older chia).  ``total_size_bytes`` is
    ``None`` because the line does not carry a size (see module docstring).
    """

    timestamp: datetime
    eligible: int
    proofs: int
    seconds: float
    total_plots: int
    total_size_bytes: int | None = None
    v2_qualities: int | None = None
    chia_version: str | None = None
    challenge: str | None = None


def parse_harvester_line(line: str) -> HarvesterCheck | None:
    """Parse one ``debug.log`` line; ``None`` for any other line.

    Pure and total: garbage, other services' lines and half-written lines all give ``None``,
    never an exception, because a log tail routinely starts in the middle of a line.
    """
    if not isinstance(line, str) or "plots were eligible for farming" not in line:
        return None
    match = _HARVESTER_LINE.match(line.strip())
    if match is None:
        return None
    is_new_shape = match["v1"] is not None or match["new_hash"] is not None
    if is_new_shape != (match["old_hash"] is None):
        # A hash after "farming" belongs to the old shape only, "challenge" to the new one;
        # a mixture is not something chia writes.
        return None
    try:
        timestamp = datetime.fromisoformat(match["timestamp"])
        seconds = float(match["seconds"])
    except ValueError:
        return None
    return HarvesterCheck(
        timestamp=timestamp,
        eligible=int(match["eligible"]),
        proofs=int(match["proofs"]),
        seconds=seconds,
        total_plots=int(match["total"]),
        total_size_bytes=None,
        v2_qualities=int(match["v2"]) if match["v2"] is not None else None,
        chia_version=match["version"],
        challenge=match["new_hash"] or match["old_hash"],
    )


def last_farming_status(
    log_path: str | os.PathLike[str], max_tail_bytes: int = DEFAULT_MAX_TAIL_BYTES
) -> HarvesterCheck | None:
    """Return the newest harvester farming line in chia's ``debug.log``, or ``None``.

    Only the last ``max_tail_bytes`` of the file are read, backwards in blocks, stopping at the
    first (newest) farming line: ``debug.log`` can be hundreds of MiB and this runs from cron.
    Right after chia rotates the log the current file may hold no farming line yet, so
    ``debug.log.1`` is searched the same way.  A missing ``debug.log`` means no harvester is
    logging here: ``None``.
    """
    path = os.fspath(log_path)
    if not os.path.isfile(path):
        return None
    for candidate in (path, path + ".1"):
        try:
            with open(candidate, "rb") as handle:
                for raw in _lines_backwards(handle, max_tail_bytes):
                    check = parse_harvester_line(raw.decode("utf-8", errors="replace"))
                    if check is not None:
                        return check
        except OSError:
            continue
    return None


def _lines_backwards(handle: BinaryIO, max_bytes: int) -> Iterator[bytes]:
    """Yield the complete lines of the last ``max_bytes`` of ``handle``, newest first.

    A line cut by the window's start is dropped rather than yielded as a fragment: a fragment
    of a farming line could otherwise parse as a different, wrong line.
    """
    handle.seek(0, os.SEEK_END)
    end = handle.tell()
    window_start = max(0, end - max(0, max_bytes))
    position = end
    pending = b""
    while position > window_start:
        size = min(_BLOCK_BYTES, position - window_start)
        position -= size
        handle.seek(position)
        pending = handle.read(size) + pending
        pieces = pending.split(b"\n")
        pending = pieces[0]
        for piece in reversed(pieces[1:]):
            if piece:
                yield piece
    if pending and _starts_a_line(handle, window_start):
        yield pending


def _starts_a_line(handle: BinaryIO, offset: int) -> bool:
    if offset == 0:
        return True
    handle.seek(offset - 1)
    return handle.read(1) == b"\n"
