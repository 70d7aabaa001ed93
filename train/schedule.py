"""The schedules of a run: learning rate (warmup, then cosine) and router noise (annealed)."""

from __future__ import annotations

import math

from train.config import TrainConfig

NOISE_ANNEAL_FRACTION = 0.25  # router noise goes linearly to 0 over this fraction of steps


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to --lr, then cosine decay to lr * min_lr_ratio at --max-steps."""
    min_lr = cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if step >= cfg.max_steps:
        return min_lr
    span = max(1, cfg.max_steps - cfg.warmup)
    ratio = (step - cfg.warmup) / span
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - min_lr)


def router_noise_at(step: int, cfg: TrainConfig, initial: float) -> float:
    horizon = NOISE_ANNEAL_FRACTION * cfg.max_steps
    return initial * max(0.0, 1.0 - step / horizon) if horizon > 0 else 0.0
