"""`python -m shards sample DIR --domain D`: random whole documents, decoded, with provenance.

The manual check a reviewer does before trusting a dataset: read 20-30 documents per domain.
The same seed always picks the same documents.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import shards
from shards import neardups
from shards.console import Out
from shards.reader import DocInfo, Split


@dataclass
class Sampled:
    doc: DocInfo
    text: str
    hash_ok: bool  # the decoded text has the index's content hash


def sample_documents(split: Split, n: int, seed: int) -> list[Sampled]:
    """`n` distinct documents of `split` (all of them if it has fewer), in a seeded order."""
    total = split.num_docs
    picks = np.random.default_rng(seed).permutation(total)[:n] if total else []
    out = []
    for k in picks:
        text = split.document_text(int(k))
        doc = split.document(int(k))
        ok = hashlib.sha256(text.encode("utf-8")).hexdigest() == doc.sha256
        out.append(Sampled(doc, text, ok))
    return out


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="dataset directory (or its manifest.json)")
    p.add_argument("--domain", required=True, help="domain to sample (see `inspect`)")
    p.add_argument("--split", default="train", help="split to sample: train or eval "
                   "(default: train)")
    p.add_argument("-n", type=int, default=20, help="number of documents (default: 20)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random choice; the same seed prints the same documents "
                   "(default: 0)")
    p.add_argument("--max-chars", type=int, default=0,
                   help="cut each printed text after this many characters (default: 0, whole)")
    p.add_argument("--json", action="store_true",
                   help="print the documents as JSON lines (provenance and text)")
    p.add_argument("--near-dups", action="store_true",
                   help="instead: up to -n near-duplicate clusters prep found in the domain, "
                   "each kept document beside the ones removed (or grouped) with it")


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise SystemExit("error: -n must be >= 1")
    if args.near_dups:
        return neardups.run(args)
    ds = shards.open(args.dir)
    split = ds.split(args.domain, args.split)
    picked = sample_documents(split, args.n, args.seed)
    if args.json:
        for s in picked:
            print(json.dumps({"domain": split.domain, "split": split.name, **vars(s.doc),
                              "hash_ok": s.hash_ok, "text": s.text}, ensure_ascii=False))
        return 0
    out = Out()
    out.line(f"{len(picked)} of {split.num_docs} documents of {split.domain}/{split.name}, "
             f"seed {args.seed}")
    for i, s in enumerate(picked, start=1):
        d = s.doc
        text = s.text
        if args.max_chars and len(text) > args.max_chars:
            text = text[:args.max_chars] + f"\n[... {len(s.text) - args.max_chars} more chars]"
        out.line("=" * 78)
        out.line(f"[{i}/{len(picked)}] document {d.index}: shard {d.shard} offset {d.offset}, "
                 f"{d.tokens} tokens, {d.chars} chars, sha256 {d.sha256[:16]}"
                 f"{'' if s.hash_ok else ' (MISMATCH: the text has another hash)'}")
        out.line(f"source: {json.dumps(d.source, ensure_ascii=False)}")
        out.line("-" * 78)
        out.line(text)
    return 0
