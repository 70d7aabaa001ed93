"""The eval blocks: every block of each domain's eval split, the same ones in every run.

Windows of ``block_size + 1`` tokens at stride ``block_size`` inside each shard, in order,
dealt round-robin to the DDP ranks; read through the same host buffer, device copy and token-id
check as the training batches (train/data.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from train.data import DataError, Transfer, VocabGuard


def eval_windows(shard_lengths: Sequence[int], block_size: int) -> np.ndarray:
    """Every eval window of a split as rows (shard, start): stride `block_size`, length
    ``block_size + 1``, inside one shard, in stream order."""
    out = []
    for s, n in enumerate(shard_lengths):
        k = max(0, (int(n) - 1) // block_size)
        if k:
            starts = np.arange(k, dtype=np.int64) * block_size
            out.append(np.stack([np.full(k, s, dtype=np.int64), starts], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


class EvalSet:
    """The eval blocks of every domain, dealt round-robin to the DDP ranks.

    `max_blocks` (optional) caps each domain at that many blocks, evenly spaced over the split
    (the same ones in every run); None uses every block. Every rank runs the same number of
    batches per domain (MoE layers all-reduce inside forward), so a rank whose share runs out
    first gets padding batches of one row that it must not count (``n_valid == 0``).
    """

    def __init__(self, ds: Any, *, block_size: int, batch_size: int, rank: int = 0,
                 world_size: int = 1, max_blocks: int | None = None,
                 device: torch.device | str = "cpu", check_ids: bool = True,
                 flag_damage: bool = False) -> None:
        if max_blocks is not None and max_blocks < 1:
            raise DataError(f"--eval-max-blocks must be >= 1, got {max_blocks}")
        self.domains: list[str] = list(ds.domains)
        self.block_size = block_size
        self.batch_size = batch_size
        self._shards: list[list[np.ndarray]] = []
        self.windows: list[np.ndarray] = []  # per domain: this rank's (shard, start) rows
        self.total_blocks: list[int] = []  # per domain, over all ranks
        self.num_batches: list[int] = []  # per domain, the same on every rank
        self._pad: list[np.ndarray] = []  # per domain: a window for padding batches
        for d in self.domains:
            shards = list(ds.split(d, "eval").shards)
            w = eval_windows([len(m) for m in shards], block_size)
            if max_blocks is not None and len(w) > max_blocks:
                w = w[np.linspace(0, len(w) - 1, max_blocks).round().astype(np.int64)]
            self._shards.append([m.view(np.ndarray) for m in shards])
            self.total_blocks.append(len(w))
            per_rank = -(-len(w) // world_size)
            self.num_batches.append(-(-per_rank // batch_size))
            self.windows.append(w[rank::world_size])
            self._pad.append(w[:1])
        self._xfer = Transfer(batch_size, block_size + 1, torch.device(device))
        self._guard = VocabGuard(ds, "eval", self.domains, check_ids, flag_damage)
        self.damage: str | None = None  # with flag_damage: the first damaged window met

    def batches(self, domain: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """This rank's (x, y, n_valid) batches of one domain, in order; n_valid == 0 marks a
        padding batch whose result must be ignored."""
        w = self.windows[domain]
        shards = self._shards[domain]
        L = self.block_size + 1
        bs = self.batch_size
        for b in range(self.num_batches[domain]):
            rows = w[b * bs:(b + 1) * bs]
            n_valid = len(rows)
            if n_valid == 0:
                rows = self._pad[domain]
            buf = self._xfer.buffer()
            for i, (s, start) in enumerate(rows):
                buf[i] = shards[s][start:start + L]
            if self._guard.over(buf, len(rows)):
                damage = self._guard.check(buf, [(domain, int(s), int(a)) for s, a in rows])
                self.damage = self.damage or damage
            xy = self._xfer.send(len(rows))
            yield xy[:, :-1].contiguous(), xy[:, 1:].contiguous(), n_valid
