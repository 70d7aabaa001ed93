"""GPT-2 with mixture-of-experts FFNs, nanoGPT-style.

Pre-LN blocks, learned position embeddings, token embedding tied to the LM head, vocabulary
padded to 50304, GELU (tanh approximation, as GPT-2). The blocks listed in
``GPTConfig.moe_layers`` (default: the last third) replace their MLP by an :class:`MoEFFN`
(train/moe_layer.py); ``n_experts=0`` is the dense baseline, with no router anywhere.

``forward`` returns a :class:`GPTOutput` that keeps the LM loss apart from the auxiliary
load-balancing and z-losses; the training loop adds ``lb_coef * lb_loss + z_coef * z_loss`` to
its objective, while reported losses are the LM loss alone.

Upcycling a dense checkpoint into this model lives in train/upcycle.py.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from train.moe_layer import MoEFFN

GPT2_VOCAB = 50257
PADDED_VOCAB = 50304


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = PADDED_VOCAB
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    n_experts: int = 8  # 0 = dense baseline (no router anywhere)
    top_k: int = 1  # 1 or 2
    moe_layers: tuple[int, ...] | None = None  # None -> last third of the layers
    router_noise_std: float = 0.1  # annealed by the loop via model.set_router_noise(std)
    lb_coef: float = 0.01
    z_coef: float = 0.001
    moe_impl: str = "auto"  # expert dispatch: auto | grouped_mm | bmm (see train/moe_layer.py)

    def __post_init__(self) -> None:
        if self.moe_layers is not None:
            self.moe_layers = tuple(int(i) for i in self.moe_layers)  # lists from JSON/asdict

    def resolved_moe_layers(self) -> tuple[int, ...]:
        """Indices of the MoE blocks: ``moe_layers``, or when None the last third (at least one
        block: 8..11 of 12, 3 of 4, 1 of 2); () when dense."""
        if self.n_experts == 0:
            return ()
        if self.moe_layers is None:
            return tuple(range(self.n_layer - max(1, self.n_layer // 3), self.n_layer))
        return tuple(sorted(set(self.moe_layers)))

    def validate(self) -> None:
        def bad(name: str, msg: str) -> ValueError:
            return ValueError(f"GPTConfig.{name}: {msg}")

        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise bad("n_embd", f"{self.n_embd} is not divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.n_experts == 1 or self.n_experts < 0:
            raise bad("n_experts", f"must be 0 (dense) or >= 2, got {self.n_experts}")
        if self.n_experts and self.top_k not in (1, 2):
            raise bad("top_k", f"must be 1 or 2, got {self.top_k}")
        if self.n_experts and self.top_k > self.n_experts:
            raise bad("top_k", f"{self.top_k} exceeds n_experts={self.n_experts}")
        if self.n_experts and self.moe_layers is not None:
            out = [i for i in self.moe_layers if not 0 <= i < self.n_layer]
            if out:
                raise bad("moe_layers", f"{out} out of range 0..{self.n_layer - 1} "
                                        f"(--moe-layers takes block indices)")
            if not self.moe_layers:
                raise bad("moe_layers", "is empty; use n_experts=0 for a dense model")
        if self.router_noise_std < 0:
            raise bad("router_noise_std", f"must be >= 0, got {self.router_noise_std}")


PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized: 4 layers, ~7.2M dense parameters (6.4M of them the tied 50304x128 embedding).
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=128),
    # GPT-2 small: 124M dense parameters.
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
}


def make_config(preset: str, **overrides: Any) -> GPTConfig:
    """The GPTConfig of a preset with ``overrides`` applied (e.g. n_experts=0, top_k=2)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    names = {f.name for f in fields(GPTConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown GPTConfig field(s) {unknown}; known: {sorted(names)}")
    cfg = GPTConfig(**{**PRESETS[preset], **overrides})
    cfg.validate()
    return cfg


@dataclass
class GPTOutput:
    logits: Tensor  # (B, T, vocab); dtype of the lm_head matmul (bf16 under autocast)
    lm_loss: Tensor | None  # mean cross-entropy (targets == -1 ignored); never aux losses
    lb_loss: Tensor  # load-balancing loss averaged over MoE layers (0-dim; 0 when dense)
    z_loss: Tensor  # router z-loss averaged over MoE layers (0-dim; 0 when dense)
    routing: list[Tensor] | None = None  # per MoE layer int64 (B, T, top_k), most probable first
    router_probs: list[Tensor] | None = field(default=None)  # per MoE layer f32 (B, T, E)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.n_embd = config.n_head, config.n_embd

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, moe: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp: MLP | MoEFFN
        if moe:
            self.mlp = MoEFFN(config.n_embd, config.n_experts, config.top_k, bias=config.bias,
                              dropout=config.dropout, noise_std=config.router_noise_std,
                              impl=config.moe_impl)
        else:
            self.mlp = MLP(config)

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        x = x + self.attn(self.ln_1(x))
        if isinstance(self.mlp, MoEFFN):
            moe = self.mlp(self.ln_2(x))
            return x + moe.out, moe
        return x + self.mlp(self.ln_2(x)), None


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.moe_layer_ids: list[int] = list(config.resolved_moe_layers())
        moe_set = set(self.moe_layer_ids)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i in moe_set) for i in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        proj_std = 0.02 / math.sqrt(2 * config.n_layer)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):  # GPT-2 scaled init of residual projections
                torch.nn.init.normal_(p, mean=0.0, std=proj_std)
        for i in self.moe_layer_ids:
            self.moe_layer(i).init_weights(std=0.02, proj_std=proj_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def moe_layer(self, layer: int) -> MoEFFN:
        """The MoEFFN of block ``layer`` (a block index listed in ``moe_layer_ids``)."""
        if layer not in self.moe_layer_ids:
            raise ValueError(f"block {layer} is not an MoE layer; MoE layers: {self.moe_layer_ids}")
        mlp = self.transformer.h[layer].mlp
        assert isinstance(mlp, MoEFFN)
        return mlp

    # ------------------------------------------------------------------ forward

    def forward(self, idx: Tensor, targets: Tensor | None = None, *,
                return_routing: bool = False) -> GPTOutput:
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        lb = torch.zeros((), device=idx.device)
        z = torch.zeros((), device=idx.device)
        routing: list[Tensor] = []
        probs: list[Tensor] = []
        for block in self.transformer.h:
            x, moe = block(x)
            if moe is not None:
                lb = lb + moe.lb_loss
                z = z + moe.z_loss
                if return_routing:
                    routing.append(moe.topk_idx)
                    probs.append(moe.probs)
        if self.moe_layer_ids:
            lb = lb / len(self.moe_layer_ids)
            z = z / len(self.moe_layer_ids)
        logits = self.lm_head(self.transformer.ln_f(x))
        lm_loss = None
        if targets is not None:
            lm_loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1),
                                      ignore_index=-1)
        return GPTOutput(logits, lm_loss, lb, z, routing if return_routing else None,
                         probs if return_routing else None)

    # ------------------------------------------------------------------ state the loop drives

    def set_router_noise(self, std: float) -> None:
        for i in self.moe_layer_ids:
            self.moe_layer(i).set_noise(std)

    def reset_load_counts(self) -> None:
        for i in self.moe_layer_ids:
            self.moe_layer(i).reset_load_counts()

    def set_expert_mask(self, layer: int, removed: list[int] | None) -> None:
        """Remove experts of MoE block ``layer`` from routing (-inf logits); None restores all."""
        self.moe_layer(layer).set_mask(removed)

    # ------------------------------------------------------------------ accounting

    def num_params(self, active: bool = False) -> int:
        """All parameters (the tied embedding once, position embeddings included).

        active=True counts only top_k experts per MoE layer (the parameters a token uses).
        """
        n = sum(p.numel() for p in self.parameters())
        if active:
            for i in self.moe_layer_ids:
                m = self.moe_layer(i)
                per_expert = sum(p.numel() for p in (m.c_fc_weight, m.c_proj_weight, m.c_fc_bias,
                                                     m.c_proj_bias) if p is not None) // m.n_experts
                n -= (m.n_experts - m.top_k) * per_expert
        return n

    def flops_per_token(self, T: int, active: bool = True) -> float:
        """Training FLOPs per token (PaLM appendix B, as nanoGPT's estimate_mfu):
        ``6 * N + 12 * n_layer * n_head * head_dim * T`` with N the (active) parameters less the
        position embeddings (a lookup, no matmul; the tied token embedding counts as the LM head).
        """
        cfg = self.config
        n = self.num_params(active=active) - self.transformer.wpe.weight.numel()
        return 6.0 * n + 12.0 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * T

    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple[float, float],
                            device_type: str) -> torch.optim.AdamW:
        """AdamW; weight decay on matrices only (>= 2-dim, excluding the experts' stacked
        biases, which are 2-dim only because they are stacked); fused where torch has the fused
        kernel for the device (CUDA; CPU since torch 2.4): one kernel for all parameters, and
        no host read of the step counters (the single-tensor CPU path reads each one with
        ``.item()``)."""
        params = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        decay = [p for pn, p in params.items() if p.dim() >= 2 and not pn.endswith("_bias")]
        no_decay = [p for pn, p in params.items() if p.dim() < 2 or pn.endswith("_bias")]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type in (
                "cuda", "cpu"):
            try:
                return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
            except RuntimeError:  # no fused kernel for this device in this torch
                pass
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
