"""The training loop's speed against the bare step: ``python -m train.bench --gpu``.

    python -m train.bench --gpu [--json PATH] [--baseline-tree DIR]   # one H100/H200, < 6 min
    python -m train.bench --cpu-smoke [--json PATH] [--baseline-tree DIR]   # the same, tiny, CPU

Writes a synthetic dataset (three domains of random token ids, through shards' own writer: no
prep, no download), then for each experiment (dense, moe-top1, moe-top2) runs the REAL loop of
train/moe.py for ``--steps`` steps in a process of its own (train/bench_child.py; no
checkpoint is written) and, in the same process with the same compiled model, the bare step:
forward, backward, clip and fused AdamW on one fixed batch with no sampler, no logging and no
host read. ``--gpu``: GPT-2 124M (preset gpt2), B=16, T=1024, bf16 autocast, --compile,
--log-every 10. ``--cpu-smoke``: preset tiny, B=2, T=32, eager, to test all of this on CPU.

One table: ms/step (loop: median dt_s of the last 20 steps, i.e. of the read intervals after
the first; bare: the mean of --bare-steps steps between two syncs), tokens/s, MFU (bf16 dense
peak of train/mfu.py), loop/bare (the loop's overhead), tokens/s vs dense, and on CUDA the
synchronizing CUDA calls per step outside the reads (torch's sync debug mode, after the first
interval). ``--baseline-tree DIR`` also times ``DIR/train/moe.py`` (another checkout, e.g.
the main branch before a change) with the same options, as the "before" rows. ``--json``
keeps every number: per-step times, the settings, the environment, and per run a
torch.profiler record of three bare steps (``child.profile``: ``top``, the 30 ops of most device
time; ``ops``, every op and kernel aggregated by name, so the MoE dispatch's small kernels show
too) and, for the MoE runs, ``child.moe_profile``: the first MoE layer alone, eager, forward +
backward with ranges ``moe.router``/``moe.experts``/``moe.forward``/``moe.backward`` and the
backward per autograd node (a few seconds per run). A run that fails or does not fit in
``--budget-s`` is a row saying so; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("dense", "moe-top1", "moe-top2")
NEEDED = ("numpy", "tiktoken", "zstandard", "rich", "torch")


@dataclass
class Settings:
    device: str
    preset: str
    batch_size: int
    block_size: int | None
    compile: bool
    log_every: int
    steps: int
    tokens_per_domain: int
    bare_steps: int
    bare_warmup: int
    budget_s: float
    child_timeout_s: float


GPU = Settings(device="cuda", preset="gpt2", batch_size=16, block_size=1024, compile=True,
               log_every=10, steps=30, tokens_per_domain=4 << 20, bare_steps=20, bare_warmup=5,
               budget_s=330, child_timeout_s=200)
CPU_SMOKE = Settings(device="cpu", preset="tiny", batch_size=2, block_size=32, compile=False,
                     log_every=10, steps=30, tokens_per_domain=1 << 20, bare_steps=20,
                     bare_warmup=3, budget_s=600, child_timeout_s=300)


def preflight(s: Settings) -> str | None:
    """What keeps this machine from running the benchmark, in one line (None: nothing)."""
    import importlib.util

    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        return (f"missing Python package(s) {', '.join(missing)}: pip install them (or their "
                f"wheels) first; the dataset reader needs them")
    if s.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "--gpu: no CUDA device here; use --cpu-smoke to try the benchmark on CPU"
    return None


def loop_argv(s: Settings, exp: str, data: Path, out: Path, ours: bool) -> list[str]:
    """train/moe.py's options of one run; `ours` adds the options older trees lack."""
    argv = ["--data", str(data), "--out", str(out), "--preset", s.preset, "--experiment", exp,
            "--batch-size", str(s.batch_size), "--max-steps", str(s.steps),
            "--eval-every", "1000000", "--eval-max-blocks", "1",
            "--eval-batch-size", str(s.batch_size), "--warmup", "10", "--device", s.device]
    if s.block_size:
        argv += ["--block-size", str(s.block_size)]
    if s.compile:
        argv.append("--compile")
    if ours:
        argv += ["--log-every", str(s.log_every)]
    return argv


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _loop_times(out: Path) -> dict[str, Any]:
    """ms/step, tokens/s and MFU of a finished loop from its metrics.jsonl (last 20 steps)."""
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["kind"] == "train"]
    last = train[-20:]
    dts = [r["dt_s"] for r in last]
    mfus = [r["mfu"] for r in last if r.get("mfu") is not None]
    ms = statistics.median(dts) * 1e3
    return {"ms_per_step": ms, "tokens_per_s": statistics.median(r["tokens_per_s"] for r in last),
            "mfu": statistics.median(mfus) if mfus else None, "steps": len(train),
            "dt_s": [r["dt_s"] for r in train]}


