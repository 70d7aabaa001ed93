"""The reference every tool's output is checked against: a digest of each document's ids."""

from __future__ import annotations

import hashlib

import numpy as np

EOT = 50256


def digest(ids: np.ndarray) -> str:
    """The reference digest of one document's ids (uint16, EOT excluded)."""
    return hashlib.blake2b(np.ascontiguousarray(ids, dtype=np.uint16).tobytes(),
                           digest_size=12).hexdigest()


def stream_digests(tokens: np.ndarray, *, eot_first: bool) -> list[str]:
    """Digests of the documents of a token stream that has EOT before (or after) each one."""
    ends = np.flatnonzero(tokens == EOT)
    out, prev = [], 0
    if eot_first:
        starts = ends + 1
        bounds = list(zip(starts, [*ends[1:], len(tokens)], strict=True))
    else:
        bounds = []
        for e in ends:
            bounds.append((prev, e))
            prev = e + 1
    for a, b in bounds:
        out.append(digest(tokens[a:b]))
    return out
