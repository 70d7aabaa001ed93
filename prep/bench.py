"""`python -m prep.bench`: prep end to end against the tokenizer ceiling and a nanoGPT baseline.

On one generated input (mixed code- and prose-like documents as JSONL.zst), in one run:

(a) ceiling:  tiktoken `encode_ordinary` throughput of one process x min(workers, cores)
(b) prep:     `python -m prep` end to end (read, filter, shuffle, dedup, split, tokenize, write)
(c) baseline: nanoGPT's prepare.py way: `datasets` load + `map(num_proc=workers)` + memmap write

It prints tokens/s of each, the ratios b/a and b/c, and each run's peak RSS; (b) also runs on
half the input, to show that its peak RSS does not grow with the input (streaming).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import zstandard
from rich.console import Console
from rich.table import Table

WORDS_SEED = 1234
SHUFFLE_BUFFER = 2000


def generate_input(path: Path, mb: float, seed: int = 0) -> int:
    """Write ~`mb` MB of unique documents, half code (stdlib chunks), half prose-like text."""
    rng = random.Random(seed)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code_files = sorted(p for p in stdlib.glob("*.py") if p.stat().st_size > 2000)
    code = [p.read_text(encoding="utf-8", errors="replace") for p in code_files[:150]]
    wrng = random.Random(WORDS_SEED)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    vocab = ["".join(wrng.choice(letters) for _ in range(wrng.randint(2, 9))) for _ in range(20000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]  # Zipf-like word frequencies
    target = int(mb * 1e6)
    written = n = 0
    cctx = zstandard.ZstdCompressor(level=3)
    with open(path, "wb") as raw, cctx.stream_writer(raw) as f:
        while written < target:
            if n % 2 == 0:
                src = rng.choice(code)
                start = rng.randrange(max(1, len(src) - 6000))
                text = f"# bench document {n}\n" + src[start:start + rng.randint(1000, 6000)]
            else:
                words = rng.choices(vocab, weights, k=rng.randint(200, 1200))
                sents, i = [], 0
                while i < len(words):
                    k = rng.randint(6, 25)
                    sents.append(" ".join(words[i:i + k]).capitalize() + ".")
                    i += k
                text = f"Document {n}. " + " ".join(sents)
            line = json.dumps({"text": text}) + "\n"
            f.write(line.encode("utf-8"))
            written += len(text.encode("utf-8"))
            n += 1
    return n


def _read_texts(path: Path, limit_bytes: int) -> list[str]:
    texts, total = [], 0
    with open(path, "rb") as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw)
        import io
        for line in io.TextIOWrapper(reader, encoding="utf-8"):
            t = json.loads(line)["text"]
            texts.append(t)
            total += len(t.encode("utf-8"))
            if total >= limit_bytes:
                break
    return texts


# ------------------------------------------------------------------------------ the three runs


def ceiling(path: Path, sample_mb: float) -> dict:
    """One process's encode_ordinary tokens/s on (a sample of) the input."""
    from shards.tokenizer import load_gpt2

    enc = load_gpt2()
    texts = _read_texts(path, int(sample_mb * 1e6))
    t0 = time.perf_counter()
    tokens = sum(len(enc.encode_ordinary(t)) + 1 for t in texts)
    dt = time.perf_counter() - t0
    return {"tokens": tokens, "seconds": dt, "tokens_per_s": tokens / dt,
            "bytes": sum(len(t.encode()) for t in texts)}


def baseline(path: Path, workers: int, out: Path) -> dict:
    """nanoGPT's data/openwebtext/prepare.py, on this input."""
    import numpy as np
    from datasets import disable_progress_bars, load_dataset

    from shards.tokenizer import load_gpt2

    disable_progress_bars()
    enc = load_gpt2()
    t0 = time.perf_counter()
    ds = load_dataset("json", data_files=str(path), split="train",
                      cache_dir=str(out / "hf_cache"))
    split = ds.train_test_split(test_size=0.05, seed=2357, shuffle=True)

    def process(example):
        ids = enc.encode_ordinary(example["text"])
        ids.append(enc.eot_token)
        return {"ids": ids, "len": len(ids)}

    tokens = 0
    for name, dset in split.items():
        tok = dset.map(process, remove_columns=["text"], num_proc=workers)
        arr_len = int(np.sum(tok["len"], dtype=np.uint64))
        arr = np.memmap(out / f"{name}.bin", dtype=np.uint16, mode="w+", shape=(arr_len,))
        idx = 0
        n_batches = min(1024, len(tok))
        for b in range(n_batches):
            batch = tok.shard(num_shards=n_batches, index=b, contiguous=True).with_format("numpy")
            chunk = np.concatenate(batch["ids"])
            arr[idx:idx + len(chunk)] = chunk
            idx += len(chunk)
        arr.flush()
        tokens += arr_len
    dt = time.perf_counter() - t0
    return {"tokens": tokens, "seconds": dt, "tokens_per_s": tokens / dt}


