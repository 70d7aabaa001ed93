"""`python -m prep.bench.decontaminate`: the cost of benchmark decontamination in prep.

Input: the standard library's .py files cut into paragraphs (blank-line separated, >= 200
characters): every 10th paragraph is a "benchmark text" (the index; written to a JSONL file),
the others are train documents, a tenth of which quote a benchmark paragraph (so the step
finds hits, as on contaminated data). Figures, CPU time of this process, rounds interleaved:

- the index build at plan time (`BenchmarkIndex.build`: read, tokenize with tiktoken, hash,
  sort, save), and opening it memory-mapped (what each worker does once);
- the worker step, per document: `match_many` in batches of 256 (what `decontaminate_match`
  does), `match` one by one, against tokenizing the same documents with tiktoken (the
  ``tokenize`` step's reference encoder) measured in the same run: the ratio is the figure
  that carries to other machines;
- spurious hits: the share of the train paragraphs that quote no benchmark paragraph but share
  an n-gram with one anyway (code idioms, indentation), at n = 13, 20, 30 and 50, for n-grams of
  content tokens (`shards.ngrams`, whitespace-only tokens skipped) and of all tokens (the
  definition before ``poly64-splitmix-content-v2``), so the two can be compared in one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from prep.bench.inputs import stdlib_documents
from prep.decontaminate import BenchmarkFile, BenchmarkIndex
from prep.decontaminate_steps import BATCH_DOCS
from shards.ngrams import NgramIndex, eot_free, ngrams, window_hashes
from shards.tokenizer import EOT_ID, reference_encoder

SPURIOUS_N = (13, 20, 30, 50)


def paragraphs(limit: int) -> list[str]:
    out = []
    for _, text in stdlib_documents():
        out += [p for p in text.split("\n\n") if len(p) >= 200]
        if len(out) >= limit:
            break
    return out[:limit]


def all_token_ngrams(tokens: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, starts) of the windows of all tokens holding no EOT: the n-grams before
    whitespace-only tokens were skipped."""
    h = window_hashes(tokens, n)
    starts = np.arange(len(h), dtype=np.int64)
    keep = eot_free(starts, np.flatnonzero(tokens == EOT_ID), n)
    return h[keep], starts[keep]


def spurious(bench: list[np.ndarray], train: list[np.ndarray]) -> dict[str, dict[int, float]]:
    """Share of `train` documents (EOT-ended ids) sharing an n-gram with any of `bench`, per
    definition and n."""
    stream = np.concatenate(train)
    starts = np.r_[0, np.cumsum([len(t) for t in train])[:-1]]
    joined = np.concatenate(bench)
    out: dict[str, dict[int, float]] = {}
    for label, fn in (("all_tokens", all_token_ngrams), ("content_tokens", _content_ngrams)):
        out[label] = {}
        for n in SPURIOUS_N:
            index = NgramIndex.build(fn(joined, n)[0], n)
            h, pos = fn(stream, n)
            hit = np.unique(np.searchsorted(starts, pos[index.contains(h)], side="right") - 1)
            out[label][n] = round(len(hit) / len(train), 4)
    return out


def _content_ngrams(tokens: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    return ngrams(tokens, EOT_ID, n)


def measure(docs: int = 40_000, rounds: int = 3) -> dict[str, Any]:
    paras = paragraphs(docs)
    bench = paras[::10]
    train = [p for i, p in enumerate(paras) if i % 10]
    train = [f"{t}\n\n{bench[i % len(bench)]}" if i % 10 == 0 else t for i, t in enumerate(train)]
    enc = reference_encoder()
    out: dict[str, Any] = {"benchmark_texts": len(bench), "train_docs": len(train)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in bench))
        builds, opens = [], []
        for r in range(rounds):
            t0 = time.process_time()
            index = BenchmarkIndex.build([BenchmarkFile(str(path))], encode=enc.encode_ordinary,
                                         cache_dir=Path(tmp) / f"cache{r}")
            builds.append(time.process_time() - t0)
            t0 = time.process_time()
            index = BenchmarkIndex.open(index.path)  # type: ignore[arg-type]
            opens.append(time.process_time() - t0)
        ngrams = sum(s["ngrams"] for s in index.stats)
        bench_tokens = sum(len(enc.encode_ordinary(t)) for t in bench)
        tokens = [enc.encode_document(t) for t in train]
        n_tok = sum(len(t) for t in tokens)
        unplanted = [t for i, t in enumerate(tokens) if i % 10]
        out["spurious_hit_share"] = spurious([enc.encode_document(t) for t in bench], unplanted)
        out["spurious_over_docs"] = len(unplanted)
        rows = []
        for _ in range(rounds):
            row = {}
            t0 = time.process_time()
            for t in train:
                enc.encode_document(t)
            row["tokenize"] = time.process_time() - t0
            t0 = time.process_time()
            hits = []
            for i in range(0, len(tokens), BATCH_DOCS):
                hits += index.match_many(tokens[i:i + BATCH_DOCS])
            row["match_many"] = time.process_time() - t0
            t0 = time.process_time()
            for t in tokens:
                index.match(t)
            row["match"] = time.process_time() - t0
            rows.append(row)
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    out.update({
        "benchmark_tokens": bench_tokens, "index_ngrams": ngrams,
        "index_build_s": round(statistics.median(builds), 3),
        "index_build_tokens_per_s": round(bench_tokens / statistics.median(builds)),
        "index_open_ms": round(1e3 * statistics.median(opens), 2),
        "train_tokens": n_tok, "hits": sum(h is not None for h in hits),
        "us_per_doc": {k: round(1e6 * v / len(train), 2) for k, v in med.items()},
        "docs_per_s": {k: round(len(train) / v) for k, v in med.items()},
        "match_many_vs_tokenize": round(statistics.median(
            r["match_many"] / r["tokenize"] for r in rows), 3),
        "rounds": rounds, "machine": f"{platform.machine()} {platform.processor() or ''}".strip()})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m prep.bench.decontaminate",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=40_000, help="stdlib paragraphs to use")
    p.add_argument("--rounds", type=int, default=3, help="rounds per figure (the median)")
    args = p.parse_args(argv)
    print(json.dumps(measure(args.docs, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
