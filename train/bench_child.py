"""One run of the loop benchmark, in a process of its own: the real loop, then the bare step.

    python -m train.bench_child SPEC.json

SPEC holds ``argv`` (train/moe.py's options), ``bare_steps``, ``bare_warmup``,
``count_syncs``, ``profile`` and ``result`` (where the result JSON goes). The loop runs in this process
through train/start.py's ``run`` exactly as ``train/moe.py`` runs it, except that it writes no
checkpoint (a benchmark times steps; writing 1-3 GB would only cost minutes of a GPU). Then,
with the loop's own compiled model, optimizer and autocast (no recompilation), the bare step:
forward, backward, clip and the fused AdamW step on one fixed batch, no sampler, no logging, no
read of any value, timed over `bare_steps` steps between two device syncs. With `count_syncs`
on CUDA, torch's sync debug mode counts the synchronizing CUDA calls of every loop step. With
`profile`, torch.profiler then records three bare steps (the top ops by device time, and every
op and kernel by name) and, for an MoE model, three eager forward+backward steps of its first MoE
layer alone with ranges around its parts: where the MoE dispatch spends its time.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_step(loop: Any) -> Any:
    """The bare step of the loop's model on one fixed batch (see the module docstring)."""
    raw, model, opt, ctx, mcfg = loop.raw, loop.model, loop.optimizer, loop.ctx, loop.mcfg
    batch = loop.sampler.next_batch()
    x, y = batch.x, batch.y
    clip = loop.cfg.grad_clip if loop.cfg.grad_clip > 0 else float("inf")
    params = list(raw.parameters())
    model.train()

    def step() -> None:
        raw.reset_load_counts()
        with ctx:
            o = model(x, y)
            loss = o.lm_loss + mcfg.lb_coef * o.lb_loss + mcfg.z_coef * o.z_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step.shape = tuple(x.shape)  # type: ignore[attr-defined]  # (B, T) of the fixed batch
    return step


