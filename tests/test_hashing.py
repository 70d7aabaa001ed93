"""`shards.hashing`: the one block-reading and hashing loop, and digests shown so they differ."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from shards.hashing import blocks, distinct, file_sha256, hash_range
from shards.tokenizer import file_sha256 as tokenizer_file_sha256

DATA = bytes(range(256)) * 41 + b"tail"  # 10,500 bytes


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "f.bin"
    p.write_bytes(DATA)
    return p


@pytest.mark.parametrize("start, end", [(0, None), (0, len(DATA)), (7, 5000), (10_000, None),
                                        (3, 3), (10_499, 20_000)])
def test_ranges_by_path_and_by_open_file(path: Path, start: int, end: int | None) -> None:
    want = DATA[start:end]
    assert file_sha256(path, start, end) == hashlib.sha256(want).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.read(99)  # an open file is read from `start`, wherever it stood
        assert hash_range(h, f, start, end) == len(want)
    assert h.hexdigest() == hashlib.sha256(want).hexdigest()
    assert tokenizer_file_sha256(path) == hashlib.sha256(DATA).hexdigest()  # still importable


class ShortReads(io.RawIOBase):
    """A file that returns at most 3 bytes per read, as a pipe or a network file may."""

    def __init__(self, data: bytes) -> None:
        self.f = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.f.seek(pos, whence)

    def readinto(self, b) -> int:  # noqa: ANN001
        return self.f.readinto(memoryview(b)[:3])


def test_blocks_reuse_one_buffer_and_hold_whole_tokens() -> None:
    got, bases = [], set()
    for view in blocks(ShortReads(DATA), block=64, multiple=2):
        assert len(view) % 2 == 0 and 0 < len(view) <= 64
        got.append(bytes(view))
        bases.add(id(view.obj))
    assert b"".join(got) == DATA and len(bases) == 1


def test_a_file_shorter_than_asked_stops_with_the_count(path: Path) -> None:
    assert hash_range(hashlib.sha256(), path, 0, len(DATA) + 100) == len(DATA)


def test_distinct_shows_enough_to_differ() -> None:
    a = "ab" * 32
    b = a[:40] + "ff" + a[42:]
    assert distinct(a, b) == (a[:48] + "...", b[:48] + "...")
    assert distinct(a, "0" + a[1:]) == (a[:16] + "...", "0" + a[1:16] + "...")
    c = a[:63] + "0"
    assert distinct(a, c) == (a, c)  # they differ only at the end: shown whole
