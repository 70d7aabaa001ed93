"""`python -m shards audit DIR [--json]`: can this data invalidate an experiment?

Three questions, answered per domain from the tokens and the document index:

- contamination: how many eval documents share a 13-token n-gram with train (the domain's own
  train split, and all domains' train splits together), and what share of eval tokens such
  n-grams cover. Exact: every EOT-free 13-gram inside a document is hashed (tabulation hashing
  to 64 bits; a false match has probability ~1e-7 at 10 MB/domain), none is sampled.
- diversity (train split): distinct sources and the share of the 10 largest, where the
  provenance names a source (CodeParrot's ``repo_name``, a file, an article title, ...);
  the document-length distribution.
- format artifacts (train split) that a router could key on instead of content: leading or
  trailing whitespace, invisible Unicode characters, carriage returns and other control
  characters, the distribution of first characters and first tokens, repeated 20-character
  prefixes.
"""

from __future__ import annotations

import argparse
import json
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import shards
from shards.console import Out
from shards.reader import Dataset, Split, _gpt2

NGRAM = 13
PREFIX_CHARS = 20
TOP = 10
HASH_SEED = 13
# Provenance keys that name where a document came from (not "file"/"id": the input file
# or the row), most specific first.
SOURCE_KEYS = ("repo_name", "repo", "title", "path", "url", "topic")
INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb]")
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0/C1 but \t \n \r


# --------------------------------------------------------------------------- contamination


def _tables(n: int, seed: int) -> np.ndarray:
    """Random 64-bit words, one table per window position: tabulation hashing."""
    rng = np.random.default_rng(seed)
    return np.frombuffer(rng.bytes(n * 65536 * 8), dtype=np.uint64).reshape(n, 65536)


def ngram_hashes(stream: np.ndarray, eot_id: int, n: int = NGRAM,
                 seed: int = HASH_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, starts) of every n-token window of `stream` that contains no EOT.

    Documents end with EOT, so an EOT-free window lies inside one document.
    """
    count = len(stream) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    tables = _tables(n, seed)
    h = tables[0][stream[:count]]
    for i in range(1, n):
        h ^= tables[i][stream[i:i + count]]
    eots = np.concatenate([[0], np.cumsum(stream == eot_id, dtype=np.int64)])
    valid = np.flatnonzero(eots[n:] == eots[:count])
    return h[valid], valid


def sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy 2's hash-based np.unique is ~10x slower on 64-bit hashes)."""
    x = np.sort(x)
    keep = np.ones(len(x), dtype=bool)
    keep[1:] = x[1:] != x[:-1]
    return x[keep]


@dataclass
class Overlap:
    docs_with_overlap: int
    doc_share: float  # of eval documents
    tokens_covered: int
    token_share: float  # of eval tokens (EOT excluded)
    worst: list[dict[str, Any]] = field(default_factory=list)  # most covered eval documents


def overlap(eval_split: Split, train_set: np.ndarray, n: int = NGRAM) -> Overlap:
    """Eval documents sharing an n-gram with `train_set` (sorted unique hashes)."""
    stream = np.asarray(eval_split.stream())
    eot = eval_split.dataset.eot_id
    hashes, starts = ngram_hashes(stream, eot, n)
    ndocs = eval_split.num_docs
    text_tokens = int(len(stream) - np.count_nonzero(stream == eot))
    if not len(hashes) or not len(train_set):
        return Overlap(0, 0.0, 0, 0.0)
    pos = np.minimum(np.searchsorted(train_set, hashes), len(train_set) - 1)
    hit = starts[train_set[pos] == hashes]
    doc_starts = eval_split.doc_starts
    docs = sorted_unique(np.searchsorted(doc_starts, hit, side="right") - 1)
    diff = (np.bincount(hit, minlength=len(stream) + n)
            - np.bincount(hit + n, minlength=len(stream) + n))
    covered = np.cumsum(diff[:len(stream)]) > 0
    per_doc = np.add.reduceat(covered.astype(np.int64), doc_starts) if ndocs else np.zeros(0, np.int64)
    lengths = np.array([d.tokens - 1 for d in eval_split.documents()], dtype=np.int64)
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
            hashes, _ = ngram_hashes(np.asarray(ds.split(d, "train").stream()), ds.eot_id)
            train_sets[d] = sorted_unique(hashes)
    everything = sorted_unique(np.concatenate(list(train_sets.values()) or [np.zeros(0, np.uint64)]))
    out = {}
    for d in ds.domains:
        if (d, "eval") not in ds:
            continue
        ev = ds.split(d, "eval")
        own = overlap(ev, train_sets.get(d, np.zeros(0, np.uint64)))
        anyd = overlap(ev, everything)
        out[d] = {"eval_docs": ev.num_docs, "own_train": asdict(own), "all_train": asdict(anyd)}
    return out


