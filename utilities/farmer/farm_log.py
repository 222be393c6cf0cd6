"""``coin_monitor.py --farm-log [error|warning|eligible]``: the recent matching lines of chia's log.

A quick look at the farm without opening a 50 MiB file: the newest matching records, oldest
first, each with its continuation lines (an ERROR's traceback belongs to it). Only the end of
the log is read (``TAIL_BYTES`` of the live file, then of the newest backup if that was not
enough), so it answers at once however large the log is.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterable
from pathlib import Path

from utilities.farmer.events import is_eligibility_line, parse_prefix

KINDS = ("error", "warning", "eligible")
TAIL_BYTES = 8 * 1024 * 1024


def select_records(lines: Iterable[str], kind: str) -> list[list[str]]:
    """Pure: the records (head line + continuation lines) of ``kind``, in log order."""
    records: list[list[str]] = []
    current: list[str] | None = None
    for line in lines:
        head = parse_prefix(line)
        if head is None:
            if current is not None and line.strip():
                current.append(line)  # a traceback or pprint line of the record above
            continue
        current = [line] if _matches(kind, head.level, line) else None
        if current is not None:
            records.append(current)
    return records


def _matches(kind: str, level: str, line: str) -> bool:
    if kind == "error":
        return level in ("ERROR", "CRITICAL")
    if kind == "warning":
        return level == "WARNING"
    return level == "INFO" and is_eligibility_line(line)


def tail_lines(path: Path, max_bytes: int = TAIL_BYTES) -> list[str]:
    """The complete lines in the last ``max_bytes`` of a (possibly gzipped) file."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                data = handle.read()[-max_bytes:]
            cut_first = len(data) == max_bytes
        else:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                start = max(0, size - max_bytes)
                handle.seek(start)
                data = handle.read(max_bytes)
            cut_first = start > 0
    except (OSError, EOFError, zlib.error):
        return []
    lines = data.decode("utf-8", errors="replace").split("\n")
    if cut_first:
        lines = lines[1:]  # starts mid-line
    return [line.rstrip("\r") for line in lines]


def recent_records(log_path: Path, kind: str, limit: int) -> list[list[str]]:
    """The newest ``limit`` records of ``kind`` from the live log, then its newest backup."""
    lines = tail_lines(log_path)
    records = select_records(lines, kind)
    if len(records) < limit:
        for backup in (log_path.with_name(log_path.name + ".1"), log_path.with_name(log_path.name + ".1.gz")):
            if backup.exists():
                records = select_records(tail_lines(backup), kind) + records
                break
    return records[-limit:] if limit > 0 else records
