"""Speed benchmark, part 2: one MoE FFN layer, forward + backward.

Compares the vectorized MoE layer (train/moe_layer.py) against
  * the naive per-expert Python loop (``reference_moe_forward``, the test reference), and
  * a dense GPT-2 FFN with the same ACTIVE parameters (hidden = top_k * 4 * width),
at top-1 and top-2 and several token counts, and checks that the layer compiles with
``torch.compile(fullgraph=True)``. Ratios are against baselines timed in the same run.

    python -m train.bench_layer                       # width 768, 8 experts, 1k/4k/16k tokens
    python -m train.bench_layer --tokens 1024 --repeats 2 --no-compile-check

The train loop's ``train/bench.py`` calls :func:`run_layer_bench` and gets the rows back.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from train.moe_layer import IMPLS, MoEFFN, reference_moe_forward, resolve_impl

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class LayerBenchConfig:
    tokens: tuple[int, ...] = (1024, 4096, 16384)
    top_ks: tuple[int, ...] = (1, 2)
    width: int = 768
    n_experts: int = 8
    repeats: int = 3
    device: str = "cpu"
    dtype: str = "float32"
    impl: str = "auto"
    compile_check: bool = True
    seed: int = 0


class DenseFFN(nn.Module):
    """A GPT-2 MLP with ``hidden`` units: the dense baseline of equal active parameters."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fwd_bwd(fns: Sequence[Callable[[Tensor], Tensor]], x: Tensor,
                 repeats: int) -> list[float]:
    """Best-of-``repeats`` seconds of forward + backward for each fn, after one warm-up round.

    The fns are timed round-robin within each repeat, so load from other processes hits them
    alike; the minimum is the least disturbed measurement.
    """
    best = [float("inf")] * len(fns)
    for i in range(repeats + 1):
        for j, fn in enumerate(fns):
            xi = x.detach().requires_grad_(True)
            _sync(x.device)
            t0 = time.perf_counter()
            fn(xi).float().square().mean().backward()
            _sync(x.device)
            if i > 0:
                best[j] = min(best[j], time.perf_counter() - t0)
    return best


def check_fullgraph_compile(layer: MoEFFN, x: Tensor) -> tuple[bool, str]:
    """Compile ``layer`` with fullgraph=True, run forward+backward, compare with eager.

    The padded-bmm path reads the largest expert count on the host (``.item()``), which
    ``torch.compile`` captures only with ``capture_scalar_outputs``; it is set here for the
    check, and a training loop that compiles the bmm path must set it too.
    """
    torch._dynamo.reset()
    noise = float(layer.noise_std)
    layer.set_noise(0.0)  # compiled and eager draw different random numbers
    try:
        with torch._dynamo.config.patch(capture_scalar_outputs=True):
            compiled = torch.compile(layer, fullgraph=True)
            got = compiled(x).out
            got.float().sum().backward()
        want = layer(x).out
        err = (got.float() - want.float()).abs().max().item()
        return True, f"ok (max |compiled - eager| = {err:.2e})"
    except Exception as e:  # report, don't crash the benchmark
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return False, f"{type(e).__name__}: {first[:200]}"
    finally:
        layer.set_noise(noise)
        layer.zero_grad(set_to_none=True)
        layer.reset_load_counts()
        torch._dynamo.reset()


