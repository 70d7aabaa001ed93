"""The near-duplicate examples prep publishes, and the files of prep's commit hooks in general.

prep's near-dup hook writes up to ``near_dedup_examples`` clusters per domain to
``<version dir>/_hooks/near_dedup/examples.jsonl`` (format version 3), one JSON object per line::

    {"domain": ..., "kept": {doc}, "members": [{doc, "estimate": 0.93, "status": "removed"}]}

where a doc is ``{"domain", "split", "source", "sha256", "text"}`` and a member's status is
``removed`` (mode remove), ``grouped`` (mode group: kept, in the kept document's split) or
``conflict`` (group mode: near clusters of both splits, dropped). `shards sample --near-dups`
prints them side by side, so a reviewer can judge the threshold by eye; :func:`check_files` is
`shards verify`'s check of every hook file the manifest lists (present, size, sha256).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from shards.console import Out
from shards.format import FormatError, Manifest
from shards.reader import _check_file, load_manifest

HOOK = "near_dedup"
EXAMPLES_FILE = "examples.jsonl"


def check_files(root: Path, manifest: Manifest) -> tuple[list[str], int, int]:
    """Every hook file of the manifest: (problems, files checked, bytes hashed)."""
    problems: list[str] = []
    files = nbytes = 0
    for name, rec in manifest.hooks.items():
        for i, f in enumerate(rec.files):
            where = f"{root / 'manifest.json'}: hooks.{name}.files[{i}].path"
            full, errs = _check_file(root, f.path, where, f.bytes, f"{name} hook")
            problems += errs
            if full is None:
                continue
            digest = hashlib.sha256(full.read_bytes()).hexdigest()
            files, nbytes = files + 1, nbytes + f.bytes
            if digest != f.sha256:
                problems.append(f"{full}: sha256 {digest[:16]}... but the manifest declares "
                                f"{f.sha256[:16]}...: the file is damaged; re-copy the dataset "
                                "or re-run `python -m prep`")
    return problems, files, nbytes


def examples(root: Path, manifest: Manifest) -> list[dict[str, Any]]:
    """The near-duplicate example clusters of a dataset (empty if it has none)."""
    rec = manifest.hooks.get(HOOK)
    if rec is None:
        return []
    out = []
    for f in rec.files:
        if not f.path.endswith("/" + EXAMPLES_FILE):
            continue
        full, errs = _check_file(root, f.path, f"hooks.{HOOK}.files", f.bytes, "examples")
        if full is None:
            raise FormatError("; ".join(errs))
        for k, line in enumerate(full.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise FormatError(f"{full}: line {k} is not JSON ({e}); run `shards verify`") \
                    from e
    return out


def _cut(text: str, max_chars: int) -> str:
    if max_chars and len(text) > max_chars:
        return text[:max_chars] + f"\n[... {len(text) - max_chars} more chars]"
    return text


def run(args: argparse.Namespace) -> int:
    """`shards sample DIR --domain D --near-dups`: clusters that gained a member in domain D."""
    root, manifest = load_manifest(args.dir)
    if HOOK not in manifest.hooks:
        raise FormatError(f"{root}: no near-duplicate examples (written by prep with near_dedup "
                          f"on, format version 3; this manifest is version "
                          f"{manifest.format_version})")
    if args.domain not in manifest.domains:
        raise FormatError(f"{root}: no domain {args.domain!r}; domains: "
                          f"{', '.join(manifest.domains)}")
    found = [c for c in examples(root, manifest) if c["domain"] == args.domain][:args.n]
    if args.json:
        for c in found:
            print(json.dumps(c, ensure_ascii=False))
        return 0
    params = manifest.hooks[HOOK].params.get("domains", {}).get(args.domain, {})
    out = Out()
    out.line(f"{len(found)} near-duplicate clusters of {args.domain} (threshold "
             f"{params.get('threshold')}, mode {params.get('mode')}, shingles "
             f"{params.get('shingle')}): each kept document, then members")
    for i, c in enumerate(found, start=1):
        for label, d in [("KEPT", c["kept"])] + [
                (f"{m['status'].upper()} (estimated Jaccard {m['estimate']:.3f})", m)
                for m in c["members"]]:
            out.line("=" * 78 if label == "KEPT" else "-" * 78)
            out.line(f"[{i}/{len(found)}] {label}: {d['domain']}/{d['split']}, sha256 "
                     f"{d['sha256'][:16]}, source {json.dumps(d['source'], ensure_ascii=False)}")
            out.line("-" * 78)
            out.line(_cut(d["text"], args.max_chars))
    return 0
