"""The near-duplicate commit's state: LSH band index, clusters, signatures on disk.

Every document the near-dup hook (`prep.neardup`) indexes gets an id, in plan order (so a
smaller id is earlier, across domains). :class:`NearDupState` decides a group's documents
against everything indexed before them (`judge`, read-only) and then indexes them (`accept`).

**Memory per indexed document**, at peak (the issue's budget is 150 bytes):

- the band index, :class:`BandIndex`: per band one uint64 per document (the band key's top 32
  bits and the 32-bit id): 14 bands x 8 = **112 bytes**;
- the clusters, :class:`Clusters`: one uint32 per document (its root's id, 31 bits, and its
  split): **4 bytes**, growing by doubling: +8 bytes while the array is copied (never during a
  band merge);
- merging two runs of one band (the index is log-structured, as `prep.dedup.KeySet`): the
  merged run is written before the old ones are freed, +8 bytes per document of that band, and
  the stable sort's buffer, +4: at most **12 bytes** (one band merges at a time);
- signatures and locators live on disk (:class:`SigStore`: 256 + 8 bytes per document in the
  run's work directory), read back only for candidate pairs; a group's own signatures are a
  transient bounded by the group, not by the dataset.

So 112 + 4 + 12 = **128 bytes per document** at peak, plus per-group transients; the
`prep.bench.neardup` bench measures it with tracemalloc. At the end the index is dropped and the
cluster-size histogram needs 8 (roots) + 8 (bincount) bytes per document.

A 32-bit band key makes false bucket collisions: with N documents indexed, a query meets ~N/2**32
unrelated documents per band (0.3% per band at 10M): each costs one signature read, and the
estimate rejects it. A bucket is read only up to its `CAP` earliest members per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards.minhash import bucket_pairs, estimate

CAP = 32  # candidates per (document, band, run): a bucket's earliest members
HIGH = np.uint64(0xFFFFFFFF00000000)
LOW = np.uint64(0xFFFFFFFF)
SPLIT_BIT = np.uint32(1 << 31)
PARENT = np.uint32((1 << 31) - 1)
MAX_IDS = 1 << 31


def _expand(left: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query row, position) for `count[i]` positions from `left[i]` on, for every query i."""
    lead = np.cumsum(count) - count
    rows = np.repeat(np.arange(len(left)), count)
    at = np.repeat(left, count) + np.arange(int(count.sum())) - np.repeat(lead, count)
    return rows, at


class BandIndex:
    """Per LSH band, the indexed documents' (key, id) as sorted runs of uint64 (the band key's
    top 32 bits, then the id): a lookup is a binary search per run, an insert amortized
    O(log n); runs merge when one would follow a run as large."""

    def __init__(self, bands: int) -> None:
        self._runs: list[list[np.ndarray]] = [[] for _ in range(bands)]

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for runs in self._runs for r in runs)

    def add(self, keys: np.ndarray, ids: np.ndarray) -> None:
        """Index documents: `keys` (n, bands) uint64 (0: no key), `ids` (n,) ascending."""
        for b, runs in enumerate(self._runs):
            k = keys[:, b]
            sel = k != 0
            run = (k[sel] & HIGH) | ids[sel].astype(np.uint64)
            run.sort()
            while runs and len(runs[-1]) <= len(run):
                merged = np.concatenate([runs.pop(), run])
                del run
                merged.sort(kind="stable")  # two sorted runs: a linear merge
                run = merged
            runs.append(run)

    def lookup(self, keys: np.ndarray, cap: int = CAP) -> tuple[np.ndarray, np.ndarray]:
        """Unique pairs (query row, indexed id) sharing a band key, sorted; per band and run at
        most `cap` ids (the earliest) per query."""
        found = []
        for b, runs in enumerate(self._runs):
            q = keys[:, b]
            lo = q & HIGH
            for run in runs:
                left = np.searchsorted(run, lo, side="left")
                right = np.searchsorted(run, lo | LOW, side="right")
                rows, at = _expand(left, np.where(q != 0, np.minimum(right - left, cap), 0))
                found.append((rows.astype(np.uint64) << np.uint64(32)) | (run[at] & LOW))
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        code = np.unique(np.concatenate(found))
        return (code >> np.uint64(32)).astype(np.int64), (code & LOW).astype(np.int64)


class Clusters:
    """Each indexed document's parent (a smaller id; a root is its own parent) and, in the top
    bit, its split (1: eval); a root's bit is its cluster's split."""

    def __init__(self) -> None:
        self._a = np.zeros(1024, dtype=np.uint32)
        self.n = 0

    @property
    def nbytes(self) -> int:
        return self._a.nbytes

    def extend(self, parents: np.ndarray, evals: np.ndarray) -> None:
        n = self.n + len(parents)
        if n > MAX_IDS:
            raise OverflowError(f"near-dup ids exceed {MAX_IDS}: use the on-disk plan "
                                "(docs/near-dedup.md)")
        if n > len(self._a):
            grown = np.zeros(max(n, 2 * len(self._a)), dtype=np.uint32)
            grown[:self.n] = self._a[:self.n]
            self._a = grown
        self._a[self.n:n] = parents.astype(np.uint32) | np.where(evals, SPLIT_BIT, 0).astype(
            np.uint32)
        self.n = n

    def find(self, ids: np.ndarray) -> np.ndarray:
        """Each id's root (read-only: no path compression)."""
        r = self._a[ids] & PARENT
        while True:
            p = self._a[r] & PARENT
            if (p == r).all():
                return r.astype(np.int64)
            r = p

    def split(self, ids: np.ndarray) -> np.ndarray:
        return (self._a[ids] & SPLIT_BIT) != 0

    def roots(self) -> np.ndarray:
        return self.find(np.arange(self.n)) if self.n else np.zeros(0, np.int64)


