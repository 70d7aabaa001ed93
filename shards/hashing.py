"""Reading a file in blocks and hashing it: the one loop every package of this project uses.

- :func:`blocks`: bytes [start, end) of an open file as views of one reused buffer (memory stays
  at one block whatever the file's size); the readers of token files ask for whole tokens.
- :func:`hash_range`: feed a hasher those bytes (a path or an open binary file); the count.
- :func:`file_sha256`: the sha256 of a file, or of a range of it, as hex.
- :func:`distinct`: two digests shown long enough to differ, for "differs" messages.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

BLOCK_BYTES = 8 << 20  # read size: large enough for full disk speed, small enough to bound memory


def blocks(f: BinaryIO, start: int = 0, end: int | None = None, block: int = BLOCK_BYTES, *,
           multiple: int = 1, buffer: bytearray | None = None) -> Iterator[memoryview]:
    """Bytes [start, end) of the open binary file `f` (to its end when `end` is None), in
    blocks of at most `block` bytes, each a view of one reused buffer, valid until the next
    (`buffer`, to share one across files: then blocks are at most its size).

    Every block but a last one cut short by the file's end holds a multiple of `multiple`
    bytes (a short read in the middle of a token is completed). Stops early, without an error,
    where the file ends: the caller compares the count with what it expected.
    """
    try:
        size: int | None = os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # not a file of the OS (io.BytesIO)
        size = None
    want = None if end is None else max(0, end - start)
    cap = block if size is None else min(block, max(0, size - start))
    cap = min(cap, want) if want is not None else cap
    cap = max(multiple, cap - cap % multiple)
    if buffer is not None:
        cap = len(buffer) - len(buffer) % multiple
    view = memoryview(buffer if buffer is not None else bytearray(cap))
    f.seek(start)
    left = want
    while left is None or left > 0:
        n = f.readinto(view[:cap if left is None else min(cap, left)])
        if not n:
            return
        while n % multiple:  # a short read mid-token: complete it, unless the file ends
            more = f.readinto(view[n:n + multiple - n % multiple])
            if not more:
                break
            n += more
        if left is not None:
            left -= n
        yield view[:n]


def hash_range(hasher: Any, source: str | Path | BinaryIO, start: int = 0,
               end: int | None = None) -> int:
    """Feed `hasher` bytes [start, end) of `source` (a path, or an open binary file read from
    `start`); returns how many bytes it fed (fewer than asked where the file ends first)."""
    if isinstance(source, str | Path):
        with open(source, "rb") as f:
            return hash_range(hasher, f, start, end)
    n = 0
    for b in blocks(source, start, end):
        hasher.update(b)
        n += len(b)
    return n


def file_sha256(source: str | Path | BinaryIO, start: int = 0, end: int | None = None) -> str:
    """The sha256 (hex) of bytes [start, end) of `source` (the whole file by default)."""
    h = hashlib.sha256()
    hash_range(h, source, start, end)
    return h.hexdigest()


def distinct(a: str, b: str, at_least: int = 16) -> tuple[str, str]:
    """`a` and `b` (hex digests) cut to the shortest common length >= `at_least` at which they
    differ, each with "..." where cut: two different digests never print the same."""
    n = at_least
    while n < max(len(a), len(b)) and a[:n] == b[:n]:
        n += 8
    if n >= max(len(a), len(b)):
        return a, b
    return a[:n] + "...", b[:n] + "..."
