"""`python -m prep.bench`: prep's speed and memory, each figure a ratio against a baseline
measured in the same run (issue 8, "Speed and memory").

Inputs (`prep.bench.inputs`): real code (the stdlib's .py files repeated, each copy distinct) as
several JSONL.zst files, read at three sizes (a prefix of the files), and the old bench's mixed
code/prose-like input at two. Every run is a fresh process (`prep.bench.children`, the peers in
`prep.bench.peers`), timed from outside, start-up included (`prep.bench.measure`); prep runs as
``python -m prep --workers W`` with default settings. The figures: `prep.bench.figures`.

1. coordinator cost: the coordinator's CPU-s per million tokens, the slope between two sizes
   (start-up cancels), against one tokenizer process's CPU-s per million tokens (the ceiling
   run); their ratio is the number of tokenizer cores the coordinator can feed (goal >= 32);
2. end to end: prep's tokens/s (wall, start-up included) against the ceiling: one process's
   tiktoken `encode_ordinary` tokens/s on the same documents x min(workers, cores) (>= 0.85);
3. peers, same input: build-nanogpt's `fineweb.py` pattern (Pool.imap, >= 1.5x its tokens/s)
   and nanoGPT's `prepare.py` pattern (datasets map + memmap); every tool's token ids checked
   against the ceiling's, document by document;
4. resume: a run killed after half its tasks (PREP_KILL_AT), then `--resume`, timed alone,
   against the full run (<= 0.6);
5. Ray: `--executor ray` (a local instance, start-up included) against the local executor (<= 1.3),
   and joining an instance started beforehand (what Ray costs once started);
6. memory: peak RSS of the coordinator and of each worker at two sizes (no growth: <= 1.1x), and
   the commit's dedup state in bytes per kept document (<= 24).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from prep.bench.figures import figures, print_figures
from prep.bench.inputs import write_code, write_mixed
from prep.bench.measure import Bench, RayInstance, compile_packages, remove
from shards.console import Out


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class BenchConfig:
    code_mb: str = _f("60,200,300", "real-code input sizes, MB of text: small (end to end, "
                                    "memory), middle (resume, Ray), large (end to end, memory)")
    mixed_mb: str = _f("50,100", "mixed-input sizes, MB of text (coordinator slope, end to end)")
    file_mb: float = _f(10.0, "MB of text per input file")
    workers: int = _f(2, "--workers of every prep run and of the peers' pools")
    peers: str = _f("small,large,mixed", "inputs the peers run on: small, middle, large, mixed")
    sample_mb: float = _f(5.0, "MB of each timed run's input that one tokenizer process encodes "
                               "right before and right after the run: the run's ceiling")
    quiet_wait: float = _f(30.0, "seconds to wait before each timed run for the machine's "
                                 "other processes to use < 0.25 cores (the load is reported)")
    prep_args: str = _f("", "extra flags for every prep run (e.g. \"--partition-mb 8\"); "
                            "default: prep's defaults")
    skip: str = _f("", "comma list of parts to skip: peers, nanogpt, resume, ray, mixed")
    work: str | None = _f(None, "scratch directory (default: a temporary directory; removed)")
    json: str | None = _f(None, "also write every measurement and figure to this JSON file")


# --------------------------------------------------------------------------- the run


def run_all(cfg: BenchConfig, work: Path, out: Out) -> dict[str, Any]:
    skip = {s.strip() for s in cfg.skip.split(",") if s.strip()}
    small, mid, large = (float(x) for x in cfg.code_mb.split(","))
    mixed_sizes = [float(x) for x in cfg.mixed_mb.split(",")]
    b = Bench(cfg, work, out)
    t0 = time.perf_counter()
    compile_packages()
    code = write_code(work / "code", large, cfg.file_mb)
    out.line(f"input: real code, {sum(code.mb):.0f} MB of text in {len(code.files)} files "
             f"({sum(os.path.getsize(f) for f in code.files) / 1e6:.0f} MB as .jsonl.zst), "
             f"{time.perf_counter() - t0:.1f}s")
    mixed = None
    if "mixed" not in skip:
        mixed = write_mixed(work / "mixed", max(mixed_sizes), cfg.file_mb)
        out.line(f"input: mixed, {sum(mixed.mb):.0f} MB of text in {len(mixed.files)} files")
    inputs = {"small": code.prefix(small), "middle": code.prefix(mid), "large": code.prefix(large)}
    if mixed is not None:
        inputs["mixed-small"] = mixed.prefix(min(mixed_sizes))
        inputs["mixed"] = mixed.prefix(max(mixed_sizes))
    b.ceiling(code)
    if mixed is not None:
        b.ceiling(mixed)
    b.context["concurrency"] = b.concurrency(code.files[:1])
    for name in inputs:
        b.prep(f"prep-{name}", inputs[name])
        remove(work / f"out-prep-{name}")
    if "peers" not in skip:
        for name in (p.strip() for p in cfg.peers.split(",") if p.strip()):
            if name in inputs:
                b.peer(f"fineweb-{name}", "fineweb", inputs[name])
                if "nanogpt" not in skip:
                    b.peer(f"nanogpt-{name}", "nanogpt", inputs[name])
    if "resume" not in skip:
        full = b.runs["prep-middle"]
        tasks = full.info["manifest_run"]["tasks_done"]
        if tasks < 2:
            raise RuntimeError(f"the resume figure needs a run of >= 2 tasks, the middle input "
                               f"made {tasks}: raise --code-mb or lower --partition-mb")
        for attempt in (1, 2):  # the killed run and its resume, again if the resume was disturbed
            folder = work / "out-resume"
            remove(folder)
            killed = b.prep("prep-killed", inputs["middle"], out_dir=folder, retry=False,
                            env={**os.environ, "PREP_KILL_AT": f"after-task:{tasks // 2}"})
            if killed is not None:
                raise RuntimeError("the run meant to be killed half way finished")
            resumed = b.prep("prep-resumed", inputs["middle"], "--resume", out_dir=folder,
                             retry=False)
            assert resumed is not None
            if not resumed.info["disturbed"] or attempt == 2:
                break
            out.line(f"  prep-resumed was disturbed ({resumed.info['disturbed']}): killing and "
                     "resuming again")
        resumed.info["attempts"] = attempt
        resumed.info["killed_after_tasks"] = tasks // 2
        resumed.info["identical_to_full"] = resumed.info["shards"] == full.info["shards"]
        remove(folder)
    if "ray" not in skip:
        b.prep("prep-ray", inputs["middle"], "--executor", "ray")
        remove(work / "out-prep-ray")
        with RayInstance(work / "ray-head.json", cfg.workers) as address:
            b.prep("prep-ray-joined", inputs["middle"], "--executor", "ray", "--ray-address",
                   address, env={**os.environ, "RAY_AUTH_MODE": "token"})  # as the head has
        remove(work / "out-prep-ray-joined")
    sizes = {k: sum(b.ref[f][0] for f in v) for k, v in inputs.items()}
    result = figures(b, inputs, sizes, {"code": code, "mixed": mixed}, time.perf_counter() - t0)
    print_figures(out, result)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m prep.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(BenchConfig):
        kind = {"float": float, "int": int}.get(str(f.type).split(" ")[0], str)
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default,
                       help=f"{f.metadata['help']} (default: {f.default})")
    return p


def main(argv: list[str] | None = None) -> int:
    cfg = BenchConfig(**vars(build_parser().parse_args(argv)))
    out = Out()
    if cfg.work:
        Path(cfg.work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cfg.work, prefix="prep-bench-") as tmp:
        result = run_all(cfg, Path(tmp), out)
    if cfg.json:
        Path(cfg.json).write_text(json.dumps({"config": asdict(cfg), **result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
