"""Where a worker's time goes, stage by stage: ``python -m prep.bench.stages FILE... [--backend B]``.

The worker's real code (`prep.task`, the reader, `prep.parts`) run on the plan's partitions of
the given files, cumulatively: each line adds one stage to the one before, in one process, CPU
and wall seconds (best of ``--repeat``); a stage's cost is the difference to the line before
(noise of a few hundredths of a second included: a small stage can read 0):

1. read: the files' bytes from disk, hashed (the reader's provenance sha256);
2. decompress: ... decompressed by suffix;
3. parse: ... cut into lines, JSON-parsed, made Documents (the reader, complete);
4. filter: ... UTF-8 bytes and the length filters (`prep.task._filtered`);
5. shuffle: ... through the seeded shuffle buffer;
6. hash: ... content sha256 and split point of each document;
7. encode: ... GPT-2 ids (the backend asked for; its load and check not counted);
8. check: ... the sampled check (1 in --tokenizer-check-every);
9. write: the whole task (`prep.task.run_task`: part files, completion record; their fsync is
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

STAGES = ("read", "decompress", "parse", "filter", "shuffle", "hash", "encode", "check",
          "write")


def _drain(it: Iterator[Any]) -> int:
    n = 0
    for _ in it:
        n += 1
    return n


def split(files: list[str], backend: str = "auto", repeat: int = 2,
          check_every: int = 256) -> dict[str, Any]:
    """CPU seconds of each cumulative stage over the files' partitions (module docstring)."""
    from prep import task
    from prep.config import config_from_args
    from prep.plan import make_plan
    from prep.readers import files as rfiles
    from prep.shuffle import ShuffleBuffer
    from prep.split import Splitter
    from shards.conformance import SampledCheck
    from shards.tokenizer import load_encoder, reference_encoder

    work = Path(tempfile.mkdtemp(prefix="prep-stages-"))
    try:
        recipe = work / "r.toml"
        recipe.write_text("seed = 1\n[domains.data]\nsource = \"json\"\n"
                          f"data_files = {json.dumps(files)}\ntext_field = \"text\"\n"
                          "min_chars = 1\nmax_chars = 1000000000\n")
        plan = make_plan(config_from_args(["--recipe", str(recipe), "--out", str(work / "out"),
                                           "--tokenizer-backend", backend, "--quiet"]))
        d = plan.domains[0]
        st = d.settings
        reader = task._reader(st.reader_key())
        enc = load_encoder(backend)
        ref = reference_encoder()
        paths = [f["path"] for p in d.partitions for f in p.spec.get("files", [])] or files

        def docs(p: Any) -> Iterator[Any]:
            c = task.TaskCounts()
            return task._filtered(reader.read(p), st, c, [])

        def shuffled(p: Any) -> Iterator[Any]:
            return ShuffleBuffer(st.cfg.shuffle_buffer, seed=f"1:data:{p.key}",
                                 max_bytes=int(st.cfg.shuffle_buffer_mb * 1e6),
                                 size_of=lambda item: len(item[1]))(docs(p))

        def hashed(p: Any) -> Iterator[Any]:
            sp = Splitter(st.split_salt)
            for doc, raw in shuffled(p):
                digest = hashlib.sha256(raw).digest()
                sp.point(digest)
                yield doc, digest

        def encoded(p: Any) -> Iterator[Any]:
            for doc, digest in hashed(p):
                yield doc, digest, enc.encode_document(doc.text)

        def checked(p: Any) -> Iterator[Any]:
            check = SampledCheck(check_every, enc, lambda: ref)
            for doc, digest, ids in encoded(p):
                check(digest, doc.text, ids, doc.source)
                yield ids

        def run_tasks() -> None:
            tasks = work / "tasks"
            for p in d.partitions:
                job = task.TaskJob(d.task(p.index), st, str(tasks))
                task.run_task(job)
            shutil.rmtree(tasks)

        steps: dict[str, Callable[[], Any]] = {
            "read": lambda: [rfiles.hash_range(hashlib.sha256(), f) for f in paths],
            "decompress": lambda: [_drain(rfiles.iter_decompressed(f, hashlib.sha256()))
                                   for f in paths],
            "parse": lambda: [_drain(reader.read(p)) for p in d.partitions],
            "filter": lambda: [_drain(docs(p)) for p in d.partitions],
            "shuffle": lambda: [_drain(shuffled(p)) for p in d.partitions],
            "hash": lambda: [_drain(hashed(p)) for p in d.partitions],
            "encode": lambda: [_drain(encoded(p)) for p in d.partitions],
            "check": lambda: [_drain(checked(p)) for p in d.partitions],
            "write": run_tasks,
        }
        cumulative, walls = {}, {}
        for name in STAGES:
            best, wall = float("inf"), float("inf")
            for _ in range(repeat):
                t, w = time.process_time(), time.perf_counter()
                steps[name]()
                best = min(best, time.process_time() - t)
                wall = min(wall, time.perf_counter() - w)
            cumulative[name], walls[name] = best, wall
        mb = sum(len(doc.text.encode()) for p in d.partitions for doc, _ in docs(p)) / 1e6
    finally:
        shutil.rmtree(work, ignore_errors=True)
    own, prev = {}, 0.0
    for name in STAGES:
        own[name] = max(0.0, cumulative[name] - prev)
        prev = max(prev, cumulative[name])
    return {"encoder": enc.label, "mb": mb, "partitions": len(d.partitions),
            "cumulative_cpu_s": cumulative, "cumulative_wall_s": walls, "stage_cpu_s": own,
            "stage_share": {k: v / max(prev, 1e-9) for k, v in own.items()},
            "mb_per_cpu_s": mb / max(prev, 1e-9),
            "write_wall_s": max(0.0, walls["write"] - walls["check"])}


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
