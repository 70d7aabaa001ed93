"""Batches for training and evaluation, straight from the shards' memmaps.

Training: every row of a batch is a random window of ``block_size + 1`` tokens from one domain's
train split. A row's domain is drawn by the domain weights (default: equal, so every domain
contributes the same share of tokens whatever its size; no data is truncated). Within a domain a
window is uniform over all valid start positions, so a shard is chosen in proportion to its
valid starts and windows never straddle two shards.

Zero-copy gather: the windows are copied straight from the memmaps into one preallocated uint16
host buffer (a ring of four, pinned, on CUDA), moved with one ``non_blocking`` copy and widened to int64 on
the device. Nothing is allocated per row and no memmap is re-opened, so anonymous memory stays
flat. :meth:`TrainSampler.prefetch` gathers and sends the next batch ahead of time: the loop
calls it right after a forward pass is queued, so the host's gather and the copy overlap the
GPU's compute (as nanoGPT fetches its next batch after the forward); a prefetched batch is not
yet consumed, so :meth:`TrainSampler.state_dict` still describes the stream before it.

Each DDP rank draws from its own ``numpy.random.Generator`` seeded from ``(seed, rank)``; its
state (:meth:`TrainSampler.state_dict`) goes into the checkpoint, so a resumed run continues the
same sequence of batches.

The eval blocks are in train/eval_data.py (same buffers, same id check).

Token ids: every batch, train and eval, is checked on the host before it is sent (the max of a
few thousand uint16s in the buffer just filled: microseconds, no device sync), whatever the
open checked: a shard changed after the check before step 0 (or never checked, with
``--skip-verify``) stops the run at the first window that holds an id outside the tokenizer's
vocabulary, with an error naming the shard and the token offset, before that batch trains and
never as an IndexError in the embedding. By default the check raises DataError at once; with
``flag_damage`` (the training loop, whose DDP ranks must stop together) the ids are clamped into
the vocabulary, the batch carries the error (``Batch.damage``, ``EvalSet.damage``) and the loop
keeps it out of training and stops every rank at its next read (train/loop.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shards import weights

SAMPLER_STATE_VERSION = 1


class DataError(ValueError):
    """Bad data or data options (domain weights, block size too large for a split, ...)."""


@dataclass
class Batch:
    x: torch.Tensor  # (B, T) int64 inputs, on the device
    y: torch.Tensor  # (B, T) int64 targets (x shifted by one), on the device
    domain: torch.Tensor  # (B,) int64 domain index of every row (into the sampler's `domains`),
    # on the host (the loop does not need it on the device)
    damage: str | None = None  # with flag_damage: why the batch must not train (ids clamped)


# --------------------------------------------------------------------------- options


def parse_domain_weights(spec: str | None, domains: Sequence[str]) -> dict[str, float]:
    """`shards.weights.parse_domain_weights` for the dataset's domains (DataError). A weight of
    0 leaves a domain out of training (it is still evaluated)."""
    try:
        return weights.parse_domain_weights(spec, domains)
    except weights.WeightsError as e:
        raise DataError(str(e)) from None


# --------------------------------------------------------------------------- token ids


class VocabGuard:
    """Checks each batch's ids against the vocabulary (see the module docstring).

    ``flag=False``: a damaged window raises DataError. ``flag=True`` (the training loop, whose
    DDP ranks must all stop together): its ids are clamped into the vocabulary so the batch can
    run harmlessly, and :meth:`check` returns the error message; the caller keeps the batch out
    of training and stops every rank at its next read."""

    def __init__(self, ds: Any, split: str, domains: Sequence[str], enabled: bool = True,
                 flag: bool = False) -> None:
        self.vocab: int | None = getattr(ds, "vocab_size", None) if enabled else None
        self.flag = flag
        self.root = getattr(ds, "root", None)
        self.paths = ([[ds.root / s.path for s in ds.split(d, split).record.shards]
                       for d in domains] if self.vocab is not None else [])

    def over(self, buf: np.ndarray, n: int) -> bool:
        """Whether the first `n` rows of `buf` hold an id outside the vocabulary."""
        return self.vocab is not None and int(buf[:n].max(initial=0)) >= self.vocab

    def check(self, buf: np.ndarray, rows: Sequence[tuple[int, int, int]]) -> str | None:
        """`buf[i]` holds the window of `rows[i]` = (domain, shard, start)."""
        if not self.over(buf, len(rows)):
            return None
        assert self.vocab is not None
        for i in range(len(rows)):
            bad = np.flatnonzero(buf[i] >= self.vocab)
            if len(bad):
                break
        off = int(bad[0])
        d, s, a = rows[i]
        msg = (f"{self.paths[d][s]}: token id {int(buf[i][off])} at token offset {a + off} is "
               f">= the vocabulary size {self.vocab} of the dataset's tokenizer: the shard is "
               f"damaged (changed since the data was checked, or never checked: "
               f"--skip-verify); nothing was trained on this batch; run "
               f"`python -m shards verify {self.root}`")
        if not self.flag:
            raise DataError(msg)
        np.minimum(buf, self.vocab - 1, out=buf)
        return msg


# --------------------------------------------------------------------------- host -> device


def widen_int16(t: torch.Tensor) -> torch.Tensor:
    """uint16 token ids carried as int16 (same bits) -> int64 ids (undo the sign extension)."""
    return t.to(torch.int64).bitwise_and_(0xFFFF)


class Transfer:
    """A preallocated uint16 host buffer (a ring of RING, pinned, on CUDA) and its move to the
    device.

    On CUDA the copy is asynchronous; a buffer is only refilled after the event recorded behind
    its previous copy has completed, so the host never overwrites bytes still in flight. With
    RING buffers the host may queue that many batches ahead of the GPU before it waits (the
    loop reads nothing from the GPU between its log points, so it does run ahead).
    """

    RING = 4

    def __init__(self, rows: int, cols: int, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        n = self.RING if self.cuda else 1
        self.host = [torch.empty((rows, cols), dtype=torch.uint16, pin_memory=self.cuda)
                     for _ in range(n)]
        self.views = [h.numpy() for h in self.host]
        self.events: list[Any] = [None] * n
        self.turn = 0

    def buffer(self) -> np.ndarray:
        """The host buffer to fill next (waits for its previous copy on CUDA)."""
        ev = self.events[self.turn]
        if ev is not None and not ev.query():
            ev.synchronize()
        return self.views[self.turn]

    def send(self, rows: int) -> torch.Tensor:
        """Move the first `rows` rows of the buffer just filled; int64 on the device."""
        host = self.host[self.turn][:rows]
        if self.cuda:
            # uint16 kernels are sparse on CUDA: move the bytes as int16 (a free view), widen
            # there and mask the sign extension away (& 0xFFFF), which every version supports
            dev = host.view(torch.int16).to(self.device, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record()
            self.events[self.turn] = ev
            self.turn = (self.turn + 1) % len(self.host)
            return widen_int16(dev)
        return host.to(torch.int64)  # one widening copy; the buffer is reused next batch

    def send_xy(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (int64, contiguous, on the device) of the full buffer just
        filled: each widened in one copy from the uint16 rows, no intermediate."""
        host = self.host[self.turn]
        if self.cuda:
            dev = self.send(host.shape[0])
            return dev[:, :-1].contiguous(), dev[:, 1:].contiguous()
        rows, cols = host.shape
        x = torch.empty((rows, cols - 1), dtype=torch.int64)
        y = torch.empty((rows, cols - 1), dtype=torch.int64)
        x.copy_(host[:, :-1])
        y.copy_(host[:, 1:])
        return x, y


