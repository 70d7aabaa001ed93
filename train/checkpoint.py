"""Checkpoints: atomic save with a checksum, verified load, and the resume compatibility check.

``OUT/ckpt.pt`` is a ``torch.save`` of a dict with the keys::

    model             the model's state_dict
    model_config      asdict(GPTConfig) (moe_layers as a list)
    train_config      asdict(TrainConfig) of train/config.py
    optimizer         the optimizer's state_dict
    step              optimizer steps done
    sampler           {"world_size": W, "ranks": [TrainSampler.state_dict() of every rank]}
    rng               {"world_size": W, "ranks": [rng_state() of every rank]}
    data_fingerprint  shards Dataset.fingerprint of the training data
    data_dir          the --data directory (informative; the fingerprint decides)
    loop              the loop's own counters (collapse streak, warnings)

followed by a trailer line ``\\nmoe-shards-checkpoint sha256=<64 hex>\\n`` holding the sha256
of every byte before it (torch.load reads the zip archive and ignores what follows it). The
file is written with shards.atomic (temporary file, fsync, rename, fsync of the directory);
:func:`load_checkpoint` checks the trailer before unpickling anything, so one flipped byte is
refused instead of resumed. Everything inside is a tensor, dict, list, str, int, float, bool or
None, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
from collections.abc import Collection
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from shards.atomic import atomic_open
from shards.hashing import distinct, hash_range

CKPT_NAME = "ckpt.pt"
# test hook: SIGKILL this process while it writes the checkpoint of step N (temp file half done)
KILL_HOOK_ENV = "MOE_TEST_KILL_IN_SAVE"
TRAILER_HEAD = b"\nmoe-shards-checkpoint sha256="
TRAILER_LEN = len(TRAILER_HEAD) + 64 + 1
REQUIRED_KEYS = ("model", "model_config", "train_config", "optimizer", "step", "sampler", "rng",
                 "data_fingerprint")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (damaged, unreadable, or for another model or data)."""


class _HashingWriter:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.h = hashlib.sha256()

    def write(self, b: Any) -> int:
        self.h.update(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> Path:
    """Write `obj` and its checksum trailer to `path` atomically (a crash mid-write leaves the
    previous checkpoint intact; a killed writer's temporary file is removed at the next start)."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        w = _HashingWriter(f)
        torch.save(obj, w)
        if os.environ.get(KILL_HOOK_ENV) == str(obj.get("step")):
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        f.write(TRAILER_HEAD + w.h.hexdigest().encode() + b"\n")
    return path


def _recorded_sha256(f: IO[bytes], size: int) -> str | None:
    """The sha256 a checkpoint's trailer records, or None when it has no trailer."""
    if size < TRAILER_LEN:
        return None
    f.seek(size - TRAILER_LEN)
    trailer = f.read()
    if not trailer.startswith(TRAILER_HEAD) or not trailer.endswith(b"\n"):
        return None
    return trailer[len(TRAILER_HEAD):-1].decode("ascii", errors="replace")


def has_checksum(path: str | Path) -> bool:
    path = Path(path)
    with path.open("rb") as f:
        return _recorded_sha256(f, path.stat().st_size) is not None


def checksum_status(path: str | Path) -> str | None:
    """None when the file's trailer matches its bytes; otherwise what is wrong, in words."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        recorded = _recorded_sha256(f, size)
        if recorded is None:
            return ("it has no checksum trailer: the file is truncated, or was not written by "
                    "this version of train/moe.py")
        h = hashlib.sha256()
        hash_range(h, f, 0, size - TRAILER_LEN)
    if h.hexdigest() != recorded:
        got, want = distinct(h.hexdigest(), recorded)
        return (f"its sha256 {got} is not the {want} recorded "
                "when it was written: the file is damaged")
    return None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Verify the checksum, then load with ``weights_only=True`` onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here")
    problem = checksum_status(path)
    if problem:
        raise CheckpointError(f"{path}: refused: {problem}; restore it from a copy (ckpt_*.pt "
                              "of --keep-ckpt-every) or start over with --overwrite")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle/zip/runtime errors for damaged files
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from e
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks key(s) {', '.join(missing)}")
    return ckpt


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def check_compatible(ckpt: dict[str, Any], path: str | Path, *, model_config: dict[str, Any],
                     data_fingerprint: str, data_dir: str, world_size: int,
                     may_differ: Collection[str] = ()) -> None:
    """Refuse (CheckpointError) to resume `ckpt` with another model config (but the fields in
    `may_differ`), another dataset (unless `may_differ` holds "data") or another number of
    processes."""
    old = {k: _plain(v) for k, v in ckpt["model_config"].items()}
    new = {k: _plain(v) for k, v in model_config.items()}
    diffs = [f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now"
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
             and k not in may_differ]
    if diffs:
        raise CheckpointError(
            f"--resume: {path} was trained with a different model config ("
            + "; ".join(diffs) + "). Resume with the original flags, or train into a new --out.")
    if ckpt["data_fingerprint"] != data_fingerprint and "data" not in may_differ:
        raise CheckpointError(
            f"--resume: {path} was trained on a different dataset (fingerprint "
            f"{distinct(ckpt['data_fingerprint'], data_fingerprint, 12)[0]} from "
            f"{ckpt.get('data_dir')!r}; --data {data_dir!r} has "
            f"{distinct(ckpt['data_fingerprint'], data_fingerprint, 12)[1]}). Resume with the "
            "original --data, "
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
