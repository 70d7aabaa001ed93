"""Speed of the training input path and the model, in one run: ``python -m train.bench``.

1. Batches/s of :class:`train.data.TrainSampler` against a nanoGPT-style ``get_batch`` (memmap
   re-opened per batch, per-row ``torch.from_numpy(x.astype(np.int64))``, ``torch.stack``) on
   the same shards, and each one's growth of anonymous memory (RssAnon) over the run.
2. The MoE layer benchmark of ``train.bench_layer.run_layer_bench``.
3. Training tokens/s of a preset (default tiny), dense and MoE.

``--gpu`` / ``--cpu-smoke``: the training loop against the bare step instead
(train/bench_loop.py; ``python -m train.bench --gpu --help``).

Ratios are against the baseline measured in the same run; nothing is compared to stored times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import shards
from shards.console import Out
from train.data import TrainSampler


@dataclass
class BenchConfig:
    data: str | None
    batches: int
    batch_size: int
    block_size: int
    preset: str
    steps: int
    train_batch_size: int
    device: str
    seed: int
    skip_layer: bool


def rss_anon_kib() -> int | None:
    """RssAnon of this process in KiB (Linux), None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def make_synthetic_dataset(root: Path, tokens_per_domain: int, seed: int) -> Path:
    """Three domains of random tokens, 1M-token shards (only for the benchmark)."""
    from shards.writer import DocEntry, SplitWriter, manifest_for, write_manifest

    rng = np.random.default_rng(seed)
    records = {}
    for name in ("code", "math", "prose"):
        records[name] = {}
        for split, n in (("train", tokens_per_domain), ("eval", 1 << 16)):
            w = SplitWriter(root, name, split, shard_tokens=1 << 20, block_size=512)
            for i in range(0, n, 1 << 20):
                toks = rng.integers(0, 50256, size=min(1 << 20, n - i), dtype=np.uint16)
                w.add(toks, [DocEntry(tokens=len(toks), chars=0, nbytes=0, sha256=f"{i}")])
            records[name][split] = w.close()
    write_manifest(root, manifest_for(records, origin="train.bench", block_size=512,
                                      shard_tokens=1 << 20, seed=seed))
    return root


