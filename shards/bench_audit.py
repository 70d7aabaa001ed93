"""The audit's benchmarks: `python -m shards.bench --audit` and `python -m shards.bench --index`.

``--audit``: the streaming audit (`shards.audit`) beside the audit it replaced
(`shards.bench_audit_baseline`) on the same generated dataset, each run in a process of its own
so that its peak resident memory (VmHWM) is its own: contamination alone, and every check the
audit before had; then the near-duplicate check alone (`shards.audit_neardup`; nothing to
compare it with).
Prints seconds, train tokens per second (one process, one thread: per core), peak RSS, bytes of
RSS per eval token above a process that only imports the modules, the issue's target (16 bytes
per eval token + 256 MB) and the ratios; checks that both give the same contamination figures.

``--index``: how to index n-gram hashes, at the sizes the audit and decontamination meet
(1-30 M distinct eval or benchmark n-grams): ``np.searchsorted`` on the sorted hashes, the
blocked Bloom filter alone (inexact), the bucket directory alone, and `NgramIndex.lookup` (filter,
then directory: exact), in lookups per second and bytes per hash, 1% of lookups present.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import shards
from shards.console import Out

PEAK_RSS = ("import atexit, runpy, sys\n"  # runs `python -m <argv[1]>`, then prints its VmHWM
            "def peak():\n"
            "    status = open('/proc/self/status').read()\n"
            "    print('VmHWM', status.split('VmHWM:')[1].split()[0], file=sys.stderr)\n"
            "atexit.register(peak)\n"
            "sys.argv = sys.argv[1:]\n"
            "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")
ALL = "contamination,diversity,artifacts"  # the checks the audit before had
NEAR = "near_dups"


def child(which: str, root: str, checks: str) -> int:
    """Run one contender in this process and print its figures as JSON."""
    from shards import bench_audit_baseline
    from shards.audit import audit
    if which == "import":
        print(json.dumps({}))
        return 0
    ds = shards.open(root)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if which == "new":
        report = audit(ds, checks=tuple(checks.split(",")), stats=timings)
    else:
        report = bench_audit_baseline.audit(ds, tuple(checks.split(",")))
    seconds = time.perf_counter() - t0
    figures = {d: {k: [e["contamination"][k][f] for f in ("docs_with_overlap", "tokens_covered")]
                   for k in ("own_train", "all_train")}
               for d, e in report["domains"].items() if e.get("contamination")}
    print(json.dumps({"seconds": seconds, "timings": timings, "figures": figures}))
    return 0


def _spawn(which: str, root: Path, checks: str) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", PEAK_RSS, "shards.bench_audit", "--child", which,
                        str(root), checks], capture_output=True, text=True, env=env)
    peak = [x for x in r.stderr.splitlines() if x.startswith("VmHWM ")]
    if r.returncode or not peak:
        raise SystemExit(f"bench: the {which} audit failed ({r.returncode}): {r.stderr[-800:]}")
    return {**json.loads(r.stdout.strip().splitlines()[-1]),
            "peak_mb": int(peak[-1].split()[1]) / 1024}


def bench_audit(root: Path, repeat: int, out: Out) -> dict[str, Any]:
    ds = shards.open(root)
    train = sum(sp.num_tokens for sp in ds.splits() if sp.name == "train")
    evals = sum(sp.num_tokens for sp in ds.splits() if sp.name == "eval")
    tokens = {sp.domain: sp.num_tokens for sp in ds.splits() if sp.name == "train"}
    base_mb = _spawn("import", root, ALL)["peak_mb"]
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(repeat):  # interleaved, so both see the same machine state
        for checks in ("contamination", ALL):
            for which in ("old", "new"):
                r = _spawn(which, root, checks)
                key = (which, checks)
                if key not in best or r["seconds"] < best[key]["seconds"]:
                    best[key] = r
        r = _spawn("new", root, NEAR)
        if ("new", NEAR) not in best or r["seconds"] < best["new", NEAR]["seconds"]:
            best["new", NEAR] = r
    same = best["old", "contamination"]["figures"] == best["new", "contamination"]["figures"]
    target_mb = (16 * evals) / 2**20 + 256
    fig: dict[str, Any] = {"train_tokens": train, "eval_tokens": evals, "import_mb": base_mb,
                           "same_contamination_figures": same, "target_mb": target_mb}
    rows = []
    for checks, label in (("contamination", "contamination only"), (ALL, "every check")):
        old, new = best["old", checks], best["new", checks]
        for which, r in (("before", old), ("streaming", new)):
            per_eval = (r["peak_mb"] - base_mb) * 2**20 / max(evals, 1)
            rows.append([f"{label}: {which}", f"{r['seconds']:.2f} s",
                         f"{train / r['seconds'] / 1e6:.1f} M/s", f"{r['peak_mb']:,.0f} MB",
                         f"{per_eval:.1f} B"])
        fig[checks] = {"old_s": old["seconds"], "new_s": new["seconds"],
                       "old_peak_mb": old["peak_mb"], "new_peak_mb": new["peak_mb"],
                       "speedup": old["seconds"] / new["seconds"],
                       "memory_ratio": old["peak_mb"] / new["peak_mb"],
                       "new_timings": new["timings"]}
        rows.append([f"{label}: streaming vs before", f"{fig[checks]['speedup']:.2f}x faster",
                     "", f"{fig[checks]['memory_ratio']:.1f}x less", ""])
    near = best["new", NEAR]
    rows.append(["near-duplicate pairs only: streaming", f"{near['seconds']:.2f} s",
                 f"{train / near['seconds'] / 1e6:.1f} M/s", f"{near['peak_mb']:,.0f} MB",
                 f"{(near['peak_mb'] - base_mb) * 2**20 / max(evals, 1):.1f} B"])
    fig[NEAR] = {"new_s": near["seconds"], "new_peak_mb": near["peak_mb"],
                 "new_timings": near["timings"]}
    out.table(f"shards audit: {train / 1e6:.1f} M train tokens, {evals / 1e6:.2f} M eval tokens "
              f"(best of {repeat}, one process each, one thread)",
              ["run", "time", "train tokens/s", "peak RSS", "RSS/eval token"], rows)
    tm = fig["contamination"]["new_timings"]
    fig["train_pass_m_s"] = train / tm["train_pass"] / 1e6
    out.line(f"streaming contamination phases: eval index {tm['eval_index']:.2f} s "
             f"({tm['eval_ngrams']:,.0f} distinct eval {13}-grams, index "
             f"{tm['index_bytes'] / max(tm['eval_ngrams'], 1):.1f} B each), train pass "
             f"{tm['train_pass']:.2f} s ({fig['train_pass_m_s']:.1f} M train tokens/s), eval "
             f"pass {tm['eval_pass']:.2f} s")
    out.line("train pass by domain (the share of train n-grams found in eval sets its cost): "
             + ", ".join(f"{d} {tokens[d] / tm[f'train_{d}_s'] / 1e6:.1f} M/s at "
                         f"{100 * tm[f'train_{d}_hit_share']:.1f}%" for d in tokens))
    tn = near["timings"]
    out.line(f"near-duplicate phases: eval signatures {tn['near_dups_eval']:.2f} s, train pass "
             f"{tn['train_pass']:.2f} s ({train / tn['train_pass'] / 1e6:.1f} M train tokens/s: "
             f"decoding and signing every train document), examples "
             f"{tn['near_dups_examples']:.2f} s")
    new_peak = fig[ALL]["new_peak_mb"]
    out.line(f"target RSS <= 16 B/eval token + 256 MB = {target_mb:,.0f} MB: streaming audit "
             f"peak {new_peak:,.0f} MB ({'met' if new_peak <= target_mb else 'NOT met'}); "
             f"same contamination figures as before: {'yes' if same else 'NO'}")
    return fig


# --------------------------------------------------------------------------- index choice


def _rate(fn: Any, count: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return count / best / 1e6


def _index_rates(index: Any, q: np.ndarray, present: int) -> dict[str, float]:
    u = index.hashes
    return {"searchsorted": _rate(lambda: u[np.minimum(np.searchsorted(u, q), len(u) - 1)] == q,
                                  len(q)),
            "bloom": _rate(lambda: index.maybe(q), len(q)),
            "directory": _rate(lambda: index.find(q), len(q)),
            "lookup": _rate(lambda: index.lookup(q), len(q)),
            "fp": float(index.maybe(q[present:]).mean())}


def bench_index(sizes: list[int], out: Out, queries: int = 1 << 20) -> dict[int, Any]:
    from shards.ngrams import NgramIndex
    rng = np.random.default_rng(0)
    rows, fig = [], {}
    for k in sizes:
        index = NgramIndex.build(np.frombuffer(rng.bytes(8 * k), dtype=np.uint64).copy(),
                                 in_place=True)
        q = np.frombuffer(rng.bytes(8 * queries), dtype=np.uint64).copy()
        q[:queries // 100] = index.hashes[rng.integers(0, len(index), queries // 100)]
        f = fig[k] = _index_rates(index, q, queries // 100)
        per = len(index)
        rows += [[f"{k / 1e6:g} M", "np.searchsorted (exact)", f"{f['searchsorted']:.1f}",
                  f"{index.hashes.nbytes / per:.1f}"],
                 ["", f"Bloom filter alone ({100 * f['fp']:.2f}% false +)", f"{f['bloom']:.1f}",
                  f"{index.bloom.nbytes / per:.1f}"],
                 ["", "bucket directory alone (exact)", f"{f['directory']:.1f}",
                  f"{(index.hashes.nbytes + index.directory.nbytes) / per:.1f}"],
                 ["", "NgramIndex.lookup: Bloom, then directory", f"{f['lookup']:.1f}",
                  f"{index.nbytes / per:.1f}"]]
    out.table(f"n-gram index: {queries:,} lookups, 1% present (M lookups/s, best of 3)",
              ["hashes", "structure", "M lookups/s", "bytes/hash"], rows)
    return fig


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--child":
    raise SystemExit(child(*sys.argv[2:]))
