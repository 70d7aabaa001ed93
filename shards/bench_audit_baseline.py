"""The audit before streaming (main at 358b276), kept only as the benchmark's baseline.

It indexed the train side: every train n-gram hashed (tabulation hashing, 13 tables), the
domain's and all domains' sorted unique hashes held in memory (~34 bytes per train token at
peak), each split read whole (`Split.stream()`, a copy when it has several shards) and every
train document decoded for the artifacts. `python -m shards.bench --audit` times it beside
`shards.audit` on the same dataset; nothing else may use it. Its n-grams follow the current
definition (windows of content tokens, `shards.ngrams.content`: one more pass over each split)
so that the bench can check both give the same figures.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shards.audit_text import CONTROL, INVISIBLE, PREFIX_CHARS, SOURCE_KEYS, TOP, _show
from shards.ngrams import content
from shards.reader import Dataset, Split, _gpt2

NGRAM = 13
HASH_SEED = 13


def _tables(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.frombuffer(rng.bytes(n * 65536 * 8), dtype=np.uint64).reshape(n, 65536)


def ngram_hashes(stream: np.ndarray, eot_id: int, n: int = NGRAM) -> tuple[np.ndarray, np.ndarray]:
    count = len(stream) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    tables = _tables(n, HASH_SEED)
    h = tables[0][stream[:count]]
    for i in range(1, n):
        h ^= tables[i][stream[i:i + count]]
    eots = np.concatenate([[0], np.cumsum(stream == eot_id, dtype=np.int64)])
    valid = np.flatnonzero(eots[n:] == eots[:count])
    return h[valid], valid


def sorted_unique(x: np.ndarray) -> np.ndarray:
    x = np.sort(x)
    keep = np.ones(len(x), dtype=bool)
    keep[1:] = x[1:] != x[:-1]
    return x[keep]


@dataclass
class Overlap:
    docs_with_overlap: int
    doc_share: float
    tokens_covered: int
    token_share: float
    worst: list[dict[str, Any]] = field(default_factory=list)


def content_stream(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """The split's content tokens and the start of each document in them."""
    stream = content(np.asarray(split.stream()))
    ends = np.flatnonzero(stream == split.dataset.eot_id) + 1
    return stream, np.r_[0, ends[:-1]].astype(np.int64)


def overlap(eval_split: Split, train_set: np.ndarray, n: int = NGRAM) -> Overlap:
    stream, doc_starts = content_stream(eval_split)
    eot = eval_split.dataset.eot_id
    hashes, starts = ngram_hashes(stream, eot, n)
    ndocs = eval_split.num_docs
    text_tokens = int(len(stream) - np.count_nonzero(stream == eot))
    if not len(hashes) or not len(train_set):
        return Overlap(0, 0.0, 0, 0.0)
    pos = np.minimum(np.searchsorted(train_set, hashes), len(train_set) - 1)
    hit = starts[train_set[pos] == hashes]
    docs = sorted_unique(np.searchsorted(doc_starts, hit, side="right") - 1)
    diff = (np.bincount(hit, minlength=len(stream) + n)
            - np.bincount(hit + n, minlength=len(stream) + n))
    covered = np.cumsum(diff[:len(stream)]) > 0
    per_doc = np.add.reduceat(covered.astype(np.int64), doc_starts) if ndocs else np.zeros(0)
    lengths = np.diff(np.r_[doc_starts, len(stream)]) - 1
    frac = per_doc / np.maximum(lengths, 1)
    worst = [{"index": int(k), "covered": round(float(frac[k]), 4),
              "source": eval_split.document(int(k)).source}
             for k in np.argsort(-frac, kind="stable")[:5] if frac[k] > 0]
    n_cov = int(covered.sum())
    return Overlap(len(docs), len(docs) / ndocs if ndocs else 0.0, n_cov,
                   n_cov / text_tokens if text_tokens else 0.0, worst)


def contamination(ds: Dataset) -> dict[str, dict[str, Any]]:
    train_sets = {}
    for d in ds.domains:
        if (d, "train") in ds:
            hashes, _ = ngram_hashes(content_stream(ds.split(d, "train"))[0], ds.eot_id)
            train_sets[d] = sorted_unique(hashes)
    everything = sorted_unique(np.concatenate(list(train_sets.values())
                                              or [np.zeros(0, np.uint64)]))
    out = {}
    for d in ds.domains:
        if (d, "eval") in ds:
            ev = ds.split(d, "eval")
            out[d] = {"eval_docs": ev.num_docs,
                      "own_train": asdict(overlap(ev, train_sets.get(d, np.zeros(0, np.uint64)))),
                      "all_train": asdict(overlap(ev, everything))}
    return out


def diversity(split: Split) -> dict[str, Any]:
    docs = split.documents()
    sources = [d.source for d in docs]
    key = next((k for k in SOURCE_KEYS if sources and sum(
        1 for s in sources if s.get(k) not in (None, "")) >= 0.9 * len(sources)), None)
    out: dict[str, Any] = {"docs": len(docs), "source_key": key}
    if key is not None:
        top = Counter(str(s.get(key)) for s in sources).most_common(TOP)
        out["top_sources"] = [{"source": k, "docs": c} for k, c in top]
    lengths = np.array([d.tokens for d in docs], dtype=np.int64)
    out["length_tokens_p50"] = float(np.percentile(lengths, 50)) if len(lengths) else None
    return out


def artifacts(split: Split) -> dict[str, Any]:
    enc = _gpt2()
    stream = np.asarray(split.stream())
    docs = split.documents()
    starts = split.doc_starts
    counts: Counter[str] = Counter()
    invisible: Counter[str] = Counter()
    first: Counter[str] = Counter()
    prefixes: Counter[str] = Counter()
    for k, d in enumerate(docs):
        b = int(starts[k])
        text = enc.decode_bytes(stream[b:b + d.tokens - 1].tolist()).decode("utf-8", "replace")
        counts["lead"] += text[:1].isspace()
        counts["trail"] += text[-1:].isspace()
        found = INVISIBLE.findall(text)
        counts["invis"] += bool(found)
        invisible.update(found)
        counts["cr"] += "\r" in text
        counts["ctrl"] += CONTROL.search(text) is not None
        first[text[:1]] += 1
        if len(text) >= PREFIX_CHARS:
            prefixes[text[:PREFIX_CHARS]] += 1
    return {"docs": len(docs), **counts,
            "invisible": {f"U+{ord(c):04X} {unicodedata.name(c, '?')}": v
                          for c, v in invisible.most_common()},
            "first_chars": [_show(c) for c, _ in first.most_common(TOP)],
            "first_tokens": Counter(stream[starts].tolist()).most_common(TOP),
            "repeated_prefix_docs": sum(c for c in prefixes.values() if c > 1)}


def audit(ds: Dataset, checks: tuple[str, ...] = ("contamination", "diversity",
                                                  "artifacts")) -> dict[str, Any]:
    report: dict[str, Any] = {"domains": {d: {} for d in ds.domains}}
    if "contamination" in checks:
        for d, c in contamination(ds).items():
            report["domains"][d]["contamination"] = c
    for d in ds.domains:
        if (d, "train") in ds:
            if "diversity" in checks:
                report["domains"][d]["diversity"] = diversity(ds.split(d, "train"))
            if "artifacts" in checks:
                report["domains"][d]["artifacts"] = artifacts(ds.split(d, "train"))
    return report