# --------------------------------------------------------------------------- training


class TrainSampler:
    """Random training windows from the train splits of `ds` (a `shards.open` Dataset)."""

    def __init__(self, ds: Any, *, block_size: int, batch_size: int,
                 weights: dict[str, float] | None = None, seed: int = 0, rank: int = 0,
                 device: torch.device | str = "cpu", check_ids: bool = True,
                 flag_damage: bool = False) -> None:
        if block_size < 1 or batch_size < 1:
            raise DataError("block_size and batch_size must be >= 1")
        self.domains: list[str] = list(ds.domains)
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed, self.rank = seed, rank
        w = weights if weights is not None else parse_domain_weights(None, self.domains)
        if sorted(w) != sorted(self.domains):
            raise DataError(f"domain weights name {sorted(w)}, the dataset has {self.domains}")
        self.weights = np.array([w[d] for d in self.domains], dtype=np.float64)
        self.weights = self.weights / self.weights.sum()
        self._cum_weights = np.cumsum(self.weights)
        self._cum_weights[-1] = 1.0
        L = block_size + 1
        self._shards: list[list[np.ndarray]] = []  # plain ndarray views of the memmaps
        self._cum: list[np.ndarray] = []  # per domain: cumulative valid starts, [0, v0, v0+v1...]
        for i, d in enumerate(self.domains):
            sp = ds.split(d, "train")
            shards = list(sp.shards)
            valid = np.array([max(0, len(m) - L + 1) for m in shards], dtype=np.int64)
            if self.weights[i] > 0 and valid.sum() == 0:
                longest = max((len(m) for m in shards), default=0)
                raise DataError(
                    f"domain {d!r}: its train split has no window of block_size+1={L} tokens "
                    f"inside one shard (longest shard: {longest} tokens); lower --block-size or "
                    f"give {d!r} weight 0 in --domain-weights")
            self._shards.append([m.view(np.ndarray) for m in shards])  # fast slicing
            self._cum.append(np.concatenate([[0], np.cumsum(valid)]).astype(np.int64))
        self.rng = np.random.default_rng([seed, rank])
        self.batches = 0
        self._xfer = Transfer(batch_size, L, torch.device(device))
        self._guard = VocabGuard(ds, "train", self.domains, check_ids, flag_damage)
        # a batch drawn and sent ahead by prefetch(): (batch, rng state and count before it)
        self._pending: tuple[Batch, dict[str, Any], int] | None = None

    def draw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next batch's (domain, shard, start) per row, advancing the random stream."""
        B = self.batch_size
        dom = np.searchsorted(self._cum_weights, self.rng.random(B), side="right")
        shard = np.empty(B, dtype=np.int64)
        start = np.empty(B, dtype=np.int64)
        for d in range(len(self.domains)):
            rows = np.flatnonzero(dom == d)
            if len(rows) == 0:
                continue
            cum = self._cum[d]
            u = self.rng.integers(0, cum[-1], size=len(rows))
            s = np.searchsorted(cum, u, side="right") - 1
            shard[rows] = s
            start[rows] = u - cum[s]
        self.batches += 1
        return dom.astype(np.int64), shard, start

    def _fetch(self) -> Batch:
        dom, shard, start = self.draw()
        L = self.block_size + 1
        buf = self._xfer.buffer()
        shards = self._shards
        rows = list(zip(dom.tolist(), shard.tolist(), start.tolist(), strict=True))
        for i, (d, s, a) in enumerate(rows):
            buf[i] = shards[d][s][a:a + L]
        damage = self._guard.check(buf, rows)
        x, y = self._xfer.send_xy()
        return Batch(x=x, y=y, domain=torch.from_numpy(dom), damage=damage)

    def prefetch(self) -> None:
        """Draw, gather and send the next batch now (a no-op when one is already waiting);
        :meth:`next_batch` returns it."""
        if self._pending is None:
            before = (self.rng.bit_generator.state, self.batches)
            self._pending = (self._fetch(), *before)

    def next_batch(self) -> Batch:
        """The next batch of the stream (the prefetched one, if any)."""
        if self._pending is not None:
            batch, self._pending = self._pending[0], None
            return batch
        return self._fetch()

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.next_batch()

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Plain types only (loadable with torch.load(weights_only=True)); 128-bit ints as str.
        The position after the last batch :meth:`next_batch` returned (a prefetched batch is
        drawn again after a resume)."""
        st, batches = ((self._pending[1], self._pending[2]) if self._pending is not None
                       else (self.rng.bit_generator.state, self.batches))
        return {
            "version": SAMPLER_STATE_VERSION,
            "bit_generator": st["bit_generator"],
            "state": {k: str(v) for k, v in st["state"].items()},
            "has_uint32": int(st["has_uint32"]),
            "uinteger": int(st["uinteger"]),
            "batches": batches,
            "seed": self.seed,
            "rank": self.rank,
            "domains": list(self.domains),
            "weights": [float(w) for w in self.weights],
            "block_size": self.block_size,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, sd: dict[str, Any], may_differ: Collection[str] = ()) -> None:
        """Continue the stream of `sd`; `may_differ` ("batch_size", "weights"): changes a
        resumed run accepted (the random stream continues, drawn with the new setting)."""
        if sd.get("version") != SAMPLER_STATE_VERSION:
            raise DataError(f"sampler state version {sd.get('version')!r} is not "
                            f"{SAMPLER_STATE_VERSION}")
        for key, mine in (("domains", self.domains), ("block_size", self.block_size),
                          ("batch_size", self.batch_size), ("rank", self.rank)):
            if sd[key] != mine and key not in may_differ:
                raise DataError(f"sampler state has {key}={sd[key]!r}, this run has {mine!r}")
        if "weights" not in may_differ and not np.allclose(sd["weights"], self.weights, rtol=0,
                                                           atol=1e-12):
            raise DataError(f"sampler state has domain weights {sd['weights']}, this run has "
                            f"{self.weights.tolist()}")
        name = self.rng.bit_generator.state["bit_generator"]
        if sd["bit_generator"] != name:
            raise DataError(f"sampler state is for {sd['bit_generator']}, this run uses {name}")
        self._pending = None
        self.rng.bit_generator.state = {
            "bit_generator": name,
            "state": {k: int(v) for k, v in sd["state"].items()},
            "has_uint32": sd["has_uint32"],
            "uinteger": sd["uinteger"],
        }
        self.batches = int(sd["batches"])
