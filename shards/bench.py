"""`python -m shards.bench`: how fast `verify` and `audit` run on 3 x 10 MB domains.

Generates three seeded domains of synthetic text (code-like, math-like, prose-like), writes them
with the real shard writer, then times:

- verify's reading-and-hashing pass (MB/s) against a plain sequential sha256 of the same files
  read the same way (the baseline, measured in the same run; the ratio is printed), and the whole
  `verify` (every check, every document's content hash);
- the check `shards.open` runs before training (``verify="full"``: sha256 and token ids in one
  read; ``"ids"``: token ids alone), in GB/s against the same baseline, and a second
  ``verify="full"`` open that its stamp lets skip every unchanged file (the speedup);
- `audit` (exact 13-gram contamination, diversity, format artifacts), in seconds; with
  ``--audit``, instead of the rest, the streaming audit beside the audit it replaced (time,
  train tokens/s, peak RSS per eval token: shards/bench_audit.py), and with ``--index`` the
  choice of n-gram index (np.searchsorted, Bloom filter, both);
- `export` to Megatron-LM and to llm.c files (MB of tokens per second, fsynced like every write
  of this project) against a plain durable copy of the same shard files (`atomic.copy_file`), the
  baseline, measured in the same run; and the export's peak RSS, in a process of its own, against
  one that only imports it.

Files are read from the page cache after the first pass, so hashing measures the code, not the
disk; the exports and the copy write (and fsync) to the disk of ``--workdir``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import shards
from shards import atomic
from shards.audit import audit
from shards.bench_audit import PEAK_RSS, bench_audit, bench_index
from shards.check import STAMP_NAME
from shards.console import Out
from shards.export import ExportConfig, export
from shards.format import SplitRecord, content_hash
from shards.hashing import hash_range
from shards.tokenizer import EOT_ID, load_gpt2
from shards.verify import verify
from shards.writer import DocEntry, SplitWriter, manifest_for, write_manifest

WORDS = ("time year people way day man thing woman life child world school state family student "
         "group country problem hand part place case week company system program question work "
         "government number night point home water room mother area money story fact month lot "
         "right study book eye job word business issue side kind head house service friend father "
         "power hour game line end member law car city community name president team minute idea "
         "river mountain music film album song road station church court king party war").split()
IDENTS = ("x y z i j k n value result data items index count total name path key node left "
          "right parent child buf size offset start stop step config args kwargs self").split()


@dataclass
class BenchConfig:
    size_mb: float = 10.0
    seed: int = 0
    shard_tokens: int = 1 << 20
    block_size: int = 512
    eval_every: int = 20  # one document in this many goes to eval
    repeat: int = 5  # hashing runs per contender; the best of each is reported


def _code_doc(rng: np.random.Generator) -> str:
    lines = [f"# module {rng.integers(1 << 30):x}", "import os", ""]
    for f in range(int(rng.integers(2, 12))):
        a, b = rng.choice(IDENTS, 2)
        lines += [f"def {rng.choice(IDENTS)}_{f}({a}, {b}={int(rng.integers(100))}):",
                  f"    if {a} > {b}:", f"        return {a} * {int(rng.integers(1000))}",
                  f"    {rng.choice(IDENTS)} = [{a} + k for k in range({b})]", f"    return {b}",
                  ""]
    return "\n".join(lines)


def _math_doc(rng: np.random.Generator) -> str:
    a, b, c = (int(x) for x in rng.integers(1, 10000, 3))
    w = rng.choice(WORDS, 4)
    return (f"Problem: a {w[0]} has {a} {w[1]}s and buys {b} more, then gives {c} to a {w[2]}. "
            f"How many {w[1]}s does the {w[0]} have? Rationale: {a} + {b} - {c} = {a + b - c}. "
            f"Answer: {a + b - c}")


def _prose_doc(rng: np.random.Generator) -> str:
    sentences = []
    for _ in range(int(rng.lognormal(2.5, 0.8)) + 1):
        ws = rng.choice(WORDS, int(rng.integers(6, 25)))
        sentences.append(" ".join(ws).capitalize() + ".")
    return " ".join(sentences)


GENERATORS = {"code": _code_doc, "math": _math_doc, "prose": _prose_doc}


def generate(root: Path, cfg: BenchConfig) -> Path:
    """Write the 3-domain benchmark dataset under `root`; returns it."""
    enc = load_gpt2()
    splits_by_domain: dict[str, dict[str, SplitRecord]] = {}
    counts: dict[str, dict[str, int]] = {}
    for i, (name, gen) in enumerate(GENERATORS.items()):
        rng = np.random.default_rng([cfg.seed, i])
        texts: list[str] = []
        size = 0
        while size < cfg.size_mb * 1e6:
            texts.append(gen(rng))
            size += len(texts[-1].encode("utf-8"))
        splits = {"train": [t for k, t in enumerate(texts) if k % cfg.eval_every],
                  "eval": [t for k, t in enumerate(texts) if not k % cfg.eval_every]}
        records = {}
        for sname, docs in splits.items():
            w = SplitWriter(root, name, sname, cfg.shard_tokens, cfg.block_size)
            for start in range(0, len(docs), 2000):
                batch = docs[start:start + 2000]
                ids = enc.encode_ordinary_batch(batch, num_threads=2)
                toks = np.fromiter((t for doc in ids for t in (*doc, EOT_ID)), dtype=np.uint16)
                w.add(toks, [DocEntry(tokens=len(d) + 1, chars=len(t),
                                      nbytes=len(t.encode("utf-8")), sha256=content_hash(t),
                                      source={"path": f"{name}/{start + k}.txt"})
                             for k, (t, d) in enumerate(zip(batch, ids, strict=True))])
            records[sname] = w.close()
        splits_by_domain[name] = records
        counts[name] = {"docs_seen": len(texts), "docs_kept": len(texts), "bytes_kept": size}
    write_manifest(root, manifest_for(splits_by_domain, origin="shards.bench",
                                      block_size=cfg.block_size, shard_tokens=cfg.shard_tokens,
                                      seed=cfg.seed, eval_fraction=1 / cfg.eval_every,
                                      counts=counts))
    return root


def plain_sha256(paths: list[Path]) -> tuple[int, float]:
    """The baseline: sequential sha256 of each file (`shards.hashing`, one thread, no token
    check). Returns (bytes, seconds)."""
    t0 = time.perf_counter()
    total = sum(hash_range(hashlib.sha256(), p) for p in paths)
    return total, time.perf_counter() - t0


def plain_copy(paths: list[Path], dest: Path) -> tuple[int, float]:
    """The export baseline: a durable copy of each file (read, write, fsync, rename)."""
    dest.mkdir(parents=True)
    t0 = time.perf_counter()
    total = 0
    for i, p in enumerate(paths):
        atomic.copy_file(p, dest / f"{i}.bin")
        total += p.stat().st_size
    return total, time.perf_counter() - t0



def _peak_rss_mb(module: str, *args: str) -> float:
    """Peak resident memory (VmHWM, of this process image alone) of `python -m module args`."""
    r = subprocess.run([sys.executable, "-c", PEAK_RSS, module, *args], capture_output=True,
                       text=True, cwd=os.getcwd())
    lines = [x for x in r.stderr.splitlines() if x.startswith("VmHWM ")]
    if r.returncode or not lines:
        raise SystemExit(f"bench: python -m {module} failed ({r.returncode}): {r.stderr[-500:]}")
    return int(lines[-1].split()[1]) / 1024


def bench_export(root: Path, workdir: Path, repeat: int) -> dict[str, float]:
    """Best-of-`repeat` MB/s of a plain copy and of both exports, interleaved; peak RSS."""
    ds = shards.open(root)
    shard_files = [ds.root / s.path for sp in ds.splits() for s in sp.record.shards]
    best = {"copy": 0.0, "megatron": 0.0, "llmc": 0.0}
    for _ in range(repeat):
        dest = workdir / "export-bench"
        nbytes, s = plain_copy(shard_files, dest / "copy")
        best["copy"] = max(best["copy"], nbytes / 1e6 / s)
        for fmt in ("megatron", "llmc"):
            t0 = time.perf_counter()
            export(ExportConfig(dir=root, format=fmt, out=dest / fmt))
            best[fmt] = max(best[fmt], nbytes / 1e6 / (time.perf_counter() - t0))
        shutil.rmtree(dest)
    rss_export = _peak_rss_mb("shards", "export", str(root), "--format", "megatron", "--out",
                              str(workdir / "export-rss"))
    shutil.rmtree(workdir / "export-rss")
    rss_import = _peak_rss_mb("shards", "--help")  # imports the same modules, exports nothing
    return {"export_tokens_mb": nbytes / 1e6, "copy_mb_s": best["copy"],
            "megatron_mb_s": best["megatron"], "llmc_mb_s": best["llmc"],
            "megatron_vs_copy": best["megatron"] / best["copy"],
            "llmc_vs_copy": best["llmc"] / best["copy"],
            "export_peak_rss_mb": rss_export, "import_peak_rss_mb": rss_import}


def run(cfg: BenchConfig, workdir: Path, out: Out) -> dict[str, float]:
    t0 = time.perf_counter()
    root = generate(workdir / "bench", cfg)
    gen_s = time.perf_counter() - t0
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"]
    plain_sha256(files)  # warm the page cache for both contenders
    # best of `repeat` runs each, interleaved, so both see the same machine state
    base_s = float("inf")
    reports = []
    for _ in range(cfg.repeat):
        nbytes, s = plain_sha256(files)
        base_s = min(base_s, s)
        reports.append(verify(root))
    report = min(reports, key=lambda r: r.hash_seconds)
    checks = {level: max((shards.open(root, verify=level, stamp="off").verification
                          for _ in range(cfg.repeat)), key=lambda c: c.gb_per_s)
              for level in ("full", "ids")}
    (root / STAMP_NAME).unlink(missing_ok=True)
    first = shards.open(root, verify="full").verification
    stamped = min((shards.open(root, verify="full").verification for _ in range(cfg.repeat)),
                  key=lambda c: c.seconds)
    if stamped.files_read:
        raise SystemExit(f"bench: the stamp did not skip {stamped.files_read} unchanged files")
    if not report.ok:
        raise SystemExit(f"bench: verify found problems in generated data: {report.problems[:3]}")
    t0 = time.perf_counter()
    result = audit(shards.open(root))
    audit_s = time.perf_counter() - t0
    text_mb = sum(d.counts["bytes_kept"] for d in shards.open(root).manifest.domains.values()) / 1e6
    figures = {
        "text_mb": text_mb,
        "shard_mb": nbytes / 1e6,
        "generate_s": gen_s,
        "baseline_sha256_mb_s": nbytes / 1e6 / base_s,
        "verify_hash_mb_s": report.mb_per_s,
        "verify_hash_vs_baseline": report.mb_per_s / (nbytes / 1e6 / base_s),
        "verify_total_s": min(r.seconds for r in reports),
        "open_full_gb_s": checks["full"].gb_per_s,
        "open_full_vs_baseline": checks["full"].gb_per_s * 1e3 / (nbytes / 1e6 / base_s),
        "open_ids_gb_s": checks["ids"].gb_per_s,
        "open_full_first_s": first.seconds,
        "open_full_stamped_s": stamped.seconds,
        "stamp_speedup": first.seconds / stamped.seconds,
        "audit_s": audit_s,
    }
    out.table(f"shards bench: 3 domains x {cfg.size_mb:g} MB of text ({text_mb:.1f} MB, "
              f"{nbytes / 1e6:.1f} MB of shards and indexes)", ["measure", "value"], [
        ["plain sha256 (baseline)", f"{figures['baseline_sha256_mb_s']:.0f} MB/s"],
        ["verify: read + hash + token checks", f"{figures['verify_hash_mb_s']:.0f} MB/s"],
        ["verify hash / baseline", f"{figures['verify_hash_vs_baseline']:.2f}x"],
        ["verify: everything (incl. doc content hashes)", f"{figures['verify_total_s']:.2f} s"],
        ["open(verify='full'): sha256 + token ids, one read",
         f"{figures['open_full_gb_s']:.2f} GB/s ({figures['open_full_vs_baseline']:.2f}x "
         "baseline)"],
        ["open(verify='ids'): token ids", f"{figures['open_ids_gb_s']:.2f} GB/s"],
        ["open(verify='full'): first / again, stamped",
         f"{first.seconds:.3f} s / {stamped.seconds:.4f} s ({figures['stamp_speedup']:.0f}x)"],
        ["audit: everything", f"{audit_s:.2f} s"],
        ["(generating the data)", f"{gen_s:.1f} s"],
    ])
    contamination = {d: e["contamination"]["own_train"]["doc_share"]
                     for d, e in result["domains"].items()}
    out.line(f"audit eval-doc 13-gram overlap with own train: {contamination}")
    ex = bench_export(root, workdir, cfg.repeat)
    figures.update(ex)
    out.table(f"shards export: {ex['export_tokens_mb']:.1f} MB of tokens, best of {cfg.repeat}, "
              "written and fsynced", ["measure", "value"], [
        ["plain durable copy of the shards (baseline)", f"{ex['copy_mb_s']:.0f} MB/s"],
        ["export --format megatron", f"{ex['megatron_mb_s']:.0f} MB/s "
                                     f"({ex['megatron_vs_copy']:.2f}x the copy)"],
        ["export --format llmc", f"{ex['llmc_mb_s']:.0f} MB/s "
                                 f"({ex['llmc_vs_copy']:.2f}x the copy)"],
        ["peak RSS: export (own process) / import only",
         f"{ex['export_peak_rss_mb']:.0f} MB / {ex['import_peak_rss_mb']:.0f} MB"],
    ])
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shards.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=float, default=10.0,
                   help="UTF-8 text per domain, in MB (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated text (default: 0)")
    p.add_argument("--shard-tokens", type=int, default=1 << 20,
                   help="tokens per shard (default: 1048576, so each split has several shards)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where to write the dataset (default: a temporary directory, removed)")
    p.add_argument("--repeat", type=int, default=5,
                   help="hashing runs of baseline and verify; the best of each counts (default: 5)")
    p.add_argument("--audit", action="store_true",
                   help="benchmark only the audit: the streaming audit against the audit before "
                   "it, each in its own process (time, train tokens/s, peak RSS per eval token)")
    p.add_argument("--dataset", type=Path, default=None,
                   help="with --audit: benchmark on this existing dataset instead of generating")
    p.add_argument("--eval-every", type=int, default=20,
                   help="one generated document in this many goes to eval (default: 20)")
    p.add_argument("--index", action="store_true",
                   help="benchmark only the n-gram index structures (np.searchsorted, Bloom "
                   "filter, bucket directory) at --index-sizes distinct hashes")
    p.add_argument("--index-sizes", default="1000000,8000000,30000000",
                   help="with --index: comma-separated numbers of distinct hashes "
                   "(default: 1000000,8000000,30000000)")
    args = p.parse_args(argv)
    if not (math.isfinite(args.size_mb) and args.size_mb > 0):
        p.error(f"--size-mb must be a finite number > 0, got {args.size_mb}")
    for flag, v in (("--shard-tokens", args.shard_tokens), ("--repeat", args.repeat)):
        if v < 1:
            p.error(f"{flag} must be >= 1, got {v}")
    cfg = BenchConfig(size_mb=args.size_mb, seed=args.seed, shard_tokens=args.shard_tokens,
                      repeat=args.repeat, eval_every=args.eval_every)
    if args.index:
        bench_index([int(x) for x in args.index_sizes.split(",")], Out())
        return 0
    if args.audit and args.dataset is not None:
        bench_audit(args.dataset, cfg.repeat, Out())
        return 0
    if args.audit:
        with tempfile.TemporaryDirectory(prefix="shards-bench-",
                                         dir=args.workdir) as tmp:
            t0 = time.perf_counter()
            root = generate(Path(tmp) / "bench", cfg)
            Out().line(f"(generated {cfg.size_mb:g} MB of text per domain in "
                       f"{time.perf_counter() - t0:.0f} s)")
            bench_audit(root, cfg.repeat, Out())
        return 0
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(cfg, args.workdir, Out())
        return 0
    with tempfile.TemporaryDirectory(prefix="shards-bench-") as tmp:
        run(cfg, Path(tmp), Out())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
