"""Train/eval assignment from a document's content digest, before any packing.

A task hashes each document once: ``digest = sha256(text UTF-8)`` is its content hash (the
dedup key, the index's ``sha256``, what `shards verify` re-checks). The split is a cheap value
derived from it: ``point = first 8 bytes of sha256(salt NUL digest)`` as a number in [0, 1), and
the document is eval iff ``point < eval_fraction``. So a document's split is a pure function of
its text and the salt: it never depends on the shuffle seed, the budget, the order, the
partitioning or the number of workers, and exact duplicates always land in the same split.
"""

from __future__ import annotations

import hashlib

TRAIN, EVAL = "train", "eval"
RULE = "eval iff int(sha256(salt NUL sha256(text))[:8], big-endian) / 2**64 < eval_fraction"


class Splitter:
    """Split points for one salt (the salted prefix is hashed once)."""

    def __init__(self, salt: str) -> None:
        self._prefix = hashlib.sha256(salt.encode("utf-8") + b"\x00")

    def point(self, digest: bytes) -> float:
        h = self._prefix.copy()
        h.update(digest)
        return int.from_bytes(h.digest()[:8], "big") / 2.0**64


def split_point(text_bytes: bytes, salt: str) -> float:
    """The split point of a document's UTF-8 text (what a task computes, from scratch)."""
    return Splitter(salt).point(hashlib.sha256(text_bytes).digest())


def assign_split(text_bytes: bytes, salt: str, eval_fraction: float) -> str:
    """`eval` iff the document's split point is below `eval_fraction`."""
    return EVAL if split_point(text_bytes, salt) < eval_fraction else TRAIN
