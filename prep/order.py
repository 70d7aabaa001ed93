"""How a domain's document order is built from its partitions (also written in README and in
each manifest's `domains.<d>.order`):

1. **Partition order**: the source's partitions (in natural order: sorted files, byte ranges,
   Hub shards) are permuted by a seeded permutation (key ``"<seed>:<domain>:partitions"``).
2. **Groups**: the permuted partitions are taken `interleave` at a time (default 8).
3. **Within a partition**: its task emits the documents through a seeded shuffle buffer
   (key ``"<seed>:<domain>:<partition key>"``, bounded in documents and bytes).
4. **Interleaving**: a group's document stream is a seeded random merge of its partitions'
   streams: at each step the next document comes from a partition drawn uniformly among those
   not yet exhausted (key ``"<seed>:<domain>:group:<g>"``). Groups follow each other in order.

The budget then takes this stream's documents in order (after dropping exact duplicates) until
it is reached, so a budgeted sample of a many-file corpus draws from `interleave` partitions,
not from one file's first documents.

Randomness here comes from a counter-based generator (splitmix64 over the draw's index and a
key hashed with sha256), written with numpy integer arithmetic: the same on every platform and
numpy version, and vectorized. The merge is *prefix-stable*: a partition read only up to a cap
(not exhausted) yields exactly the prefix of the merge that reading it fully would give, up to
the point where that partition's next document is needed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
MAX_CHUNK = 1 << 20  # draws generated at a time by `merge` (bounded memory)


def key_seed(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")


def splitmix64(seed: int, start: int, n: int) -> np.ndarray:
    """Draws start..start+n-1 of the splitmix64 stream of `seed`, as uint64."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (np.arange(start + 1, start + n + 1, dtype=np.uint64) * _GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def uniform_below(seed: int, start: int, n: int, k: int) -> np.ndarray:
    """n draws uniform in 0..k-1 (multiply-shift of the top 32 bits; bias < k / 2**32)."""
    hi = splitmix64(seed, start, n) >> np.uint64(32)
    return ((hi * np.uint64(k)) >> np.uint64(32)).astype(np.int64)


def permutation(key: str, n: int) -> list[int]:
    """A seeded permutation of range(n)."""
    return np.argsort(splitmix64(key_seed(key), 0, n), kind="stable").tolist()


@dataclass
class MergeState:
    """Where a stalled merge stopped: raw draws consumed, documents taken from each partition,
    partitions still drawn from. :func:`merge` resumed from it, with larger counts, yields
    exactly what one merge of those counts yields after that point (it is prefix-stable)."""

    drawn: int
    taken: np.ndarray  # int64 per partition
    active: np.ndarray  # bool per partition


@dataclass
class Merge:
    """The merged positions of a group (from `state`'s point on, if resumed): for each position,
    the partition (0..k-1 within the group) and the index of that partition's document;
    `stalled_on` names the partition whose next document is needed but not yet read (capped),
    or is None when the group is done; `state` is where to resume once it is read."""

    part: np.ndarray  # int64 per merged position
    doc: np.ndarray  # int64 per merged position
    stalled_on: int | None
    state: MergeState | None = None


def merge(key: str, counts: list[int], exhausted: list[bool],
          state: MergeState | None = None) -> Merge:
    """Seeded uniform random merge of k streams of `counts` documents (see the module doc).

    ``exhausted[j]`` says partition j has no documents beyond ``counts[j]``; a partition that
    is not exhausted stalls the merge where its ``counts[j] + 1``-th document would be drawn.
    From `state` (a stalled merge's), only the positions after that point are computed.
    """
    k = len(counts)
    cnt = np.asarray(counts, dtype=np.int64)
    if state is None:
        state = MergeState(0, np.zeros(k, dtype=np.int64), np.ones(k, dtype=bool))
    taken0 = state.taken
    if k == 1:  # no draws needed: the partition's own order
        n = int(cnt[0] - taken0[0])
        return Merge(np.zeros(n, np.int64), np.arange(int(taken0[0]), int(cnt[0]),
                                                       dtype=np.int64),
                     None if exhausted[0] else 0, MergeState(0, cnt.copy(), state.active))
    seed = key_seed(key)
    active = state.active.copy()
    taken = taken0.copy()
    parts: list[np.ndarray] = []
    drawn = state.drawn  # raw draws consumed (accepted, or dropped for an exhausted partition)
    while active.any():
        need = int((cnt - taken)[active].sum())
        chunk = min(MAX_CHUNK, max(1024, 2 * need * k // int(active.sum())))
        raw = uniform_below(seed, drawn, chunk, k)
        keep = np.flatnonzero(active[raw])  # draws of exhausted partitions are redrawn
        picks = raw[keep]
        # the first draw that asks a partition for one document more than it holds
        first, j = len(picks), -1
        for p in np.flatnonzero(active):
            where = np.flatnonzero(picks[:first] == p)
            left = int(cnt[p] - taken[p])
            if len(where) > left and where[left] < first:
                first, j = int(where[left]), int(p)
        accepted = picks[:first]
        parts.append(accepted)
        taken += np.bincount(accepted, minlength=k)
        if j < 0:
            drawn += chunk
            continue
        if not exhausted[j]:  # resume at the draw that asked for it
            return _finish(parts, k, j, taken0, MergeState(drawn + int(keep[first]), taken,
                                                            active))
        drawn += int(keep[first]) + 1  # continue the raw stream right after that draw
        active[j] = False
    return _finish(parts, k, None, taken0, MergeState(drawn, taken, active))


def _finish(parts: list[np.ndarray], k: int, stalled_on: int | None, taken0: np.ndarray,
            state: MergeState) -> Merge:
    part = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    # index of each document within its partition: what was taken before, plus its rank
    # among equal labels
    order = np.argsort(part, kind="stable")
    counts = np.bincount(part, minlength=k)
    starts = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    doc = np.empty(len(part), dtype=np.int64)
    doc[order] = np.arange(len(part)) - np.repeat(starts[:-1], counts)
    return Merge(part, doc + taken0[part], stalled_on, state)


def describe(interleave: int, shuffle_docs: int, shuffle_bytes: int) -> str:
    return (f"seeded permutation of the partitions; groups of {interleave} partitions in that "
            f"order; within a partition a seeded shuffle buffer of {shuffle_docs} documents / "
            f"{shuffle_bytes / 1e6:g} MB; a group's stream is a seeded uniform random merge of "
            "its partitions' streams (next document from a partition drawn uniformly among "
            "those not exhausted); groups in order; then exact duplicates dropped (first "
            "occurrence wins) and the budget taken from the front")
