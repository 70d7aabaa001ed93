"""`shards audit`'s contamination check: which eval documents share an n-gram with train.

Only the eval side is indexed (`shards.ngrams.NgramIndex`: 8 bytes per distinct eval n-gram,
a 2-byte Bloom filter and a ~1-byte directory), plus one byte per distinct eval n-gram and
train domain group of 8 recording which train domains it was found in. Train streams through in
chunks, once per domain, and costs per token a few vectorised passes: hash, Bloom filter, and an
exact lookup of the ~0.5% that pass it. Then the eval side is read again and every eval n-gram
looked up, which gives, per eval document, the exact figures below. Memory is O(eval tokens)
plus one chunk; time is linear in train + eval tokens.

Definitions. An n-gram is n consecutive content tokens inside one document, no EOT
(`shards.ngrams`: the whitespace-only GPT-2 tokens are left out first, so indentation neither
makes nor breaks a match). Token counts below are content tokens too, so every figure is over
the same sequence the n-grams are windows of:

- eval docs sharing an n-gram with own / any train: eval documents with at least one n-gram
  that also occurs in that domain's train split / in any domain's train split.
- tokens covered: eval content tokens (EOT excluded) inside at least one such shared n-gram;
  the share is of all eval content tokens.
- longest shared run: the longest stretch of consecutive eval content tokens, inside one
  document, every n-gram of which occurs in train (r consecutive shared n-grams make a run of
  r + n - 1 content tokens). It bounds the longest passage the eval text shares with train up
  to whitespace from above, and equals it when that passage was copied whole.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shards.audit_stream import Piece, Problems, SplitStream, doc_records
from shards.format import FormatError
from shards.ngrams import NGRAM, NgramIndex, content, eot_free, iter_window_hashes
from shards.reader import Dataset, Split

WORST = 5  # most covered eval documents listed per domain


def _valid(tokens: np.ndarray, eot: int, off: int, count: int, n: int) -> np.ndarray:
    """Which of windows off..off+count of `tokens` hold no EOT."""
    e = np.zeros(count + n, dtype=np.int32)
    np.cumsum(tokens[off:off + count + n - 1] == eot, out=e[1:])
    return e[n:] == e[:count]


@dataclass
class Content:
    """The content tokens of a piece (`shards.ngrams.content`: what n-grams are windows of):
    tokens[bounds[k]:bounds[k+1]] is the piece's document k, EOT included."""

    tokens: np.ndarray
    bounds: np.ndarray  # int64, documents + 1 entries, as `Piece.bounds`
    eots: np.ndarray  # int64 positions of EOT in tokens: each ends documents 0, 1, ...

    @classmethod
    def of(cls, piece: Piece, eot: int) -> Content:
        c = content(piece.tokens)
        eots = piece.eots if c is piece.tokens else np.flatnonzero(c == eot)
        # EOT is content, so the piece's first len(eots) documents end at its EOTs here too; a
        # last document without EOT (a damaged stream's tail) ends with the piece
        tail = [len(c)] if piece.docs > len(eots) else []
        return cls(c, np.r_[0, eots + 1, tail].astype(np.int64), eots)

    @property
    def lengths(self) -> np.ndarray:
        """Content tokens per document, EOT excluded."""
        out = np.diff(self.bounds)
        out[:len(self.eots)] -= 1
        return out


