"""The numbers of each optimizer step, kept on the device and read once per log interval.

A read of a device value on the host (``.item()``, ``.tolist()``, ``float(t)``) waits for the
GPU to finish everything queued, and the host then queues the next step into an idle GPU. So the
loop never reads per step: each step's LM, load-balancing and z-losses (summed over its
micro-batches), its gradient norm and whether one of its batches was damaged go into a column
of a small device buffer, and :meth:`StepStats.read` fetches all buffered steps with one
``.tolist()``. Under DDP the loss, SIGTERM and damage rows are summed over the ranks first, in
one ``all_reduce`` per read (not one per step); the gradient norm, equal on every rank after
DDP's gradient sync, is not reduced.

The values are the same as a read after every step gives: the same float32 sums, divided on the
device by the same ``grad_accum * world`` (train/loop.py's records are equal at every step
whatever ``--log-every``; tests/test_loop.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from train.distributed import Dist, all_reduce_sum

_LM, _LB, _Z, _SIGTERM, _DAMAGED, _NORM = range(6)


@dataclass
class StepValues:
    """One optimizer step's numbers on the host."""

    step: int
    lm: float
    lb: float
    z: float
    grad_norm: float
    lr: float
    noise: float
    damaged: bool  # a batch of this step held ids outside the vocabulary, on some rank


class StepStats:
    """Up to `capacity` steps of losses and gradient norms on `device` (see the module doc)."""

    def __init__(self, capacity: int, device: torch.device, grad_accum: int, d: Dist) -> None:
        self.d = d
        self.divisor = grad_accum * d.world
        self.buf = torch.zeros(6, capacity, device=device)  # lm lb z sigterm damaged norm
        self.meta: list[tuple[int, float, float]] = []  # per buffered step: (step, lr, noise)
        self._micro: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.meta)

    def add_micro(self, out: Any) -> None:
        """Add one micro-batch's losses (a GPTOutput) to the current step's sums."""
        v = torch.stack([out.lm_loss.detach().float(), out.lb_loss.detach().float(),
                         out.z_loss.detach().float()])
        self._micro = v if self._micro is None else self._micro + v

    def end_step(self, step: int, lr: float, noise: float, grad_norm: torch.Tensor,
                 damaged: bool = False) -> None:
        """Store the current step's sums and gradient norm (device copies, no host read);
        `damaged`: one of its batches was kept out of training (train/data.py)."""
        col = len(self.meta)
        if col == self.buf.shape[1]:
            raise RuntimeError(f"StepStats holds {col} steps; read it first")
        assert self._micro is not None, "end_step before add_micro"
        self.buf[_LM:_SIGTERM, col] = self._micro
        self.buf[_NORM, col] = grad_norm.detach().float()
        if damaged:
            self.buf[_DAMAGED, col] = 1.0
        self.meta.append((step, lr, noise))
        self._micro = None

    def read(self, sigterm: bool) -> tuple[list[StepValues], bool]:
        """Every buffered step's values and whether a SIGTERM arrived on any rank (`sigterm`:
        this rank's); empties the buffer. Every rank must call it at the same step."""
        n = len(self.meta)
        if n == 0:
            raise RuntimeError("StepStats.read with no step buffered")
        if sigterm:
            self.buf[_SIGTERM, 0] = 1.0
        all_reduce_sum(self.buf[:_NORM], self.d)  # all rows but the norm: contiguous
        host = torch.cat([self.buf[_LM:_SIGTERM, :n] / self.divisor,
                          self.buf[_SIGTERM:, :n]]).tolist()  # the one host sync
        preempted = any(v > 0 for v in host[_SIGTERM])
        vals = [StepValues(step=s, lm=host[_LM][i], lb=host[_LB][i], z=host[_Z][i],
                           grad_norm=host[_NORM][i], lr=lr, noise=noise,
                           damaged=host[_DAMAGED][i] > 0)
                for i, (s, lr, noise) in enumerate(self.meta)]
        self.meta.clear()
        self.buf.zero_()
        return vals, preempted
