"""`python -m prep.bench --many-cores`: does prep scale to many cores, with any input shape?

For each worker count N of ``--mc-workers`` (default 8 and 16): N concurrent encoder processes
on in-memory text for tiktoken and for each installed fast backend (`prep.bench.ceiling`), and
prep with ``--workers N`` on the same real code (``--mc-mb`` MB of text) as many ``.jsonl.zst``
files and as one. Each prep run's ids are checked against tiktoken's, document by document. The
figures: prep's tokens/s over tiktoken's and over its own encoder's ceiling on N processes, one
file over many files, each worker's peak RSS. Waits for a quiet machine are capped (5 s each, 60
s in all); a run disturbed by other processes is measured once more, then reported as such.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from prep.bench.config import BenchConfig
from prep.bench.figures import Rows, machine
from prep.bench.inputs import one_file, write_code
from prep.bench.measure import Bench, compile_packages, remove
from shards.console import Out
from shards.encoders import FAST_BACKENDS
from shards.tokenizer import probe_backend


def run_many_cores(cfg: BenchConfig, work: Path, out: Out) -> dict[str, Any]:
    t0 = time.perf_counter()
    b = Bench(cfg, work, out)
    counts = [int(x) for x in cfg.mc_workers.split(",") if x.strip()]
    compile_packages()
    code = write_code(work / "code", cfg.mc_mb, cfg.file_mb)
    one = one_file(code.files, work / "code" / "one.jsonl.zst")
    mb = sum(code.mb)
    out.line(f"input: real code, {mb:.0f} MB of text in {len(code.files)} files and as one "
             f"{os.path.getsize(one) / 1e6:.0f} MB .jsonl.zst, {time.perf_counter() - t0:.1f}s")
    b.ceiling(code, procs=min(max(counts), b.cores))
    b.alias(one, code.files)
    chosen = probe_backend(cfg.backend).name  # in a child; its verdict is kept for the runs
    backends = ["tiktoken", cfg.backend] + [n for n in FAST_BACKENDS
                                             if n != chosen and FAST_BACKENDS[n].installed()]
    for n in counts:
        for backend in backends:
            b.concurrent(f"{backend}-{n}", code.files, n, backend)
        for shape, files in (("many", code.files), ("one", [one])):
            b.prep(f"prep-{shape}-{n}", files, workers=n)
            remove(work / f"out-prep-{shape}-{n}")
    result = many_core_figures(b, counts, cfg.backend, mb, len(code.files),
                               time.perf_counter() - t0)
    print_many_cores(out, result)
    return result


def many_core_figures(b: Bench, counts: list[int], backend: str, mb: float, n_files: int,
                      total_s: float) -> dict[str, Any]:
    t = Rows()
    for n in counts:
        tik = b.ceilings[f"tiktoken-{n}"]
        for label, c in b.ceilings.items():
            if not label.endswith(f"-{n}"):
                continue
            each = c["per_process_tokens_per_s"]
            t.add(f"ceiling: {n} {c['encoder']} processes at once", f"code, {c['bytes'] / 1e6:.0f}"
                  " MB from memory", f"{c['tokens_per_s'] / 1e6:.2f} M tok/s, "
                  f"{sum(each) / len(each) / 1e6:.2f} per process (min {min(each) / 1e6:.2f})",
                  c["tokens_per_s"] / tik["tokens_per_s"], "-", None, load=c.get("load", 0.0))
        fast = b.ceilings[f"{backend}-{n}"]
        for shape in ("many", "one"):
            r = b.runs[f"prep-{shape}-{n}"]
            where = (f"code {mb:.0f} MB, " + (f"{n_files} files" if shape == "many"
                                               else "one .jsonl.zst") + f", --workers {n}")
            enc = r.info["manifest_run"].get("tokenizer", {}).get("chosen", "?")
            for c, what in ((tik, "tiktoken's"), (fast, "its encoder's")):
                t.add(f"end to end / {what} ceiling on {n} processes", where,
                      f"prep ({enc}) {r.rate / 1e6:.2f} M tok/s in {r.wall:.1f} s vs "
                      f"{c['tokens_per_s'] / 1e6:.2f} M tok/s; workers' peak RSS "
                      f"{_rss(r)} MB", r.rate / c["tokens_per_s"], "-", None, r)
        many, one = b.runs[f"prep-many-{n}"], b.runs[f"prep-one-{n}"]
        t.add(f"one file / many files, --workers {n}", f"code {mb:.0f} MB",
              f"{one.rate / 1e6:.2f} vs {many.rate / 1e6:.2f} M tok/s", one.rate / many.rate,
              "-", None, one, many)
    return {"mode": "many-cores", "machine": machine(), "total_s": total_s, "figures": t.rows,
            "checks": b.checks, "ceilings": b.ceilings,
            "notes": ["ceilings: N encoder processes at once, each on every N-th document of "
                      "the input, from memory (read before the clock starts)"],
            "runs": {k: {"tokens": r.tokens, "wall": r.wall, "load": r.load, "info": r.info}
                     for k, r in b.runs.items()}}


def _rss(r: Any) -> str:
    vals = sorted(r.info.get("worker_peak_rss_mb", {}).values())
    return f"{vals[0]:.0f}-{vals[-1]:.0f}" if vals else "?"


def print_many_cores(out: Out, result: dict[str, Any]) -> None:
    from prep.bench.figures import print_figures

    print_figures(out, result)