def prep_run(path: Path, workers: int, out: Path, size_mb: float) -> dict:
    recipe = out / "bench.toml"
    recipe.write_text(
        "seed = 1\nblock_size = 512\n\n[domains.mixed]\nsource = \"json\"\n"
        f"data_files = [{json.dumps(str(path))}]\nmin_chars = 1\nmax_chars = 100000\n"
        f"size_mb = {size_mb}\n"
    )
    dest = out / f"prep_{size_mb:g}"
    t0 = time.perf_counter()
    # A fixed shuffle buffer (the default's value at 10 MB): the default grows with size_mb, and
    # a buffer holding the whole input would hide whether the rest of prep streams.
    r = _measured([sys.executable, "-m", "prep", "--recipe", str(recipe), "--out", str(dest),
                   "--workers", str(workers), "--shuffle-buffer", str(SHUFFLE_BUFFER),
                   "--quiet", "--overwrite"])
    dt = time.perf_counter() - t0
    m = json.loads((dest / "manifest.json").read_text())
    tokens = m["run"]["tokens"]
    return {"tokens": tokens, "seconds": dt, "tokens_per_s": tokens / dt, **r}


def _measured(cmd: list[str]) -> dict:
    """Run `cmd`; return the peak RSS of its largest process (parent or worker)."""
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark step failed: {' '.join(cmd)}")
    return {"peak_rss_mb": usage.ru_maxrss / 1024}


def _child(kind: str, args: argparse.Namespace) -> None:
    """Run one measurement in this (fresh) process and print its result as JSON."""
    path, out = Path(args.input), Path(args.work)
    res = ceiling(path, args.ceiling_mb) if kind == "ceiling" else baseline(path, args.workers, out)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if kind == "baseline":
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        res["peak_rss_mb"] = max(res["peak_rss_mb"], kids)
    print(json.dumps(res))


def _in_child(kind: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "prep.bench", "--_child", kind, "--input", args.input,
           "--work", args.work, "--workers", str(args.workers),
           "--ceiling-mb", str(args.ceiling_mb)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m prep.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=100, help="size of the generated input, MB of text")
    p.add_argument("--workers", type=int, default=2, help="worker processes for (b) and (c)")
    p.add_argument("--ceiling-mb", type=float, default=20,
                   help="MB of the input the single-process ceiling (a) is timed on")
    p.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    p.add_argument("--input", default=None, help="reuse this generated .jsonl.zst input")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        _child(args._child, args)
        return 0
    console = Console()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        args.work = tmp
        work = Path(tmp)
        if args.input is None:
            args.input = str(work / "input.jsonl.zst")
            t0 = time.perf_counter()
            n = generate_input(Path(args.input), args.mb)
            console.print(f"generated {n:,} documents, {args.mb:g} MB of text "
                          f"({Path(args.input).stat().st_size / 1e6:.1f} MB compressed) in "
                          f"{time.perf_counter() - t0:.1f}s")
        cores = os.cpu_count() or 1
        par = min(args.workers, cores)
        a = _in_child("ceiling", args)
        a["tokens_per_s"] *= par
        b_half = prep_run(Path(args.input), args.workers, work, args.mb / 2)
        b = prep_run(Path(args.input), args.workers, work, args.mb * 1.01)
        c = _in_child("baseline", args)
    t = Table(title=f"prep.bench: {args.mb:g} MB mixed code/prose, {args.workers} workers, "
                    f"{cores} cores")
    for col in ("run", "tokens", "seconds", "tokens/s", "peak RSS MB"):
        t.add_column(col, justify="left" if col == "run" else "right")
    t.add_row(f"(a) ceiling: encode_ordinary x {par}", "-", "-", f"{a['tokens_per_s']:,.0f}",
              f"{a['peak_rss_mb']:.0f}")
    for label, r in ((f"(b) prep, {args.mb / 2:g} MB", b_half), (f"(b) prep, {args.mb:g} MB", b),
                     ("(c) nanoGPT datasets.map baseline", c)):
        t.add_row(label, f"{r['tokens']:,}", f"{r['seconds']:.1f}", f"{r['tokens_per_s']:,.0f}",
                  f"{r['peak_rss_mb']:.0f}")
    console.print(t)
    console.print(f"b/a = {b['tokens_per_s'] / a['tokens_per_s']:.2f}  (goal >= 0.85)   "
                  f"b/c = {b['tokens_per_s'] / c['tokens_per_s']:.2f}  (goal >= 1.3)   "
                  f"prep peak RSS {b_half['peak_rss_mb']:.0f} MB at {args.mb / 2:g} MB input vs "
                  f"{b['peak_rss_mb']:.0f} MB at {args.mb:g} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
