"""PyTorch datasets over a split: windows for language-model training, documents with provenance.

    import shards
    from torch.utils.data import DataLoader
    from shards.torch import BlockDataset, DocumentDataset, collate_documents

    ds = shards.open("shards_out")
    train = BlockDataset(ds, "code", "train", block_size=512)
    for x, y in DataLoader(train, batch_size=8, shuffle=True, num_workers=2):
        x, y = x.to(device).long(), y.to(device).long()   # uint16 on the host, int64 on device

    docs = DocumentDataset(ds, "code", "eval")
    batch = next(iter(DataLoader(docs, batch_size=4, collate_fn=collate_documents)))

Both are map-style datasets: any sampler works, `DistributedSampler` included.

What is copied. Item ``i`` of a BlockDataset is the window ``[i*T, i*T + T + 1)`` of the split's
token stream (T = block_size, windows at stride T, ``(tokens - 1) // T`` of them); ``x`` and ``y``
are ``torch.from_numpy`` views of it, uint16, sharing the pages of the shard's memmap: no copy.
A window whose tokens lie in two shards is assembled by a copy of its T+1 tokens (with T the
dataset's block size, one window per shard boundary). A DocumentDataset item is likewise a view,
except for a document that runs over a shard boundary. Then the DataLoader's collate copies the
items of a batch into one new tensor, and ``.long()`` widens it: those are the batch's copies.

The memmaps are opened copy-on-write (``mode="c"``): an in-place edit of an item (through
``x.numpy()``; torch has no in-place arithmetic on uint16) changes this process's private copy of
the page, which later items of this process then show, never the shard file; there is no
read-only page to crash on.

Workers: pickling a dataset sends the shard paths and sizes (a few hundred bytes), never the
memmaps or the tokens; each process maps the files itself on first use, keyed by its process id,
so forked and spawned DataLoader workers alike map their own and share the page cache. A
DocumentDataset's worker also reads the document index (metadata, not tokens) once.

This is the only module of `shards` that imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

import shards
from shards.format import TOKEN_DTYPE, FormatError
from shards.reader import Dataset, DocInfo, Split, read_doc_index


def _split(ds: Dataset | str | Path, domain: str, split: str) -> Split:
    if not isinstance(ds, Dataset):
        ds = shards.open(ds)
    return ds.split(domain, split)


class _Stream:
    """A split's token stream over memmaps that each process opens itself, lazily."""

    def __init__(self, sp: Split) -> None:
        root = sp.dataset.root
        self.where = f"{sp.domain}/{sp.name}"
        self.paths = [str(root / s.path) for s in sp.record.shards]  # the manifest's paths
        self.sizes = [int(s.tokens) for s in sp.record.shards]
        self.starts = np.asarray(sp.shard_starts, dtype=np.int64).copy()
        self.num_tokens = int(self.starts[-1])
        self._pid = -1
        self._maps: list[np.ndarray] = []

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pid": -1, "_maps": []}

    def maps(self) -> list[np.ndarray]:
        if self._pid != os.getpid():
            maps = []
            for path, n in zip(self.paths, self.sizes, strict=True):
                m = np.memmap(path, dtype=TOKEN_DTYPE, mode="c") if n else np.zeros(0, TOKEN_DTYPE)
                if len(m) != n:
                    raise FormatError(f"{path}: holds {len(m)} tokens, the manifest declares {n}; "
                                      "the shard changed since the dataset was opened")
                maps.append(m)
            self._maps, self._pid = maps, os.getpid()
        return self._maps

    @property
    def mapped(self) -> bool:
        """Whether this process has mapped the shards."""
        return self._pid == os.getpid()

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop): a view inside one shard, else a copy."""
        maps = self.maps()
        s = int(np.searchsorted(self.starts, start, side="right")) - 1
        base = int(self.starts[s])
        if stop <= self.starts[s + 1]:
            return maps[s][start - base:stop - base]
        parts = []
        while start < stop:
            s = int(np.searchsorted(self.starts, start, side="right")) - 1
            end = min(stop, int(self.starts[s + 1]))
            parts.append(maps[s][start - int(self.starts[s]):end - int(self.starts[s])])
            start = end
        return np.concatenate(parts)


class BlockDataset(TorchDataset):
    """(x, y) windows of `block_size` tokens of one split, y = x shifted by one; uint16 views."""

    def __init__(self, ds: Dataset | str | Path, domain: str, split: str,
                 block_size: int | None = None) -> None:
        sp = _split(ds, domain, split)
        self.domain, self.split = sp.domain, sp.name
        self.block_size = int(block_size if block_size is not None else sp.block_size)
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        self._stream = _Stream(sp)
        self._len = max(0, (self._stream.num_tokens - 1) // self.block_size)
        if not self._len:
            raise ValueError(f"{sp.dataset.root}: {self.domain}/{self.split} has "
                             f"{sp.num_tokens} tokens, fewer than one window of block_size + 1 = "
                             f"{self.block_size + 1}; choose a smaller block_size")

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self._len:
            raise IndexError(f"window {i} out of range: {self.domain}/{self.split} has "
                             f"{self._len} windows of {self.block_size} tokens")
        start = int(i) * self.block_size
        w = torch.from_numpy(self._stream.tokens(start, start + self.block_size + 1))
        return w[:-1], w[1:]


class DocumentDataset(TorchDataset):
    """One document per item: its token ids (EOT included, uint16 view), domain and provenance."""

    def __init__(self, ds: Dataset | str | Path, domain: str, split: str) -> None:
        sp = _split(ds, domain, split)
        self.domain, self.split = sp.domain, sp.name
        self._stream = _Stream(sp)
        self._index_path = sp.dataset.root / sp.record.doc_index.path
        self._len = sp.num_docs
        self._pid = -1
        self._docs: list[DocInfo] = []
        self._doc_starts = np.zeros(0, dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pid": -1, "_docs": [], "_doc_starts": None}

    def __len__(self) -> int:
        return self._len

    def _index(self) -> tuple[list[DocInfo], np.ndarray]:
        if self._pid != os.getpid():
            docs = read_doc_index(self._index_path)
            if len(docs) != self._len:
                raise FormatError(f"{self._index_path}: holds {len(docs)} documents, the "
                                  f"manifest declares {self._len}")
            shard = np.fromiter((d.shard for d in docs), dtype=np.int64, count=len(docs))
            offset = np.fromiter((d.offset for d in docs), dtype=np.int64, count=len(docs))
            self._doc_starts = self._stream.starts[shard] + offset
            self._docs, self._pid = docs, os.getpid()
        return self._docs, self._doc_starts

    def __getitem__(self, k: int) -> dict[str, Any]:
        if not 0 <= k < self._len:
            raise IndexError(f"document {k} out of range: {self.domain}/{self.split} has "
                             f"{self._len} documents")
        docs, starts = self._index()
        start = int(starts[k])
        ids = self._stream.tokens(start, start + docs[k].tokens)
        return {"input_ids": torch.from_numpy(ids), "domain": self.domain,
                "source": docs[k].source, "index": int(k)}


def collate_documents(batch: list[dict[str, Any]], pad_id: int = 50256) -> dict[str, Any]:
    """A DataLoader `collate_fn` for DocumentDataset: ids padded with `pad_id` (default EOT).

    Returns ``input_ids`` (B, longest) int64, ``lengths`` (B,) int64, and ``domain``, ``source``
    and ``index`` as lists.
    """
    lengths = [len(b["input_ids"]) for b in batch]
    ids = torch.full((len(batch), max(lengths, default=0)), pad_id, dtype=torch.int64)
    for row, b in enumerate(batch):
        ids[row, :lengths[row]] = b["input_ids"]
    return {"input_ids": ids, "lengths": torch.tensor(lengths, dtype=torch.int64),
            "domain": [b["domain"] for b in batch], "source": [b["source"] for b in batch],
            "index": [b["index"] for b in batch]}