def run_layer_bench(tokens: Sequence[int] = (1024, 4096, 16384), top_ks: Sequence[int] = (1, 2),
                    width: int = 768, n_experts: int = 8, repeats: int = 3, device: str = "cpu",
                    dtype: str = "float32", impl: str = "auto", compile_check: bool = True,
                    seed: int = 0) -> list[dict]:
    """Time the MoE layer vs the loop and the equal-active dense FFN; one dict per (top_k, tokens).

    Keys: top_k, tokens, width, n_experts, impl, dtype, device, moe_ms, loop_ms, dense_ms,
    moe_vs_loop (moe/loop, < 1 is faster), moe_vs_dense (moe/dense), fullgraph (bool or None
    when not checked), fullgraph_note.
    """
    dev = torch.device(device)
    dt = DTYPES[dtype]
    rows: list[dict] = []
    for k in top_ks:
        gen = torch.Generator().manual_seed(seed)
        layer = MoEFFN(width, n_experts, k, noise_std=0.1, impl=impl)
        layer.init_weights(generator=gen)
        layer.to(device=dev, dtype=dt).train()
        dense = DenseFFN(width, k * 4 * width).to(device=dev, dtype=dt)
        chosen = resolve_impl(impl, dev, dt)
        fullgraph: bool | None = None
        note = "not checked"
        if compile_check:
            x_small = torch.randn(2, 64, width, generator=gen).to(dev, dt)
            fullgraph, note = check_fullgraph_compile(layer, x_small)
        for n in tokens:
            x = torch.randn(1, n, width, generator=gen).to(dev, dt)
            torch.manual_seed(seed)
            layer.reset_load_counts()
            moe_s, loop_s, dense_s = time_fwd_bwd(
                [lambda t, m=layer: m(t).out,
                 lambda t, m=layer: reference_moe_forward(m, t).out, dense], x, repeats)
            rows.append({
                "top_k": k, "tokens": n, "width": width, "n_experts": n_experts, "impl": chosen,
                "dtype": dtype, "device": device, "moe_ms": 1e3 * moe_s, "loop_ms": 1e3 * loop_s,
                "dense_ms": 1e3 * dense_s, "moe_vs_loop": moe_s / loop_s,
                "moe_vs_dense": moe_s / dense_s, "fullgraph": fullgraph, "fullgraph_note": note,
            })
    return rows


def print_table(rows: list[dict]) -> None:
    headers = ["top_k", "tokens", "impl", "moe ms", "loop ms", "dense ms", "moe/loop", "moe/dense"]
    cells = [[str(r["top_k"]), str(r["tokens"]), r["impl"], f"{r['moe_ms']:.1f}",
              f"{r['loop_ms']:.1f}", f"{r['dense_ms']:.1f}", f"{r['moe_vs_loop']:.2f}x",
              f"{r['moe_vs_dense']:.2f}x"] for r in rows]
    title = (f"MoE layer fwd+bwd, width {rows[0]['width']}, {rows[0]['n_experts']} experts, "
             f"{rows[0]['dtype']} on {rows[0]['device']} (dense = same active params)")
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for h in headers:
            table.add_column(h, justify="right")
        for c in cells:
            table.add_row(*c)
        Console().print(table)
    else:
        print(title)
        print("  ".join(f"{h:>9}" for h in headers))
        for c in cells:
            print("  ".join(f"{v:>9}" for v in c))
    seen: set[int] = set()
    for r in rows:
        if r["top_k"] not in seen:
            seen.add(r["top_k"])
            status = {True: "compiles", False: "FAILS", None: "not checked"}[r["fullgraph"]]
            print(f"torch.compile(fullgraph=True), top-{r['top_k']}, impl {r['impl']}: "
                  f"{status}: {r['fullgraph_note']}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m train.bench_layer",
        description="Time one MoE FFN layer (forward+backward) against the naive per-expert loop "
                    "and a dense FFN with the same active parameters; check fullgraph compile.")
    p.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 16384],
                   help="token counts (batch*sequence) to time (default: 1024 4096 16384)")
    p.add_argument("--top-k", type=int, nargs="+", default=[1, 2], choices=[1, 2],
                   help="top-k values to time (default: 1 2)")
    p.add_argument("--width", type=int, default=768, help="model width d (default: 768, gpt2)")
    p.add_argument("--n-experts", type=int, default=8, help="experts in the layer (default: 8)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed rounds after one warm-up round; the fastest is kept (default: 3)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                   help="parameter/activation dtype (default: float32; use bfloat16 on CUDA "
                        "for the grouped_mm path)")
    p.add_argument("--impl", default="auto", choices=list(IMPLS),
                   help="dispatch: auto (grouped_mm on supported CUDA, else bmm), grouped_mm, bmm")
    p.add_argument("--no-compile-check", action="store_true",
                   help="skip the torch.compile(fullgraph=True) check")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and inputs (default: 0)")
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    rows = run_layer_bench(tokens=a.tokens, top_ks=a.top_k, width=a.width,
                           n_experts=a.n_experts, repeats=a.repeats, device=a.device,
                           dtype=a.dtype, impl=a.impl, compile_check=not a.no_compile_check,
                           seed=a.seed)
    print_table(rows)


if __name__ == "__main__":
    main()
