"""One read of a file: its sha256 and, for a shard, its token-id and EOT checks.

`shards verify` and the check `shards.open` runs (shards/check.py) both read files through
:func:`scan_file`, and word what they find with :func:`sha_problem` and :func:`token_problem`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards.format import TOKEN_BYTES, TOKEN_DTYPE

CHUNK_BYTES = 8 << 20  # read size; an even number so a chunk holds whole tokens


@dataclass
class FileScan:
    """One pass over one file: its size, its sha256 (when hashed) and the token checks."""

    path: Path
    sha256: str | None
    size: int
    bad_tokens: int = 0  # ids >= vocab size
    first_bad: tuple[int, int] | None = None  # (token offset in the file, id)
    eot_positions: np.ndarray | None = None  # within the shard, when asked for


def scan_file(path: Path, *, sha256: bool = True, vocab_size: int | None = None,
              eot_id: int | None = None) -> FileScan:
    """Read `path` once: sha256 (``sha256=True``), token ids >= `vocab_size` (when given), and
    the positions of `eot_id` tokens (when given); chunks of CHUNK_BYTES, vectorized."""
    h = hashlib.sha256() if sha256 else None
    buf = bytearray(max(2, min(CHUNK_BYTES, path.stat().st_size)))
    view = memoryview(buf)
    size = bad = 0
    first_bad = None
    eots = []
    tokens = vocab_size is not None or eot_id is not None
    with path.open("rb") as f:
        while n := f.readinto(buf):
            if h is not None:
                h.update(view[:n])
            if tokens:
                toks = np.frombuffer(buf, dtype=TOKEN_DTYPE, count=n // TOKEN_BYTES)
                if vocab_size is not None and int(toks.max(initial=0)) >= vocab_size:
                    where = np.flatnonzero(toks >= vocab_size)
                    if first_bad is None:
                        first_bad = (size // TOKEN_BYTES + int(where[0]), int(toks[where[0]]))
                    bad += len(where)
                if eot_id is not None:
                    eots.append(np.flatnonzero(toks == eot_id) + size // TOKEN_BYTES)
            size += n
    scan = FileScan(path, h.hexdigest() if h is not None else None, size, bad, first_bad)
    if eot_id is not None:
        scan.eot_positions = np.concatenate(eots) if eots else np.zeros(0, dtype=np.int64)
    return scan


def sha_problem(scan: FileScan, expected: str, kind: str) -> str | None:
    """The problem line for a file whose sha256 is not the manifest's, else None."""
    if scan.sha256 is None or scan.sha256 == expected:
        return None
    return (f"{scan.path}: sha256 {scan.sha256} differs from the manifest's {expected}: the "
            f"{kind}'s bytes changed (corruption or an edit); re-copy the dataset or re-run prep")


def token_problem(scan: FileScan, vocab_size: int, *, sha_differs: bool = False) -> str | None:
    """The problem line for a shard holding token ids >= the vocabulary, else None
    (`sha_differs`: say in the same line that its sha256 is not the manifest's either)."""
    if not scan.bad_tokens:
        return None
    pos, tid = scan.first_bad or (0, 0)
    also = " and its sha256 differs from the manifest's" if sha_differs else ""
    return (f"{scan.path}: {scan.bad_tokens} token id(s) >= vocab size {vocab_size} (first at "
            f"token offset {pos}: {tid}){also}; the shard is damaged: re-copy the dataset or "
            "re-run prep")
