"""`python -m shards sample DIR --domain D`: random whole documents, decoded, with provenance.

The manual check a reviewer does before trusting a dataset: read 20-30 documents per domain.
The same seed always picks the same documents. A picked document that is damaged is reported,
never decoded: a token id outside the vocabulary (the shard, the offset and the id), a document
the index places outside the shards, or text whose content hash is not the index's; each is a
``PROBLEM:`` line and the exit status is 1 (`shards verify` checks every document).
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
from shards.format import FormatError
from shards.hashing import distinct
from shards.reader import DocInfo, Split


@dataclass
class Sampled:
    doc: DocInfo
    text: str  # "" when the document could not be decoded
    hash_ok: bool  # the decoded text has the index's content hash
    problem: str | None = None  # why the document is damaged, in one line


def sample_documents(split: Split, n: int, seed: int) -> list[Sampled]:
    """`n` distinct documents of `split` (all of them if it has fewer), in a seeded order;
    a damaged one carries its `problem` (see the module docstring)."""
    total = split.num_docs
    picks = np.random.default_rng(seed).permutation(total)[:n] if total else []
    out = []
    for k in picks:
        doc = split.document(int(k))
        try:
            text = split.document_text(int(k))
        except FormatError as e:
            out.append(Sampled(doc, "", False, str(e)))
            continue
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        problem = None
        if digest != doc.sha256:
            got, want = distinct(digest, doc.sha256)
            problem = (f"{split.domain}/{split.name} document {doc.index}: its tokens decode to "
                       f"text with sha256 {got}, the index says {want}: tokens and index "
                       "disagree; run `python -m shards verify`")
        out.append(Sampled(doc, text, problem is None, problem))
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
    problems = [s.problem for s in picked if s.problem]
    if args.json:
        for s in picked:
            print(json.dumps({"domain": split.domain, "split": split.name, **vars(s.doc),
                              "hash_ok": s.hash_ok, "text": s.text, "problem": s.problem},
                             ensure_ascii=False))
        return 1 if problems else 0
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
                 f"{'' if s.hash_ok else ' (MISMATCH: see the PROBLEM line)'}")
        out.line(f"source: {json.dumps(d.source, ensure_ascii=False)}")
        out.line("-" * 78)
        out.line(f"PROBLEM: {s.problem}" if s.problem and not s.text else text)
    if problems:
        out.line("=" * 78)
        for p in problems:
            out.line(f"PROBLEM: {p}")
        out.line(f"FAILED: {len(problems)} of {len(picked)} sampled documents are damaged; run "
                 f"`python -m shards verify {args.dir}`")
    return 1 if problems else 0
