"""`python -m prep.bench`: prep's speed and memory, each figure a ratio against a baseline
measured in the same run (issues 8 and 13).

Inputs (`prep.bench.inputs`): real code (the stdlib's .py files repeated, each copy distinct) as
several JSONL.zst files, read at three sizes (a prefix of the files), the same data as one big
.jsonl.zst (the one-file shape), and the old bench's mixed code/prose-like input at two. Every
run is a fresh process (`prep.bench.children`, the peers in `prep.bench.peers`), timed from
outside, start-up included (`prep.bench.measure`); prep runs as ``python -m prep --workers W
--tokenizer-backend B`` (B: --backend, default auto) with default settings. Figures:
`prep.bench.figures`.

1. ceilings (`prep.bench.ceiling`): min(workers, cores) encoder processes at once on in-memory
   text, tiktoken's and the fast backend's;
2. end to end: prep's tokens/s (wall, start-up included) against tiktoken's concurrent ceiling
   (>= 2.5) and against the fast backend's own (>= 0.85), many files and one file;
3. peers, same input: build-nanogpt's `fineweb.py` pattern (>= 2.5x its tokens/s) and nanoGPT's
   `prepare.py` pattern; every tool's token ids checked against tiktoken's, document by document;
4. coordinator cost: the workers' CPU-s over the coordinator's between two sizes (start-up
   cancels): the worker cores one coordinator can feed (>= 32);
5. a worker's CPU stage by stage (`prep.bench.stages`), tiktoken and the fast backend;
6. resume: a run killed after half its tasks, then `--resume`, timed alone (<= 0.6 of a run);
7. Ray: `--executor ray` against the local executor (<= 1.3), and joining a started instance;
8. memory: peak RSS of the coordinator and of each worker at two sizes with the fast backend
   (<= 1.1x), and the commit's dedup state in bytes per kept document (<= 24).

``--many-cores``: the scaling mode instead (`prep.bench.manycores`). ``--quick``: small sizes.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prep.bench.config import BenchConfig, build_parser
from prep.bench.figures import figures, print_figures
from prep.bench.inputs import one_file, write_code, write_mixed
from prep.bench.measure import Bench, RayInstance, compile_packages, remove
from shards.console import Out


def run_all(cfg: BenchConfig, work: Path, out: Out) -> dict[str, Any]:
    skip = cfg.skipped
    small, mid, large = (float(x) for x in cfg.code_mb.split(","))
    mixed_sizes = [float(x) for x in cfg.mixed_mb.split(",")]
    b = Bench(cfg, work, out)
    t0 = time.perf_counter()
    compile_packages()
    code = write_code(work / "code", large, cfg.file_mb)
    out.line(f"input: real code, {sum(code.mb):.0f} MB of text in {len(code.files)} files "
             f"({sum(os.path.getsize(f) for f in code.files) / 1e6:.0f} MB as .jsonl.zst), "
             f"{time.perf_counter() - t0:.1f}s")
    inputs = {"small": code.prefix(small), "middle": code.prefix(mid), "large": code.prefix(large)}
    mb = {k: code.size_of(v) for k, v in inputs.items()}
    if "one-file" not in skip:
        for k in ("small", "large"):
            inputs[f"one-{k}"] = [one_file(inputs[k], work / "code" / f"one-{k}.jsonl.zst")]
            mb[f"one-{k}"] = mb[k]
    mixed = None
    if "mixed" not in skip:
        mixed = write_mixed(work / "mixed", max(mixed_sizes), cfg.file_mb)
        out.line(f"input: mixed, {sum(mixed.mb):.0f} MB of text in {len(mixed.files)} files")
        inputs["mixed-small"] = mixed.prefix(min(mixed_sizes))
        inputs["mixed"] = mixed.prefix(max(mixed_sizes))
        mb.update({k: mixed.size_of(inputs[k]) for k in ("mixed-small", "mixed")})
    b.ceiling(code)
    if mixed is not None:
        b.ceiling(mixed)
    for k in ("small", "large"):
        if f"one-{k}" in inputs:
            b.alias(inputs[f"one-{k}"][0], inputs[k])
    ceilings(b, inputs["small"], min(cfg.workers, b.cores))
    if "stages" not in skip:
        for backend in ("tiktoken", cfg.backend):
            b.stage_split(code.files[:1], backend)
    for name in inputs:
        b.prep(f"prep-{name}", inputs[name])
        remove(work / f"out-prep-{name}")
    if "peers" not in skip:
        peers(b, cfg, inputs)
    if "resume" not in skip:
        resume(b, work, inputs["middle"], out)
    if "ray" not in skip:
        b.prep("prep-ray", inputs["middle"], "--executor", "ray")
        remove(work / "out-prep-ray")
        with RayInstance(work / "ray-head.json", cfg.workers) as address:
            b.prep("prep-ray-joined", inputs["middle"], "--executor", "ray", "--ray-address",
                   address, env={**os.environ, "RAY_AUTH_MODE": "token"})  # as the head has
        remove(work / "out-prep-ray-joined")
    result = figures(b, inputs, mb, time.perf_counter() - t0)
    print_figures(out, result)
    return result


def ceilings(b: Bench, files: list[str], procs: int) -> None:
    """tiktoken's and the fast backend's concurrent ceilings on `procs` processes."""
    b.concurrent("tiktoken", files, procs, "tiktoken")
    fast = b.concurrent("fast", files, procs, b.cfg.backend)
    b.out.line(f"  ceilings on {procs} processes: tiktoken "
               f"{b.ceilings['tiktoken']['tokens_per_s'] / 1e6:.1f} M tok/s, {fast['encoder']} "
               f"{fast['tokens_per_s'] / 1e6:.1f} M tok/s")


def peers(b: Bench, cfg: BenchConfig, inputs: dict[str, list[str]]) -> None:
    try:
        import datasets  # noqa: F401
    except ImportError:
        b.out.line("  peers skipped: they need the datasets package (pip install datasets)")
        return
    for name in (p.strip() for p in cfg.peers.split(",") if p.strip()):
        if name in inputs:
            b.peer(f"fineweb-{name}", "fineweb", inputs[name])
            if "nanogpt" not in cfg.skipped:
                b.peer(f"nanogpt-{name}", "nanogpt", inputs[name])


def resume(b: Bench, work: Path, files: list[str], out: Out) -> None:
    """A run killed after half its tasks (PREP_KILL_AT), then `--resume`, against the full one."""
    full = b.runs["prep-middle"]
    tasks = full.info["manifest_run"]["tasks_done"]
    if tasks < 2:
        raise RuntimeError(f"the resume figure needs a run of >= 2 tasks, the middle input made "
                           f"{tasks}: raise --code-mb or lower --partition-mb")
    for attempt in (1, 2):  # the killed run and its resume, again if the resume was disturbed
        folder = work / "out-resume"
        remove(folder)
        killed = b.prep("prep-killed", files, out_dir=folder, retry=False,
                        env={**os.environ, "PREP_KILL_AT": f"after-task:{tasks // 2}"})
        if killed is not None:
            raise RuntimeError("the run meant to be killed half way finished")
        resumed = b.prep("prep-resumed", files, "--resume", out_dir=folder, retry=False)
        assert resumed is not None
        if not resumed.info["disturbed"] or attempt == 2:
            break
        out.line(f"  prep-resumed was disturbed ({resumed.info['disturbed']}): killing and "
                 "resuming again")
    resumed.info["attempts"] = attempt
    resumed.info["killed_after_tasks"] = tasks // 2
    resumed.info["identical_to_full"] = resumed.info["shards"] == full.info["shards"]
    resumed.info["full"] = full.label
    remove(folder)


def main(argv: list[str] | None = None) -> int:
    cfg = BenchConfig(**vars(build_parser(__doc__).parse_args(argv))).resolved()
    out = Out()
    if cfg.work:
        Path(cfg.work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cfg.work, prefix="prep-bench-") as tmp:
        if cfg.many_cores:
            from prep.bench.manycores import run_many_cores

            result = run_many_cores(cfg, Path(tmp), out)
        else:
            result = run_all(cfg, Path(tmp), out)
    if cfg.json:
        Path(cfg.json).write_text(json.dumps({"config": asdict(cfg), **result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
