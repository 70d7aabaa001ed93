"""`python -m shards audit DIR [--json]`: can this data invalidate an experiment?

Questions answered per domain, streaming the shards (memory: O(eval tokens) plus one chunk):

- contamination (shards/audit_overlap.py): how many eval documents share an n-gram (13 content
  tokens by default: whitespace-only tokens are skipped, `shards.ngrams`) with train -- the
  domain's own train split, and all domains' train splits -- what share of eval content tokens
  such n-grams cover, and the longest shared run. Exact: every n-gram inside a document is hashed
  to 64 bits and looked up, none is sampled. Only the eval side is indexed; train streams
  through in chunks.
- near-duplicate pairs across the split (shards/audit_neardup.py): (train document, eval
  document) pairs whose MinHash estimated Jaccard is >= the threshold prep's near-dup hook used
  (as the manifest recorded it), per eval domain with its own train and with any train, and a
  few examples with both documents' provenance. After prep every count should be 0. Only the
  eval side's signatures are held; train streams through in the same pass as contamination.
- diversity (train split, shards/audit_text.py): distinct sources and the share of the 10
  largest, where the provenance names a source (CodeParrot's ``repo_name``, a file, an article
  title, ...); the document-length distribution.
- format artifacts (train split, shards/audit_text.py) that a router could key on instead of
  content: leading or trailing whitespace, invisible Unicode characters, carriage returns and
  other control characters, the distribution of first characters and first tokens, repeated
  20-character prefixes.

Damage is reported, never decoded: a token id outside the vocabulary (a bit flip), a stream whose
EOTs disagree with the manifest: one PROBLEM line each naming the file, and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import shards
from shards.audit_neardup import EvalSignatures, NearDupFigures, NearDupScan, Settings
from shards.audit_overlap import EvalIndex, TrainScan, overlap_figures
from shards.audit_stream import CHUNK_TOKENS, Problems, SplitStream
from shards.audit_text import PREFIX_CHARS, TextScan, diversity
from shards.console import Out
from shards.ngrams import HASH_VERSION, NGRAM
from shards.reader import Dataset

CHECKS = ("contamination", "near_dups", "diversity", "artifacts")
TRAIN_PASS = {"contamination", "near_dups", "artifacts"}  # the checks that stream train


# --------------------------------------------------------------------------- near duplicates


def near_duplicates(ds: Dataset, problems: Problems, chunk_tokens: int = CHUNK_TOKENS
                    ) -> tuple[dict[str, Any], NearDupFigures]:
    """The near-duplicate check's settings (what the report's ``near_duplicates`` shows) and
    its figures, to be fed the train pieces (`shards.audit_neardup`): eval documents with a
    near-copy in train."""
    settings = Settings.of(ds)
    return settings.describe(), NearDupFigures(EvalSignatures.build(ds, settings, problems,
                                                                    chunk_tokens))


# --------------------------------------------------------------------------- report


def audit(ds: Dataset, *, n: int = NGRAM, checks: tuple[str, ...] = CHECKS,
          chunk_tokens: int = CHUNK_TOKENS, stats: dict[str, float] | None = None,
          ) -> dict[str, Any]:
    """The whole report as plain data (the `--json` output); ``report["problems"]`` lists the
    damage found (one line each). `stats`, when given, receives the seconds of each phase and
    the index's size."""
    clock = {} if stats is None else stats
    problems = Problems()
    t0 = time.perf_counter()
    ev = EvalIndex.build(ds, problems, n, chunk_tokens) if "contamination" in checks else None
    clock["eval_index"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    near, nd = (near_duplicates(ds, problems, chunk_tokens) if "near_dups" in checks
                else (None, None))
    clock["near_dups_eval"] = time.perf_counter() - t0
    report: dict[str, Any] = {"root": str(ds.root), "ngram": n, "ngram_hash": HASH_VERSION,
                              "checks": list(checks),
                              "domains": {d: {} for d in ds.domains}, "near_duplicates": near}
    clock["train_pass"] = 0.0
    for d in ds.domains:
        if (d, "train") not in ds or not (TRAIN_PASS & set(checks)):
            continue
        t0 = time.perf_counter()
        sp = ds.split(d, "train")
        scan = TrainScan(ev, d, ds.eot_id) if ev is not None else None
        text = TextScan(sp) if "artifacts" in checks else None
        pairs = NearDupScan(nd, d) if nd is not None else None
        for piece in SplitStream(sp, problems, chunk_tokens).pieces():
            if scan is not None:
                scan.feed(piece)
            if text is not None:
                text.feed(piece)
            if pairs is not None:
                pairs.feed(piece)
        if text is not None:
            report["domains"][d]["artifacts"] = text.result()
        clock[f"train_{d}_s"] = time.perf_counter() - t0
        clock["train_pass"] += clock[f"train_{d}_s"]
        if scan is not None:  # the share of train n-grams found in eval sets the speed
            clock[f"train_{d}_hit_share"] = scan.hits / max(sp.num_tokens, 1)
    t0 = time.perf_counter()
    for d in ds.domains:
        if ev is not None:
            report["domains"][d]["contamination"] = (
                overlap_figures(ev, ds.split(d, "eval"), problems, chunk_tokens)
                if (d, "eval") in ds else None)
    clock["eval_pass"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for d in ds.domains:
        if "diversity" in checks and (d, "train") in ds:
            report["domains"][d]["diversity"] = diversity(ds.split(d, "train"))
    clock["diversity"] = time.perf_counter() - t0
    if ev is not None:
        clock["index_bytes"] = ev.nbytes
        clock["eval_ngrams"] = len(ev.index)
    if nd is not None:
        t0 = time.perf_counter()
        for d, figures in nd.result(ds).items():
            report["domains"][d]["near_duplicates"] = figures
        clock["near_dups_examples"] = time.perf_counter() - t0
    report["problems"] = problems.lines
    return report


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _tops(items: list[dict[str, Any]], key: str, k: int = 3) -> str:
    return ", ".join(f"'{it[key]}' {100 * it['share']:.0f}%" for it in items[:k])


def _run(o: dict[str, Any]) -> str:
    r = o["longest_run"]
    return "none" if not r["tokens"] else f"{r['tokens']} tokens (eval doc {r['eval_doc']})"


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

    checks = report.get("checks", CHECKS)
    c = lambda e: e["contamination"]  # noqa: E731
    if "contamination" in checks:
        out.table(f"contamination: eval vs train, exact {n}-grams of content tokens "
                  "(whitespace-only tokens skipped)", ["figure", *doms], [
            row("eval documents", lambda e: f"{c(e)['eval_docs']:,}"),
            row(f"eval docs sharing a {n}-gram with own train",
                lambda e: _pct(c(e)["own_train"]["doc_share"])),
            row("eval tokens covered by own-train n-grams",
                lambda e: _pct(c(e)["own_train"]["token_share"])),
            row("longest run shared with own train", lambda e: _run(c(e)["own_train"])),
            row(f"eval docs sharing a {n}-gram with any train",
                lambda e: _pct(c(e)["all_train"]["doc_share"])),
            row("eval tokens covered by any-train n-grams",
                lambda e: _pct(c(e)["all_train"]["token_share"])),
            row("longest run shared with any train", lambda e: _run(c(e)["all_train"])),
        ])
    if "near_dups" in checks:
        _show_near(report, row, out)
    v = lambda e: e["diversity"]  # noqa: E731
    lt = lambda e: v(e)["length_tokens"]  # noqa: E731
    if "diversity" in checks:
        out.table("diversity (train)", ["figure", *doms], [
            row("documents", lambda e: f"{v(e)['docs']:,}"),
            row("source field", lambda e: v(e)["source_key"] or "n/a"),
            row("distinct sources", lambda e: "n/a" if v(e)["distinct_sources"] is None
                else f"{v(e)['distinct_sources']:,}"),
            row("share of top source", lambda e: _pct(v(e)["top1_share"])),
            row("share of top 10 sources", lambda e: _pct(v(e)["top10_share"])),
            row("top source", lambda e: v(e)["top_sources"][0]["source"]),
            row("tokens/doc p10 | p50 | p90", lambda e: f"{lt(e)['p10']:.0f} | "
                f"{lt(e)['p50']:.0f} | {lt(e)['p90']:.0f}"),
            row("tokens/doc p99 | max", lambda e: f"{lt(e)['p99']:.0f} | {lt(e)['max']}"),
            row("tokens/doc mean", lambda e: f"{lt(e)['mean']:.1f}"),
        ])
    a = lambda e: e["artifacts"]  # noqa: E731
    if "artifacts" in checks:
        rp = lambda e: a(e)["repeated_prefixes"]  # noqa: E731
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
            row("most repeated prefix", lambda e: "none" if not rp(e) else
                f"'{rp(e)[0]['prefix']}' x{rp(e)[0]['docs']}"),
        ])


