"""Expert-specialization measures: pure numpy functions over routing assignments.

Conventions used throughout:

* ``topk`` is an ``(N, k)`` int array of expert ids per token, most probable first (the
  model's ``GPTOutput.routing`` of one MoE layer, flattened over batch and time); column 0 is
  the token's top-1 expert.
* ``domain`` is an ``(N,)`` int array of domain indices, ``D`` domains, ``E`` experts.
* Information quantities are in bits (log base 2); router entropy is reported in bits too.

Measures (with the paper they come from):

* routing fractions (domain x expert): top-1 rows sum to 1 (uniform share 1/E); top-k rows
  give the share of a domain's tokens that have the expert among their k (rows sum to k,
  uniform share k/E, OLMoE's "per-expert domain share").
* specialization score: the share of a domain's tokens sent to its most-used expert (top-1),
  against the uniform 1/E.
* mutual information I(domain; expert) of the top-1 assignment, in bits; its maximum is
  log2(D) (reached when each domain goes to its own experts).
* router entropy: the mean over tokens of H(router softmax), bits; maximum log2(E).
* vocabulary specialization (OLMoE): for a token id x seen n_x times, the share of its
  occurrences that went to its most frequent expert; averaged over ids weighted by n_x.
* co-activation (OLMoE, top-2): P(j | i) = tokens with both i and j in their top-k / tokens with i.
* router saturation (OLMoE): the mean overlap |S_early & S_final| / k of each token's top-k
  expert sets at two checkpoints.
* maximum load violation: the busiest expert's assignments over the mean per expert.
"""

from __future__ import annotations

import numpy as np
import torch


def assignment_counts(domain: np.ndarray, topk: np.ndarray, n_domains: int, n_experts: int,
                      *, top1: bool = True) -> np.ndarray:
    """(D, E) counts: tokens of each domain whose top-1 expert is e (``top1``), or whose
    top-k set contains e (``top1=False``)."""
    domain = np.asarray(domain, dtype=np.int64).reshape(-1)
    topk = np.asarray(topk, dtype=np.int64).reshape(len(domain), -1)
    ids = topk[:, :1] if top1 else topk
    flat = np.repeat(domain, ids.shape[1]) * n_experts + ids.reshape(-1)
    return np.bincount(flat, minlength=n_domains * n_experts).reshape(n_domains, n_experts)


def routing_fractions(counts: np.ndarray, tokens: np.ndarray | None = None) -> np.ndarray:
    """Row-normalised routing fractions; `tokens` (D,) divides instead of the row sums (for
    top-k counts, so that rows sum to k)."""
    counts = np.asarray(counts, dtype=np.float64)
    denom = counts.sum(axis=1) if tokens is None else np.asarray(tokens, dtype=np.float64)
    return np.divide(counts, denom[:, None], out=np.zeros_like(counts),
                     where=denom[:, None] > 0)


