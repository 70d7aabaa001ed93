"""Processes of a run: one, or one per GPU (or CPU process) under torchrun.

Under torchrun (RANK and WORLD_SIZE set) each process joins the process group: NCCL on
``cuda:LOCAL_RANK``, gloo on CPU. With one process every helper here is a no-op.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


class DistError(ValueError):
    """A device the run cannot use."""


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup(device: str) -> tuple[Dist, torch.device]:
    """This process's place in the run and its device (`device`: auto, cpu, cuda, cuda:N)."""
    ddp = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    want = device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise DistError(f"--device {device}: CUDA is not available here; use --device cpu")
    if not ddp:
        return Dist(), torch.device(want)
    d = Dist(rank=int(os.environ["RANK"]), local_rank=int(os.environ.get("LOCAL_RANK", 0)),
             world=int(os.environ["WORLD_SIZE"]))
    if want.startswith("cuda"):
        dev = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl", device_id=dev)
    else:
        dev = torch.device("cpu")
        dist.init_process_group(backend="gloo")
    return d, dev


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum `t` over the ranks, in place (every rank gets the total)."""
    if d.world > 1:
        dist.all_reduce(t)
    return t


def gather(obj: Any, d: Dist) -> list[Any]:
    """Every rank's `obj`, in rank order (on every rank)."""
    if d.world == 1:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def agree(error: str | None, d: Dist) -> str | None:
    """Every rank's verdict on a step all of them take (None: it went well): the first failure,
    with its rank and host, on every rank (None when all went well). A rank that fails alone
    would otherwise exit while the others wait for it in their next collective."""
    if d.world == 1:
        return error
    mine = None if error is None else f"rank {d.rank} (host {socket.gethostname()}): {error}"
    return next((e for e in gather(mine, d) if e is not None), None)


def from_master(obj: Any, d: Dist) -> Any:
    """Rank 0's `obj` on every rank."""
    if d.world == 1:
        return obj
    box = [obj if d.master else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
