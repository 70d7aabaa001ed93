"""Speed and memory figures of `python -m prep.bench.neardup`.

- :func:`signature_cost`: MinHash signatures (`shards.minhash`, the batches prep's step uses)
  against GPT-2 tokenization of the same documents, with tiktoken and with gigatoken (one
  thread), CPU time of this process, rounds interleaved;
- :func:`prep_end_to_end`: ``python -m prep`` on real code written as `prep.bench.inputs` writes
  it (JSONL.zst files), but without its repeated copies of the standard library (they would be
  near-duplicates): the standard library, then the installed packages' `.py` files, in path
  order; near-dup on and off, each encoder, runs alternated; wall and CPU time of each child;
- :func:`commit_memory`: the commit's near-dup state (`prep.lsh.NearDupState`) over a synthetic
  stream of signatures (10% near-copies), peak traced with tracemalloc, per document.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from prep.bench.inputs import Corpus, _Writer, stdlib_documents
from prep.lsh import NearDupState
from shards.minhash import DEFAULT_PARAMS, batches, signatures

SIGN_BATCH = 256 << 10  # as prep.neardup.BATCH_BYTES

def _gigatoken() -> Any:
    import gigatoken

    from shards.tokenizer import GPT2_RANKS_PATH

    return gigatoken.Tokenizer.from_tiktoken(str(GPT2_RANKS_PATH), pretokenizer="gpt2",
                                             special_tokens=None).as_tiktoken()


def signature_cost(rounds: int = 3, kind: str = "code") -> dict[str, Any]:
    """ns per byte of signatures, tiktoken and gigatoken on the stdlib's .py files."""
    from shards.tokenizer import load_gpt2

    texts = [t for _, t in stdlib_documents()]
    raws = [t.encode("utf-8") for t in texts]
    total = sum(len(r) for r in raws)
    tik, giga = load_gpt2(), _gigatoken()
    giga.encode_ordinary(texts[0])  # warm
    rows = []
    for _ in range(rounds):
        row = {}
        for name, fn in (("signatures", lambda: [signatures(b, kind) for b in
                                                 batches(raws, SIGN_BATCH)]),
                         ("tiktoken", lambda: [tik.encode_ordinary(t) for t in texts]),
                         ("gigatoken", lambda: [giga.encode_ordinary(t) for t in texts])):
            t0 = time.process_time()
            fn()
            row[name] = (time.process_time() - t0) / total * 1e9
        rows.append(row)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {"docs": len(raws), "mb": round(total / 1e6, 2), "rounds": rows,
            "ns_per_byte": {k: round(v, 2) for k, v in med.items()},
            "mb_per_s": {k: round(1e3 / v, 1) for k, v in med.items()},
            "signatures_vs_tiktoken": round(statistics.median(
                r["signatures"] / r["tiktoken"] for r in rows), 3),
            "signatures_vs_gigatoken": round(statistics.median(
                r["signatures"] / r["gigatoken"] for r in rows), 3)}


def real_code(folder: Path, mb: float, file_mb: float = 4.0) -> Corpus:
    """`mb` MB of distinct real code: the stdlib's .py files, then site-packages' ones."""
    folder.mkdir(parents=True, exist_ok=True)
    w = _Writer(folder, "code", file_mb)
    for rel, text in stdlib_documents():
        w.add({"text": text, "path": f"stdlib/{rel}"})
    root = Path(sysconfig.get_paths()["purelib"])
    for p in sorted(root.rglob("*.py")):
        if w.total >= mb * 1e6:
            break
        try:
            w.add({"text": p.read_text(encoding="utf-8"), "path": str(p.relative_to(root))})
        except (OSError, UnicodeDecodeError):
            continue
    w.close()
    return Corpus("code", w.files, w.mb)