class SigStore:
    """Signatures (bins x uint16) and locators (task slot, document row) of indexed documents,
    by id, in two files of the run's work directory; read back for candidates and examples."""

    def __init__(self, folder: Path, bins: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.bins = bins
        self.paths = folder / "neardup.sig", folder / "neardup.loc"
        for p in self.paths:
            p.write_bytes(b"")
        self.n = 0
        self.tasks: list[str] = []  # slot -> task id
        self._slot: dict[str, int] = {}

    def append(self, sigs: np.ndarray, tasks: list[str], rows: np.ndarray) -> None:
        slots = np.array([self._slot.setdefault(t, len(self._slot)) for t in tasks],
                         dtype=np.uint32)
        self.tasks += list(self._slot)[len(self.tasks):]
        loc = np.stack([slots, rows.astype(np.uint32)], axis=1)
        for p, a in zip(self.paths, (sigs.astype(np.uint16), loc), strict=True):
            with open(p, "ab") as f:
                f.write(np.ascontiguousarray(a).tobytes())
        self.n += len(sigs)

    def sigs(self, ids: np.ndarray) -> np.ndarray:
        if not len(ids):
            return np.zeros((0, self.bins), np.uint16)
        return np.memmap(self.paths[0], np.uint16, "r", shape=(self.n, self.bins))[ids]

    def locate(self, i: int) -> tuple[str, int]:
        slot, row = np.memmap(self.paths[1], np.uint32, "r", shape=(self.n, 2))[i].tolist()
        return self.tasks[slot], row

    def remove(self) -> None:
        for p in self.paths:
            p.unlink(missing_ok=True)


@dataclass
class Verdict:
    """A group's live documents (those with a signature, not dropped by an earlier hook), in
    stream order, as `NearDupState.judge` decided them."""

    base: int  # the id the first of them will get
    root: np.ndarray  # each one's cluster root: an id (< base: indexed before)
    est: np.ndarray  # its best estimated Jaccard to an earlier document (0: a root)
    state: np.ndarray  # ROOT, MEMBER or CONFLICT (group mode: matches in both splits)
    split: np.ndarray  # its split (group mode: its root's)


ROOT, MEMBER, CONFLICT = 0, 1, 2


class NearDupState:
    """Index, clusters and signatures of everything indexed so far (see the module docstring)."""

    def __init__(self, bands: int, bins: int, folder: Path) -> None:
        self.index = BandIndex(bands)
        self.clusters = Clusters()
        self.store = SigStore(folder, bins)

    @property
    def nbytes(self) -> int:
        return self.index.nbytes + self.clusters.nbytes

    def judge(self, keys: np.ndarray, sigs: np.ndarray, split: np.ndarray, threshold: float,
              group_mode: bool) -> Verdict:
        """Decide documents (band keys, signatures, splits) in order, each against every
        indexed document and the earlier ones of this batch; changes no state."""
        n, base = len(keys), self.store.n
        qi, ids = self.index.lookup(keys)
        e = estimate(sigs[qi], self.store.sigs(ids))
        ok = e >= threshold
        qi, ids, e_c = qi[ok], ids[ok], e[ok]
        roots_c = self.clusters.find(ids) if len(ids) else ids
        split_c = self.clusters.split(roots_c) if len(ids) else np.zeros(0, bool)
        gi, gj = bucket_pairs(keys, CAP)
        e = estimate(sigs[gi], sigs[gj])
        ok = e >= threshold
        gi, gj, e_g = gi[ok], gj[ok], e[ok]
        v = Verdict(base, np.arange(base, base + n), np.zeros(n), np.zeros(n, np.int8),
                    split.astype(bool).copy())
        rsplit = dict(zip(roots_c.tolist(), split_c.tolist(), strict=True))
        matches: dict[int, list[tuple[int, float]]] = {}
        for row, r, x in zip(qi.tolist(), roots_c.tolist(), e_c.tolist(), strict=True):
            matches.setdefault(row, []).append((r, x))
        for row, j, x in zip(gi.tolist(), gj.tolist(), e_g.tolist(), strict=True):
            matches.setdefault(row, []).append((int(v.root[j]), x))  # an earlier row's root
        for row in sorted(matches):  # in order: an earlier row's root is decided
            found = matches[row]
            roots = {r for r, _ in found}
            into = min(roots)  # the earliest cluster
            v.root[row], v.est[row], v.state[row] = into, max(x for _, x in found), MEMBER
            if group_mode:
                home = rsplit[into] if into < base else bool(v.split[into - base])
                if any((rsplit[r] if r < base else bool(v.split[r - base])) != home
                       for r in roots):
                    v.state[row] = CONFLICT  # near clusters of both splits: dropped
                v.split[row] = home
        return v

    def accept(self, v: Verdict, used: int, keys: np.ndarray, sigs: np.ndarray,
               split: np.ndarray, tasks: list[str], rows: np.ndarray) -> None:
        """Index the first `used` documents of a judged batch, with their final splits and
        their locators (task id, row in its part files)."""
        ids = np.arange(v.base, v.base + used, dtype=np.int64)
        self.store.append(sigs[:used], tasks[:used], rows[:used])
        self.index.add(keys[:used], ids)
        self.clusters.extend(v.root[:used], split[:used])

    def close(self) -> None:
        self.index = BandIndex(0)
        self.store.remove()
