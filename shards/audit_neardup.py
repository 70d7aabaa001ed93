"""`shards audit`'s near-duplicate check: eval documents with a near-copy in train.

A pair (train document, eval document) is a near-duplicate when the MinHash estimate of the
Jaccard similarity of their word 5-gram shingles is >= the threshold, for a pair whose LSH bands
meet: the test prep's near-dup hook applies (`shards.minhash`), with the parameters the dataset's
manifest recorded for it (``hooks.near_dedup.params``: MinHash parameters, and per domain the
shingle kind and the threshold). A dataset without that record (near-dup off, an older prep) is
checked with the defaults, and the report says so. After prep every count should be 0: near-dup
clusters never straddle the split.

- **Eval side** (:class:`EvalSignatures`): every eval split is streamed (`SplitStream` pieces),
  its documents decoded to their UTF-8 bytes (`audit_text.decode_flat`, vectorised: prep signed
  the same bytes) and signed with its domain's shingle kind: 256 bytes of signature and 112 of
  band keys per eval document, and a band index (`minhash.BandLookup`, 16 bytes per document and
  band) over all domains' eval documents.
- **Train side** (:class:`NearDupScan`): fed the train pieces the audit already streams (one
  chunk in memory), signs each train document with its domain's kind, ~1 MB of text at a time,
  looks its bands up, and verifies candidates by the estimate against the eval document's
  domain's threshold. Pairs are counted per eval domain: with its own domain's train and with
  any domain's (prep clusters across domains too).
- Documents holding a token id outside the vocabulary are never decoded: they are left out (the
  stream reports the damage as a problem), counted as ``damaged_docs``.

Memory: ~0.6 KB per eval document, plus one chunk and one batch of train signatures.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shards.audit_stream import CHUNK_TOKENS, Piece, Problems, SplitStream, doc_records
from shards.audit_text import decode_flat
from shards.minhash import (
    DEFAULT_PARAMS,
    DEFAULT_THRESHOLD,
    BandLookup,
    MinHashParams,
    default_kind,
    estimate,
    signatures,
)
from shards.reader import Dataset

EXAMPLES = 5  # pairs shown per eval domain (the first in train stream order)
BATCH_TOKENS = 1 << 18  # tokens decoded and signed at a time (~1 MB of text)
HOOK = "near_dedup"


@dataclass
class Settings:
    """The near-dup test of a dataset: prep's, as its manifest recorded it, or the defaults."""

    params: MinHashParams
    kinds: dict[str, str]  # domain -> shingle kind
    thresholds: dict[str, float]  # domain -> threshold
    source: str  # "manifest" or "defaults"
    note: str | None = None

    @classmethod
    def of(cls, ds: Dataset) -> Settings:
        rec = ds.manifest.hooks.get(HOOK)
        domains = list(ds.domains)
        if rec is None or "minhash" not in rec.params:
            return cls(DEFAULT_PARAMS, {d: default_kind(d) for d in domains},
                       dict.fromkeys(domains, DEFAULT_THRESHOLD), "defaults",
                       "the manifest records no near-duplicate parameters (prep's near_dedup "
                       f"was off, or an older prep): checked with the defaults (threshold "
                       f"{DEFAULT_THRESHOLD}, shingles by domain name)")
        p = MinHashParams(**rec.params["minhash"])
        per = rec.params.get("domains", {})
        kinds = {d: per.get(d, {}).get("shingle", default_kind(d)) for d in domains}
        thr = {d: float(per.get(d, {}).get("threshold", DEFAULT_THRESHOLD)) for d in domains}
        missing = [d for d in domains if d not in per]
        note = (None if not missing else f"near_dedup was off for {', '.join(missing)}: checked "
                f"with the defaults there (threshold {DEFAULT_THRESHOLD})")
        return cls(p, kinds, thr, "manifest", note)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "note": self.note, "minhash": self.params.to_dict(),
                "domains": {d: {"shingle": self.kinds[d], "threshold": self.thresholds[d]}
                            for d in self.kinds}}


def valid(piece: Piece) -> np.ndarray:
    """Which documents of a piece hold no id outside the vocabulary."""
    ok = np.ones(piece.docs, dtype=bool)
    if len(piece.bad):
        ok[np.searchsorted(piece.bounds, piece.bad, side="right") - 1] = False
    return ok


def documents(piece: Piece, ok: np.ndarray, max_tokens: int | None = None
              ) -> Iterator[tuple[int, list[bytes]]]:
    """The piece's documents' UTF-8 bytes (EOT dropped), decoded a batch of about `max_tokens`
    tokens at a time (memory: ~20 bytes per token of a batch): (index in the piece of the
    batch's first document, its documents). A damaged document (not `ok`) is not decoded: b""
    (no signature)."""
    b = piece.bounds
    max_tokens = max_tokens or BATCH_TOKENS
    k0 = 0
    while k0 < piece.docs:
        k1 = int(np.searchsorted(b, b[k0] + max_tokens, side="right")) - 1
        k1 = min(max(k1, k0 + 1), piece.docs)
        flat, starts = decode_flat(piece.tokens[b[k0]:b[k1]])
        at = np.r_[starts, len(flat)][b[k0:k1 + 1] - b[k0]]  # each bound's byte offset
        data = flat.tobytes()
        yield k0, [data[at[k]:at[k + 1]] if ok[k0 + k] else b"" for k in range(k1 - k0)]
        k0 = k1


