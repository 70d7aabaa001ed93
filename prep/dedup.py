"""Exact deduplication: the commit hook, and its compact set of document keys.

:class:`ExactDedup` (a commit hook, `prep.steps`) removes exact duplicates across tasks and
domains: the first occurrence in the plan's stream order wins; later copies are counted in
`docs_deduplicated`, of which `docs_deduplicated_across_domains` were kept by an earlier
domain. Its final check is the leakage check: no kept content hash occurs twice, so no eval
text is in train.

Its state is a :class:`KeySet`, the set of kept
documents' keys: the first 16 bytes of each content sha256 (a 128-bit key: a false duplicate
needs a collision of 2**-128 per pair), stored as two uint64 columns in sorted runs that merge
when one would be followed by a run as large (a log-structured set): a lookup is a binary search
per run, an insert amortized O(log n), and memory is 16 bytes per key plus transient merges
(at most 32 bytes per merged key at once) and, for the leakage check, 8 bytes per key. No Python
object per document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from prep.steps.base import CommitHook, Counters, Group

if TYPE_CHECKING:
    from prep.plan import DomainPlan, Plan

KEY_BYTES = 16
CHECK_CHUNK = 1 << 20  # neighbours compared at a time by the leakage check


def digest_keys(digests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) uint64 columns of the first 16 bytes of (n, 32) uint8 sha256 digests."""
    d = np.ascontiguousarray(digests[:, :KEY_BYTES])
    pair = d.view(">u8").reshape(-1, 2)
    return pair[:, 0].astype(np.uint64), pair[:, 1].astype(np.uint64)


