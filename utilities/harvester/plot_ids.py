"""Which plots a harvester holds, compactly, and which plots the farm holds more than once.

A plot id is 32 bytes, but telling plots apart needs far fewer: the export carries the first
``PREFIX_BYTES`` (8) bytes of each id. Among a million plots the chance that two *different*
plots share an 8-byte prefix is about 3 in 100 million (birthday bound n^2 / 2^65), and a
duplicate is only reported, never acted on, so a prefix is enough.

Encoding: per drive, the prefixes sorted and concatenated, then base64 (RFC 4648, with
padding): 10.7 characters a plot, so 30,000 plots add about 320 KB to the export. Hex would be
480 KB; every plotter reads every export on each run, so the third saved is worth more than
being able to read the field by eye. Reports show the prefix in hex, the way the id appears in
the plot's file name, so ``ls *<prefix>*`` finds each copy. Sorting keeps the export byte for
byte the same while nothing changes.

Decoding never raises: an export with a broken field is an export whose plots are not known
(older harvesters do not carry the field at all); the rest of the export still counts.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PREFIX_BYTES = 8
PREFIX_HEX = 2 * PREFIX_BYTES


def encode_prefixes(plot_ids: Iterable[str | None]) -> bytes:
    """Pure: the sorted, concatenated id prefixes of ``plot_ids`` (hex ids; None and ids that
    are not hex, or too short, are skipped: a plot whose id we do not know cannot be matched)."""
    # Lower-case hex sorts as its bytes do, so the strings are sorted and converted in one call
    # (the minute pass does this for every plot of the harvester: 30,000 single conversions
    # cost five times as much). The same plot twice on one drive stays twice: a duplicate too.
    hexes = sorted(p[:PREFIX_HEX] for p in plot_ids if p and len(p) >= PREFIX_HEX)
    try:
        return bytes.fromhex("".join(hexes))
    except ValueError:  # an id that is not hex (never from a header or a chia name): skip it
        out = []
        for prefix in hexes:
            try:
                out.append(bytes.fromhex(prefix))
            except ValueError:
                continue
        return b"".join(out)


def prefixes_of(blob: bytes) -> list[bytes]:
    """The prefixes packed in ``blob`` (a whole number of ``PREFIX_BYTES`` chunks)."""
    return [blob[i : i + PREFIX_BYTES] for i in range(0, len(blob) - PREFIX_BYTES + 1, PREFIX_BYTES)]


def plot_ids_to_dict(by_drive: Mapping[str, bytes]) -> dict[str, Any]:
    """The export's ``plot_ids`` field."""
    return {
        "prefix_bytes": PREFIX_BYTES,
        "encoding": "base64",
        "drives": {name: base64.b64encode(blob).decode("ascii") for name, blob in sorted(by_drive.items())},
    }


def plot_ids_from_dict(data: Any) -> dict[str, bytes] | None:
    """The export's ``plot_ids`` field read back; None when absent or unusable as a whole (an
    older harvester, or garbage). A drive whose entry is broken is left out; the rest stand."""
    if not isinstance(data, dict) or data.get("prefix_bytes") != PREFIX_BYTES or data.get("encoding") != "base64":
        return None
    drives = data.get("drives")
    if not isinstance(drives, dict):
        return None
    result: dict[str, bytes] = {}
    for name, text in drives.items():
        if not isinstance(name, str) or not isinstance(text, str):
            continue
        try:
            blob = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            continue
        if len(blob) % PREFIX_BYTES == 0:
            result[name] = blob
    return result


# -- duplicates across the farm (pure) -----------------------------------------------------------


@dataclass(frozen=True)
class PlotCopy:
    """Where one copy of a plot is: harvester and drive name."""

    harvester: str
    drive: str

    def __str__(self) -> str:
        return f"{self.harvester}:{self.drive}"


@dataclass(frozen=True)
class Duplicate:
    """A plot id prefix held more than once, and every place holding it."""

    prefix: str  # hex, as in the plot's file name
    copies: tuple[PlotCopy, ...]

    @property
    def extra_copies(self) -> int:
        """Copies beyond the one that farms: each wastes a plot slot."""
        return len(self.copies) - 1

    def to_dict(self) -> dict[str, Any]:
        return {"plot_id_prefix": self.prefix, "copies": [{"harvester": c.harvester, "drive": c.drive} for c in self.copies]}


def find_duplicates(holdings: Mapping[str, Mapping[str, bytes]]) -> list[Duplicate]:
    """Pure: every id prefix found more than once across ``holdings`` (harvester -> drive ->
    packed prefixes), on two drives, two harvesters or twice on one drive; sorted by prefix."""
    first: dict[bytes, PlotCopy] = {}
    repeats: dict[bytes, list[PlotCopy]] = {}
    for harvester, drives in sorted(holdings.items()):
        for drive, blob in sorted(drives.items()):
            here = PlotCopy(harvester, drive)
            for prefix in prefixes_of(blob):
                seen = first.get(prefix)
                if seen is None:
                    first[prefix] = here
                else:
                    repeats.setdefault(prefix, [seen]).append(here)
    return [Duplicate(prefix.hex(), tuple(copies)) for prefix, copies in sorted(repeats.items())]
