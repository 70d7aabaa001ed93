"""Upcycling: a mixture-of-experts GPT initialised from dense weights.

Every expert of an MoE block starts as a copy of that block's dense MLP plus small seeded noise
(Komatsuzaki et al., "Sparse Upcycling", 2022); every other tensor is copied as is. The dense
weights are this project's dense ``ckpt.pt`` or GPT-2 in Hugging Face safetensors layout.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
from torch import Tensor

from train.checkpoint import checksum_status, has_checksum
from train.model import GPT, GPTConfig


def upcycle(path: str | Path, config: GPTConfig, *, seed: int = 0,
            noise_scale: float = 1e-3) -> GPT:
    """Build ``GPT(config)`` from dense weights; each expert = the dense MLP + small noise.

    ``path``: this project's dense ``ckpt.pt`` (checksum verified when it has one, loaded with
    weights_only=True), or GPT-2 weights in Hugging Face layout (a ``.safetensors`` file, or a
    directory holding ``model.safetensors``; Conv1D weights are transposed as nanoGPT's
    from_pretrained does). Expert e of MoE block i gets ``W + noise`` for each dense MLP tensor
    W, noise N(0, (noise_scale * std(W))^2) from a generator seeded with ``seed``. Routers keep
    their fresh init (from torch's global RNG: seed it before calling). A vocabulary of 50257
    is padded to ``config.vocab_size`` with rows equal to the mean embedding (padded tokens
    never occur; their logit starts at an average level); a longer block is cropped.
    """
    config.validate()
    dense = load_dense_state_dict(Path(path), config)
    model = GPT(config)
    gen = torch.Generator().manual_seed(seed)
    own = model.state_dict()
    with torch.no_grad():
        for name, t in dense.items():
            if name in own:  # an MoE block's dense MLP has no counterpart: experts below
                own[name].copy_(t)
        for i in model.moe_layer_ids:
            m = model.moe_layer(i)
            pre = f"transformer.h.{i}.mlp."
            pairs = [(m.c_fc_weight, dense[pre + "c_fc.weight"].t()),
                     (m.c_proj_weight, dense[pre + "c_proj.weight"].t())]
            if config.bias:
                pairs += [(m.c_fc_bias, dense[pre + "c_fc.bias"]),
                          (m.c_proj_bias, dense[pre + "c_proj.bias"])]
            for stacked, w in pairs:
                assert stacked is not None
                std = float(w.float().std()) if w.numel() > 1 else 0.0
                for e in range(m.n_experts):
                    noise = torch.randn(w.shape, generator=gen) * (noise_scale * std)
                    stacked[e].copy_(w + noise.to(w.dtype))
    return model


# ------------------------------------------------------------------ dense checkpoint loading

HF_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                 "mlp.c_proj.weight")  # HF GPT-2 Conv1D weights are stored (in, out)


def load_dense_state_dict(path: Path, config: GPTConfig) -> dict[str, Tensor]:
    """A dense GPT state dict (this module's key names) from ``path``, checked against config."""
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path}: directory has no model.safetensors (give a dense "
                                    "ckpt.pt, a .safetensors file, or a directory holding one)")
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dense checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = _from_hf(load_file(str(path)))
    else:
        sd = _from_project_ckpt(path, config)
    return _fit_to_config(sd, path, config)


def _from_project_ckpt(path: Path, config: GPTConfig) -> dict[str, Tensor]:
    problem = checksum_status(path) if has_checksum(path) else None  # a bare state dict: none
    if problem:
        raise ValueError(f"{path}: refused: {problem}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a loadable torch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a dict (a ckpt.pt with a 'model' key or a state dict)")
    src_cfg = ckpt.get("model_config")
    if isinstance(src_cfg, dict):
        if src_cfg.get("n_experts", 0):
            raise ValueError(f"{path}: model_config.n_experts={src_cfg['n_experts']}; upcycling "
                             "needs a dense checkpoint (trained with n_experts=0)")
        for name in ("n_layer", "n_head", "n_embd", "bias"):
            if name in src_cfg and src_cfg[name] != getattr(config, name):
                raise ValueError(f"{path}: model_config.{name}={src_cfg[name]!r} but the target "
                                 f"config has {name}={getattr(config, name)!r}; they must match")
    sd = ckpt["model"] if "model" in ckpt else ckpt
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        for prefix in ("_orig_mod.", "module."):  # torch.compile / DDP wrappers
            k = k.removeprefix(prefix)
        out[k] = v
    return out


def _from_hf(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")) or k == "lm_head.weight":
            continue  # causal-mask buffers; lm_head is tied to wte
        k = k if k.startswith("transformer.") else "transformer." + k
        out[k] = v.t().contiguous() if k.endswith(HF_TRANSPOSED) else v
    if "transformer.wte.weight" in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def _fit_to_config(sd: dict[str, Tensor], path: Path, config: GPTConfig) -> dict[str, Tensor]:
    routers = sorted(k for k in sd if ".mlp.router." in k or k.endswith("_weight"))
    if routers:
        raise ValueError(f"{path}: holds MoE parameters ({routers[0]}, ...); upcycling needs a "
                         "dense checkpoint")
    dense_cfg = GPTConfig(**{**{f.name: getattr(config, f.name) for f in fields(GPTConfig)},
                             "n_experts": 0, "moe_layers": None})
    with torch.device("meta"):
        want = {k: v.shape for k, v in GPT(dense_cfg).state_dict().items()}
    sd = dict(sd)
    wte = sd.get("transformer.wte.weight")
    if wte is not None and wte.shape[0] < config.vocab_size:
        pad = wte.float().mean(dim=0, keepdim=True).to(wte.dtype)
        wte = torch.cat([wte, pad.expand(config.vocab_size - wte.shape[0], -1)])
        sd["transformer.wte.weight"] = sd["lm_head.weight"] = wte
    wpe = sd.get("transformer.wpe.weight")
    if wpe is not None and wpe.shape[0] > config.block_size:
        sd["transformer.wpe.weight"] = wpe[: config.block_size]
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    if missing or unexpected:
        raise ValueError(f"{path}: state dict does not match a dense GPT with n_layer="
                         f"{config.n_layer}, bias={config.bias}: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}")
    for k, shape in want.items():
        if sd[k].shape != shape:
            raise ValueError(f"{path}: {k} has shape {tuple(sd[k].shape)}, the config "
                             f"(n_embd={config.n_embd}, vocab_size={config.vocab_size}, "
                             f"block_size={config.block_size}) needs {tuple(shape)}")
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
