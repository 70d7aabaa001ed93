"""The tokenizer's ceilings: what encoding alone reaches, in processes of their own.

- :func:`reference`: one tiktoken process, ``encode_ordinary`` of every document of the corpus
  files (or their first MB), timed per file in CPU and wall seconds; also the reference: a
  digest of each document's ids, against which every tool's output is checked (`prep.bench.ids`);
  and the one-process rate sampled around each timed run (a disturbed run is measured again).
- :func:`concurrent`: N encoder processes at once (the ceiling on N cores: one process's rate x N
  overstates it, as processes share memory bandwidth, caches and turbo budgets), each encoding
  its share of the documents (every N-th; up to ``max_mb`` MB of text, 0: all) from memory,
  read before a barrier releases them all; the rate is their tokens over the span from the first start to
  the last end. Any backend `shards.tokenizer.load_encoder` knows, loaded in each process as a
  prep worker loads it (the tiktoken reference, or a fast backend behind its guard).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from typing import Any

import numpy as np

from prep.bench.ids import digest
from prep.bench.procfs import peak_rss_mb

CONCURRENT_TIMEOUT_S = 900.0


def reference(files: list[str], max_mb: float | None = None, digests: bool = True
              ) -> dict[str, Any]:
    """One tiktoken process over `files` (at most `max_mb` MB of text), timed per file; with
    `digests`, each document's reference digest."""
    from prep.bench.inputs import read_texts
    from shards.tokenizer import load_gpt2

    enc = load_gpt2()
    per_file = []
    left = None if max_mb is None else max_mb * 1e6
    for path in files:
        texts = []
        for t in read_texts([path]):
            texts.append(t)
            if left is not None:
                left -= len(t.encode())
                if left <= 0:
                    break
        tokens = 0
        ids_all = []
        c0, w0 = time.process_time(), time.perf_counter()
        for t in texts:
            ids = enc.encode_ordinary(t)
            tokens += len(ids) + 1
            ids_all.append(ids)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        per_file.append({"file": path, "docs": len(texts), "tokens": tokens, "cpu_s": cpu,
                         "wall_s": wall, "bytes": sum(len(t.encode()) for t in texts),
                         "digests": [digest(np.array(i, dtype=np.uint16)) for i in ids_all]
                         if digests else []})
        if left is not None and left <= 0:
            break
    return {"files": per_file, "peak_rss_mb": peak_rss_mb(),
            "tokens_per_cpu_s": sum(f["tokens"] for f in per_file)
            / sum(f["cpu_s"] for f in per_file)}


def share(files: list[str], k: int, procs: int, max_mb: float = 0.0) -> list[str]:
    """Process k's documents: every `procs`-th document from the k-th, up to `max_mb` MB of
    text (0: to the end)."""
    from prep.bench.inputs import read_texts

    out, size = [], 0
    for i, text in enumerate(read_texts(files)):
        if i % procs == k:
            out.append(text)
            size += len(text.encode())
            if max_mb and size >= max_mb * 1e6:
                break
    return out


def concurrent(files: list[str], procs: int, backend: str = "tiktoken", max_mb: float = 0.0
               ) -> dict[str, Any]:
    """`procs` encoder processes at once (module docstring). This process runs no encoder
    (it forks them)."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(procs)
    results: Any = ctx.Queue()
    workers = [ctx.Process(target=_encode_share, daemon=True,
                           args=(files, k, procs, backend, max_mb, barrier, results))
               for k in range(procs)]
    for w in workers:
        w.start()
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + CONCURRENT_TIMEOUT_S
    try:
        while len(got) < procs:
            try:
                got.append(results.get(timeout=1.0))
            except queue.Empty:
                dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"concurrent {backend} ceiling: an encoder process "
                                       f"failed (exit codes {dead}) or timed out") from None
    finally:
        for w in workers:
            w.join(timeout=5.0)
            if w.is_alive():
                w.kill()
    errors = [g["error"] for g in got if "error" in g]
    if errors:
        raise RuntimeError(f"concurrent {backend} ceiling: {errors[0]}")
    wall = max(g["end"] for g in got) - min(g["start"] for g in got)
    tokens = sum(g["tokens"] for g in got)
    return {"backend": backend, "encoder": got[0]["label"], "procs": procs, "tokens": tokens,
            "bytes": sum(g["bytes"] for g in got), "wall_s": wall,
            "tokens_per_s": tokens / wall, "cpu_s": sum(g["cpu_s"] for g in got),
            "per_process_tokens_per_s": [g["tokens"] / (g["end"] - g["start"]) for g in got]}


def _encode_share(files: list[str], k: int, procs: int, backend: str, max_mb: float,
                  barrier: Any, results: Any) -> None:
    try:
        from shards.tokenizer import load_encoder

        enc = load_encoder(backend)
        texts = share(files, k, procs, max_mb)
        barrier.wait(timeout=CONCURRENT_TIMEOUT_S)
        t0, c0 = time.monotonic(), time.process_time()
        tokens = 0
        for t in texts:
            tokens += len(enc.encode_document(t))
        end = time.monotonic()
        results.put({"k": k, "start": t0, "end": end, "cpu_s": time.process_time() - c0,
                     "tokens": tokens, "bytes": sum(len(t.encode()) for t in texts),
                     "label": enc.label})
    except Exception as e:  # reported by the parent
        barrier.abort()
        results.put({"k": k, "error": f"{type(e).__name__}: {e}"})
