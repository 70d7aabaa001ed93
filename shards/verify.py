"""`python -m shards verify DIR`: re-check every byte of a dataset against its manifest.

Checks, each problem reported with the file and the fix:

- the manifest loads (known format version) and its paths and file sizes pass `shards.open`'s
  validation (a truncated or missing shard is a reported problem, not a crash);
- every shard's and document index's sha256 equals the manifest's (a flipped byte anywhere is
  caught here), every token id is < the vocabulary size, full shards hold `shard_tokens`;
- the document index is consistent: contiguous documents covering the whole stream, the EOT
  count equals the document count and EOTs sit exactly at the documents' ends, and each
  document's decoded text has the index's content hash and character count (a document holding
  an id outside the vocabulary is reported with its shard, offset and id, never decoded);
- no eval document's content hash occurs in any domain's train split;
- the files prep's commit hooks wrote (near-duplicate examples) have their declared size and
  sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from shards.console import Out
from shards.format import TOKEN_DTYPE, FormatError, Manifest, SplitRecord
from shards.hashing import distinct
from shards.neardups import check_files as check_hook_files
from shards.reader import DocInfo, _gpt2, check_layout, load_manifest, read_doc_index
from shards.scan import FileScan, scan_file, sha_problem, token_problem

MAX_EXAMPLES = 5  # per kind of problem, further ones are counted


@dataclass
class VerifyReport:
    root: str
    problems: list[str] = field(default_factory=list)
    files: int = 0
    bytes_hashed: int = 0
    documents_checked: int = 0
    hash_seconds: float = 0.0  # the reading and hashing pass alone
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def mb_per_s(self) -> float:
        return self.bytes_hashed / 1e6 / self.hash_seconds if self.hash_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "mb_per_s": round(self.mb_per_s, 1)}


def _examples(problems: list[str], found: list[str], what: str) -> None:
    problems += found[:MAX_EXAMPLES]
    if len(found) > MAX_EXAMPLES:
        problems.append(f"... and {len(found) - MAX_EXAMPLES} more {what}")


def verify(path: str | Path, *, workers: int | None = None) -> VerifyReport:
    """Run every check on the dataset at `path`; never raises for a bad dataset."""
    t0 = time.perf_counter()
    report = VerifyReport(root=str(path))
    try:
        root, manifest = load_manifest(path)
    except FormatError as e:
        report.problems.append(str(e))
        return report
    report.root = str(root)
    ok_files, problems = check_layout(root, manifest)
    report.problems += problems
    vocab, eot = manifest.tokenizer.vocab_size, manifest.tokenizer.eot_id

    jobs: dict[str, tuple[Path, bool]] = {}
    for dom in manifest.domains.values():
        for rec in dom.splits.values():
            for s in rec.shards:
                if s.path in ok_files:
                    jobs[s.path] = (ok_files[s.path], True)
            if rec.doc_index.path in ok_files:
                jobs[rec.doc_index.path] = (ok_files[rec.doc_index.path], False)
    workers = workers or min(2, os.cpu_count() or 1)
    t_hash = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {rel: pool.submit(scan_file, p, vocab_size=vocab if is_shard else None,
                                    eot_id=eot if is_shard else None)
                   for rel, (p, is_shard) in jobs.items()}
        scans = {rel: f.result() for rel, f in futures.items()}
    report.hash_seconds = time.perf_counter() - t_hash
    report.files = len(scans)
    report.bytes_hashed = sum(s.size for s in scans.values())

    hashes: dict[tuple[str, str], list[DocInfo]] = {}
    for dname, dom in manifest.domains.items():
        for sname, rec in dom.splits.items():
            docs = _check_split(root, manifest, dname, sname, rec, scans, report)
            if docs is not None:
                hashes[dname, sname] = docs
    _check_leakage(hashes, report)
    _check_hook_files(root, manifest, report)
    report.seconds = time.perf_counter() - t0
    return report


def _check_split(root: Path, manifest: Manifest, dname: str, sname: str, rec: SplitRecord,
                 scans: dict[str, FileScan], report: VerifyReport) -> list[DocInfo] | None:
    """Checks of one split; returns its documents when the index could be read."""
    problems = report.problems
    where = f"{dname}/{sname}"
    if rec.blocks != rec.tokens // manifest.block_size:
        problems.append(f"manifest: {where} declares {rec.blocks} blocks, but {rec.tokens} tokens "
                        f"make {rec.tokens // manifest.block_size} blocks of "
                        f"{manifest.block_size}; re-run prep")
    if rec.doc_index.docs != rec.docs:
        problems.append(f"manifest: {where} declares {rec.docs} documents but its doc_index "
                        f"{rec.doc_index.docs}; re-run prep")
    all_shards_ok = True
    for i, s in enumerate(rec.shards):
        if i < len(rec.shards) - 1 and s.tokens != manifest.shard_tokens:
            problems.append(f"manifest: {s.path} holds {s.tokens} tokens; every shard but the "
                            f"last must hold shard_tokens={manifest.shard_tokens}")
        scan = scans.get(s.path)
        if scan is None:
            all_shards_ok = False
            continue
        found = [sha_problem(scan, s.sha256, "shard"),
                 token_problem(scan, manifest.tokenizer.vocab_size)]
        if found[0]:
            all_shards_ok = False
        problems += [x for x in found if x]
    di = rec.doc_index
    scan = scans.get(di.path)
    if scan is None:
        return None
    found = sha_problem(scan, di.sha256, "document index")
    if found:
        problems.append(found)
    try:
        docs = read_doc_index(scan.path)
    except FormatError as e:
        problems.append(str(e))
        return None
    if len(docs) != rec.docs:
        problems.append(f"{scan.path}: holds {len(docs)} documents, the manifest declares "
                        f"{rec.docs}")
    if all_shards_ok:
        _check_stream(manifest, where, rec, docs, scans, scan.path, report)
    return docs


def _check_stream(manifest: Manifest, where: str, rec: SplitRecord, docs: list[DocInfo],
                  scans: dict[str, FileScan], index_path: Path, report: VerifyReport) -> None:
    """The document index against the token stream: layout, EOTs, content hashes."""
    problems = report.problems
    starts = np.zeros(len(rec.shards) + 1, dtype=np.int64)
    np.cumsum([s.tokens for s in rec.shards], out=starts[1:])
    if int(starts[-1]) != rec.tokens:  # the manifest disagrees with itself (already reported)
        return
    n = len(docs)
    shard = np.array([d.shard for d in docs], dtype=np.int64)
    offset = np.array([d.offset for d in docs], dtype=np.int64)
    length = np.array([d.tokens for d in docs], dtype=np.int64)
    bad = (shard < 0) | (shard >= len(rec.shards)) | (offset < 0) | (length < 1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        problems.append(f"{index_path}: document {k} has shard={docs[k].shard}, "
                        f"offset={docs[k].offset}, tokens={docs[k].tokens}: outside the "
                        f"{len(rec.shards)} shard(s) or empty; {int(bad.sum())} such document(s)")
        return
    begin = starts[shard] + offset
    expected = np.concatenate([[0], np.cumsum(length)[:-1]]) if n else begin
    gap = np.flatnonzero(begin != expected)
    if len(gap):
        k = int(gap[0])
        problems.append(f"{index_path}: document {k} starts at token {int(begin[k])} of the "
                        f"stream but the documents before it end at {int(expected[k])}: the "
                        f"index is not contiguous ({len(gap)} such document(s))")
        return
    total = int(length.sum())
    if total != rec.tokens:
        problems.append(f"{index_path}: the documents hold {total} tokens, the stream "
                        f"{rec.tokens}; the index and the shards disagree")
        return
    eots = np.concatenate([scans[s.path].eot_positions + starts[i]
                           for i, s in enumerate(rec.shards)] or [np.zeros(0, np.int64)])
    if len(eots) != n:
        problems.append(f"{where}: {len(eots)} EOT tokens in the shards but {n} documents in "
                        f"{index_path}: every document must end with exactly one EOT")
    ends = begin + length - 1
    if len(eots) == n and (eots != ends).any():
        k = int(np.flatnonzero(eots != ends)[0])
        problems.append(f"{where}: document {k} should end with EOT at token {int(ends[k])}, "
                        f"but the EOT is at {int(eots[k])}")
    _check_content(manifest, where, rec, docs, begin, scans, report)


def _check_content(manifest: Manifest, where: str, rec: SplitRecord, docs: list[DocInfo],
                   begin: np.ndarray, scans: dict[str, FileScan], report: VerifyReport) -> None:
    """Each document's decoded text must have the index's content hash and character count."""
    if not docs:
        return
    held = [s for s in rec.shards if s.tokens]
    parts = [np.memmap(scans[s.path].path, dtype=TOKEN_DTYPE, mode="r") for s in held]
    offs = np.cumsum([0] + [len(p) for p in parts])

    def span(b: int, e: int) -> np.ndarray:
        """Tokens [b, e) of the split: a memmap slice, copied only across a shard boundary."""
        i = int(np.searchsorted(offs, b, side="right")) - 1
        if e <= offs[i + 1]:
            return parts[i][b - offs[i]:e - offs[i]]
        j = int(np.searchsorted(offs, e, side="left"))
        return np.concatenate([parts[x][max(b, offs[x]) - offs[x]:min(e, offs[x + 1]) - offs[x]]
                               for x in range(i, j)])

    enc = _gpt2()
    vocab = manifest.tokenizer.vocab_size
    found = []
    for k, d in enumerate(docs):
        b = int(begin[k])
        toks = span(b, b + d.tokens - 1)
        if int(toks.max(initial=0)) >= vocab:  # never decoded; the shard's line has the offset
            j = int(np.flatnonzero(toks >= vocab)[0])
            i = int(np.searchsorted(offs, b + j, side="right")) - 1
            found.append(f"{where}: document {k} ({json.dumps(d.source)}) holds token id "
                         f"{int(toks[j])} at token offset {b + j - int(offs[i])} of "
                         f"{held[i].path}, >= vocab size {vocab}: not decoded")
            continue
        raw = enc.decode_bytes(toks.tolist())
        if (digest := hashlib.sha256(raw).hexdigest()) != d.sha256:
            got, want = distinct(digest, d.sha256)
            found.append(f"{where}: document {k} ({json.dumps(d.source)}): its tokens decode to "
                         f"text with sha256 {got}, the index says {want}: tokens and index "
                         "disagree")
            continue
        chars = len(raw.decode("utf-8", errors="replace"))
        if chars != d.chars:
            found.append(f"{where}: document {k}: {chars} characters, the index says {d.chars}")
    report.documents_checked += len(docs)
    _examples(report.problems, found, f"content mismatches in {where}")


def _check_leakage(docs: dict[tuple[str, str], list[DocInfo]], report: VerifyReport) -> None:
    train: dict[str, tuple[str, int]] = {}
    for (dname, sname), ds in docs.items():
        if sname == "train":
            for d in ds:
                train.setdefault(d.sha256, (dname, d.index))
    for (dname, sname), ds in docs.items():
        if sname != "eval":
            continue
        found = [f"{dname}/eval document {d.index} ({json.dumps(d.source)}) has the content hash "
                 f"of {train[d.sha256][0]}/train document {train[d.sha256][1]}: eval leaks into "
                 "train; re-run prep (its split must keep equal documents together)"
                 for d in ds if d.sha256 in train]
        _examples(report.problems, found, f"{dname} eval documents found in train")


def _check_hook_files(root: Path, manifest: Manifest, report: VerifyReport) -> None:
    """The files prep's commit hooks wrote (near-duplicate examples): size and sha256."""
    problems, files, nbytes = check_hook_files(root, manifest)
    report.problems += problems
    report.files += files
    report.bytes_hashed += nbytes


# --------------------------------------------------------------------------- CLI


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="dataset directory (or its manifest.json)")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON (problems, files, bytes, MB/s) instead of text")
    p.add_argument("--workers", type=int, default=None,
                   help="threads hashing files in parallel (default: min(2, CPU count))")


def run(args: argparse.Namespace) -> int:
    report = verify(args.dir, workers=args.workers)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.ok else 1
    out = Out()
    for p in report.problems:
        out.line(f"PROBLEM: {p}")
    out.line(f"{report.root}: {report.files} files, {report.bytes_hashed / 1e6:.1f} MB hashed "
             f"at {report.mb_per_s:.0f} MB/s, {report.documents_checked} documents checked in "
             f"{report.seconds:.2f} s")
    out.line("OK: every check passed" if report.ok
             else f"FAILED: {len(report.problems)} problem(s)")
    return 0 if report.ok else 1
