"""The training loop: the optimizer steps of one process, with evals, checkpoints and stops.

One optimizer step: reset the MoE load counts, anneal the router noise, run `--grad-accum`
micro-batches (DDP gradient sync on the last only; the next batch is gathered and sent right
after each forward is queued, so its host work and copy overlap the GPU's compute), clip
gradients, AdamW step on the cosine schedule. Every `--eval-every` steps the eval split of every
domain is scored (train/evaluation.py) and a checkpoint is written. Only rank 0 logs and writes.

Host syncs: a step reads nothing from the device. Its LM and auxiliary losses and gradient norm
stay in a device buffer (train/step_stats.py) that is read, with the SIGTERM flag, once per
`--log-every` steps (default 10 on CUDA, 1 on CPU) and at every step that evaluates,
checkpoints or ends the run; in a one-process run a SIGTERM also reads at once. At a read every
step since the previous one gets its train record (lm/lb/z losses, lr, router noise, grad norm:
the values a read after every step gives; tokens/s, dt_s and MFU: the interval's means), and
the terminal shows the last of them.

Stops, acted on at the read that sees them:
- a non-finite loss: the records stop before the first non-finite step, a warning names it,
  and the run ends with EXIT_NONFINITE; the summary's step is the last good one. The steps
  after it that ran before the read are discarded: no checkpoint is ever written after a
  non-finite step (a checkpoint is written only at a read that found none), so the last
  checkpoint is a good one and ``--resume`` continues from it as before.
- a damaged batch (ids outside the vocabulary, train/data.py): it ran with clamped ids and a
  zero loss (so it trained nothing, and DDP's collectives still match); the records stop before
  its step, a warning and the error name the shard and offset on every rank, exit 2.
- a SIGTERM (train/preempt.py): a checkpoint of the step just read, then EXIT_PREEMPTED;
  ``--resume`` continues from it exactly (with --log-every N, up to N - 1 steps after the
  signal in a multi-process run: lower it if the scheduler's grace period is shorter).
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

from shards.atomic import copy_file
from train.checkpoint import CKPT_NAME, rng_state, save_checkpoint
from train.config import COLLAPSE_PATIENCE, COLLAPSE_SHARE, TrainConfig
from train.data import DataError, TrainSampler
from train.distributed import Dist, agree, barrier, gather
from train.eval_data import EvalSet
from train.evaluation import evaluate
from train.metrics import MetricsLog
from train.mfu import peak_flops
from train.preempt import EXIT_PREEMPTED, Preemption
from train.schedule import lr_at, router_noise_at
from train.step_stats import StepStats, StepValues

EXIT_NONFINITE = 3
LOG_EVERY_CUDA = 10  # --log-every's default on CUDA (1 elsewhere)


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
        self.log_every = cfg.log_every or (LOG_EVERY_CUDA if cuda else 1)
        self.stats = StepStats(self.log_every, device, cfg.grad_accum, d)
        self.saved_step: int | None = step if self.ckpt_path.is_file() else None
        self.t_interval: float | None = None  # when the steps not yet read began
        self.noise: float | None = None  # the router noise the MoE layers hold
        self.damage: str | None = None  # this rank's first damaged batch (train/data.py)
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
            self.train_step(preempt)
            stopping = cfg.stop_after is not None and self.step >= cfg.stop_after
            due = self.step % cfg.eval_every == 0 or self.step == cfg.max_steps
            if not (due or stopping or self.step % self.log_every == 0
                    or (preempt.requested and d.world == 1)):
                continue
            last, bad, preempted = self.read(preempt)
            last_train = last or last_train
            if bad is not None:
                stop_reason = f"non-finite loss at step {bad}"
                exit_code = EXIT_NONFINITE
                self.step = bad - 1  # the last good step; the ones after it are discarded
                break
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

    def train_step(self, preempt: Preemption) -> None:
        """One optimizer step, queued on the device; its numbers go to `self.stats` (no read)."""
        cfg, d, mcfg, raw = self.cfg, self.d, self.mcfg, self.raw
        if self.t_interval is None:
            self.t_interval = time.perf_counter()
        lr = lr_at(self.step, cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        noise = router_noise_at(self.step, cfg, self.initial_noise)
        if noise != self.noise:  # a device write per MoE layer: only when it changes
            raw.set_router_noise(noise)
            self.noise = noise
        raw.reset_load_counts()
        last_step = self.step + 1 in (cfg.max_steps, cfg.stop_after)
        damaged = False
        for micro in range(cfg.grad_accum):
            batch = self.sampler.next_batch()
            sync = d.world == 1 or micro == cfg.grad_accum - 1
            with (nullcontext() if sync else self.model.no_sync()), self.ctx:
                o = self.model(batch.x, batch.y)
                loss = o.lm_loss + mcfg.lb_coef * o.lb_loss + mcfg.z_coef * o.z_loss
            if batch.damage is not None:  # ids clamped: run it (DDP), but it trains nothing
                loss = loss * 0.0
                self.damage, damaged = self.damage or batch.damage, True
            if micro < cfg.grad_accum - 1 or not last_step:
                self.sampler.prefetch()  # while the GPU runs the forward just queued
            if micro == 0:
                preempt.test_hook(self.step + 1, d.rank)
            (loss / cfg.grad_accum).backward()
            self.stats.add_micro(o)
        norm = torch.nn.utils.clip_grad_norm_(raw.parameters(),
                                              cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        self.stats.end_step(self.step + 1, lr, noise, norm, damaged)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def read(self, preempt: Preemption) -> tuple[dict[str, Any] | None, int | None, bool]:
        """Read the steps since the last read (one host sync; every rank at the same step) and
        log them: (the last good step's record, the first non-finite step or None, whether a
        SIGTERM arrived on any rank)."""
        vals, preempted = self.stats.read(preempt.requested)
        dt = (time.perf_counter() - (self.t_interval or 0.0)) / len(vals)
        self.t_interval = None
        last = None
        for v in vals:
            if v.damaged:  # on some rank: its message, on every rank
                error = agree(self.damage, self.d) or "a damaged batch (no message)"
                self.log.warn(v.step, f"damaged data at step {v.step}: {error}; stopping")
                raise DataError(error)
            if not all(math.isfinite(x) for x in (v.lm, v.lb, v.z)):
                kept = (f"the last good checkpoint (step {self.saved_step}) in {self.ckpt_path} "
                        "is kept" if self.saved_step is not None else "no checkpoint was written")
                self.log.warn(v.step, f"non-finite loss at step {v.step} (lm {v.lm}, lb {v.lb}, "
                                      f"z {v.z}); stopping; {kept}")
                return last, v.step, preempted
            last = self.record(v, dt)
        assert last is not None
        lm, lb, z, noise, tps, mfu = (last["lm_loss"], last["lb_loss"], last["z_loss"],
                                      last["router_noise"], last["tokens_per_s"], last["mfu"])
        aux = f" | lb {lb:.4f} | z {z:.4f} | noise {noise:.3f}" if self.moe else ""
        self.log.line(f"step {last['step']}/{self.cfg.max_steps} | lm {lm:.4f}{aux} | "
                      f"lr {last['lr']:.2e} | {tps:,.0f} tok/s"
                      + (f" | mfu {mfu:.1%}" if mfu is not None else ""))
        return last, None, preempted

    def record(self, v: StepValues, dt: float) -> dict[str, Any]:
        """Log the train record of one step read back from the device."""
        tps = self.tokens_per_step / dt
        mfu = self.flops_tok * tps / (self.peak * self.d.world) if self.peak else None
        rec = {"kind": "train", "step": v.step, "lm_loss": v.lm, "lb_loss": v.lb, "z_loss": v.z,
               "loss": v.lm + self.mcfg.lb_coef * v.lb + self.mcfg.z_coef * v.z, "lr": v.lr,
               "router_noise": v.noise, "grad_norm": v.grad_norm, "tokens_per_s": tps,
               "tokens": v.step * self.tokens_per_step, "dt_s": dt, "mfu": mfu}
        self.log.record(rec)
        return rec

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
        res = evaluate(self.raw, self.evalset, ctx=self.ctx, world=self.d.world)
        error = agree(self.evalset.damage, self.d)
        if error is not None:
            self.log.warn(self.step, f"damaged data in the eval at step {self.step}: {error}; "
                                     "stopping")
            raise DataError(error)
        ev = {"kind": "eval", "step": self.step, **res.record()}
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
        self.saved_step = self.step
        barrier(d)
