"""The manifest of a finished run: records of every split file, counts, order and provenance."""

from __future__ import annotations

import platform
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep import order
from prep.split import RULE as SPLIT_RULE
from shards.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    DocIndexRecord,
    DomainRecord,
    FileRecord,
    HookRecord,
    LeakageRecord,
    Manifest,
    ShardRecord,
    SplitRecord,
)
from shards.tokenizer import file_sha256

if TYPE_CHECKING:
    from prep.assemble import SplitFiles
    from prep.commit import DomainResult
    from prep.config import PrepConfig
    from prep.parts import TaskRecord
    from prep.plan import Plan
    from prep.steps.base import HookOutput


def split_records(written: dict[tuple[str, str], SplitFiles], results: dict[str, DomainResult],
                  staging: Path, version_dir: str, block_size: int
                  ) -> dict[str, dict[str, SplitRecord]]:
    """Each (domain, split)'s record from its assembled files, named under `version_dir`."""

    def rel(out: str) -> str:
        return f"{version_dir}/{Path(out).relative_to(staging).as_posix()}"

    splits: dict[str, dict[str, SplitRecord]] = {}
    for (name, split), files in written.items():
        lay = results[name].layouts[split]
        splits.setdefault(name, {})[split] = SplitRecord(
            docs=lay.docs, tokens=lay.tokens, blocks=lay.tokens // block_size,
            bytes_text=lay.bytes_text,
            shards=[ShardRecord(path=rel(f.out), tokens=f.tokens, bytes=f.bytes,
                                sha256=f.sha256) for f in files.shards],
            doc_index=DocIndexRecord(path=rel(files.index.out), docs=files.index.docs,
                                     bytes=files.index.bytes, sha256=files.index.sha256))
    return splits


def encoder_record(plan: Plan, results: dict[str, DomainResult],
                   done: dict[str, TaskRecord]) -> dict[str, Any]:
    """Which encoders wrote the committed tasks' ids (a resume may switch backends: the output
    is the same), and the sampled check against tiktoken; kept out of the fingerprint."""
    tasks: dict[str, int] = {}
    checked = routed = 0
    for res in results.values():
        for task_id in res.tasks:
            t = done[task_id].tokenizer if task_id in done else {}
            label = f"{t.get('backend', '?')} {t.get('version', '?')}"
            tasks[label] = tasks.get(label, 0) + 1
            checked += t.get("docs_checked", 0)
            routed += t.get("docs_by_tiktoken", 0)
    b = plan.backend
    return {"requested": b.requested if b else "?", "chosen": b.label if b else "?",
            "divergent_code_points": sum(z - a + 1 for a, z in b.divergent) if b else 0,
            "check_every": plan.domains[0].settings.tokenizer_check_every if plan.domains else 0,
            "tasks_by_encoder": dict(sorted(tasks.items())), "docs_checked": checked,
            "docs_by_tiktoken": routed}


def hook_records(written: dict[str, tuple[HookOutput, Path]], staging: Path,
                 version_dir: str) -> dict[str, HookRecord]:
    """The manifest's `hooks`: each hook's parameters and files (named under `version_dir`)."""
    out = {}
    for name, (output, into) in written.items():
        files = []
        for f in output.files:
            path = into / f
            files.append(FileRecord(
                path=f"{version_dir}/{path.relative_to(staging).as_posix()}",
                bytes=path.stat().st_size, sha256=file_sha256(path)))
        out[name] = HookRecord(params=output.params, files=files)
    return out


def build_manifest(cfg: PrepConfig, plan: Plan, results: dict[str, DomainResult],
                   splits: dict[str, dict[str, SplitRecord]], run: dict[str, Any],
                   t0: float, hooks: dict[str, HookRecord] | None = None) -> Manifest:
    records = {}
    for d in plan.domains:
        res = results[d.name]
        source = dict(d.source)
        files = [f for p in res.partitions for f in (p["provenance"] or {}).get("files", [])]
        if files:
            source["files"] = files
        buffer_bytes = int(d.cfg.shuffle_buffer_mb * 1e6)
        records[d.name] = DomainRecord(
            name=d.name, source=source, format_rules=d.format_rules,
            shuffle_buffer=d.cfg.shuffle_buffer, size_budget_bytes=d.budget_bytes,
            token_budget=d.cfg.size_tokens, budget_reached=res.budget_reached,
            min_chars=d.cfg.min_chars, max_chars=d.cfg.max_chars,
            eval_fraction=d.cfg.eval_fraction, counts=dict(res.counts),
            # every kept text is kept once (the commit's dedup, re-checked by sorting all keys)
            leakage=LeakageRecord(eval_hashes_in_train=0, cross_domain_duplicates=0,
                                  passed=True),
            splits=splits[d.name],
            order={"rule": order.describe(d.cfg.interleave, d.cfg.shuffle_buffer, buffer_bytes),
                   "seed": plan.seed, "interleave": d.cfg.interleave,
                   "shuffle_buffer_docs": d.cfg.shuffle_buffer,
                   "shuffle_buffer_bytes": buffer_bytes,
                   "partition_bytes": d.settings.read.partition_bytes,
                   "partitions_planned": len(d.partitions),
                   "partitions_read": len({p["index"] for p in res.partitions}),
                   "tasks_read": len(res.partitions), "split_rule": SPLIT_RULE},
            partitions=res.partitions, steps=res.steps, commit_hooks=res.hooks)
    elapsed = time.perf_counter() - t0
    tokens = sum(s.tokens for r in splits.values() for s in r.values())
    kept = sum(r.counts["bytes_kept"] for r in results.values())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return Manifest(
        format=FORMAT_NAME, format_version=FORMAT_VERSION,
        recipe={**plan.recipe.to_dict(), "domains": [d.cfg.to_dict() for d in plan.domains],
                "seed": plan.seed, "block_size": plan.block_size},
        config=asdict(cfg), seed=plan.seed, split_salt=plan.recipe.split_salt,
        block_size=plan.block_size, shard_tokens=plan.shard_tokens, tokenizer=plan.tokenizer,
        domains=records, leakage_passed=True,
        run={"seconds": round(elapsed, 3), "tokens": tokens,
             "tokens_per_s": round(tokens / elapsed, 1),
             "mb_per_s": round(kept / 1e6 / elapsed, 3), "executor": cfg.executor,
             "workers": cfg.workers, **run,
             "coordinator_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
             "coordinator_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
             "plan_fingerprint": plan.fingerprint, "python": platform.python_version(),
             "platform": platform.platform()},
        hooks=hooks or {})
