"""Damage real plots the way failing disks and bad copies do: bytes flipped inside a table.

The table positions come from the v1 header itself (chiapos ``src/prover_disk.hpp``: after the
memo, ten 8-byte big-endian pointers: tables 1-7, then C1, C2, C3), so the damage lands inside
the table asked for, whatever the plot's k and memo.
"""

from __future__ import annotations

import struct
from pathlib import Path

_V1_MAGIC = b"Proof of Space Plot"


def table_pointers(path: str | Path) -> list[int]:
    """The ten table offsets of a v1 plot (tables 1..7, C1, C2, C3)."""
    with open(path, "rb") as handle:
        data = handle.read(1024)
    if not data.startswith(_V1_MAGIC):
        raise ValueError(f"{path} is not a v1 plot")
    pos = len(_V1_MAGIC) + 32 + 1  # magic, plot id, k
    (description,) = struct.unpack(">H", data[pos:pos + 2])
    pos += 2 + description
    (memo,) = struct.unpack(">H", data[pos:pos + 2])
    pos += 2 + memo
    return [struct.unpack(">Q", data[pos + 8 * i:pos + 8 * i + 8])[0] for i in range(10)]


def flip_table(path: str | Path, table: int, fraction: float = 0.5) -> tuple[int, int]:
    """Invert every bit of the middle ``fraction`` of table ``table`` (1..7); returns the byte range.

    Half a table inverted is what a copy that went wrong for a while leaves: chiapos then finds
    parks whose sizes make no sense and raises on every lookup that reads them.
    """
    if not 1 <= table <= 7:
        raise ValueError("table must be 1..7")
    pointers = table_pointers(path)
    start, end = pointers[table - 1], pointers[table]
    length = int((end - start) * fraction)
    first = start + (end - start - length) // 2
    with open(path, "r+b") as handle:
        handle.seek(first)
        data = handle.read(length)
        handle.seek(first)
        handle.write(bytes(b ^ 0xFF for b in data))
    return first, first + length
