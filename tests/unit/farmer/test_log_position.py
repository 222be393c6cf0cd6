"""The log's chain of files, in the order their lines were written."""

from __future__ import annotations

import os
from pathlib import Path

from utilities.farmer.log_position import log_chain


def test_chain_order(tmp_path: Path) -> None:
    """Backups by the time of their last line (mtime), then by number; the live file last."""
    names = ("debug.log.10", "debug.log.2.gz", "debug.log.1", "debug.log.rotate.00000001", "debug.log",
             "debug.log.old", "other.log.1")
    for age, name in enumerate(reversed(names)):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, ns=(10**18 - age * 10**9, 10**18 - age * 10**9))
    assert [entry.path.name for entry in log_chain(tmp_path / "debug.log")] == [
        "debug.log.10", "debug.log.2.gz", "debug.log.1", "debug.log.rotate.00000001", "debug.log",
    ]
    # log_use_gzip switched on: the plain .1 and .2 of before are older than the new .2.gz.
    for name, when in (("debug.log.2", 1), ("debug.log.1", 2), ("debug.log.2.gz", 3), ("debug.log.1.gz", 4)):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, ns=(when * 10**18 // 10, when * 10**18 // 10))
    for name in ("debug.log.10", "debug.log.rotate.00000001"):
        (tmp_path / name).unlink()
    assert [entry.path.name for entry in log_chain(tmp_path / "debug.log")] == [
        "debug.log.2", "debug.log.1", "debug.log.2.gz", "debug.log.1.gz", "debug.log",
    ]
    # Equal times (a coarse clock): the number decides.
    for name in ("debug.log.2", "debug.log.1", "debug.log.2.gz", "debug.log.1.gz"):
        os.utime(tmp_path / name, ns=(10**17, 10**17))
    order = [entry.path.name for entry in log_chain(tmp_path / "debug.log")]
    assert order.index("debug.log.2") < order.index("debug.log.1") and order[-1] == "debug.log"
