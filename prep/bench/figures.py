"""The figures of `python -m prep.bench` from its measured runs: a table and a JSON record.

Each figure is a ratio against a baseline measured in the same run; the table says its goal and
whether it was met, and the load that other processes put on the machine while it was measured
(CPU cores busy outside the bench's own processes, from /proc/stat; a 2-worker run on a 2-core
machine loses about that share of its cores).
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prep.bench.inputs import Corpus
    from prep.bench.measure import Bench, Run

CORES_GOAL = 32
E2E_GOAL = 0.85
FINEWEB_GOAL = 1.5
RESUME_GOAL = 0.6
RAY_GOAL = 1.3
GROWTH_GOAL = 1.1
DEDUP_GOAL = 24
E2E_GOAL_INPUTS = ("small", "large")
CPU_NOISE_S = 0.05  # the coordinator's CPU-s varies this much between runs of one size


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         "")
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({model or platform.machine()}), {mem:.0f} GiB, no GPU used; "
            f"Python {platform.python_version()}, {platform.system()}")


def figures(b: Bench, inputs: dict[str, list[str]], tokens: dict[str, int],
            corpora: dict[str, Corpus | None], total_s: float) -> dict[str, Any]:
    runs, cfg = b.runs, b.cfg
    par = min(cfg.workers, b.cores)
    mb = {k: (corpora["code"] if not k.startswith("mixed") else corpora["mixed"]).size_of(v)
          for k, v in inputs.items()}

    def name(k: str) -> str:
        return f"{'mixed' if k.startswith('mixed') else 'code'} {mb[k]:.0f} MB"

    rows: list[dict[str, Any]] = []

    def row(figure: str, inp: str, measured: str, ratio: float | None, goal: str,
            met: bool | None, *used: Run) -> None:
        for r in used:
            if r.info.get("disturbed"):  # still, after measuring it again
                measured += f" [{r.label} disturbed: {r.info['disturbed']}]"
            elif r.info.get("attempts", 1) > 1:
                measured += f" [{r.label} measured again: the first try was disturbed]"
        mine = [r.load for r in used if not r.label.startswith("prep-ray")]  # Ray's workers are
        rows.append({"figure": figure, "input": inp, "measured": measured, "ratio": ratio,  # not
                     "goal": goal, "met": met,  # our children: their CPU would count as others'
                     "load": max(mine, default=0.0)})

    # 1. coordinator cost: the slope between two sizes, against one tokenizer process. Each
    # run's CPU-s are weighed by the tokenizer's rate measured around that run (tokens one
    # tokenizer process does per CPU-s then): a slower host stretches both alike.
    def cores_fed(a: Run, z: Run, key: str) -> tuple[float, bool, str]:
        ca, cz = a.info[key], z.info[key]
        work = cz * z.speed - ca * a.speed  # tokenizer-equivalent tokens
        floor = CPU_NOISE_S * (a.speed + z.speed) / 2
        bound = work < floor  # within the noise: count the noise as growth
        fed = (z.tokens - a.tokens) / max(work, floor)
        text = (f"CPU {ca:.2f} -> {cz:.2f} s, one tokenizer's rate then {a.speed / 1e6:.2f} -> "
                f"{z.speed / 1e6:.2f} M tok/CPU-s: {work / 1e6:.2f} M tokenizer-equivalent "
                f"tokens for {(z.tokens - a.tokens) / 1e6:.1f} M more tokens")
        if bound:
            text += f" (within the {CPU_NOISE_S} s noise, counted as that: a lower bound)"
        return fed, bound, text

    for lo, hi in (("small", "large"), ("mixed-small", "mixed")):
        rl, rh = runs.get(f"prep-{lo}"), runs.get(f"prep-{hi}")
        if rl is None or rh is None:
            continue
        fed, _, text = cores_fed(rl, rh, "coordinator_cpu_s")
        row("coordinator cost: cores fed", f"{name(lo)} -> {mb[hi]:.0f} MB",
            f"coordinator at exit {text}; the manifest's coordinator_cpu_s "
            f"{rl.info['manifest_run']['coordinator_cpu_s']:.2f} -> "
            f"{rh.info['manifest_run']['coordinator_cpu_s']:.2f} s", fed,
            f">= {CORES_GOAL}", fed >= CORES_GOAL, rl, rh)

    fl, fh = runs.get("fineweb-small"), runs.get("fineweb-large")
    if fl is not None and fh is not None:
        fed, _, text = cores_fed(fl, fh, "parent_cpu_s")
        row("fineweb.py pattern's parent: cores fed", f"{name('small')} -> {mb['large']:.0f} MB",
            f"its parent process (datasets rows, imap pickling, shard copies) {text}", fed, "-",
            None, fl, fh)

    # 2. end to end against the tokenizer ceiling
    for k in inputs:
        r = runs.get(f"prep-{k}")
        if r is None:
            continue
        ceiling = r.ceiling * par
        ratio = r.rate / ceiling
        goal = k in E2E_GOAL_INPUTS
        row("end to end / tokenizer ceiling", name(k),
            f"{r.rate / 1e6:.2f} M tok/s ({r.tokens / 1e6:.1f} M tokens in {r.wall:.1f} s) vs "
            f"{ceiling / 1e6:.2f} M tok/s (1 process x {par}; samples "
            + "/".join(f"{x * par / 1e6:.2f}" for x in r.ceiling_samples) + ")", ratio,
            f">= {E2E_GOAL}" if goal else "-", ratio >= E2E_GOAL if goal else None, r)

    # 3. peers, same input
    for k in inputs:
        r = runs.get(f"prep-{k}")
        for peer, label in (("fineweb", "fineweb.py pattern"), ("nanogpt", "nanoGPT prepare.py")):
            p = runs.get(f"{peer}-{k}")
            if r is None or p is None:
                continue
            ratio = r.rate / p.rate
            goal = peer == "fineweb"
            row(f"prep / {label}", name(k),
                f"{label} {p.rate / 1e6:.2f} M tok/s in {p.wall:.1f} s "
                f"({p.rate / p.ceiling / par:.2f} "
                f"of the ceiling; prep {r.rate / r.ceiling / par:.2f}), peak RSS "
                f"{p.info['peak_rss_mb']:.0f} MB", ratio,
                f">= {FINEWEB_GOAL}" if goal else "-", ratio >= FINEWEB_GOAL if goal else None,
                r, p)

    # 4. resume
    full, res = runs.get("prep-middle"), runs.get("prep-resumed")
    if full is not None and res is not None:
        ratio = res.wall / full.wall
        row("resume after half the tasks / full run", name("middle"),
            f"resume {res.wall:.1f} s (killed after {res.info['killed_after_tasks']} of "
            f"{full.info['manifest_run']['tasks_done']} tasks) vs full {full.wall:.1f} s; "
            f"shards identical: {res.info['identical_to_full']}", ratio,
            f"<= {RESUME_GOAL}", ratio <= RESUME_GOAL and res.info["identical_to_full"], full, res)

    # 5. Ray
    ray = runs.get("prep-ray")
    if full is not None and ray is not None:
        start = ray.info.get("executor_start_s", 0.0) + ray.info.get("executor_close_s", 0.0)
        ratio = ray.wall / full.wall
        row("Ray executor / local executor", name("middle"),
            f"ray {ray.wall:.1f} s (of which ray.init {ray.info.get('executor_start_s', 0):.1f} s "
            f"+ shutdown {ray.info.get('executor_close_s', 0):.1f} s = {start / ray.wall:.0%}) "
            f"vs local {full.wall:.1f} s",
            ratio, f"<= {RAY_GOAL}", ratio <= RAY_GOAL, full, ray)

    joined = runs.get("prep-ray-joined")
    if full is not None and joined is not None:
        ratio = joined.wall / full.wall
        row("Ray, joining a started instance / local", name("middle"),
            f"ray {joined.wall:.1f} s (connect {joined.info.get('executor_start_s', 0):.1f} s) vs "
            f"local {full.wall:.1f} s: what Ray costs once started", ratio, "-", None, full,
            joined)

    # 6. memory
    lo, hi = runs.get("prep-small"), runs.get("prep-large")
    if lo is not None and hi is not None:
        for who in ("coordinator", "largest worker"):
            if who == "coordinator":
                a, z = lo.info["coordinator_peak_rss_mb"], hi.info["coordinator_peak_rss_mb"]
                each = ""
            else:
                a, z = max(lo.info["worker_peak_rss_mb"].values()), max(
                    hi.info["worker_peak_rss_mb"].values())
                each = (f"; each worker {_each(lo)} -> {_each(hi)} MB (VmHWM by PID, read last "
                        f"at the pool's close; RssAnon {_each(lo, 'worker_peak_anon_mb')} -> "
                        f"{_each(hi, 'worker_peak_anon_mb')}; RUSAGE_CHILDREN's maximum, which "
                        f"also covers helper processes, {lo.info['workers_max_peak_rss_mb']:.0f} "
                        f"-> {hi.info['workers_max_peak_rss_mb']:.0f})")
            row(f"peak RSS growth: {who}", f"{name('small')} -> {mb['large']:.0f} MB",
                f"{a:.0f} MB -> {z:.0f} MB{each}", z / a, f"<= {GROWTH_GOAL}",
                z / a <= GROWTH_GOAL, lo, hi)
        for r, k in ((lo, "small"), (hi, "large")):
            keys, nbytes = r.info.get("dedup_keys"), r.info.get("dedup_bytes")
            if not keys:
                continue
            per = nbytes / keys
            peak = r.info.get("dedup_peak_bytes", 0) / keys
            row("dedup state, bytes per kept document", name(k),
                f"KeySet.nbytes {nbytes:,} / {keys:,} keys ({r.info['docs_kept']:,} documents "
                f"kept) = {per:.1f} (2 x uint64); peak with the merges' and the leakage "
                f"check's temporaries {r.info.get('dedup_peak_bytes', 0):,} B = {peak:.1f} B/doc",
                per, f"<= {DEDUP_GOAL}", per <= DEDUP_GOAL, r)
    return {"machine": machine(), "total_s": total_s, "figures": rows, "checks": b.checks,
            "context": b.context,
            "tokens": tokens, "mb": mb,
            "runs": {k: asdict(r) for k, r in runs.items()}}


def _each(r: Run, key: str = "worker_peak_rss_mb") -> str:
    vals = sorted(r.info.get(key, {}).values())
    return "/".join(f"{v:.0f}" for v in vals) or "?"


def print_figures(out: Any, result: dict[str, Any]) -> None:
    out.line(f"machine: {result['machine']}; bench took {result['total_s']:.0f} s")
    cells = []
    for r in result["figures"]:
        met = {True: "met", False: "NOT met", None: "-"}[r["met"]]
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        cells.append([r["figure"], r["input"], ratio, r["goal"], met, f"{r['load']:.2f}",
                      r["measured"]])
    out.table("prep.bench", ["figure", "input", "ratio", "goal", "", "others' load (cores)",
                             "measured"], cells)
    for line in result["checks"]:
        out.line(f"ids check: {line}")
    c = result["context"].get("concurrency")
    if c:
        out.line(f"two tokenizer processes at once: {c['two_each'] / 1e6:.2f} M tokens/CPU-s each, "
                 f"one alone {c['one'] / 1e6:.2f} ({c['two_each'] / c['one']:.2f}x): the ceiling "
                 "counts 1.00x")
    out.line("ceilings: one tokenizer process's tokens per CPU-s on the run's input, measured "
             "just before and just after each timed run (the faster of the two), x min(workers, "
             "cores)")