def first_occurrences(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Boolean mask: True where a key occurs for the first time in this sequence."""
    n = len(hi)
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(hi, kind="stable")  # by hi, then by position
    shi, slo = hi[order], lo[order]
    same_hi = shi[1:] == shi[:-1]
    if (same_hi & (slo[1:] != slo[:-1])).any():  # two keys share 64 bits: sort fully (rare)
        order = np.lexsort((np.arange(n), lo, hi))
        shi, slo = hi[order], lo[order]
        same_hi = shi[1:] == shi[:-1]
    lead = np.ones(n, dtype=bool)
    lead[1:] = ~(same_hi & (slo[1:] == slo[:-1]))
    mask = np.zeros(n, dtype=bool)
    mask[order[lead]] = True
    return mask


class KeySet:
    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(h) for h, _ in self._runs)

    @property
    def nbytes(self) -> int:
        return sum(h.nbytes + lo.nbytes for h, lo in self._runs)

    def contains(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hi), dtype=bool)
        if not len(hi) or not self._runs:
            return found
        q = np.argsort(hi, kind="stable")  # sorted queries: searches walk each run in order
        qhi, qlo = hi[q], lo[q]
        hit = np.zeros(len(hi), dtype=bool)
        for rhi, rlo in self._runs:
            left = np.searchsorted(rhi, qhi, side="left")
            right = np.searchsorted(rhi, qhi, side="right")
            single = (right - left) == 1  # the common case: one candidate with this hi
            idx = np.minimum(left, len(rhi) - 1)
            hit |= single & (rlo[idx] == qlo)
            for i in np.flatnonzero((right - left) > 1):  # equal 64-bit prefixes: rare
                hit[i] |= bool((rlo[left[i]:right[i]] == qlo[i]).any())
        found[q] = hit
        return found

    def add(self, hi: np.ndarray, lo: np.ndarray) -> None:
        """Add keys (the caller has removed those already present and repeats)."""
        if not len(hi):
            return
        order = np.argsort(hi, kind="stable")  # runs are sorted by hi (ties: any lo order)
        run: list[Any] = [hi[order], lo[order]]
        del order
        while self._runs and len(self._runs[-1][0]) <= len(run[0]):
            run = _merge(list(self._runs.pop()), run)
        self._runs.append((run[0], run[1]))

    def update(self, other: KeySet) -> None:
        """Add every key of `other` (disjoint from this set)."""
        for hi, lo in other._runs:
            self.add(hi, lo)

    def all_unique(self) -> bool:
        """True iff no key occurs twice (the leakage check: a kept text exists exactly once).

        Every key's high half is copied into one array and sorted in place (8 bytes per key on
        top of the set's 16); equal neighbours are found a chunk at a time; only high halves
        seen twice (a duplicate, or a 64-bit prefix shared by two keys) have their low halves
        compared."""
        if not self._runs:
            return True
        n = len(self)
        hi = np.empty(n, dtype=np.uint64)
        at = 0
        for h, _ in self._runs:
            hi[at:at + len(h)] = h
            at += len(h)
        hi.sort()
        repeated = []
        for a in range(0, n - 1, CHECK_CHUNK):
            b = min(a + CHECK_CHUNK, n - 1)
            eq = np.flatnonzero(hi[a + 1:b + 1] == hi[a:b])
            if len(eq):
                repeated.append(hi[a + eq])
        del hi
        if not repeated:
            return True
        suspects = np.unique(np.concatenate(repeated))
        lows: dict[int, list[int]] = {int(x): [] for x in suspects}
        for h, lo in self._runs:
            left = np.searchsorted(h, suspects, side="left")
            right = np.searchsorted(h, suspects, side="right")
            for x, i, j in zip(suspects.tolist(), left.tolist(), right.tolist(), strict=True):
                lows[x] += lo[i:j].tolist()
        return all(len(v) == len(set(v)) for v in lows.values())


def _merge(a: list[Any], b: list[Any]) -> list[Any]:
    """Two runs ([hi, lo], sorted by hi) merged, a's keys before b's equal ones. One column at
    a time, each input released as soon as it is copied (the lists are emptied): at most 32
    bytes per merged key at once. A stable argsort of two sorted runs is a linear merge."""
    hi = np.concatenate([a[0], b[0]])
    a[0] = b[0] = None
    order = np.argsort(hi, kind="stable")
    hi = hi[order]
    lo = np.concatenate([a[1], b[1]])
    a[1] = b[1] = None
    return [hi, lo[order]]


class ExactDedup(CommitHook):
    """Drops every candidate whose content hash a kept document (of any domain) has."""

    name, order = "exact_dedup", 0
    counters = ("docs_deduplicated", "docs_deduplicated_across_domains")

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.earlier = KeySet()  # kept keys of committed domains
        self.mine = KeySet()  # ... of the current domain

    def start_domain(self, domain: DomainPlan) -> None:
        self.mine = KeySet()

    def judge(self, group: Group) -> Any:
        hi, lo = digest_keys(group.rows["digest"])
        live = np.flatnonzero(group.keep)  # what earlier hooks dropped is no occurrence
        across = np.zeros(len(group), dtype=bool)
        across[live] = self.earlier.contains(hi[live], lo[live])
        dup = np.zeros(len(group), dtype=bool)
        dup[live] = (across[live] | self.mine.contains(hi[live], lo[live])
                     | ~first_occurrences(hi[live], lo[live]))
        group.keep &= ~dup
        return hi, lo, dup, across

    def accept(self, group: Group, used: int, verdict: Any, counts: Counters) -> None:
        hi, lo, dup, across = verdict
        keep = group.keep[:used]  # the keys of what every hook kept
        self.mine.add(hi[:used][keep], lo[:used][keep])
        counts["docs_deduplicated"] += int(dup[:used].sum())
        counts["docs_deduplicated_across_domains"] += int(across[:used].sum())

    def end_domain(self) -> None:
        self.earlier.update(self.mine)
        self.mine = KeySet()

    def finish(self, counts: Mapping[str, Counters]) -> str | None:
        """The leakage check, by sorting every kept key anew."""
        if self.earlier.all_unique():
            return None
        return ("leakage check failed: a document's content hash was kept twice (so an eval "
                "text may be in train); this is a bug in prep, please report it")


HOOKS = (ExactDedup,)
