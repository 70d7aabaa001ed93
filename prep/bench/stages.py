"""Where a worker's time goes, stage by stage: ``python -m prep.bench.stages FILE... [--backend B]``.

The worker's real code (the reader, the domain's pipeline of steps `prep.steps`, `prep.task`)
runs on the plan's partitions of the given files, cumulatively: each line adds one stage to the
one before, in one process, CPU and wall seconds (best of ``--repeat``); a stage's cost is the
difference to the line before (noise of a few hundredths of a second included: a small stage can
read 0):

1. disk: the files' bytes from disk, hashed (the reader's provenance sha256);
2. decompress: ... decompressed by suffix;
3. parse: ... cut into lines, JSON-parsed, made records (the reader, complete);
4. then one line per step of the domain's pipeline, in order (``read``: Documents and their
   UTF-8 bytes; ``length_filter``; ``shuffle``; ``hash_split``; ``tokenize``: the backend asked
   for, its load and conformance check not counted, with the sampled check; and every step a
   recipe turns on, such as the near-duplicate signatures);
5. write: the whole task (`prep.task.run_task`: part files, completion record; their fsync is
   wall time, not CPU).

"rest" (a `--workers 1` prep run's CPU less the tasks': start-up, plan, commit, assembly) is
measured by `python -m prep.bench`, not here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

FILE_STAGES = ("disk", "decompress", "parse")


def _drain(it: Iterator[Any]) -> int:
    n = 0
    for _ in it:
        n += 1
    return n


def stage_names(step_names: list[str]) -> list[str]:
    """Every line of the split: the file stages, the pipeline's steps, the write."""
    return [*FILE_STAGES, *step_names, "write"]


def split(files: list[str], backend: str = "auto", repeat: int = 2,
          check_every: int = 256) -> dict[str, Any]:
    """CPU seconds of each cumulative stage over the files' partitions (module docstring)."""
    from prep import task
    from prep.config import config_from_args
    from prep.plan import make_plan
    from prep.readers import files as rfiles
    from prep.steps import Counters, TaskContext

    work = Path(tempfile.mkdtemp(prefix="prep-stages-"))
    try:
        recipe = work / "r.toml"
        recipe.write_text("seed = 1\n[domains.data]\nsource = \"json\"\n"
                          f"data_files = {json.dumps(files)}\ntext_field = \"text\"\n"
                          "min_chars = 1\nmax_chars = 1000000000\n")
        plan = make_plan(config_from_args(["--recipe", str(recipe), "--out", str(work / "out"),
                                           "--tokenizer-backend", backend,
                                           "--tokenizer-check-every", str(check_every),
                                           "--quiet"]))
        d = plan.domains[0]
        st = d.settings
        reader = task._reader(st.reader_key())
        paths = [f["path"] for p in d.partitions for f in p.spec.get("files", [])] or files
        made: dict[int, Any] = {}  # step instances, once per partition and prefix length

        def prefix(p: Any, k: int) -> Iterator[Any]:
            """The partition through the pipeline's first k steps (fresh instances: a step's
            encoder comes from the per-process cache, so its load is not timed)."""
            ctx = TaskContext(d.name, p.key, p.index, 0, plan.seed, Counters.of(st.counters))
            stream: Iterator[Any] = reader.read(p)
            for cls in st.steps[:k]:
                step = cls(st, ctx)
                made[id(step)] = step
                stream = step.run(stream)
            return stream

        def run_tasks() -> None:
            tasks = work / "tasks"
            for p in d.partitions:
                task.run_task(task.TaskJob(d.task(p.index), st, str(tasks)))
            shutil.rmtree(tasks)

        _drain(prefix(d.partitions[0], len(st.steps)))  # loads the encoder (and any step's
        #                                                  resources) before the timing
        steps: dict[str, Callable[[], Any]] = {
            "disk": lambda: [rfiles.hash_range(hashlib.sha256(), f) for f in paths],
            "decompress": lambda: [_drain(rfiles.iter_decompressed(f, hashlib.sha256()))
                                   for f in paths],
            "parse": lambda: [_drain(prefix(p, 0)) for p in d.partitions],
        }
        for k, cls in enumerate(st.steps, start=1):
            steps[cls.name] = lambda k=k: [_drain(prefix(p, k)) for p in d.partitions]
        steps["write"] = run_tasks
        names = stage_names([cls.name for cls in st.steps])
        cumulative, walls = {}, {}
        for name in names:
            best, wall = float("inf"), float("inf")
            for _ in range(repeat):
                t, w = time.process_time(), time.perf_counter()
                steps[name]()
                best = min(best, time.process_time() - t)
                wall = min(wall, time.perf_counter() - w)
            cumulative[name], walls[name] = best, wall
        mb = sum(len(doc.raw) for p in d.partitions for doc in prefix(p, 1)) / 1e6  # step 1:
        #                                                        read, the documents' UTF-8 text
        tok = next(s for s in made.values() if s.name == "tokenize")
        label = tok.encoder.label
    finally:
        shutil.rmtree(work, ignore_errors=True)
    own, prev = {}, 0.0
    for name in names:
        own[name] = max(0.0, cumulative[name] - prev)
        prev = max(prev, cumulative[name])
    last_step = names[-2]
    return {"encoder": label, "mb": mb, "partitions": len(d.partitions),
            "cumulative_cpu_s": cumulative, "cumulative_wall_s": walls, "stage_cpu_s": own,
            "stage_share": {k: v / max(prev, 1e-9) for k, v in own.items()},
            "mb_per_cpu_s": mb / max(prev, 1e-9),
            "write_wall_s": max(0.0, walls["write"] - walls[last_step])}


def format_split(result: dict[str, Any]) -> str:
    total = sum(result["stage_cpu_s"].values())
    parts = ", ".join(f"{k} {v:.2f} s ({v / max(total, 1e-9):.0%})"
                      for k, v in result["stage_cpu_s"].items())
    return (f"{result['encoder']}, {result['mb']:.1f} MB in {result['partitions']} partitions, "
            f"{result['mb_per_cpu_s']:.1f} MB per CPU-s: {parts}; the writes' wall time "
            f"{result['write_wall_s']:.2f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m prep.bench.stages", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="JSON Lines files (records with a 'text' field)")
    p.add_argument("--backend", default="auto", help="--tokenizer-backend (default: auto)")
    p.add_argument("--repeat", type=int, default=2, help="runs of each line; the fastest counts")
    p.add_argument("--json", help="also write the result to this JSON file")
    args = p.parse_args(argv)
    result = split([str(Path(f).resolve()) for f in args.files], args.backend, args.repeat)
    print(format_split(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