# --------------------------------------------------------------------------- diversity


def source_key(sources: list[dict[str, Any]]) -> str | None:
    """The first of SOURCE_KEYS that at least 90% of documents' provenance has."""
    for key in SOURCE_KEYS:
        have = sum(1 for s in sources if s.get(key) not in (None, ""))
        if sources and have >= 0.9 * len(sources):
            return key
    return None


def _percentiles(x: np.ndarray) -> dict[str, float]:
    if not len(x):
        return {}
    p = np.percentile(x, [10, 50, 90, 99])
    return {"min": int(x.min()), "p10": float(p[0]), "p50": float(p[1]), "p90": float(p[2]),
            "p99": float(p[3]), "max": int(x.max()), "mean": float(x.mean())}


def diversity(split: Split) -> dict[str, Any]:
    docs = split.documents()
    sources = [d.source for d in docs]
    key = source_key(sources)
    out: dict[str, Any] = {"docs": len(docs), "source_key": key}
    if key is not None:
        counts = Counter(str(s.get(key)) for s in sources)
        top = counts.most_common(TOP)
        out |= {"distinct_sources": len(counts),
                "top1_share": top[0][1] / len(docs),
                "top10_share": sum(c for _, c in top) / len(docs),
                "top_sources": [{"source": k, "docs": c} for k, c in top]}
    else:
        out |= {"distinct_sources": None, "top1_share": None, "top10_share": None,
                "top_sources": []}
    out["length_tokens"] = _percentiles(np.array([d.tokens for d in docs], dtype=np.int64))
    out["length_chars"] = _percentiles(np.array([d.chars for d in docs], dtype=np.int64))
    return out


# --------------------------------------------------------------------------- artifacts


def _show(s: str) -> str:
    """`s` with non-printable characters (newlines, invisible ones) escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in s)


def artifacts(split: Split) -> dict[str, Any]:
    """Surface features of the documents' text that differ by domain regardless of content."""
    enc = _gpt2()
    stream = np.asarray(split.stream())
    docs = split.documents()
    n = len(docs)
    starts = split.doc_starts
    lead = trail = invis = cr = ctrl = 0
    invisible_chars: Counter[str] = Counter()
    first_chars: Counter[str] = Counter()
    prefixes: Counter[str] = Counter()
    for k, d in enumerate(docs):
        b = int(starts[k])
        text = enc.decode_bytes(stream[b:b + d.tokens - 1].tolist()).decode("utf-8", "replace")
        lead += text[:1].isspace()
        trail += text[-1:].isspace()
        found = INVISIBLE.findall(text)
        if found:
            invis += 1
            invisible_chars.update(found)
        cr += "\r" in text
        ctrl += CONTROL.search(text) is not None
        first_chars[text[:1]] += 1
        if len(text) >= PREFIX_CHARS:
            prefixes[text[:PREFIX_CHARS]] += 1
    first_ids = Counter(stream[starts].tolist()) if n else Counter()
    repeated = [(p, c) for p, c in prefixes.most_common(TOP) if c > 1]
    share = (lambda c: c / n) if n else (lambda c: 0.0)
    return {
        "docs": n,
        "leading_whitespace": share(lead),
        "trailing_whitespace": share(trail),
        "invisible_chars": share(invis),
        "invisible_char_counts": {f"U+{ord(c):04X} {unicodedata.name(c, '?')}": v
                                  for c, v in invisible_chars.most_common()},
        "carriage_returns": share(cr),
        "control_chars": share(ctrl),
        "first_chars": [{"char": _show(c), "share": share(v)}
                        for c, v in first_chars.most_common(TOP)],
        "first_tokens": [{"id": int(t), "text": _show(enc.decode_bytes([t]).decode("utf-8",
                                                                              "replace")),
                          "share": share(v)} for t, v in first_ids.most_common(TOP)],
        "repeated_prefix_share": share(sum(c for c in prefixes.values() if c > 1)),
        "repeated_prefixes": [{"prefix": _show(p), "docs": c} for p, c in repeated],
    }


# --------------------------------------------------------------------------- report


