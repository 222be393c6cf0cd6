"""Hashing whole files and recognising the very file that was sent."""

from __future__ import annotations

import os
from pathlib import Path

import xxhash

from utilities.transfer.integrity import SourceIdentity, hash_fd, hash_file


def test_hash_file_is_xxh3_128_of_the_bytes_whatever_the_chunk(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)
    path = tmp_path / "plot"
    path.write_bytes(data)
    expected = (len(data), xxhash.xxh3_128(data).hexdigest())
    assert hash_file(path) == expected
    assert hash_file(path, chunk=4096) == expected
    (tmp_path / "empty").write_bytes(b"")
    assert hash_file(tmp_path / "empty") == (0, xxhash.xxh3_128(b"").hexdigest())


def test_hash_fd_reads_from_where_the_descriptor_is(tmp_path: Path) -> None:
    path = tmp_path / "plot"
    path.write_bytes(b"headerbody")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 6, os.SEEK_SET)
        assert hash_fd(fd) == (4, xxhash.xxh3_128(b"body").hexdigest())
    finally:
        os.close(fd)


def test_source_identity_tells_a_rewritten_or_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "plot"
    path.write_bytes(b"x" * 100)
    os.utime(path, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    sent = SourceIdentity.of(path)
    assert SourceIdentity.of(path) == sent
    os.utime(path, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))  # rewritten: same size, new mtime
    assert SourceIdentity.of(path) != sent
    replacement = tmp_path / "other"
    replacement.write_bytes(b"x" * 100)
    os.utime(replacement, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    os.replace(replacement, path)  # same size and mtime, another inode
    assert SourceIdentity.of(path) != sent