def eval_hashes(piece: Content, eot: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, window starts in `piece.tokens`) of every n-gram in an eval piece."""
    hs, ss = [], []
    for off, h in iter_window_hashes(piece.tokens, n):
        ok = _valid(piece.tokens, eot, off, len(h), n)
        hs.append(h[ok])
        ss.append(np.flatnonzero(ok) + off)
    if not hs:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    return np.concatenate(hs), np.concatenate(ss)


@dataclass
class EvalIndex:
    """The eval n-grams of every domain, and in which train domains each was found."""

    index: NgramIndex
    train_domains: list[str]
    found: np.ndarray  # uint8 (rows, hashes): bit d % 8 of row d // 8 is train domain d

    @classmethod
    def build(cls, ds: Dataset, problems: Problems, n: int = NGRAM,
              chunk_tokens: int | None = None) -> EvalIndex:
        evals = [ds.split(d, "eval") for d in ds.domains if (d, "eval") in ds]
        buf = np.empty(sum(s.num_tokens for s in evals), dtype=np.uint64)  # the only O(eval)
        fill = 0
        for sp in evals:
            for piece in _stream(sp, problems, chunk_tokens).pieces():
                h, _ = eval_hashes(Content.of(piece, ds.eot_id), ds.eot_id, n)
                buf[fill:fill + len(h)] = h
                fill += len(h)
        buf.resize((fill,), refcheck=False)
        index = NgramIndex.build(buf, n, in_place=True)
        train = [d for d in ds.domains if (d, "train") in ds]
        return cls(index, train, np.zeros(((len(train) + 7) // 8, len(index)), dtype=np.uint8))

    @property
    def nbytes(self) -> int:
        return self.index.nbytes + self.found.nbytes


class TrainScan:
    """Streams one train domain's pieces against the eval index (`feed`), marking what it finds.

    Exact lookups go through a small direct-mapped cache (hash -> position, 64K entries): when
    train repeats eval n-grams (templates, licence headers), most hits are repeats and skip the
    index's bucket walk.
    """

    CACHE = 1 << 16

    def __init__(self, ev: EvalIndex, domain: str, eot: int) -> None:
        d = ev.train_domains.index(domain)
        self.row = ev.found[d // 8]
        self.bit = np.uint8(1 << (d % 8))
        self.index = ev.index
        self.n = ev.index.n
        self.eot = eot
        self.candidates = 0  # windows the Bloom filter let through
        self.hits = 0  # train n-grams found in eval (with repeats)
        # empty slot s holds s ^ 1: its low bits are not s, so no hash of that slot equals it
        self._keys = np.arange(self.CACHE, dtype=np.uint64) ^ np.uint64(1)
        self._pos = np.zeros(self.CACHE, dtype=np.int64)

    def _find(self, h: np.ndarray) -> np.ndarray:
        slot = (h & np.uint64(self.CACHE - 1)).view(np.int64)
        known = self._keys[slot] == h
        out = np.where(known, self._pos[slot], np.int64(-1))
        miss = np.flatnonzero(~known)
        if len(miss):
            pos = self.index.find(h[miss])
            out[miss] = pos
            found = miss[pos >= 0]
            self._keys[slot[found]] = h[found]
            self._pos[slot[found]] = pos[pos >= 0]
        return out

    def feed(self, piece: Piece) -> None:
        if not len(self.index):
            return
        c = content(piece.tokens)
        eots = piece.eots if c is piece.tokens else np.flatnonzero(c == self.eot)
        for off, h in iter_window_hashes(c, self.n):
            cand = np.flatnonzero(self.index.maybe(h))
            if not len(cand):
                continue
            self.candidates += len(cand)
            cand = cand[eot_free(cand + off, eots, self.n)]
            pos = self._find(h[cand])
            pos = pos[pos >= 0]
            self.hits += len(pos)
            self.row[pos] |= self.bit


@dataclass
class Overlap:
    docs_with_overlap: int
    doc_share: float  # of eval documents
    tokens_covered: int
    token_share: float  # of eval content tokens (EOT excluded)
    longest_run: dict[str, int] = field(default_factory=dict)  # {"tokens", "eval_doc"}
    worst: list[dict[str, Any]] = field(default_factory=list)  # most covered eval documents


def _per_doc(piece: Content, starts: np.ndarray, shared: np.ndarray,
             n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per document of `piece`: shared n-grams, covered tokens, longest run (content tokens)."""
    size = len(piece.tokens)
    hit = starts[shared]  # distinct, increasing
    diff = np.zeros(size + n, dtype=np.int32)
    if len(hit):
        diff += np.bincount(hit, minlength=size + n).astype(np.int32)
        diff[hit + n] -= 1
    covered = np.cumsum(diff[:size]) > 0
    cs = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(covered, out=cs[1:])
    b = piece.bounds
    covered_per_doc = cs[b[1:]] - cs[b[:-1]]
    doc_of_hit = np.searchsorted(b, hit, side="right") - 1
    docs = len(b) - 1
    shared_per_doc = np.bincount(doc_of_hit, minlength=docs)
    run = np.zeros(docs, dtype=np.int64)
    if len(hit):  # runs of consecutive shared window starts
        brk = np.flatnonzero(np.diff(hit) != 1)
        first = np.r_[0, brk + 1]
        last = np.r_[brk, len(hit) - 1]
        np.maximum.at(run, doc_of_hit[first], hit[last] - hit[first] + n)
    return shared_per_doc, covered_per_doc, run