def prep_end_to_end(folder: Path, reps: int = 5, workers: int = 1, mb: float = 40.0,
                    encoders: tuple[str, ...] = ("tiktoken", "gigatoken")) -> dict[str, Any]:
    """Wall and CPU seconds of ``python -m prep`` with near_dedup on and off (alternated)."""
    corpus = real_code(folder / "input", mb)
    recipes = {}
    for near in (True, False):
        recipes[near] = folder / f"near-{near}.toml"
        recipes[near].write_text(
            "seed = 1\nblock_size = 512\n\n[domains.data]\nsource = \"json\"\n"
            f"data_files = {corpus.files!r}\ntext_field = \"text\"\nmin_chars = 1\n"
            f"max_chars = 1000000000\nsize_mb = 1000000\nnear_dedup = {str(near).lower()}\n"
            .replace("'", '"'))
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    out: dict[str, Any] = {"input_mb": round(sum(corpus.mb), 2), "workers": workers, "runs": []}
    info = []
    for enc in encoders:
        for rep in range(reps):
            for near in (True, False) if rep % 2 == 0 else (False, True):
                dest = folder / f"out-{enc}-{near}-{rep}"
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                r = subprocess.run([sys.executable, "-m", "prep", "--recipe",
                                    str(recipes[near]), "--out", str(dest), "--workers",
                                    str(workers), "--min-eval-docs", "1", "--quiet",
                                    "--tokenizer-backend", enc],
                                   env=env, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if r.returncode != 0:
                    raise RuntimeError(f"prep failed: {r.stderr[-2000:]}")
                m = json.loads((dest / "manifest.json").read_text())
                info.append({k: m["domains"]["data"]["counts"].get(k) for k in (
                    "docs_seen", "docs_near_duplicates", "docs_kept")})
                shutil.rmtree(dest)
                cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
                out["runs"].append({"encoder": enc, "near_dedup": near, "wall_s": round(wall, 2),
                                    "cpu_s": round(cpu, 2), **info[-1]})
    for enc in encoders:
        for what in ("wall_s", "cpu_s"):
            on = statistics.median(r[what] for r in out["runs"]
                                   if r["encoder"] == enc and r["near_dedup"])
            off = statistics.median(r[what] for r in out["runs"]
                                    if r["encoder"] == enc and not r["near_dedup"])
            out[f"{enc}_{what}"] = {"on": on, "off": off, "added": round(on / off - 1, 3)}
    return out


def commit_memory(n_groups: int = 32, group: int = 16384, dup: float = 0.1,
                  seed: int = 0) -> dict[str, Any]:
    """Peak traced bytes per document of the commit's near-dup state over a synthetic stream
    (2**k groups: the last insert merges every band's runs, the worst moment)."""
    rng = np.random.default_rng(seed)
    p = DEFAULT_PARAMS
    with tempfile.TemporaryDirectory() as tmp:
        tracemalloc.start()
        state = NearDupState(p.bands, p.bins, Path(tmp))
        found = 0
        for _ in range(n_groups):
            keys = rng.integers(1, 1 << 63, size=(group, p.bands), dtype=np.uint64)
            sigs = rng.integers(1, 1 << 16, size=(group, p.bins), dtype=np.uint16)
            copy = np.flatnonzero(rng.random(group) < dup)
            copy = copy[copy > 0]
            src = rng.integers(0, copy, dtype=np.int64)  # an earlier document of the group
            keys[copy], sigs[copy] = keys[src], sigs[src]
            keys[copy, 0] ^= np.uint64(1 << 40)  # one band differs: a near-copy
            split = np.zeros(group, dtype=bool)
            v = state.judge(keys, sigs, split, 0.8, False)
            found += int((v.state != 0).sum())
            state.accept(v, group, keys, sigs, split, ["t"] * group, np.arange(group))
            del keys, sigs, v
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        n = n_groups * group
        held = state.nbytes
        state.close()
    return {"docs": n, "group_docs": group, "near_copies_found": found,
            "held_bytes_per_doc": round(held / n, 1),
            "peak_bytes_per_doc": round(peak / n, 1),
            "group_input_bytes_per_doc": round(group * (p.bands * 8 + p.bins * 2) / n, 1)}