def _show_near(report: dict[str, Any], row: Any, out: Out) -> None:
    nd = lambda e: e["near_duplicates"]  # noqa: E731
    settings = report["near_duplicates"]
    p = settings["minhash"]
    out.table(f"near-duplicate pairs across the split: MinHash ({p['ngram']}-word shingles, "
              f"{p['bands']}x{p['rows']} bands), parameters from the {settings['source']}",
              ["figure", *report["domains"]], [
                  row("eval documents (signed)",
                      lambda e: f"{nd(e)['eval_docs']:,} ({nd(e)['eval_docs_signed']:,})"),
                  row("threshold | shingles",
                      lambda e: f"{nd(e)['threshold']:g} | {nd(e)['shingle']}"),
                  row("pairs with own train", lambda e: f"{nd(e)['pairs']:,}"),
                  row("eval docs with a near-copy in own train",
                      lambda e: f"{nd(e)['eval_docs_with_pair']:,}"),
                  row("pairs with any train", lambda e: f"{nd(e)['pairs_any_train']:,}"),
                  row("eval docs with a near-copy in any train",
                      lambda e: f"{nd(e)['eval_docs_with_pair_any_train']:,}"),
              ])
    if settings.get("note"):
        out.line(f"note: {settings['note']}")
    for d, rec in report["domains"].items():
        for x in rec.get("near_duplicates", {}).get("examples", []):
            t, v = x["train"], x["eval"]
            out.line(f"{d}: eval doc {v['doc']} {json.dumps(v['source'], ensure_ascii=False)} ~ "
                     f"{t['domain']} train doc {t['doc']} "
                     f"{json.dumps(t['source'], ensure_ascii=False)}: Jaccard ~{x['jaccard']:.2f}")


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="dataset directory (or its manifest.json)")
    p.add_argument("--json", action="store_true",
                   help="print the whole report as JSON (top sources, prefixes, invisible "
                   "characters by code point, most contaminated eval documents, problems)")
    p.add_argument("--checks", default=",".join(CHECKS),
                   help=f"comma-separated checks to run (default: all: {','.join(CHECKS)})")
    p.add_argument("--ngram", type=int, default=NGRAM,
                   help="content tokens per n-gram of the contamination check (whitespace-only "
                   f"GPT-2 tokens are skipped; default: {NGRAM})")
    p.add_argument("--chunk-tokens", type=int, default=CHUNK_TOKENS,
                   help="tokens read (memory-mapped) at a time: memory per chunk is ~2 bytes "
                   f"per token plus a few per piece of work (default: {CHUNK_TOKENS:,})")


def run(args: argparse.Namespace) -> int:
    checks = tuple(c.strip() for c in args.checks.split(",") if c.strip())
    bad = sorted(set(checks) - set(CHECKS))
    if bad or not checks:
        print(f"error: --checks: unknown check(s) {', '.join(bad) or '(none given)'}; "
              f"choose from {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    if not 1 <= args.ngram <= 1024 or args.chunk_tokens < 1:
        print("error: --ngram must be in 1..1024 and --chunk-tokens >= 1",
              file=sys.stderr)
        return 2
    report = audit(shards.open(args.dir), n=args.ngram, checks=checks,
                   chunk_tokens=args.chunk_tokens)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        show(report, Out())
    out = Out(sys.stderr) if args.json else Out()  # stdout stays valid JSON
    for line in report["problems"]:
        out.line(f"PROBLEM: {line}")
    if report["problems"]:
        out.line(f"FAILED: {len(report['problems'])} problem(s); the figures above leave out "
                 "the damaged documents")
        return 1
    return 0