def overlap_figures(ev: EvalIndex, split: Split, problems: Problems,
                    chunk_tokens: int | None = None) -> dict[str, Any]:
    """Contamination of one eval split against its own domain's train and against any train."""
    n = ev.index.n
    eot = split.dataset.eot_id
    own = (ev.train_domains.index(split.domain) if split.domain in ev.train_domains else None)
    per: dict[str, list[list[np.ndarray]]] = {"own": [[], [], []], "all": [[], [], []]}
    lengths = []
    stream = _stream(split, problems, chunk_tokens)
    for raw in stream.pieces():
        piece = Content.of(raw, eot)
        h, starts = eval_hashes(piece, eot, n)
        pos = ev.index.find(h) if len(h) else np.zeros(0, np.int64)
        if (pos < 0).any():  # the index holds every eval n-gram; a miss means changed files
            raise FormatError(f"{split.dataset.root}: {split.domain}/eval changed while it was "
                              "audited; run the audit again")
        flags = ev.found[:, pos]
        shared_all = flags.any(axis=0) if len(flags) else np.zeros(len(pos), dtype=bool)
        shared_own = (flags[own // 8] & (1 << (own % 8))) != 0 if own is not None else \
            np.zeros(len(pos), dtype=bool)
        for key, shared in (("own", shared_own), ("all", shared_all)):
            for acc, arr in zip(per[key], _per_doc(piece, starts, shared, n), strict=True):
                acc.append(arr)
        lengths.append(piece.lengths)
    docs = stream.docs
    text_tokens = int(sum(int(x.sum()) for x in lengths))
    length = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    out = {}
    for key in ("own", "all"):
        shared, covered, run = (np.concatenate(a) if a else np.zeros(0, np.int64)
                                for a in per[key])
        hit_docs = int(np.count_nonzero(shared))
        cov = int(covered.sum())
        longest = {"tokens": 0, "eval_doc": None}
        if len(run) and run.max() > 0:
            k = int(np.argmax(run))
            longest = {"tokens": int(run[k]), "eval_doc": k}
        frac = covered / np.maximum(length, 1)
        worst = [int(k) for k in np.argsort(-frac, kind="stable")[:WORST] if frac[k] > 0]
        out[key] = Overlap(hit_docs, hit_docs / docs if docs else 0.0, cov,
                           cov / text_tokens if text_tokens else 0.0, longest,
                           [{"index": k, "covered": round(float(frac[k]), 4)} for k in worst])
    wanted = {w["index"] for o in out.values() for w in o.worst}
    records = doc_records(split, wanted) if wanted else {}
    for o in out.values():
        for w in o.worst:
            w["source"] = dict(records.get(w["index"], {}).get("source") or {})
    return {"eval_docs": docs, "own_train": asdict(out["own"]), "all_train": asdict(out["all"])}


def _stream(split: Split, problems: Problems, chunk_tokens: int | None) -> SplitStream:
    return SplitStream(split, problems) if chunk_tokens is None else \
        SplitStream(split, problems, chunk_tokens)
