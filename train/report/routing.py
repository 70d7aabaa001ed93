"""The report's models and the eval tokens they route, with the training loop's evaluation.

The report scores up to ``--max-tokens`` eval tokens per domain (whole blocks, evenly spaced
over each eval split: the loop's EvalSet with ``max_blocks``) through
train/evaluation.py's :func:`~train.evaluation.evaluate`, keeping every token's top-k experts
and router entropy. The causal test and router saturation re-run the same evaluation on the
same blocks with an expert masked or an earlier checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.checkpoint import CheckpointError, load_checkpoint
from train.eval_data import EvalSet
from train.evaluation import Evaluation, evaluate
from train.report.config import ReportError


def load_model(path: Path, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """The model of a checkpoint (checksum verified), in eval mode, and the checkpoint."""
    from train.model import GPT, GPTConfig

    if not path.is_file():
        raise ReportError(f"{path}: no checkpoint here; train the run first (train/moe.py)")
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise ReportError(str(e)) from e
    mc = dict(ckpt["model_config"])
    if isinstance(mc.get("moe_layers"), list):
        mc["moe_layers"] = tuple(mc["moe_layers"])
    model = GPT(GPTConfig(**mc))
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, ckpt


def eval_set(ds: Any, block_size: int, batch_size: int, max_tokens: int) -> EvalSet:
    """Up to `max_tokens` eval tokens per domain (whole blocks, at least one)."""
    return EvalSet(ds, block_size=block_size, batch_size=batch_size,
                   max_blocks=max(1, max_tokens // block_size))


def route(model: Any, es: EvalSet) -> Evaluation:
    """Every eval block of `es` through `model`, every token's routing kept."""
    ev = evaluate(model, es, keep_tokens=True)
    for dom, n in zip(ev.domains, ev.tokens, strict=True):
        if not n:
            raise ReportError(f"domain {dom!r} has no eval block of {es.block_size + 1} tokens; "
                              "the eval split is too small")
    return ev


def domain_loss(model: Any, es: EvalSet, domain: int) -> float:
    """Mean LM loss of one domain's blocks of `es` (the causal test's masked model)."""
    loss = evaluate(model, es, domains=[domain]).loss[domain]
    if loss is None:
        raise ReportError(f"domain {es.domains[domain]!r} has no eval block to score")
    return loss


def route_again(model: Any, es: EvalSet) -> list[np.ndarray]:
    """Per MoE layer, the (N, k) top-k experts of another model on the same tokens."""
    return evaluate(model, es, keep_tokens=True).topk or []
