"""The training loop: check the data and the run directory, then train, evaluate, checkpoint.

Before step 0: the run directory is checked (train/run_dir.py), a resumed checkpoint is
verified (checksum, options, model, data; train/checkpoint.py), and the data is opened with
``verify="full"`` (every token id and sha256; files unchanged since the last check are skipped
by the stamp) unless ``--skip-verify``; the check's result is printed and logged.

One optimizer step: reset the MoE load counts, anneal the router noise, run `--grad-accum`
micro-batches (DDP gradient sync on the last only), clip gradients, AdamW step on the cosine
schedule. Every step logs the LM and auxiliary losses, lr, tokens/s and (on CUDA) MFU; every
`--eval-every` steps the eval split of every domain is scored (train/evaluation.py) and a
checkpoint is written. A SIGTERM ends the run after the current step with a checkpoint
(train/preempt.py). Only rank 0 logs and writes.
"""

from __future__ import annotations

import inspect
import math
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import shards
from shards.atomic import copy_file
from shards.format import FormatError
from shards.hashing import distinct
from train.checkpoint import (
    CKPT_NAME,
    check_compatible,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from train.config import COLLAPSE_PATIENCE, COLLAPSE_SHARE, TrainConfig, TrainError
from train.data import DataError, EvalSet, TrainSampler, parse_domain_weights
from train.distributed import Dist, all_reduce_sum, barrier, from_master, gather
from train.evaluation import evaluate
from train.metrics import MetricsLog
from train.mfu import peak_flops
from train.preempt import EXIT_PREEMPTED, Preemption
from train.run_dir import changes_to_accept, check_start, prepare
from train.schedule import lr_at, router_noise_at

EXIT_NONFINITE = 3
# options that are also GPTConfig fields a resumed model may change (no parameter shape)
MODEL_KEYS = {"lb_coef": ("lb_coef",), "z_coef": ("z_coef",),
              "router_noise": ("router_noise_std",), "top_k": ("top_k",),
              "experiment": ("lb_coef", "top_k")}
SAMPLER_KEYS = {"batch_size": "batch_size", "domain_weights": "weights"}


def open_data(cfg: TrainConfig, d: Dist) -> shards.Dataset:
    """Rank 0 checks the data (`full`, or sizes with --skip-verify); the other ranks wait for
    its verdict and open with sizes only, so the data is read once per run."""
    level = "sizes" if cfg.skip_verify else "full"
    ds, error = None, None
    if d.master:
        try:
            ds = shards.open(cfg.data, verify=level)
        except FormatError as e:
            error = str(e)
    error = from_master(error, d)
    if error is not None:
        raise DataError(f"--data {cfg.data}: refused before step 0: {error}")
    if ds is None:
        ds = shards.open(cfg.data)
        ds.verification = from_master(None, d)
    else:
        from_master(ds.verification, d)
    return ds


def run(cfg: TrainConfig, d: Dist, device: torch.device) -> int:
    from train.model import GPT, make_config  # the model module is only needed to train
    from train.upcycle import upcycle

    t_start = time.time()
    out = Path(cfg.out)
    ckpt_path = out / CKPT_NAME
    check_start(out, cfg)
    ckpt = load_checkpoint(ckpt_path) if cfg.resume else None
    ds = open_data(cfg, d)
    try:
        mcfg = make_config(cfg.preset, **cfg.overrides())
    except ValueError as e:  # unknown preset, bad n_experts/top_k/moe_layers, ...
        raise TrainError(f"model config: {e}") from e
    mcfg_dict = asdict(mcfg)
    weights = parse_domain_weights(cfg.domain_weights, ds.domains)
    changes: dict[str, Any] = {}
    if ckpt is not None:
        old_fp = ckpt["data_fingerprint"]
        data_change = None if old_fp == ds.fingerprint else (
            f"{ckpt.get('data_dir')} (fingerprint {distinct(old_fp, ds.fingerprint, 12)[0]})",
            f"{cfg.data} (fingerprint {distinct(old_fp, ds.fingerprint, 12)[1]})")
        changes = changes_to_accept(ckpt["train_config"], cfg, ckpt_path, data_change)
        check_compatible(ckpt, ckpt_path, model_config=mcfg_dict,
                         data_fingerprint=ds.fingerprint, data_dir=str(cfg.data),
                         world_size=d.world,
                         may_differ={m for k in changes for m in MODEL_KEYS.get(k, ())}
                         | ({"data"} if "data" in changes else set()))
    step = int(ckpt["step"]) if ckpt is not None else 0
    barrier(d)
    stale = prepare(out, cfg, step if ckpt is not None else None) if d.master else []
    barrier(d)
    log = MetricsLog(out, d.master)
    check = ds.verification
    log.line(check.summary())
    log.record({"kind": "data_check", "step": step, "data": str(cfg.data), **check.to_dict()})
    if stale:
        log.warn(step, f"removed {len(stale)} temporary file(s) a killed run left in {out}: "
                       + ", ".join(p.name for p in stale))
    if changes:
        log.record({"kind": "resume", "step": step, "changes": changes})
        log.line("resuming with changed options (--allow-change): " + "; ".join(
            f"{k} {v[0]!r} -> {v[1]!r}" for k, v in changes.items()), style="yellow")

    torch.manual_seed(cfg.seed)
    if cfg.init_from and ckpt is None:
        try:
            model = upcycle(cfg.init_from, mcfg, seed=cfg.seed)
        except (ValueError, OSError) as e:
            raise TrainError(f"--init-from: {e}") from e
    else:
        model = GPT(mcfg)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    model.to(device)
    optimizer = model.configure_optimizer(cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2),
                                          device.type)
    sampler = TrainSampler(ds, block_size=mcfg.block_size, batch_size=cfg.batch_size,
                           weights=weights, seed=cfg.seed, rank=d.rank, device=device)
    loop_state: dict[str, int] = {}
    if ckpt is not None:
        loop_state = dict(ckpt.get("loop", {}))
        optimizer.load_state_dict(ckpt["optimizer"])
        if {"beta1", "beta2", "weight_decay"} & set(changes):  # the saved groups hold the old
            for g in optimizer.param_groups:
                g["betas"] = (cfg.beta1, cfg.beta2)
            optimizer.param_groups[0]["weight_decay"] = cfg.weight_decay  # the decayed group
        sampler.load_state_dict(ckpt["sampler"]["ranks"][d.rank],
                                may_differ={SAMPLER_KEYS[k] for k in changes
                                            if k in SAMPLER_KEYS})
        set_rng_state(ckpt["rng"]["ranks"][d.rank])
        del ckpt
    else:
        torch.manual_seed(cfg.seed + 1 + d.rank)  # this rank's router-noise stream
    evalset = EvalSet(ds, block_size=mcfg.block_size,
                      batch_size=cfg.eval_batch_size or cfg.batch_size, rank=d.rank,
                      world_size=d.world, max_blocks=cfg.eval_max_blocks, device=device)
    loop = Loop(cfg, d, device, ds, model, optimizer, sampler, evalset, log, step, loop_state)
    with Preemption() as preempt:
        code = loop.train(preempt)
    loop.summary["wall_s"] = time.time() - t_start
    log.record(loop.summary)
    return code