def nanogpt_get_batch(paths: list[Path], lens: list[int], B: int, T: int,
                      gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """nanoGPT's get_batch on one random shard: memmap re-opened, per-row int64 copies."""
    s = int(torch.randint(len(paths), (1,), generator=gen))
    data = np.memmap(paths[s], dtype=np.uint16, mode="r")
    ix = torch.randint(lens[s] - T, (B,), generator=gen)
    x = torch.stack([torch.from_numpy((data[i:i + T]).astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy((data[i + 1:i + 1 + T]).astype(np.int64)) for i in ix])
    return x, y


def bench_sampler(ds: Any, cfg: BenchConfig) -> list[dict[str, Any]]:
    B, T, n = cfg.batch_size, cfg.block_size, cfg.batches
    paths, lens = [], []
    for d in ds.domains:
        sp = ds.split(d, "train")
        for rec, mm in zip(sp.record.shards, sp.shards, strict=True):
            if len(mm) > T + 1:
                paths.append(ds.root / rec.path)
                lens.append(len(mm))
    rows = []

    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(50):  # warm the page cache and allocator
        nanogpt_get_batch(paths, lens, B, T, gen)
    before = rss_anon_kib()
    t0 = time.perf_counter()
    for _ in range(n):
        nanogpt_get_batch(paths, lens, B, T, gen)
    dt = time.perf_counter() - t0
    after = rss_anon_kib()
    rows.append({"name": "nanoGPT get_batch", "batches_per_s": n / dt,
                 "rss_anon_growth_kib": None if before is None else after - before})

    sampler = TrainSampler(ds, block_size=T, batch_size=B, seed=cfg.seed, device="cpu")
    for _ in range(50):
        sampler.next_batch()
    before = rss_anon_kib()
    t0 = time.perf_counter()
    for _ in range(n):
        sampler.next_batch()
    dt = time.perf_counter() - t0
    after = rss_anon_kib()
    rows.append({"name": "TrainSampler", "batches_per_s": n / dt,
                 "rss_anon_growth_kib": None if before is None else after - before})
    for r in rows:
        r["speedup"] = r["batches_per_s"] / rows[0]["batches_per_s"]
    return rows


def bench_train(ds: Any, cfg: BenchConfig, device: torch.device) -> list[dict[str, Any]]:
    from train.model import GPT, make_config

    rows = []
    for label, overrides in (("dense", {"n_experts": 0}),
                             ("moe top-1", {"n_experts": 8, "top_k": 1}),
                             ("moe top-2", {"n_experts": 8, "top_k": 2})):
        torch.manual_seed(cfg.seed)
        mcfg = make_config(cfg.preset, **overrides)
        model = GPT(mcfg).to(device)
        opt = model.configure_optimizer(0.1, 1e-4, (0.9, 0.95), device.type)
        sampler = TrainSampler(ds, block_size=mcfg.block_size, batch_size=cfg.train_batch_size,
                               seed=cfg.seed, device=device)
        cuda = device.type == "cuda"
        ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda
               else torch.autocast("cpu", enabled=False))
        model.train()

        for _ in range(2):
            _train_step(model, opt, sampler, ctx, mcfg)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(cfg.steps):
            _train_step(model, opt, sampler, ctx, mcfg)
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        rows.append({"name": f"{cfg.preset} {label}", "params": model.num_params(),
                     "active_params": model.num_params(active=True),
                     "tokens_per_s": cfg.steps * cfg.train_batch_size * mcfg.block_size / dt})
    return rows


def _train_step(model: Any, opt: Any, sampler: TrainSampler, ctx: Any, mcfg: Any) -> None:
    model.reset_load_counts()
    b = sampler.next_batch()
    with ctx:
        o = model(b.x, b.y)
        loss = o.lm_loss + mcfg.lb_coef * o.lb_loss + mcfg.z_coef * o.z_loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--gpu" in args or "--cpu-smoke" in args:
        from train.bench_loop import main as loop_bench

        return loop_bench(args)
    p = argparse.ArgumentParser(
        prog="python -m train.bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=None, help="dataset directory to sample from (default: "
                   "a temporary synthetic dataset of 3 domains x 16M random tokens)")
    p.add_argument("--batches", type=int, default=20000, help="batches drawn by each sampler")
    p.add_argument("--batch-size", type=int, default=32, help="rows per sampler batch (B)")
    p.add_argument("--block-size", type=int, default=512, help="tokens per row (T)")
    p.add_argument("--preset", default="tiny", help="model preset for the tokens/s part")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per model")
    p.add_argument("--train-batch-size", type=int, default=8, help="rows per training step")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda for parts 2 and 3")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--skip-layer", action="store_true", help="skip part 2 (the MoE layer)")
    p.add_argument("--gpu", action="store_true", help="run the loop benchmark instead "
                   "(train/bench_loop.py: the real loop vs the bare step, GPT-2 124M on CUDA)")
    p.add_argument("--cpu-smoke", action="store_true", help="the loop benchmark, tiny, on CPU")
    ns = vars(p.parse_args(argv))
    cfg = BenchConfig(**{k: v for k, v in ns.items() if k not in ("gpu", "cpu_smoke")})
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if cfg.device == "auto" else cfg.device))
    out = Out()
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        root = Path(cfg.data) if cfg.data else make_synthetic_dataset(Path(tmp), 16 << 20,
                                                                       cfg.seed)
        # as in training: ids checked at open, and each batch's again as the sampler draws it
        ds = shards.open(root, verify="ids")

        rows = bench_sampler(ds, cfg)
        out.table(f"1. sampler, B={cfg.batch_size} T={cfg.block_size}, "
                  f"{cfg.batches:,} batches ({root})",
                  ["sampler", "batches/s", "vs nanoGPT", "RssAnon growth"],
                  [[r["name"], f"{r['batches_per_s']:,.0f}", f"{r['speedup']:.1f}x",
                    "n/a" if r["rss_anon_growth_kib"] is None
                    else f"{r['rss_anon_growth_kib']:+,} KiB"] for r in rows])

        if not cfg.skip_layer:
            try:
                from train.bench_layer import print_table, run_layer_bench
            except ImportError as e:
                out.line(f"2. MoE layer benchmark skipped: train.bench_layer is not "
                         f"importable ({e})")
            else:
                out.line("2. MoE layer")
                print_table(run_layer_bench(device=str(device)))

        rows = bench_train(ds, cfg, device)
        out.table(f"3. training tokens/s on {device}, batch {cfg.train_batch_size}",
                  ["model", "params", "active", "tokens/s", "vs dense"],
                  [[r["name"], f"{r['params'] / 1e6:.2f}M", f"{r['active_params'] / 1e6:.2f}M",
                    f"{r['tokens_per_s']:,.0f}",
                    f"{r['tokens_per_s'] / rows[0]['tokens_per_s']:.2f}x"]
                   for r in rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
