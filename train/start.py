"""Everything before step 0: the run directory, the checkpoint, the data, the model; then the loop.

Before step 0: the run directory is checked (train/run_dir.py), a resumed checkpoint is
verified (checksum, options, model, data; train/checkpoint.py), and the data is opened with
``verify="full"`` (every token id and sha256; files unchanged since the last check are skipped
by the stamp) unless ``--skip-verify``; the check's result is printed and logged. Then rank 0
takes the lock on --out (train/lock.py), checks the directory again under it and prepares it.

A step every rank takes and one rank may fail alone (its own open of the data, rank 0's lock)
ends with every rank's verdict exchanged (train/distributed.py ``agree``): all ranks stop with
the failing rank's message, none waits forever in a collective for a rank that has left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import shards
from shards.format import FormatError
from shards.hashing import distinct
from train.checkpoint import CKPT_NAME, check_compatible, load_checkpoint, set_rng_state
from train.config import TrainConfig, TrainError
from train.data import DataError, TrainSampler, parse_domain_weights
from train.distributed import Dist, agree, from_master
from train.eval_data import EvalSet
from train.lock import RunLock
from train.loop import Loop
from train.metrics import MetricsLog
from train.preempt import Preemption
from train.run_dir import changes_to_accept, check_start, prepare

# options that are also GPTConfig fields a resumed model may change (no parameter shape)
MODEL_KEYS = {"lb_coef": ("lb_coef",), "z_coef": ("z_coef",),
              "router_noise": ("router_noise_std",), "top_k": ("top_k",),
              "experiment": ("lb_coef", "top_k")}
SAMPLER_KEYS = {"batch_size": "batch_size", "domain_weights": "weights"}


def open_data(cfg: TrainConfig, d: Dist) -> shards.Dataset:
    """Rank 0 checks the data (`full`, or sizes with --skip-verify); the other ranks wait for
    its verdict and open with sizes only, so the data is read once per run. Every rank's own
    open is then agreed on: one that fails stops them all, with its message."""
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
        try:
            ds = shards.open(cfg.data)
        except (FormatError, OSError, ValueError) as e:
            error = f"cannot open it: {e}"
    error = agree(error, d)
    if error is not None:
        raise DataError(f"--data {cfg.data}: refused before step 0: {error}")
    verification = from_master(ds.verification if d.master else None, d)
    if not d.master:
        ds.verification = verification
    return ds


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _claim(out: Path, cfg: TrainConfig, resume_step: int | None,
           ckpt_id: tuple[int, int, int] | None, d: Dist, held: ExitStack) -> list[Path]:
    """Rank 0: lock --out, check it again under the lock, prepare it; every rank learns the
    verdict. Returns the stale temporary files removed."""
    error, stale = None, []
    if d.master:
        try:
            held.enter_context(RunLock(out))
            check_start(out, cfg)
            if cfg.resume and _identity(out / CKPT_NAME) != ckpt_id:
                raise TrainError(f"--resume: {out / CKPT_NAME} changed while this run was "
                                 "starting (another run wrote it); start this one again")
            stale = prepare(out, cfg, resume_step)
        except (TrainError, OSError) as e:
            error = str(e)
    error = agree(error, d)
    if error is not None:
        raise TrainError(error)
    return stale


def run(cfg: TrainConfig, d: Dist, device: torch.device,
        after: Callable[[Loop], None] | None = None) -> int:
    """Train `cfg` as rank `d.rank` on `device`; the exit code. `after` (benchmarks) is called
    with the loop once it has finished, before the lock is released."""
    from train.model import GPT, make_config  # the model module is only needed to train
    from train.upcycle import upcycle

    t_start = time.time()
    out = Path(cfg.out)
    ckpt_path = out / CKPT_NAME
    check_start(out, cfg)
    ckpt_id = _identity(ckpt_path) if cfg.resume else None
    ckpt = load_checkpoint(ckpt_path) if cfg.resume else None
    ds = open_data(cfg, d)
    try:
        mcfg = make_config(cfg.preset, **cfg.overrides())
    except ValueError as e:  # unknown preset, bad n_experts/top_k/moe_layers, ...
        raise TrainError(f"model config: {e}") from e
    if cfg.compile and cfg.moe_impl == "grouped_mm" and device.type != "cuda":
        raise TrainError("--moe-impl grouped_mm with --compile runs on CUDA only (torch compiles "
                         "_grouped_mm for bf16); drop one of them")
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
                         | ({"data"} if "data" in changes else set())
                         | {"moe_impl"})  # how the experts run, not what they compute
    step = int(ckpt["step"]) if ckpt is not None else 0
    with ExitStack() as held:
        stale = _claim(out, cfg, step if ckpt is not None else None, ckpt_id, d, held)
        log = MetricsLog(out, d.master)
        check = ds.verification
        log.line(check.summary())
        log.record({"kind": "data_check", "step": step, "data": str(cfg.data),
                    **check.to_dict()})
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
                               weights=weights, seed=cfg.seed, rank=d.rank, device=device,
                               flag_damage=True)
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
                          world_size=d.world, max_blocks=cfg.eval_max_blocks, device=device,
                          flag_damage=True)
        loop = Loop(cfg, d, device, ds, model, optimizer, sampler, evalset, log, step, loop_state)
        with Preemption() as preempt:
            code = loop.train(preempt)
        loop.summary["wall_s"] = time.time() - t_start
        log.record(loop.summary)
        if after is not None:
            after(loop)
    return code