class Loop:
    """The steps of one process, from `step` to --max-steps (or a stop)."""

    def __init__(self, cfg: TrainConfig, d: Dist, device: torch.device, ds: Any, model: Any,
                 optimizer: Any, sampler: TrainSampler, evalset: EvalSet, log: MetricsLog,
                 step: int, loop_state: dict[str, int]) -> None:
        self.cfg, self.d, self.device, self.ds = cfg, d, device, ds
        self.raw, self.optimizer, self.sampler, self.evalset = model, optimizer, sampler, evalset
        self.log, self.step = log, step
        self.mcfg = model.config
        self.ckpt_path = Path(cfg.out) / CKPT_NAME
        self.collapse_streak = int(loop_state.get("collapse_streak", 0))  # survives --resume
        self.n_warnings = int(loop_state.get("collapse_warnings", 0))
        self.eval_pending = bool(loop_state.get("eval_pending", 0))  # SIGTERM at an eval step
        self.summary: dict[str, Any] = {}
        cuda = device.type == "cuda"
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if cfg.compile:
            # the padded-bmm MoE path reads its capacity with .item(): let dynamo trace it
            # instead of breaking the graph in every MoE layer
            torch._dynamo.config.capture_scalar_outputs = True
        self.model: Any = torch.compile(model) if cfg.compile else model
        if d.world > 1:
            # The MoE buffers (noise std, load counts) are kept equal on every rank by the loop
            # and the layer's own all-reduce: no need to re-broadcast them every forward.
            no_buffer_sync = ({"forward_sync_buffers": False}
                              if "forward_sync_buffers" in inspect.signature(DDP).parameters
                              else {"broadcast_buffers": False})
            self.model = DDP(self.model, device_ids=[d.local_rank] if cuda else None,
                             **no_buffer_sync)
        bf16 = cuda and torch.cuda.is_bf16_supported()
        self.ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
        self.moe = len(model.moe_layer_ids) > 0
        self.initial_noise = self.mcfg.router_noise_std
        self.tokens_per_step = cfg.batch_size * cfg.grad_accum * self.mcfg.block_size * d.world
        self.peak = None
        if cuda:
            name = torch.cuda.get_device_name(device)
            self.peak = peak_flops(name)
            if self.peak is None:
                log.warn(step, f"MFU omitted: no bf16 peak known for device {name!r} (add it "
                               "to PEAK_FLOPS in train/mfu.py)")
        self.flops_tok = model.flops_per_token(self.mcfg.block_size, active=True)

    def train(self, preempt: Preemption) -> int:
        cfg, d, mcfg, raw = self.cfg, self.d, self.mcfg, self.raw
        kind = (f"MoE {mcfg.n_experts}x top-{mcfg.top_k}" if self.moe else "dense")
        self.log.line(f"{'resumed at' if self.step else 'starting'} step {self.step}/"
                      f"{cfg.max_steps}: preset {cfg.preset}, {kind}, "
                      f"{raw.num_params() / 1e6:.2f}M params "
                      f"({raw.num_params(active=True) / 1e6:.2f}M active), "
                      f"{self.tokens_per_step:,} tokens/step, {d.world} process(es) on "
                      f"{self.device}", style="bold")
        stop_reason, exit_code = "max-steps", 0
        last_train: dict[str, Any] = {}
        last_eval: dict[str, Any] | None = None
        self.model.train()
        stopping = False
        if self.eval_pending:  # stopped by SIGTERM at an eval step: that eval comes first
            self.eval_pending = False
            last_eval, collapse = self.eval_and_save()
            if collapse:
                stop_reason, stopping = collapse, True
        while not stopping and self.step < cfg.max_steps:
            rec, preempted = self.train_step(preempt)
            if rec is None:
                stop_reason = f"non-finite loss at step {self.step + 1}"
                exit_code = EXIT_NONFINITE
                break
            last_train = rec
            stopping = cfg.stop_after is not None and self.step >= cfg.stop_after
            due = self.step % cfg.eval_every == 0 or self.step == cfg.max_steps
            if preempted and self.step < cfg.max_steps:  # save now, evaluate after --resume
                self.eval_pending = due
                self.save()
                stop_reason = f"SIGTERM: stopped after step {self.step}"
                exit_code = EXIT_PREEMPTED
                self.log.line(f"SIGTERM received: checkpoint of step {self.step} written to "
                              f"{self.ckpt_path}; continue with --resume", style="bold yellow")
                break
            if due:
                last_eval, collapse = self.eval_and_save()
                if collapse:
                    stop_reason, stopping = collapse, True
            elif stopping:
                self.save()
        if stopping and stop_reason == "max-steps":
            stop_reason = f"stop-after {cfg.stop_after}"
        self.summary = {
            "kind": "summary", "step": self.step, "stop_reason": stop_reason,
            "exit_code": exit_code, "final_train": last_train or None,
            "final_eval_loss": last_eval["loss"] if last_eval else None,
            "final_eval_loss_macro": last_eval["loss_macro"] if last_eval else None,
            "collapse_warnings": self.n_warnings, "tokens": self.step * self.tokens_per_step,
            "params": raw.num_params(), "active_params": raw.num_params(active=True),
            "experiment": cfg.experiment, "world_size": d.world, "device": str(self.device)}
        self.log.line(f"done at step {self.step}: {stop_reason}",
                      style="bold red" if exit_code else "bold green")
        return exit_code

    def train_step(self, preempt: Preemption) -> tuple[dict[str, Any] | None, bool]:
        """One optimizer step: (its train record, or None on a non-finite loss; whether a
        SIGTERM arrived on any rank)."""
        cfg, d, mcfg, raw = self.cfg, self.d, self.mcfg, self.raw
        t0 = time.perf_counter()
        lr = lr_at(self.step, cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        noise = router_noise_at(self.step, cfg, self.initial_noise)
        raw.set_router_noise(noise)
        raw.reset_load_counts()
        sums = torch.zeros(4, device=self.device)  # lm, lb, z losses; SIGTERM seen
        for micro in range(cfg.grad_accum):
            batch = self.sampler.next_batch()
            sync = d.world == 1 or micro == cfg.grad_accum - 1
            with (nullcontext() if sync else self.model.no_sync()), self.ctx:
                o = self.model(batch.x, batch.y)
                loss = o.lm_loss + mcfg.lb_coef * o.lb_loss + mcfg.z_coef * o.z_loss
            if micro == 0:
                preempt.test_hook(self.step + 1, d.rank)
            (loss / cfg.grad_accum).backward()
            sums[:3] += torch.stack([o.lm_loss.detach().float(), o.lb_loss.detach().float(),
                                     o.z_loss.detach().float()])
        if preempt.requested:
            sums[3] = 1.0
        all_reduce_sum(sums, d)
        lm, lb, z = (sums[:3] / (cfg.grad_accum * d.world)).tolist()
        preempted = bool(sums[3].item() > 0)
        if not all(math.isfinite(v) for v in (lm, lb, z)):
            self.log.warn(self.step + 1, f"non-finite loss at step {self.step + 1} (lm {lm}, "
                          f"lb {lb}, z {z}); stopping; the last good checkpoint in "
                          f"{self.ckpt_path} is kept")
            self.optimizer.zero_grad(set_to_none=True)
            return None, preempted
        norm = torch.nn.utils.clip_grad_norm_(raw.parameters(),
                                              cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        dt = time.perf_counter() - t0
        tps = self.tokens_per_step / dt
        mfu = self.flops_tok * tps / (self.peak * d.world) if self.peak else None
        rec = {"kind": "train", "step": self.step, "lm_loss": lm, "lb_loss": lb, "z_loss": z,
               "loss": lm + mcfg.lb_coef * lb + mcfg.z_coef * z, "lr": lr,
               "router_noise": noise, "grad_norm": float(norm), "tokens_per_s": tps,
               "tokens": self.step * self.tokens_per_step, "dt_s": dt, "mfu": mfu}
        self.log.record(rec)
        aux = f" | lb {lb:.4f} | z {z:.4f} | noise {noise:.3f}" if self.moe else ""
        self.log.line(f"step {self.step}/{cfg.max_steps} | lm {lm:.4f}{aux} | lr {lr:.2e} | "
                      f"{tps:,.0f} tok/s" + (f" | mfu {mfu:.1%}" if mfu is not None else ""))
        return rec, preempted

    def eval_and_save(self) -> tuple[dict[str, Any], str | None]:
        """Evaluate, checkpoint (and keep a copy every --keep-ckpt-every steps); returns the
        eval record and, with --stop-on-collapse, the reason to stop (None: go on)."""
        cfg = self.cfg
        ev = self.eval_step()
        reason = None
        if cfg.stop_on_collapse and self.collapse_streak >= COLLAPSE_PATIENCE:
            collapsed = [lay for lay in ev["layers"] if lay["collapsed"]]
            reason = (f"collapse: an expert took more than {COLLAPSE_SHARE:.0%} of a MoE layer's "
                      f"eval tokens at {self.collapse_streak} evals in a row (last: step "
                      f"{self.step}, " + ", ".join(f"layer {lay['layer']} expert "
                                                   f"{lay['top_expert']} {lay['top_share']:.0%}"
                                                   for lay in collapsed) + ")")
        self.save()
        if self.d.master and cfg.keep_ckpt_every and self.step % cfg.keep_ckpt_every == 0:
            copy_file(self.ckpt_path, self.ckpt_path.with_name(f"ckpt_{self.step:06d}.pt"))
        return ev, reason

    def eval_step(self) -> dict[str, Any]:
        """Score the eval set, log it, warn about collapsed layers; returns the eval record."""
        ev = {"kind": "eval", "step": self.step,
              **evaluate(self.raw, self.evalset, ctx=self.ctx, world=self.d.world).record()}
        self.log.record(ev)
        self.log.eval_tables(ev)
        collapsed = [lay for lay in ev["layers"] if lay["collapsed"]]
        for lay in collapsed:
            self.n_warnings += 1
            self.log.warn(self.step, f"collapse: layer {lay['layer']} sends "
                          f"{lay['top_share']:.0%} of its eval tokens to expert "
                          f"{lay['top_expert']} (> {COLLAPSE_SHARE:.0%})",
                          layer=lay["layer"], expert=lay["top_expert"], share=lay["top_share"])
        self.collapse_streak = self.collapse_streak + 1 if collapsed else 0
        return ev

    def save(self) -> None:
        """The checkpoint of this step (every rank's sampler and RNG state; rank 0 writes)."""
        d, cfg = self.d, self.cfg
        samplers = gather(self.sampler.state_dict(), d)
        rngs = gather(rng_state(), d)
        if d.master:
            save_checkpoint(self.ckpt_path, {
                "model": self.raw.state_dict(),
                "model_config": {k: list(v) if isinstance(v, tuple) else v
                                 for k, v in asdict(self.mcfg).items()},
                "train_config": asdict(cfg),
                "optimizer": self.optimizer.state_dict(),
                "step": self.step,
                "sampler": {"world_size": d.world, "ranks": samplers},
                "rng": {"world_size": d.world, "ranks": rngs},
                "data_fingerprint": self.ds.fingerprint,
                "data_dir": str(cfg.data),
                "loop": {"collapse_streak": self.collapse_streak,
                         "collapse_warnings": self.n_warnings,
                         "eval_pending": int(self.eval_pending)},
            })
        barrier(d)
