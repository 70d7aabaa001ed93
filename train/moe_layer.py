"""The mixture-of-experts FFN: router, noisy top-k, auxiliary losses, dropless vectorized dispatch.

One MoE layer replaces a block's dense MLP. Each expert is a GPT-2 MLP (c_fc to 4*d, GELU with
the tanh approximation, c_proj back to d); the experts' weights are stored stacked:
``c_fc_weight`` (E, d, 4d), ``c_fc_bias`` (E, 4d), ``c_proj_weight`` (E, 4d, d), ``c_proj_bias``
(E, d). Every expert's weights take part in every step, so each gets a gradient (zero when the
expert got no token) and DDP needs no ``find_unused_parameters``.

Routing (per token):
  1. ``logits = x @ W_router^T`` in float32 (autocast disabled), bias-free;
     removed experts (``set_expert_mask``) get ``-inf``.
  2. in training mode only, Gaussian noise of std ``noise_std`` (a buffer the loop anneals
     through ``GPT.set_router_noise``) is added: ``noisy = logits + noise``.
  3. ``probs = softmax(noisy)`` over ALL experts, then top-k of ``probs`` (most probable first).
  4. gates: top-2 renormalizes its two probabilities to sum to 1. Top-1 uses a straight-through
     estimator: ``gate = p + (1 - p).detach()``, i.e. exactly 1 in the forward pass (the layer
     output is the chosen expert's output, so an upcycled model starts equal to its dense
     parent) while the backward pass sees ``d out / d p = expert(x)``, so the router learns from
     the LM loss alone.

Auxiliary losses (reported apart from the LM loss; the loop weights and adds them):
  * Switch load balancing ``E * sum_i f_i * P_i``: ``P_i`` is the mean of ``probs[:, i]`` over
    this micro-batch's tokens (differentiable); ``f_i`` (no gradient) is the fraction of top-k
    assignments that went to expert i, ``counts_i / (tokens * k)``, over the GLOBAL batch (see
    ``_global_fraction``).
  * router z-loss ``mean(logsumexp(logits)^2)`` on the clean (noise-free) logits.

Dispatch: assignments are grouped by expert with a counting sort (stable: by expert, then
assignment; a cumulative count over a one-hot (E, N*k), no sort kernel, no atomics), which also
gives the per-expert counts the load-balancing loss needs. The rows are gathered into
expert-contiguous order, run through the experts as grouped matrix products --
``torch._grouped_mm`` where the installed torch and the device/dtype support it, else a padded
``bmm`` over experts (tokens padded to the largest expert's count) -- and combined through the
inverse permutation (a gather and a weighted sum over the k slots). On the grouped_mm path the
backward has no accumulating index_put (atomics on CUDA) and no zero-filled row buffer: the
permutation gathers are ``_GatherRows`` (backward: a gather through the inverse permutation,
summed over the k slots), the per-row expert biases ``_ExpertBias`` (backward: a one-hot
matrix product, i.e. a segment sum per expert); the top-k is max reductions. Deterministic on
CUDA too. The padded-bmm path needs the largest count on the host (one ``.item()`` sync per
layer); the grouped_mm path has no host sync.

``reference_moe_forward`` at the bottom is the plain per-expert loop: THE TEST REFERENCE, never
used in training.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

Impl = Literal["auto", "grouped_mm", "bmm"]
IMPLS: tuple[str, ...] = ("auto", "grouped_mm", "bmm")


class MoEOutput(NamedTuple):
    out: Tensor  # (B, T, d)
    lb_loss: Tensor  # 0-dim float32
    z_loss: Tensor  # 0-dim float32
    topk_idx: Tensor  # (B, T, k) int64, most probable first
    probs: Tensor  # (B, T, E) float32 full softmax (noise included in training mode)


def grouped_mm_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``torch._grouped_mm`` is usable (forward and backward) for this device and dtype.

    CUDA: bf16 on compute capability >= 9.0 (the kernel torch ships for Hopper and newer).
    CPU: torch >= 2.9 has a reference implementation (float32/bf16); it is correct but not
    faster than the padded bmm there, so ``auto`` does not pick it on CPU (see ``resolve_impl``)
    and the tests use it only to cross-check the bmm path.
    """
    if not hasattr(torch, "_grouped_mm"):
        return False
    if device.type == "cuda":
        return dtype == torch.bfloat16 and torch.cuda.get_device_capability(device) >= (9, 0)
    if device.type == "cpu":
        return dtype in (torch.float32, torch.bfloat16) and _torch_version() >= (2, 9)
    return False


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def resolve_impl(impl: str, device: torch.device, dtype: torch.dtype) -> str:
    """The dispatch implementation to run: ``auto`` picks grouped_mm on supported CUDA, else bmm."""
    if impl not in IMPLS:
        raise ValueError(f"moe impl {impl!r} is not one of {', '.join(IMPLS)}")
    if impl == "auto":
        return "grouped_mm" if device.type == "cuda" and grouped_mm_supported(device, dtype) else "bmm"
    if impl == "grouped_mm" and not grouped_mm_supported(device, dtype):
        raise ValueError(
            f"moe impl 'grouped_mm' is not supported for {device.type}/{dtype} with torch "
            f"{torch.__version__}; use 'bmm' or 'auto'"
        )
    return impl


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the expert matmuls run in: autocast's dtype when autocast is on, else x's."""
    dev = x.device.type
    if dev in ("cuda", "cpu") and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def load_balancing_loss(probs: Tensor, fraction: Tensor) -> Tensor:
    """Switch load-balancing loss ``E * sum_i f_i * P_i``.

    probs: (N, E) full softmax per token; fraction: (E,) f_i, fractions of top-k assignments
    (treated as constants). P_i is the mean router probability of expert i over the N tokens.
    """
    n_experts = probs.shape[-1]
    return n_experts * torch.sum(fraction.detach() * probs.mean(dim=0))


def router_z_loss(logits: Tensor) -> Tensor:
    """Router z-loss ``mean_tokens(logsumexp(logits)^2)`` (ST-MoE); logits (N, E) float32."""
    return torch.logsumexp(logits, dim=-1).square().mean()


def route(logits: Tensor, top_k: int) -> tuple[Tensor, Tensor, Tensor]:
    """probs (N, E) = softmax over all experts; top-k ids (N, k); gates (N, k) (see module doc).
    The top-k, most probable first, is a max reduction per slot (ties: the lower expert id),
    which torch.compile fuses with the softmax; ``torch.topk`` is a kernel of its own."""
    probs = torch.softmax(logits, dim=-1)
    top_p, top_i = probs.max(dim=-1, keepdim=True)
    if top_k == 1:
        gates = top_p + (1.0 - top_p).detach()  # straight-through: 1 forward, dp backward
    else:
        experts = torch.arange(probs.shape[-1], device=probs.device)
        rest = probs.masked_fill(experts == top_i, -1.0)  # probabilities are >= 0
        p2, i2 = rest.max(dim=-1, keepdim=True)
        top_p, top_i = torch.cat([top_p, p2], dim=-1), torch.cat([top_i, i2], dim=-1)
        gates = top_p / top_p.sum(dim=-1, keepdim=True)
    return probs, top_i, gates


class DispatchPlan(NamedTuple):
    """Where each top-k assignment goes; assignment ``a = token * k + slot``, A = N*k."""

    order: Tensor  # (A,) int64: the assignment at each expert-sorted row
    inv: Tensor  # (A,) int64: the expert-sorted row of each assignment (order's inverse)
    sorted_e: Tensor  # (A,) int64: the expert of each sorted row (non-decreasing)
    counts: Tensor  # (E,) int64: assignments per expert
    ends: Tensor  # (E,) int64: cumulative counts (row after each expert's last)


def dispatch_plan(top_i: Tensor, n_experts: int) -> DispatchPlan:
    """A stable counting sort of the assignments by expert, without a sort kernel or atomics.

    ``seen[e, a]`` = assignments to expert e among 0..a (a cumulative sum over a one-hot (E, A));
    assignment a goes to row ``start[e_a] + seen[e_a, a] - 1``, which is exactly where a stable
    argsort of the expert ids puts it.
    """
    flat_e = top_i.reshape(-1)
    n = flat_e.numel()
    experts = torch.arange(n_experts, device=flat_e.device)
    onehot = (flat_e.unsqueeze(0) == experts.unsqueeze(1)).to(torch.int32)  # (E, A)
    seen = onehot.cumsum(dim=1, dtype=torch.int32)
    counts = seen[:, -1].long()
    ends = (flat_e.unsqueeze(0) <= experts.unsqueeze(1)).sum(dim=1)  # = counts.cumsum(0)
    rank = seen.gather(0, flat_e.unsqueeze(0)).squeeze(0).long() - 1
    inv = (ends - counts)[flat_e] + rank
    order = torch.empty_like(inv).scatter_(0, inv, torch.arange(n, device=flat_e.device))
    return DispatchPlan(order, inv, flat_e[order], counts, ends)


class _GatherRows(torch.autograd.Function):
    """``src[index // fold]`` for a permutation ``index`` of range(rows(src) * fold), whose
    inverse permutation is ``inverse``. Backward: ``grad[inverse]`` summed over each group of
    ``fold`` rows -- a gather and a plain reduction, where autograd's own backward of an
    indexing is a zero-filled buffer and an accumulating (atomic on CUDA) index_put."""

    @staticmethod
    def forward(ctx, src: Tensor, index: Tensor, inverse: Tensor, fold: int) -> Tensor:
        ctx.save_for_backward(inverse)
        ctx.fold = fold
        return src[index // fold] if fold > 1 else src[index]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (inverse,) = ctx.saved_tensors
        g = grad[inverse]
        if ctx.fold > 1:
            g = g.view(-1, ctx.fold, grad.shape[-1]).sum(dim=1)
        return g, None, None, None


class _ExpertBias(torch.autograd.Function):
    """``h + bias[expert]`` for rows grouped by expert; ``onehot`` (E, rows) is
    ``expert == e`` in h's dtype. Backward: the bias gradient ``onehot @ grad``, a segment sum
    per expert as one matrix product (no atomics), where autograd's own backward of
    ``bias[expert]`` accumulates every row into E rows with an index_put (atomics on CUDA)."""

    @staticmethod
    def forward(ctx, h: Tensor, bias: Tensor, expert: Tensor, onehot: Tensor) -> Tensor:
        ctx.save_for_backward(onehot)
        return h + bias[expert]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None]:
        (onehot,) = ctx.saved_tensors
        return grad, onehot.to(grad.dtype) @ grad, None, None


class MoEFFN(nn.Module):
    """Dropless top-k mixture of GPT-2 MLP experts (see the module docstring)."""

    def __init__(self, n_embd: int, n_experts: int, top_k: int, *, bias: bool = True,
                 dropout: float = 0.0, noise_std: float = 0.1, impl: str = "auto") -> None:
        super().__init__()
        if n_experts < 2:
            raise ValueError(f"n_experts={n_experts}: an MoE layer needs at least 2 experts")
        if top_k not in (1, 2) or top_k > n_experts:
            raise ValueError(f"top_k={top_k}: must be 1 or 2 (and <= n_experts={n_experts})")
        if impl not in IMPLS:
            raise ValueError(f"moe impl {impl!r} is not one of {', '.join(IMPLS)}")
        self.n_embd, self.n_experts, self.top_k, self.impl = n_embd, n_experts, top_k, impl
        hidden = 4 * n_embd
        self.router = nn.Linear(n_embd, n_experts, bias=False)
        self.c_fc_weight = nn.Parameter(torch.empty(n_experts, n_embd, hidden))
        self.c_proj_weight = nn.Parameter(torch.empty(n_experts, hidden, n_embd))
        self.c_fc_bias = nn.Parameter(torch.zeros(n_experts, hidden)) if bias else None
        self.c_proj_bias = nn.Parameter(torch.zeros(n_experts, n_embd)) if bias else None
        self.dropout = nn.Dropout(dropout)
        # Non-persistent state (not in state_dict): tensors, so changing them never recompiles.
        self.register_buffer("noise_std", torch.tensor(float(noise_std)), persistent=False)
        self.register_buffer("expert_mask", torch.zeros(n_experts, dtype=torch.bool),
                             persistent=False)  # True = removed
        self.register_buffer("load_counts", torch.zeros(n_experts), persistent=False)
        self.register_buffer("load_tokens", torch.zeros(()), persistent=False)

    def init_weights(self, std: float = 0.02, proj_std: float | None = None,
                     generator: torch.Generator | None = None) -> None:
        """nanoGPT init: N(0, std) matrices (c_proj: proj_std), zero biases."""
        with torch.no_grad():
            self.router.weight.normal_(0.0, std, generator=generator)
            self.c_fc_weight.normal_(0.0, std, generator=generator)
            self.c_proj_weight.normal_(0.0, std if proj_std is None else proj_std,
                                       generator=generator)
            for b in (self.c_fc_bias, self.c_proj_bias):
                if b is not None:
                    b.zero_()

    # ------------------------------------------------------------------ state the loop drives

    def set_noise(self, std: float) -> None:
        if not (std >= 0.0 and math.isfinite(std)):
            raise ValueError(f"router noise std must be finite and >= 0, got {std}")
        self.noise_std.fill_(std)

    def set_mask(self, removed: list[int] | None) -> None:
        self.expert_mask.zero_()
        if removed:
            bad = [e for e in removed if not 0 <= e < self.n_experts]
            if bad:
                raise ValueError(f"expert ids {bad} out of range 0..{self.n_experts - 1}")
            if self.n_experts - len(set(removed)) < self.top_k:
                raise ValueError(f"removing experts {sorted(set(removed))} leaves fewer than "
                                 f"top_k={self.top_k} of {self.n_experts} experts")
            self.expert_mask[torch.tensor(sorted(set(removed)), dtype=torch.long)] = True

    def reset_load_counts(self) -> None:
        self.load_counts.zero_()
        self.load_tokens.zero_()

    # ------------------------------------------------------------------ forward

    def router_logits(self, x: Tensor) -> Tensor:
        """Clean router logits (N, E) in float32, removed experts at -inf."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.float(), self.router.weight.float())
        return logits.masked_fill(self.expert_mask, float("-inf"))

    def _global_fraction(self, counts: Tensor, n_tokens: int) -> Tensor:
        """f_i for the load-balancing loss, over the global batch; counts (E,): this micro-step's.

        In training mode the assignment counts of this micro-step are all-reduced (summed) over
        ranks when torch.distributed is initialized and added to ``load_counts``/``load_tokens``,
        which the loop zeroes at the start of each optimizer step (``reset_load_counts``). The
        f_i used by micro-step m is therefore the fraction over micro-steps 1..m of the current
        optimizer step on all ranks (this micro-step included): the later micro-steps' counts are
        not known yet when micro-step m runs its backward, so the last micro-step sees the exact
        global-batch f_i and earlier ones a prefix of it. Balancing on the global batch rather than
        each micro-batch leaves room for domain specialization within a micro-batch.
        In eval mode nothing accumulates and f_i is this batch's own (all-reduced when
        distributed).
        """
        counts = torch.cat([counts.float(), counts.new_full((1,), n_tokens, dtype=torch.float32)])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(counts)  # one process (torchrun --nproc_per_node 1): no collective
        if self.training:
            self.load_counts.add_(counts[: self.n_experts])
            self.load_tokens.add_(counts[self.n_experts])
            counts = torch.cat([self.load_counts, self.load_tokens.view(1)])
        return counts[: self.n_experts] / (counts[self.n_experts] * self.top_k)

    def forward(self, x: Tensor) -> MoEOutput:
        B, T, d = x.shape
        xf = x.reshape(B * T, d)
        logits = self.router_logits(xf)
        z = router_z_loss(logits)
        if self.training:
            logits = logits + torch.randn_like(logits) * self.noise_std
        probs, top_i, gates = route(logits, self.top_k)
        plan = dispatch_plan(top_i, self.n_experts)
        lb = load_balancing_loss(probs, self._global_fraction(plan.counts, B * T))
        impl = resolve_impl(self.impl, x.device, compute_dtype(x))
        out = self.experts_forward(xf, plan, gates, impl)
        out = self.dropout(out.to(x.dtype).view(B, T, d))
        return MoEOutput(out, lb, z, top_i.view(B, T, self.top_k),
                         probs.view(B, T, self.n_experts))

    def experts_forward(self, x: Tensor, plan: DispatchPlan, gates: Tensor, impl: str) -> Tensor:
        """Dropless dispatch of x (N, d) by ``plan``; returns sum_k gate * expert(x), (N, d)."""
        dt = compute_dtype(x)
        xs = _GatherRows.apply(x.to(dt), plan.order, plan.inv, self.top_k)  # expert-contiguous
        if impl == "grouped_mm":
            ys = self._experts_grouped_mm(xs, plan, dt)
        elif impl == "bmm":
            ys = self._experts_bmm(xs, plan, dt)
        else:
            raise ValueError(f"moe impl {impl!r} is not one of grouped_mm, bmm")
        # back to (token, slot) order: a gather, no atomics, forward or backward
        y = _GatherRows.apply(ys, plan.inv, plan.order, 1).view(x.shape[0], self.top_k, -1)
        return (y.float() * gates.unsqueeze(-1)).sum(dim=1)

    def _experts_grouped_mm(self, xs: Tensor, plan: DispatchPlan, dt: torch.dtype) -> Tensor:
        offs = plan.ends.to(torch.int32)
        experts = torch.arange(self.n_experts, device=xs.device).unsqueeze(1)
        onehot = (plan.sorted_e.unsqueeze(0) == experts).to(dt)  # (E, A), for the bias grads
        h = torch._grouped_mm(xs, self.c_fc_weight.to(dt), offs=offs)
        if self.c_fc_bias is not None:
            h = _ExpertBias.apply(h, self.c_fc_bias.to(dt), plan.sorted_e, onehot)
        h = F.gelu(h, approximate="tanh")
        ys = torch._grouped_mm(h, self.c_proj_weight.to(dt), offs=offs)
        if self.c_proj_bias is not None:
            ys = _ExpertBias.apply(ys, self.c_proj_bias.to(dt), plan.sorted_e, onehot)
        return ys

    def _experts_bmm(self, xs: Tensor, plan: DispatchPlan, dt: torch.dtype) -> Tensor:
        E, n = self.n_experts, xs.shape[0]
        starts = plan.ends - plan.counts
        # Host sync: the padded size, rounded up to a multiple of 16 (aligned rows, fewer
        # distinct shapes; under torch.compile an unbacked size known to be >= 16).
        capacity = int((plan.counts.max() + 15).div(16, rounding_mode="floor").item()) * 16
        torch._check(capacity >= 16)
        pos = torch.arange(n, device=xs.device) - starts[plan.sorted_e]
        slot = plan.sorted_e * capacity + pos  # row of each assignment in the padded (E*C, d)
        xp = xs.new_zeros(E * capacity, xs.shape[1]).index_copy(0, slot, xs)
        h = torch.bmm(xp.view(E, capacity, -1), self.c_fc_weight.to(dt))
        if self.c_fc_bias is not None:
            h = h + self.c_fc_bias.to(dt).unsqueeze(1)
        h = F.gelu(h, approximate="tanh")
        yp = torch.bmm(h, self.c_proj_weight.to(dt))
        if self.c_proj_bias is not None:
            yp = yp + self.c_proj_bias.to(dt).unsqueeze(1)
        return yp.view(E * capacity, -1)[slot]


# ---------------------------------------------------------------------------------------------
# TEST REFERENCE ONLY: the plain per-expert loop the vectorized dispatch must reproduce.


def reference_moe_forward(layer: MoEFFN, x: Tensor) -> MoEOutput:
    """The naive MoE layer: same routing math, experts run one at a time in a Python loop.

    Eval-mode semantics (no noise, no load-count accumulation: f_i from this batch), top-k by
    ``torch.topk``, autograd's own backward everywhere. Slow; used by the tests and as the
    benchmark's loop baseline, never in training.
    """
    B, T, d = x.shape
    xf = x.reshape(B * T, d)
    with torch.autocast(device_type=x.device.type, enabled=False):
        logits = xf.float() @ layer.router.weight.float().t()
    logits = logits.masked_fill(layer.expert_mask, float("-inf"))
    z = router_z_loss(logits)
    probs = torch.softmax(logits, dim=-1)
    top_p, top_i = torch.topk(probs, layer.top_k, dim=-1)  # not route()'s max reductions
    gates = (top_p + (1.0 - top_p).detach() if layer.top_k == 1
             else top_p / top_p.sum(dim=-1, keepdim=True))
    counts = torch.stack([(top_i == e).sum() for e in range(layer.n_experts)]).float()
    lb = load_balancing_loss(probs, counts / (B * T * layer.top_k))
    out = torch.zeros(B * T, d, dtype=torch.float32, device=x.device)
    for e in range(layer.n_experts):
        tok, slot = torch.nonzero(top_i == e, as_tuple=True)
        h = xf[tok] @ layer.c_fc_weight[e]
        if layer.c_fc_bias is not None:
            h = h + layer.c_fc_bias[e]
        h = F.gelu(h, approximate="tanh") @ layer.c_proj_weight[e]
        if layer.c_proj_bias is not None:
            h = h + layer.c_proj_bias[e]
        out = out.index_add(0, tok, h.float() * gates[tok, slot].unsqueeze(-1))
    return MoEOutput(out.to(x.dtype).view(B, T, d), lb, z, top_i.view(B, T, layer.top_k),
                     probs.view(B, T, layer.n_experts))