def audit(ds: Dataset) -> dict[str, Any]:
    """The whole report as plain data (the `--json` output)."""
    cont = contamination(ds)
    report: dict[str, Any] = {"root": str(ds.root), "ngram": NGRAM, "domains": {}}
    for d in ds.domains:
        entry: dict[str, Any] = {"contamination": cont.get(d)}
        if (d, "train") in ds:
            train = ds.split(d, "train")
            entry["diversity"] = diversity(train)
            entry["artifacts"] = artifacts(train)
        report["domains"][d] = entry
    return report


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _tops(items: list[dict[str, Any]], key: str, k: int = 3) -> str:
    return ", ".join(f"'{it[key]}' {100 * it['share']:.0f}%" for it in items[:k])


def show(report: dict[str, Any], out: Out) -> None:
    doms = list(report["domains"])
    get = report["domains"].get
    n = report["ngram"]

    def row(label: str, fn: Any) -> list[str]:
        cells = []
        for d in doms:
            try:
                cells.append(fn(get(d)))
            except (KeyError, TypeError, IndexError):
                cells.append("n/a")
        return [label, *cells]

    c = lambda e: e["contamination"]  # noqa: E731
    out.table(f"contamination: eval vs train, exact {n}-grams", ["figure", *doms], [
        row("eval documents", lambda e: f"{c(e)['eval_docs']:,}"),
        row(f"eval docs sharing a {n}-gram with own train",
            lambda e: _pct(c(e)["own_train"]["doc_share"])),
        row("eval tokens covered by own-train n-grams",
            lambda e: _pct(c(e)["own_train"]["token_share"])),
        row(f"eval docs sharing a {n}-gram with any train",
            lambda e: _pct(c(e)["all_train"]["doc_share"])),
        row("eval tokens covered by any-train n-grams",
            lambda e: _pct(c(e)["all_train"]["token_share"])),
    ])
    v = lambda e: e["diversity"]  # noqa: E731
    lt = lambda e: v(e)["length_tokens"]  # noqa: E731
    out.table("diversity (train)", ["figure", *doms], [
        row("documents", lambda e: f"{v(e)['docs']:,}"),
        row("source field", lambda e: v(e)["source_key"] or "n/a"),
        row("distinct sources", lambda e: "n/a" if v(e)["distinct_sources"] is None
            else f"{v(e)['distinct_sources']:,}"),
        row("share of top source", lambda e: _pct(v(e)["top1_share"])),
        row("share of top 10 sources", lambda e: _pct(v(e)["top10_share"])),
        row("top source", lambda e: v(e)["top_sources"][0]["source"]),
        row("tokens/doc p10 | p50 | p90", lambda e: f"{lt(e)['p10']:.0f} | {lt(e)['p50']:.0f} | "
            f"{lt(e)['p90']:.0f}"),
        row("tokens/doc p99 | max", lambda e: f"{lt(e)['p99']:.0f} | {lt(e)['max']}"),
        row("tokens/doc mean", lambda e: f"{lt(e)['mean']:.1f}"),
    ])
    a = lambda e: e["artifacts"]  # noqa: E731
    out.table("format artifacts (train)", ["figure", *doms], [
        row("docs with leading whitespace", lambda e: _pct(a(e)["leading_whitespace"])),
        row("docs with trailing whitespace", lambda e: _pct(a(e)["trailing_whitespace"])),
        row("docs with invisible characters", lambda e: _pct(a(e)["invisible_chars"])),
        row("docs with carriage returns", lambda e: _pct(a(e)["carriage_returns"])),
        row("docs with other control characters", lambda e: _pct(a(e)["control_chars"])),
        row("top first characters", lambda e: _tops(a(e)["first_chars"], "char")),
        row("top first tokens", lambda e: _tops(a(e)["first_tokens"], "text")),
        row(f"docs sharing their {PREFIX_CHARS}-char prefix",
            lambda e: _pct(a(e)["repeated_prefix_share"])),
        row("most repeated prefix", lambda e: "none" if not a(e)["repeated_prefixes"] else
            f"'{a(e)['repeated_prefixes'][0]['prefix']}' x{a(e)['repeated_prefixes'][0]['docs']}"),
    ])


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="dataset directory (or its manifest.json)")
    p.add_argument("--json", action="store_true",
                   help="print the whole report as JSON (top sources, prefixes, invisible "
                   "characters by code point, most contaminated eval documents)")


def run(args: argparse.Namespace) -> int:
    report = audit(shards.open(args.dir))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        show(report, Out())
    return 0
