"""Checkpoints: atomic save, safe load, and the resume compatibility check.

``OUT/ckpt.pt`` is a ``torch.save`` of a dict with the keys::

    model             the model's state_dict
    model_config      asdict(GPTConfig) (moe_layers as a list)
    train_config      asdict(TrainConfig) of train/moe.py
    optimizer         the optimizer's state_dict
    step              optimizer steps done
    sampler           {"world_size": W, "ranks": [TrainSampler.state_dict() of every rank]}
    rng               {"world_size": W, "ranks": [rng_state() of every rank]}
    data_fingerprint  shards Dataset.fingerprint of the training data
    data_dir          the --data directory (informative; the fingerprint decides)

Everything inside is a tensor, dict, list, str, int, float, bool or None, so it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CKPT_NAME = "ckpt.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (unreadable, or for another model or dataset)."""


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> Path:
    """Write `obj` to `path` atomically: a temporary file beside it, fsync, then rename.

    A crash mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle/zip/runtime errors for damaged files
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from e
    missing = [k for k in ("model", "model_config", "train_config", "optimizer", "step",
                           "sampler", "rng", "data_fingerprint") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks key(s) {', '.join(missing)}")
    return ckpt


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def check_compatible(ckpt: dict[str, Any], path: str | Path, *, model_config: dict[str, Any],
                     data_fingerprint: str, data_dir: str, world_size: int) -> None:
    """Refuse (CheckpointError) to resume `ckpt` with another model config or dataset."""
    old = {k: _plain(v) for k, v in ckpt["model_config"].items()}
    new = {k: _plain(v) for k, v in model_config.items()}
    diffs = [f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now"
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diffs:
        raise CheckpointError(
            f"--resume: {path} was trained with a different model config ("
            + "; ".join(diffs) + "). Resume with the original flags, or train into a new --out.")
    if ckpt["data_fingerprint"] != data_fingerprint:
        raise CheckpointError(
            f"--resume: {path} was trained on a different dataset (fingerprint "
            f"{ckpt['data_fingerprint'][:12]}... from {ckpt.get('data_dir')!r}; --data "
            f"{data_dir!r} has {data_fingerprint[:12]}...). Resume with the original --data, "
            "or train into a new --out.")
    saved_world = ckpt["sampler"].get("world_size")
    if saved_world != world_size:
        raise CheckpointError(
            f"--resume: {path} was written by {saved_world} process(es), this run has "
            f"{world_size}; the per-rank sampler streams only continue with the same number "
            f"(use --nproc_per_node {saved_world}).")


# --------------------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy-global and python RNG states, as weights_only-safe types."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    if st["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
    n = st["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = st["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