def top_expert_share(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per domain: (most-used expert, share of the domain's tokens it gets) from top-1 counts."""
    fr = routing_fractions(counts)
    return fr.argmax(axis=1), fr.max(axis=1)


def mutual_information(counts: np.ndarray) -> float:
    """I(domain; expert) in bits of the joint distribution given by a (D, E) count table."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        return 0.0
    p = c / total
    pd = p.sum(axis=1, keepdims=True)
    pe = p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float(np.sum(p[nz] * np.log2(p[nz] / (pd @ pe)[nz])))


def entropy_bits(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in bits along `axis` (0 log 0 = 0)."""
    p = np.asarray(p, dtype=np.float64)
    logp = np.log2(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis=axis)


def router_entropy(probs: np.ndarray) -> float:
    """Mean over tokens of the entropy (bits) of the router's softmax; probs (N, E)."""
    probs = np.asarray(probs, dtype=np.float64)
    return float(entropy_bits(probs).mean()) if len(probs) else 0.0


def expert_load(topk: np.ndarray, n_experts: int) -> np.ndarray:
    """(E,) share of all top-k assignments each expert receives (sums to 1)."""
    ids = np.asarray(topk, dtype=np.int64).reshape(-1)
    c = np.bincount(ids, minlength=n_experts).astype(np.float64)
    return c / c.sum() if c.sum() else c


def max_load_violation(topk: np.ndarray, n_experts: int) -> float:
    """The busiest expert's assignments over the mean per expert (1.0 = perfectly balanced)."""
    load = expert_load(topk, n_experts)
    return float(load.max() * n_experts) if load.sum() else 0.0


def vocab_specialization(token_ids: np.ndarray, topk: np.ndarray, n_experts: int,
                         *, min_count: int = 5, top1: bool = True) -> dict[str, object]:
    """OLMoE vocabulary specialization.

    For every token id seen at least `min_count` times: the share of its occurrences routed to
    its most frequent expert (top-1 assignments, or top-k membership when ``top1=False``).
    Returns the occurrence-weighted mean ``score``, the uniform baseline (1/E or k/E), the ids
    counted, and per expert the mean score of the ids it is the favourite of.
    """
    tok = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    ids = np.asarray(topk, dtype=np.int64).reshape(len(tok), -1)
    k = ids.shape[1]
    if top1:
        ids = ids[:, :1]
    uniq, inv = np.unique(tok, return_inverse=True)
    table = np.zeros((len(uniq), n_experts), dtype=np.int64)
    np.add.at(table, (np.repeat(inv, ids.shape[1]), ids.reshape(-1)), 1)
    occ = np.bincount(inv, minlength=len(uniq))
    keep = occ >= min_count
    baseline = 1.0 / n_experts if top1 else k / n_experts
    if not keep.any():
        return {"score": None, "baseline": baseline, "token_ids": 0, "occurrences": 0,
                "per_expert": [None] * n_experts}
    share = table[keep].max(axis=1) / occ[keep]
    fav = table[keep].argmax(axis=1)
    w = occ[keep].astype(np.float64)
    per_expert = []
    for e in range(n_experts):
        m = fav == e
        per_expert.append(float(np.average(share[m], weights=w[m])) if m.any() else None)
    return {"score": float(np.average(share, weights=w)), "baseline": baseline,
            "token_ids": int(keep.sum()), "occurrences": int(w.sum()), "per_expert": per_expert}


def coactivation(topk: np.ndarray, n_experts: int) -> np.ndarray:
    """(E, E) P(j | i): of the tokens with expert i in their top-k, the share that also have j.

    The diagonal is 1 for every expert that was used; rows of unused experts are 0.
    """
    ids = np.asarray(topk, dtype=np.int64)
    ids = ids.reshape(-1, ids.shape[-1])
    member = np.zeros((len(ids), n_experts), dtype=np.float64)
    member[np.arange(len(ids))[:, None], ids] = 1.0
    both = member.T @ member
    n_i = np.diag(both).copy()
    return np.divide(both, n_i[:, None], out=np.zeros_like(both), where=n_i[:, None] > 0)


def saturation(early: np.ndarray, final: np.ndarray) -> float:
    """Mean over tokens of |top-k set early & top-k set final| / k (1.0 = identical routing)."""
    a = np.asarray(early, dtype=np.int64)
    b = np.asarray(final, dtype=np.int64)
    a = a.reshape(-1, a.shape[-1])
    b = b.reshape(-1, b.shape[-1])
    if a.shape != b.shape:
        raise ValueError(f"saturation: assignment shapes differ ({a.shape} vs {b.shape}); the "
                         "two checkpoints must route the same tokens with the same top_k")
    if not len(a):
        return 0.0
    overlap = (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1)
    return float(overlap.mean() / a.shape[1])


def tv_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance 0.5 * sum |p - q| of two distributions (normalised here)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def mi_from_fractions(fractions: dict[str, list[float]], weights: dict[str, float]) -> float:
    """I(domain; expert) in bits from per-domain routing fractions (as metrics.jsonl records
    them) and each domain's token weight (e.g. its eval blocks)."""
    rows = [np.asarray(fractions[d], dtype=np.float64) * float(weights.get(d, 0.0))
            for d in fractions]
    return mutual_information(np.stack(rows)) if rows else 0.0


# --------------------------------------------------------------------------- running a model


def model_device(model: object) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device  # type: ignore[attr-defined]
    except (AttributeError, StopIteration):
        return torch.device("cpu")


@torch.no_grad()
def route_tokens(model: object, ids: np.ndarray) -> list[np.ndarray]:
    """Per MoE layer, the (B, T, k) top-k expert ids the model's router picks for `ids` (B, T)
    or (T,) (then B = 1), via ``model(idx, return_routing=True).routing`` in eval mode."""
    arr = np.asarray(ids, dtype=np.int64)
    if arr.ndim == 1:
        arr = arr[None]
    idx = torch.from_numpy(arr).to(model_device(model))
    out = model(idx, return_routing=True)  # type: ignore[operator]
    return [r.detach().cpu().numpy().astype(np.int64) for r in (out.routing or [])]