def bare_step_ms(loop: Any, step: Any, steps: int, warmup: int) -> dict[str, Any]:
    """Mean ms per bare step, between two device syncs."""
    for _ in range(warmup):
        step()
    _sync(loop.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(loop.device)
    ms = (time.perf_counter() - t0) / steps * 1e3
    tps = loop.tokens_per_step / (ms / 1e3)
    return {"ms_per_step": ms, "tokens_per_s": tps, "steps": steps, "warmup": warmup,
            "mfu": loop.flops_tok * tps / loop.peak if loop.peak else None}


def _rows(prof: Any, steps: int, device: torch.device) -> tuple[str, list[dict[str, Any]]]:
    """key_averages as rows per step (times inclusive of children), sorted by device time on
    CUDA else CPU time; rows with no time at all dropped."""
    rows = []
    for e in prof.key_averages():
        dev = getattr(e, "device_time_total", None)
        if dev is None:
            dev = getattr(e, "cuda_time_total", 0.0)
        if dev or e.cpu_time_total:
            rows.append({"op": e.key, "count": e.count // steps, "device_ms": dev / 1e3 / steps,
                         "cpu_ms": e.cpu_time_total / 1e3 / steps})
    key = "device_ms" if device.type == "cuda" else "cpu_ms"
    rows.sort(key=lambda r: -r[key])
    return key, rows


def profile_ops(loop: Any, step: Any, steps: int = 3, top: int = 30,
                keep: int = 400) -> dict[str, Any]:
    """torch.profiler over `steps` bare steps, per step: the `top` ops by device time (CUDA) or
    CPU time, and in ``ops`` every op and kernel aggregated by name (the first `keep`), so the
    small kernels of the MoE dispatch show too. For the MoE dispatch's analysis; never fails
    the run."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if loop.device.type == "cuda"
                                     else [])
    try:
        with profile(activities=acts) as prof:
            for _ in range(steps):
                step()
            _sync(loop.device)
        key, rows = _rows(prof, steps, loop.device)
        return {"steps": steps, "sorted_by": key, "top": rows[:top], "ops": rows[:keep],
                "n_ops": len(rows)}
    except Exception as e:  # a profiler that cannot start here (CUPTI): say so, go on
        return {"error": f"{type(e).__name__}: {e}"}


def profile_moe_layer(loop: Any, shape: tuple[int, int], steps: int = 3) -> dict[str, Any]:
    """The loop's first MoE layer alone, EAGER (no compile: seconds, not a recompilation),
    forward + backward on a random (B, T, d) input under the loop's autocast, in training
    mode, profiled over `steps` steps after one warm-up. Ranges: ``moe.forward``,
    ``moe.backward``, and within the forward ``moe.router`` (router logits) and
    ``moe.experts`` (the grouped matmuls, biases, GELU); the rest of the forward is routing
    math, the dispatch plan and the permutation gathers. The backward shows per autograd node
    (``autograd::engine::evaluate_function: ...``, times inclusive of their kernels). Eager
    launches each op alone, so this is where the layer's time goes op by op, not what the
    compiled step fuses (for that: ``profile.ops``). Never fails the run."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    raw = loop.raw
    if not getattr(raw, "moe_layer_ids", None):
        return {"skipped": "no MoE layer"}
    layer = raw.moe_layer(raw.moe_layer_ids[0])
    wrapped = ("router_logits", "_experts_grouped_mm", "_experts_bmm")
    try:
        for name in wrapped:
            fn = getattr(layer, name)
            label = "moe.router" if name == "router_logits" else "moe.experts"

            def ranged(*a: Any, _fn: Any = fn, _label: str = label, **k: Any) -> Any:
                with record_function(_label):
                    return _fn(*a, **k)

            setattr(layer, name, ranged)  # an instance attribute: removed below
        x = torch.randn(*shape, layer.n_embd, device=loop.device, requires_grad=True)
        layer.train()

        def one() -> None:
            layer.reset_load_counts()
            with record_function("moe.forward"), loop.ctx:
                o = layer(x)
                loss = o.out.float().square().mean() + o.lb_loss + o.z_loss
            with record_function("moe.backward"):
                loss.backward()

        one()
        _sync(loop.device)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if loop.device.type == "cuda"
                                         else [])
        with profile(activities=acts) as prof:
            for _ in range(steps):
                one()
            _sync(loop.device)
        key, rows = _rows(prof, steps, loop.device)
        return {"steps": steps, "shape": [*shape, layer.n_embd], "top_k": layer.top_k,
                "impl": layer.impl, "sorted_by": key,
                "phases": {r["op"]: r for r in rows if r["op"].startswith("moe.")},
                "ops": rows[:200]}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        for name in wrapped:
            layer.__dict__.pop(name, None)
        layer.zero_grad(set_to_none=True)
        layer.reset_load_counts()


def main(argv: list[str] | None = None) -> int:
    from train.config import parse_args
    from train.distributed import setup, teardown
    from train.loop import Loop
    from train.start import run
    from train.syncs import cuda_sync_warnings

    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    cfg = parse_args(spec["argv"])
    d, device = setup(cfg.device)
    Loop.save = lambda self: None  # type: ignore[method-assign]  # no checkpoint (see above)
    result: dict[str, Any] = {"device": str(device), "torch": torch.__version__,
                              "device_name": (torch.cuda.get_device_name(device)
                                              if device.type == "cuda" else "cpu")}
    marks: list[tuple[int, int]] = []
    counting = bool(spec.get("count_syncs")) and device.type == "cuda"
    with (cuda_sync_warnings() if counting else nullcontext([])) as seen:
        step = Loop.train_step

        def marked(self: Any, preempt: Any) -> None:
            marks.append((self.step + 1, len(seen)))
            step(self, preempt)

        Loop.train_step = marked  # type: ignore[method-assign]

        def after(loop: Any) -> None:
            marks.append((-1, len(seen)))
            result["log_every"] = loop.log_every
            step = bare_step(loop)
            result["bare"] = bare_step_ms(loop, step, spec["bare_steps"], spec["bare_warmup"])
            if spec.get("profile"):
                result["profile"] = profile_ops(loop, step)
                result["moe_profile"] = profile_moe_layer(loop, step.shape)

        t0 = time.perf_counter()
        try:
            result["exit_code"] = run(cfg, d, device, after=after)
        finally:
            teardown()
        result["wall_s"] = time.perf_counter() - t0
    if counting:
        result["syncs_per_step"] = {s: b - a for (s, a), (_, b) in zip(marks, marks[1:],
                                                                       strict=False)}
        result["sync_examples"] = sorted(set(seen))[:8]
    Path(spec["result"]).write_text(json.dumps(result, indent=1))
    return int(result["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