@dataclass
class EvalSignatures:
    """Every domain's eval documents' signatures and band index (see the module docstring)."""

    settings: Settings
    domains: list[str]
    domain: np.ndarray  # eval row -> domain index
    doc: np.ndarray  # eval row -> document ordinal in its split
    sig: np.ndarray  # (rows, bins) uint16
    lookup: BandLookup
    thresholds: np.ndarray  # per eval row
    eval_docs: dict[str, int] = field(default_factory=dict)
    damaged: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, ds: Dataset, settings: Settings, problems: Problems,
              chunk_tokens: int = CHUNK_TOKENS) -> EvalSignatures:
        domains = list(ds.domains)
        dom, doc, sigs, bands = [], [], [], []
        eval_docs, damaged = {}, {}
        p = settings.params
        for i, d in enumerate(domains):
            eval_docs[d] = damaged[d] = 0
            if (d, "eval") not in ds:
                continue
            for piece in SplitStream(ds.split(d, "eval"), problems, chunk_tokens).pieces():
                ok = valid(piece)
                eval_docs[d] += piece.docs
                damaged[d] += int((~ok).sum())
                for at, batch in documents(piece, ok):
                    s = signatures(batch, settings.kinds[d], p)
                    keep = np.flatnonzero(s.signed & ok[at:at + len(batch)])
                    sigs.append(s.sig[keep])
                    bands.append(s.bands[keep])
                    doc.append(piece.first_doc + at + keep)
                    dom.append(np.full(len(keep), i, dtype=np.int32))
        domain = _cat(dom, (0,), np.int32)
        band = _cat(bands, (0, p.bands), np.uint64)
        thr = np.array([settings.thresholds[d] for d in domains])[domain]
        return cls(settings, domains, domain, _cat(doc, (0,), np.int64),
                   _cat(sigs, (0, p.bins), np.uint16), BandLookup(band), thr, eval_docs, damaged)


def _cat(parts: list[np.ndarray], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(shape, dtype)


class NearDupScan:
    """One train split's near-duplicate pairs with every eval split, fed piece by piece."""

    def __init__(self, figures: NearDupFigures, domain: str) -> None:
        self.out = figures
        self.ev = figures.ev
        self.domain = domain
        self.own = self.ev.domains.index(domain)
        self.kind = self.ev.settings.kinds[domain]

    def feed(self, piece: Piece) -> None:
        ev, out = self.ev, self.out
        ok = valid(piece)
        out.train_damaged[self.domain] = out.train_damaged.get(self.domain, 0) + int(
            (~ok).sum())
        if not len(ev.domain):  # no eval document to pair with
            return
        for at, batch in documents(piece, ok):
            s = signatures(batch, self.kind, ev.settings.params)
            i, j = ev.lookup.query(s.bands)
            est = estimate(s.sig[i], ev.sig[j])
            hit = est >= ev.thresholds[j]
            out.add(self.own, piece.first_doc + at + i[hit], j[hit], est[hit])


class NearDupFigures:
    """Pairs found so far, per eval document: with its own domain's train, with any train."""

    def __init__(self, ev: EvalSignatures) -> None:
        self.ev = ev
        n, k = len(ev.domain), len(ev.domains)
        self.own = np.zeros(n, dtype=bool)
        self.any = np.zeros(n, dtype=bool)
        self.pairs = np.zeros((k, 2), dtype=np.int64)  # per eval domain: own, any
        self.examples: list[list[tuple[int, int, int, float]]] = [[] for _ in range(k)]
        self.train_damaged: dict[str, int] = {}

    def add(self, train_domain: int, train_docs: np.ndarray, rows: np.ndarray,
            est: np.ndarray) -> None:
        d = self.ev.domain[rows]
        own = d == train_domain
        np.add.at(self.pairs[:, 0], d[own], 1)
        np.add.at(self.pairs[:, 1], d, 1)
        self.own[rows[own]] = True
        self.any[rows] = True
        for t, r, e in zip(train_docs.tolist(), rows.tolist(), est.tolist(), strict=True):
            ex = self.examples[int(self.ev.domain[r])]
            if len(ex) < EXAMPLES:
                ex.append((train_domain, t, r, e))

    def result(self, ds: Dataset) -> dict[str, dict[str, Any]]:
        ev = self.ev
        wanted: dict[tuple[str, str], set[int]] = {}
        for ex in self.examples:
            for t_dom, t, r, _ in ex:
                wanted.setdefault((ev.domains[t_dom], "train"), set()).add(t)
                wanted.setdefault((ev.domains[int(ev.domain[r])], "eval"), set()).add(
                    int(ev.doc[r]))
        recs = {k: doc_records(ds.split(*k), v) for k, v in wanted.items()}

        def side(domain: str, split: str, k: int) -> dict[str, Any]:
            return {"domain": domain, "doc": k,
                    "source": recs[domain, split].get(k, {}).get("source") or {}}

        out = {}
        for i, d in enumerate(ev.domains):
            mine = ev.domain == i
            out[d] = {
                "threshold": ev.settings.thresholds[d], "shingle": ev.settings.kinds[d],
                "eval_docs": ev.eval_docs[d], "eval_docs_signed": int(mine.sum()),
                "pairs": int(self.pairs[i, 0]), "eval_docs_with_pair": int(self.own[mine].sum()),
                "pairs_any_train": int(self.pairs[i, 1]),
                "eval_docs_with_pair_any_train": int(self.any[mine].sum()),
                "damaged_docs": ev.damaged[d] + self.train_damaged.get(d, 0),
                "examples": [{"jaccard": round(e, 4),
                              "train": side(ev.domains[t_dom], "train", t),
                              "eval": side(d, "eval", int(ev.doc[r]))}
                             for t_dom, t, r, e in self.examples[i]]}
        return out