def run_one(name: str, cmd: list[str], env: dict[str, str], out: Path, log: Path,
            timeout: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        try:
            p = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
            rc: int | str = p.returncode
        except subprocess.TimeoutExpired:
            rc = f"timed out after {timeout:.0f} s"
    res: dict[str, Any] = {"name": name, "cmd": cmd, "wall_s": time.perf_counter() - t0,
                           "exit": rc}
    if rc == 0 and (out / "metrics.jsonl").is_file():
        res["loop"] = _loop_times(out)
    else:
        res["error"] = _tail(log)
    return res


def measure(s: Settings, experiments: list[str], baseline: Path | None, work: Path,
            profile: bool = False) -> list[dict[str, Any]]:
    from train.bench import make_synthetic_dataset

    data = make_synthetic_dataset(work / "data", s.tokens_per_domain, seed=0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    jobs: list[tuple[str, str, Path | None]] = [(e, "after", None) for e in experiments]
    if baseline is not None:
        jobs += [(e, "before", baseline) for e in experiments]
    deadline = time.monotonic() + s.budget_s
    results = []
    for exp, tree, root in jobs:
        name = f"{exp} ({tree})" if baseline is not None else exp
        left = deadline - time.monotonic()
        need = max([30.0] + [0.8 * r["wall_s"] for r in results if "wall_s" in r])
        if left < need:  # it would be killed before it ends: leave the time to the table
            results.append({"name": name, "experiment": exp, "tree": tree,
                            "exit": f"skipped: {left:.0f} s of --budget-s left, a run takes "
                                    f"~{need / 0.8:.0f} s"})
            continue
        out, log = work / f"{exp}-{tree}", work / f"{exp}-{tree}.log"
        print(f"{name}: running ({left:.0f} s of the budget left) ...", flush=True)
        if root is None:
            spec = work / f"{exp}-spec.json"
            spec.write_text(json.dumps({
                "argv": loop_argv(s, exp, data, out, ours=True), "bare_steps": s.bare_steps,
                "bare_warmup": s.bare_warmup, "count_syncs": s.device == "cuda",
                "profile": profile,
                "result": str(work / f"{exp}-child.json")}))
            cmd = [sys.executable, "-m", "train.bench_child", str(spec)]
            res = run_one(name, cmd, env, out, log, min(left, s.child_timeout_s))
            child = work / f"{exp}-child.json"
            if child.is_file():
                res["child"] = json.loads(child.read_text())
        else:
            cmd = [sys.executable, str(root / "train" / "moe.py"),
                   *loop_argv(s, exp, data, out, ours=False)]
            old_env = {**os.environ, "PYTHONPATH": str(root)}
            res = run_one(name, cmd, old_env, out, log, min(left, s.child_timeout_s))
        res.update(experiment=exp, tree=tree)
        print(f"{name}: exit {res['exit']} in {res['wall_s']:.0f} s", flush=True)
        results.append(res)
    return results


def _syncs(child: dict[str, Any], log_every: int, steps: int) -> str:
    per = {int(k): v for k, v in (child.get("syncs_per_step") or {}).items()}
    if not per:
        return "-"
    reads = {k for k in per if k % log_every == 0 or k == steps}
    outside = [v for k, v in per.items() if k > log_every and k not in reads]
    at = [v for k, v in per.items() if k > log_every and k in reads]
    return f"{max(outside, default=0)} ({max(at, default=0)} at a read)"


def _fmt(v: float | None, f: str) -> str:
    return "-" if v is None else format(v, f)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table_rows(results: list[dict[str, Any]], s: Settings) -> list[list[str]]:
    """The table's rows: per run its loop and (ours) its bare step."""
    by = {(r["experiment"], r["tree"]): r for r in results}

    def loop_of(exp: str, tree: str) -> dict[str, Any]:
        return by.get((exp, tree), {}).get("loop") or {}

    def bare_of(exp: str) -> dict[str, Any]:
        return (by.get((exp, "after"), {}).get("child") or {}).get("bare") or {}

    rows = []
    for r in results:
        exp, tree = r["experiment"], r["tree"]
        lp = r.get("loop")
        if not lp:
            rows.append([f"{r['name']} loop", f"failed: {r.get('exit')}", "", "", "", "", "",
                         ""])
            continue
        ours = tree == "after"
        rows.append([
            f"{r['name']} loop", _fmt(lp["ms_per_step"], ".1f"), _fmt(lp["tokens_per_s"], ",.0f"),
            _fmt(lp["mfu"] and 100 * lp["mfu"], ".1f"),
            _fmt(_ratio(lp["ms_per_step"], bare_of(exp).get("ms_per_step")), ".3f"),
            _fmt(_ratio(lp["tokens_per_s"], loop_of("dense", tree).get("tokens_per_s")), ".3f"),
            _fmt(_ratio(loop_of(exp, "before").get("ms_per_step"), lp["ms_per_step"])
                 if ours else None, ".3f"),
            _syncs(r.get("child") or {}, s.log_every, s.steps) if ours else "-"])
        bare = bare_of(exp) if ours else {}
        if bare:
            rows.append([f"{r['name']} bare", _fmt(bare["ms_per_step"], ".1f"),
                         _fmt(bare["tokens_per_s"], ",.0f"),
                         _fmt(bare["mfu"] and 100 * bare["mfu"], ".1f"), "-",
                         _fmt(_ratio(bare["tokens_per_s"], bare_of("dense").get("tokens_per_s")),
                              ".3f"), "-", "-"])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.bench",
                                description="The training loop's speed against the bare step "
                                            "(forward, backward, AdamW on a fixed batch), dense "
                                            "and MoE; see train/bench_loop.py.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--gpu", action="store_true",
                      help="GPT-2 124M, B=16, T=1024, bf16, --compile, on CUDA")
    mode.add_argument("--cpu-smoke", action="store_true",
                      help="preset tiny, B=2, T=32, eager, on CPU: the same plumbing")
    p.add_argument("--json", default=None, help="also write every number to this JSON file")
    p.add_argument("--baseline-tree", default=None,
                   help="another checkout whose train/moe.py to time with the same options "
                        "(the 'before' rows)")
    p.add_argument("--experiments", default=",".join(EXPERIMENTS),
                   help="comma list of the runs, from " + ", ".join(EXPERIMENTS))
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps per loop run (default 30; >= 2 intervals + 1)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile (default: on with --gpu, off with --cpu-smoke)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="the runs' time limit in seconds: no run starts that would not end "
                        "before it, none runs past it (default: 330 with --gpu, 600 with "
                        "--cpu-smoke; give ~2x with --baseline-tree)")
    p.add_argument("--no-profile", action="store_true",
                   help="skip the torch.profiler records (3 bare steps per run, and the MoE "
                        "layer alone; they go to --json only)")
    p.add_argument("--keep", default=None,
                   help="keep the dataset, run directories and logs in this directory")
    a = p.parse_args(argv)
    s = GPU if a.gpu else CPU_SMOKE
    s = Settings(**{**asdict(s), **{k: v for k, v in (
        ("steps", a.steps), ("compile", a.compile), ("budget_s", a.budget_s))
        if v is not None}})
    experiments = [e.strip() for e in a.experiments.split(",") if e.strip()]
    bad = [e for e in experiments if e not in EXPERIMENTS]
    if bad or not experiments:
        p.error(f"--experiments: {', '.join(bad) or 'none'}; choose from {', '.join(EXPERIMENTS)}")
    if s.steps < 2 * s.log_every + 1:
        p.error(f"--steps must be >= {2 * s.log_every + 1} (the first interval is the warmup)")
    baseline = Path(a.baseline_tree).resolve() if a.baseline_tree else None
    if baseline is not None and not (baseline / "train" / "moe.py").is_file():
        p.error(f"--baseline-tree {baseline}: no train/moe.py there")
    problem = preflight(s)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    import torch

    from shards.console import Out

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="train-bench-loop-") as tmp:
        work = Path(a.keep) if a.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = measure(s, experiments, baseline, work, profile=not a.no_profile)
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "device": (torch.cuda.get_device_name(0) if s.device == "cuda" else platform.processor()
                      or "cpu"), "host": platform.node(), "wall_s": time.perf_counter() - t0}
    title = (f"training loop vs bare step: preset {s.preset}, B={s.batch_size}, "
             f"T={s.block_size or 'preset'}, {'compiled' if s.compile else 'eager'}, "
             f"--log-every {s.log_every}, {s.steps} steps; {env['device']}, torch {env['torch']}")
    Out().table(title, ["run", "ms/step", "tokens/s", "MFU %", "loop/bare", "vs dense",
                        "vs before", "syncs/step"], table_rows(results, s))
    print(f"total {env['wall_s']:.0f} s", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"settings": asdict(s), "env": env,
                                            "runs": results}, indent=1))
    return 0 if all("loop" in r for r in results) else 1
