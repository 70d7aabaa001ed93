"""Scoring a model on eval blocks: the one evaluation the training loop and the report share.

:func:`evaluate` runs the model over an :class:`~train.data.EvalSet` (every eval block of every
domain, or the evenly spaced subset the set was built with) and returns per domain the mean LM
loss, and per MoE layer the domain x expert top-k assignment counts and the summed router
entropy. Over DDP ranks the sums are all-reduced, so every rank gets the same numbers. With
``keep_tokens`` (one process) it also keeps every token's input id, domain, top-k experts and
router entropy, which the report's measures need.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from train.config import COLLAPSE_SHARE


@dataclass
class Evaluation:
    domains: list[str]
    loss: list[float | None]  # per domain: mean LM loss over its scored tokens
    tokens: list[int]  # per domain: scored (target) tokens
    blocks: list[int]  # per domain: eval blocks of the set, over all ranks
    layers: list[int]  # MoE layer ids
    top_k: int
    counts: np.ndarray  # (L, D, E) top-k assignments of each domain's tokens to each expert
    entropy_sum: np.ndarray  # (L, D) router entropy (nats) summed over each domain's tokens
    # keep_tokens=True only, every scored token in order (domain after domain):
    token_ids: np.ndarray | None = None  # (N,) input ids
    domain: np.ndarray | None = None  # (N,) domain index
    topk: list[np.ndarray] | None = None  # per layer (N, k) expert ids, most probable first
    entropy_bits: list[np.ndarray] | None = None  # per layer (N,) router entropy in bits

    @property
    def n_experts(self) -> int:
        return int(self.counts.shape[2]) if self.layers else 0

    def record(self) -> dict[str, Any]:
        """The training loop's eval record. Per layer: ``fractions[domain][e]`` = share of the
        domain's top-k assignments that went to expert e (each row sums to 1); ``load[e]`` =
        share of all eval tokens that have e among their top-k (sums to top_k; collapse = max
        load > COLLAPSE_SHARE); ``imbalance`` = max / mean assignment count; ``entropy`` =
        mean entropy (nats) of the full router softmax per token."""
        scored = [v for v in self.loss if v is not None]
        res: dict[str, Any] = {
            "loss": dict(zip(self.domains, self.loss, strict=True)),
            "loss_macro": sum(scored) / len(scored) if scored else None,
            "blocks": dict(zip(self.domains, self.blocks, strict=True)),
            "layers": [],
        }
        tokens = np.asarray(self.tokens, dtype=np.float64)
        total = float(tokens.sum())
        E, k = self.n_experts, self.top_k
        for li, layer in enumerate(self.layers):
            c = self.counts[li]
            per_expert = c.sum(0)
            share = per_expert / max(total, 1.0)
            mean = float(per_expert.mean())
            top = int(share.argmax())
            res["layers"].append({
                "layer": int(layer),
                "fractions": {dom: (c[i] / max(tokens[i] * k, 1.0)).tolist()
                              for i, dom in enumerate(self.domains)},
                "load": share.tolist(),
                "entropy": float(self.entropy_sum[li].sum()) / max(total, 1.0),
                "entropy_by_domain": {dom: float(self.entropy_sum[li, i]) / max(tokens[i], 1.0)
                                      for i, dom in enumerate(self.domains)},
                "max_entropy": math.log(E),
                "imbalance": float(per_expert.max()) / mean if mean > 0 else None,
                "top_expert": top,
                "top_share": float(share[top]),
                "collapsed": bool(share[top] > COLLAPSE_SHARE),
            })
        return res


@torch.no_grad()
def evaluate(model: Any, evalset: Any, *, ctx: Any = None, world: int = 1,
             domains: list[int] | None = None, keep_tokens: bool = False) -> Evaluation:
    """Score `model` on `evalset` (only the domain indices `domains`, when given); `ctx` wraps
    each forward (autocast); `world` > 1 all-reduces the sums over the ranks."""
    if keep_tokens and world > 1:
        raise ValueError("keep_tokens needs the whole eval set in one process (world == 1)")
    was_training = model.training
    model.eval()
    ctx = ctx if ctx is not None else nullcontext()
    dev = next(model.parameters()).device
    D = len(evalset.domains)
    layers = [int(x) for x in model.moe_layer_ids]
    L = len(layers)
    E = model.config.n_experts if L else 0
    loss_sum = torch.zeros(D, dtype=torch.float64, device=dev)
    tokens = torch.zeros(D, dtype=torch.float64, device=dev)
    counts = torch.zeros(L, D, max(E, 1), dtype=torch.float64, device=dev)
    ent = torch.zeros(L, D, dtype=torch.float64, device=dev)
    kept: dict[str, list[Any]] = {"ids": [], "dom": [], "topk": [[] for _ in range(L)],
                                  "ent": [[] for _ in range(L)]}
    for d in (range(D) if domains is None else domains):
        for x, y, n_valid in evalset.batches(d):
            with ctx:
                out = model(x, y, return_routing=L > 0)
            if not n_valid:  # a padding batch: run (MoE layers all-reduce), never counted
                continue
            n = y.numel()
            loss_sum[d] += out.lm_loss.double() * n
            tokens[d] += n
            if keep_tokens:
                kept["ids"].append(x.reshape(-1).cpu().numpy())
                kept["dom"].append(np.full(x.numel(), d, dtype=np.int64))
            for li in range(L):
                ids = out.routing[li]
                counts[li, d] += torch.bincount(ids.reshape(-1), minlength=E).double()
                p = out.router_probs[li].float()
                h = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)  # nats per token
                ent[li, d] += h.sum().double()
                if keep_tokens:
                    kept["topk"][li].append(ids.reshape(-1, ids.shape[-1]).cpu().numpy()
                                            .astype(np.int64))
                    kept["ent"][li].append(h.reshape(-1).double().cpu().numpy() / math.log(2))
    flat = torch.cat([loss_sum, tokens, counts.flatten(), ent.flatten()])
    if world > 1:
        dist.all_reduce(flat)
    flat = flat.cpu().numpy()
    loss_sum, tok = flat[:D], flat[D:2 * D]
    n_counts = L * D * max(E, 1)
    if was_training:
        model.train()
    res = Evaluation(
        domains=list(evalset.domains),
        loss=[float(loss_sum[i] / tok[i]) if tok[i] > 0 else None for i in range(D)],
        tokens=[int(v) for v in tok], blocks=list(evalset.total_blocks), layers=layers,
        top_k=int(model.config.top_k),
        counts=flat[2 * D:2 * D + n_counts].reshape(L, D, max(E, 1)),
        entropy_sum=flat[2 * D + n_counts:].reshape(L, D))
    if keep_tokens:
        res.token_ids = np.concatenate(kept["ids"]) if kept["ids"] else np.zeros(0, np.int64)
        res.domain = np.concatenate(kept["dom"]) if kept["dom"] else np.zeros(0, np.int64)
        res.topk = [np.concatenate(t) for t in kept["topk"]]
        res.entropy_bits = [np.concatenate(e) for e in kept["ent"]]
    return res
