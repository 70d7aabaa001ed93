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

from prep.bench.stages import format_split

if TYPE_CHECKING:
    from prep.bench.measure import Bench, Run

CORES_GOAL = 32
TIKTOKEN_GOAL = 2.5  # prep end to end per core / tiktoken's concurrent ceiling
FAST_GOAL = 0.85  # ... / the fast backend's own concurrent ceiling
FINEWEB_GOAL = 2.5
RESUME_GOAL = 0.6
RAY_GOAL = 1.3
GROWTH_GOAL = 1.1
DEDUP_GOAL = 24
E2E_GOAL_INPUTS = ("small", "large", "one-small", "one-large")
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


class Rows:
    """The table's rows: figure, input, measured, ratio, goal, met, others' load."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, figure: str, inp: str, measured: str, ratio: float | None, goal: str,
            met: bool | None, *used: Run, load: float | None = None) -> None:
        for r in used:
            if r.info.get("disturbed"):  # still, after measuring it again
                measured += f" [{r.label} disturbed: {r.info['disturbed']}]"
            elif r.info.get("attempts", 1) > 1:
                measured += f" [{r.label} measured again: the first try was disturbed]"
        mine = [r.load for r in used if not r.label.startswith("prep-ray")]  # Ray's workers are
        self.rows.append({"figure": figure, "input": inp, "measured": measured,  # not our kids
                          "ratio": ratio, "goal": goal, "met": met,
                          "load": max(mine, default=0.0) if load is None else load})


def figures(b: Bench, inputs: dict[str, list[str]], mb: dict[str, float],
            total_s: float) -> dict[str, Any]:
    runs, t = b.runs, Rows()

    def name(k: str) -> str:
        kind = "mixed" if k.startswith("mixed") else "code"
        return f"{kind} {mb[k]:.0f} MB" + (", one .jsonl.zst" if k.startswith("one-") else
                                            f", {len(inputs[k])} files")

    tik, fast = b.ceilings.get("tiktoken"), b.ceilings.get("fast")
    for c in (tik, fast):
        if c is not None:
            each = "/".join(f"{x / 1e6:.2f}" for x in c["per_process_tokens_per_s"])
            t.add(f"ceiling: {c['procs']} {c['encoder']} processes at once", name("small"),
                  f"{c['tokens_per_s'] / 1e6:.2f} M tok/s ({each} each; {c['bytes'] / 1e6:.0f} MB "
                  "of text from memory)", None, "-", None, load=c.get("load", 0.0))
    if tik and fast:
        t.add("fast backend's ceiling / tiktoken's", name("small"),
              f"{fast['encoder']} vs {tik['encoder']}, {tik['procs']} processes each",
              fast["tokens_per_s"] / tik["tokens_per_s"], "-", None)

    # end to end against the concurrent ceilings
    for k in inputs:
        r = runs.get(f"prep-{k}")
        if r is None or k.startswith("mixed"):
            continue
        goal = k in E2E_GOAL_INPUTS
        enc = r.info["manifest_run"].get("tokenizer", {}).get("chosen", "?")
        for c, g, label in ((tik, TIKTOKEN_GOAL, "tiktoken's"), (fast, FAST_GOAL, "its encoder's")):
            if c is None:
                continue
            ratio = r.rate / c["tokens_per_s"]
            t.add(f"end to end / {label} concurrent ceiling", name(k),
                  f"prep ({enc}) {r.rate / 1e6:.2f} M tok/s ({r.tokens / 1e6:.1f} M tokens in "
                  f"{r.wall:.1f} s) vs {c['tokens_per_s'] / 1e6:.2f} M tok/s ({c['procs']} "
                  f"{c['encoder']} processes)", ratio, f">= {g}" if goal else "-",
                  ratio >= g if goal else None, r)

    # peers, same input
    for k in inputs:
        r = runs.get(f"prep-{k}")
        for peer, label in (("fineweb", "fineweb.py pattern"), ("nanogpt", "nanoGPT prepare.py")):
            p = runs.get(f"{peer}-{k}")
            if r is None or p is None:
                continue
            ratio = r.rate / p.rate
            goal = peer == "fineweb"
            t.add(f"prep / {label}", name(k), f"{label} {p.rate / 1e6:.2f} M tok/s in "
                  f"{p.wall:.1f} s, peak RSS {p.info['peak_rss_mb']:.0f} MB; prep "
                  f"{r.rate / 1e6:.2f} M tok/s", ratio, f">= {FINEWEB_GOAL}" if goal else "-",
                  ratio >= FINEWEB_GOAL if goal else None, r, p)

    # the coordinator: the worker cores it feeds (workers' CPU growth over its own)
    for lo, hi in (("small", "large"), ("mixed-small", "mixed")):
        rl, rh = runs.get(f"prep-{lo}"), runs.get(f"prep-{hi}")
        if rl is None or rh is None:
            continue
        dw = rh.info["workers_cpu_s"] - rl.info["workers_cpu_s"]
        dc = rh.info["coordinator_cpu_s"] - rl.info["coordinator_cpu_s"]
        fed = dw / max(dc, CPU_NOISE_S)
        t.add("coordinator cost: worker cores fed", f"{name(lo)} -> {mb[hi]:.0f} MB",
              f"workers' CPU {rl.info['workers_cpu_s']:.2f} -> {rh.info['workers_cpu_s']:.2f} s, "
              f"coordinator's {rl.info['coordinator_cpu_s']:.2f} -> "
              f"{rh.info['coordinator_cpu_s']:.2f} s"
              + (f" (within the {CPU_NOISE_S} s noise: a lower bound)" if dc < CPU_NOISE_S
                 else ""), fed, f">= {CORES_GOAL}", fed >= CORES_GOAL, rl, rh)

    for enc, split in b.stages.items():
        t.add(f"a worker's CPU by stage ({enc})", f"code {split['mb']:.0f} MB, one file",
              format_split(split), None, "-", None)

    resumed = runs.get("prep-resumed")
    full = runs.get(resumed.info["full"]) if resumed is not None else None
    if full is not None and resumed is not None:
        ratio = resumed.wall / full.wall
        t.add("resume after half the tasks / full run", name("middle"),
              f"resume {resumed.wall:.1f} s (killed after {resumed.info['killed_after_tasks']} "
              f"of {full.info['manifest_run']['tasks_done']} tasks) vs full {full.wall:.1f} s; "
              f"shards identical: {resumed.info['identical_to_full']}", ratio,
              f"<= {RESUME_GOAL}", ratio <= RESUME_GOAL and resumed.info["identical_to_full"],
              full, resumed)
    ray_rows(t, runs, name)
    memory_rows(t, runs, name, mb)
    procs = tik["procs"] if tik else 0
    notes = [f"ceilings: {procs} (min(workers, cores)) encoder processes at once, each on every "
             f"{procs}-th document of the small input, from memory (read before the clock "
             "starts)"]
    return {"machine": machine(), "total_s": total_s, "figures": t.rows, "checks": b.checks,
            "notes": notes, "ceilings": b.ceilings, "stages": b.stages, "mb": mb,
            "runs": {k: asdict(r) for k, r in runs.items()}}


def ray_rows(t: Rows, runs: dict[str, Run], name: Any) -> None:
    full, ray = runs.get("prep-middle"), runs.get("prep-ray")
    if full is not None and ray is not None:
        start = ray.info.get("executor_start_s", 0.0) + ray.info.get("executor_close_s", 0.0)
        ratio = ray.wall / full.wall
        t.add("Ray executor / local executor", name("middle"),
              f"ray {ray.wall:.1f} s (of which ray.init {ray.info.get('executor_start_s', 0):.1f}"
              f" s + shutdown {ray.info.get('executor_close_s', 0):.1f} s = "
              f"{start / ray.wall:.0%}) vs local {full.wall:.1f} s", ratio, f"<= {RAY_GOAL}",
              ratio <= RAY_GOAL, full, ray)
    joined = runs.get("prep-ray-joined")
    if full is not None and joined is not None:
        t.add("Ray, joining a started instance / local", name("middle"),
              f"ray {joined.wall:.1f} s (connect {joined.info.get('executor_start_s', 0):.1f} s) "
              f"vs local {full.wall:.1f} s: what Ray costs once started",
              joined.wall / full.wall, "-", None, full, joined)


def memory_rows(t: Rows, runs: dict[str, Run], name: Any, mb: dict[str, float]) -> None:
    lo, hi = runs.get("prep-small"), runs.get("prep-large")
    if lo is None or hi is None:
        return
    enc = hi.info["manifest_run"].get("tokenizer", {}).get("chosen", "?")
    for who in ("coordinator", "largest worker"):
        if who == "coordinator":
            a, z = lo.info["coordinator_peak_rss_mb"], hi.info["coordinator_peak_rss_mb"]
            each = ""
        else:
            a = max(lo.info["worker_peak_rss_mb"].values())
            z = max(hi.info["worker_peak_rss_mb"].values())
            each = (f"; each worker {_each(lo)} -> {_each(hi)} MB (VmHWM by PID; RssAnon "
                    f"{_each(lo, 'worker_peak_anon_mb')} -> {_each(hi, 'worker_peak_anon_mb')})")
        t.add(f"peak RSS growth: {who} ({enc})", f"{name('small')} -> {mb['large']:.0f} MB",
              f"{a:.0f} MB -> {z:.0f} MB{each}", z / a, f"<= {GROWTH_GOAL}",
              z / a <= GROWTH_GOAL, lo, hi)
    for r, k in ((lo, "small"), (hi, "large")):
        keys, nbytes = r.info.get("dedup_keys"), r.info.get("dedup_bytes")
        if not keys:
            continue
        per = nbytes / keys
        peak = r.info.get("dedup_peak_bytes", 0) / keys
        t.add("dedup state, bytes per kept document", name(k),
              f"KeySet.nbytes {nbytes:,} / {keys:,} keys = {per:.1f} (2 x uint64); peak with "
              f"temporaries {peak:.1f} B/doc", per, f"<= {DEDUP_GOAL}", per <= DEDUP_GOAL, r)


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
    for line in result.get("notes", []):
        out.line(line)
