"""File digests for test assertions, computed independently of the code under test."""

from __future__ import annotations

import hashlib
from pathlib import Path

import xxhash


def _digest(path: Path, digest):  # type: ignore[no-untyped-def]
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    """Content identity by a different algorithm than the product's xxh3."""
    return _digest(path, hashlib.sha256())


def xxh3(path: Path) -> str:
    """What the product should report as a file's xxh3-128."""
    return _digest(path, xxhash.xxh3_128())
