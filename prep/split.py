"""Train/eval assignment by a salted hash of a document's content, before any packing.

A document's split is a pure function of its text and the split salt: it never depends on
the shuffle seed, the size budget, the order of the stream or the number of workers, and
exact duplicates (same text) always land in the same split.
"""

from __future__ import annotations

import hashlib

TRAIN, EVAL = "train", "eval"


def split_point(text_bytes: bytes, salt: str) -> float:
    """A number in [0, 1) from sha256(salt NUL text): uniform over documents."""
    h = hashlib.sha256(salt.encode("utf-8") + b"\x00" + text_bytes).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def assign_split(text_bytes: bytes, salt: str, eval_fraction: float) -> str:
    """`eval` iff the document's salted hash point is below `eval_fraction`."""
    return EVAL if split_point(text_bytes, salt) < eval_fraction else TRAIN
