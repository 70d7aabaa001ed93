"""`python -m shards inspect DIR [--json]`: what a dataset holds, from its manifest.

(Named inspect_cmd so that it never shadows the standard library's `inspect`.)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import shards
from shards.console import Out
from shards.format import DomainRecord
from shards.reader import Dataset


def counter_rows(domains: Mapping[str, DomainRecord]) -> list[tuple[str, list[int | None]]]:
    """(counter, its value in each domain or None) for every counter any domain has, in the
    order the domains list them (`counts` is an open mapping: no counter is known here)."""
    keys = dict.fromkeys(k for rec in domains.values() for k in rec.counts)
    return [(k, [rec.counts.get(k) for rec in domains.values()]) for k in keys]


def facts(ds: Dataset) -> dict[str, Any]:
    """Everything `inspect` shows, as plain data (the `--json` output)."""
    m = ds.manifest
    config = {
        "root": str(ds.root),
        "format": f"{m.format} v{m.format_version}",
        "recipe": m.recipe.get("name"),
        "recipe_path": m.recipe.get("path"),
        "seed": m.seed,
        "split_salt": m.split_salt,
        "block_size": m.block_size,
        "shard_tokens": m.shard_tokens,
        "tokenizer": m.tokenizer.name,
        "vocab_size": m.tokenizer.vocab_size,
        "eot_id": m.tokenizer.eot_id,
        "tokenizer_ranks_sha256": m.tokenizer.ranks_sha256,
        "fingerprint": ds.fingerprint,
        "leakage_passed": m.leakage_passed,
    }
    domains = {}
    for name, d in m.domains.items():
        splits = {}
        for sname, rec in d.splits.items():
            splits[sname] = {
                "docs": rec.docs,
                "tokens": rec.tokens,
                "blocks": rec.blocks,
                "mb": sum(s.bytes for s in rec.shards) / 1e6,
                "text_mb": rec.bytes_text / 1e6,
                "shards": [{"path": s.path, "tokens": s.tokens, "bytes": s.bytes,
                            "sha256": s.sha256} for s in rec.shards],
                "doc_index": {"path": rec.doc_index.path, "bytes": rec.doc_index.bytes,
                              "sha256": rec.doc_index.sha256},
            }
        total = sum(s["docs"] for s in splits.values())
        domains[name] = {
            "source": d.source,
            "eval_fraction": d.eval_fraction,
            "eval_share": splits["eval"]["docs"] / total if total and "eval" in splits else 0.0,
            "shuffle_buffer": d.shuffle_buffer,
            "min_chars": d.min_chars,
            "max_chars": d.max_chars,
            "budget_reached": d.budget_reached,
            "steps": d.steps,
            "commit_hooks": d.commit_hooks,
            "counts": dict(d.counts),
            "leakage": vars(d.leakage),
            "splits": splits,
        }
    hooks = {name: {"params": rec.params, "files": [vars(f) for f in rec.files]}
             for name, rec in m.hooks.items()}
    return {"config": config, "domains": domains,
            "counts": [[k, *v] for k, v in counter_rows(m.domains)], "hooks": hooks,
            "run": m.run}


def show(info: dict[str, Any], out: Out) -> None:
    out.table("config", ["key", "value"], [[k, "" if v is None else v]
                                            for k, v in info["config"].items()])
    rows = []
    for name, d in info["domains"].items():
        for sname, s in d["splits"].items():
            rows.append([name, sname, s["docs"], s["tokens"], s["blocks"], len(s["shards"]),
                         f"{s['mb']:.2f}", f"{s['text_mb']:.2f}"])
    out.table("splits", ["domain", "split", "docs", "tokens", "blocks", "shards", "MB",
                         "text MB"], rows)
    rows = []
    for name, d in info["domains"].items():
        src = d["source"].get("reader") or d["source"].get("source") or ""
        rows.append([name, src, f"{d['eval_share']:.3f} / {d['eval_fraction']}",
                     d["shuffle_buffer"], "yes" if d["budget_reached"] else "no",
                     "pass" if d["leakage"]["passed"] else "FAIL",
                     " ".join(d["steps"] + [f"commit:{h}" for h in d["commit_hooks"]])])
    out.table("domains", ["domain", "source", "eval share / target", "shuffle buffer",
                          "budget reached", "leakage", "pipeline"], rows)
    out.table("counts", ["counter", *info["domains"]],
              [[k, *("" if v is None else v for v in values)] for k, *values in info["counts"]])
    if info["hooks"]:  # prep's commit hooks' parameters (format version 3)
        out.table("commit hooks", ["hook", "parameter", "value"], [
            [name, k, json.dumps(v, separators=(",", ":"))]
            for name, h in info["hooks"].items() for k, v in h["params"].items()]
            + [[name, "file", f"{f['path']} ({f['bytes']:,} bytes)"]
               for name, h in info["hooks"].items() for f in h["files"]])
    rows = []
    for d in info["domains"].values():
        for s in d["splits"].values():
            rows += [[f["path"], f["tokens"], f["bytes"], f["sha256"][:16]] for f in s["shards"]]
            di = s["doc_index"]
            rows.append([di["path"], "", di["bytes"], di["sha256"][:16]])
    out.table("files", ["path", "tokens", "bytes", "sha256"], rows)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="dataset directory (or its manifest.json)")
    p.add_argument("--json", action="store_true",
                   help="print the same facts as JSON for scripts (full sha256s included)")


def run(args: argparse.Namespace) -> int:
    info = facts(shards.open(args.dir))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        show(info, Out())
    return 0
