"""`shards.torch`: map-style datasets through plain DataLoaders, workers and DistributedSampler."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from shards_fixture import make_dataset
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

import shards
from shards.torch import BlockDataset, DocumentDataset, collate_documents

REPO = Path(__file__).resolve().parents[1]
T = 16
DOCS = {"train": [(f"line {i}: " + "word " * (5 + 3 * (i % 11)), {"path": f"f{i}.txt"})
                  for i in range(60)],
        "eval": [("short one", {"path": "e0.txt"}), ("x " * 90, {"path": "e1.txt"})]}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("torch"), {"text": DOCS}, shard_tokens=64,
                        block_size=T)


def window(root: Path, i: int, block: int = T) -> np.ndarray:
    return shards.open(root).split("text", "train").tokens(i * block, i * block + block + 1)


def test_blocks_are_zero_copy_windows(root: Path) -> None:
    sp = shards.open(root).split("text", "train")
    ds = BlockDataset(root, "text", "train")
    assert len(ds) == (sp.num_tokens - 1) // T > 3 * 64 // T
    for i in range(len(ds)):
        x, y = ds[i]
        w = window(root, i)
        assert x.dtype == torch.uint16 and x.shape == (T,)
        assert np.array_equal(x.numpy(), w[:-1]) and np.array_equal(y.numpy(), w[1:])
    # window 0 lies inside shard 0: x and y share the memmap's memory
    x, y = ds[0]
    shard0 = ds._stream.maps()[0]
    assert np.shares_memory(x.numpy(), shard0) and np.shares_memory(y.numpy(), shard0)
    # window 3 needs the first token of shard 1 (64 = 4 * 16): copied, still exact
    assert not np.shares_memory(ds[3][0].numpy(), shard0)
    # copy-on-write: an in-place edit stays in this process, the shard file is unchanged
    before = (root / sp.record.shards[0].path).read_bytes()
    x.numpy()[0] ^= 1  # (torch has no in-place arithmetic on uint16)
    assert ds[0][0][0] == x[0] != sp.tokens(0, 1)[0]
    assert (root / sp.record.shards[0].path).read_bytes() == before
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]


def test_other_block_sizes_and_errors(root: Path) -> None:
    ds = BlockDataset(shards.open(root), "text", "train", block_size=24)  # straddles shards
    for i in (0, 2, 5, len(ds) - 1):
        x, y = ds[i]
        w = window(root, i, 24)
        assert np.array_equal(x.numpy(), w[:-1]) and np.array_equal(y.numpy(), w[1:])
    with pytest.raises(ValueError, match=r"text/eval has \d+ tokens, fewer than one window"):
        BlockDataset(root, "text", "eval", block_size=4096)
    with pytest.raises(shards.SplitNotFoundError, match="no domain 'code'"):
        BlockDataset(root, "code", "train")


def test_pickling_sends_paths_not_data(tmp_path: Path) -> None:
    docs = [f"document {i} " + "many words here " * 40 for i in range(80)]
    big = make_dataset(tmp_path, {"text": {"train": docs, "eval": []}}, shard_tokens=4096,
                       block_size=T)
    ds = BlockDataset(big, "text", "train")
    ds[0]  # map the shards in this process
    maps = ds._stream.maps()
    data_bytes = sum(m.nbytes for m in maps)
    blob = pickle.dumps(ds)
    assert len(maps) == 3 and data_bytes > 16_000
    assert len(blob) < 1000  # the shard paths and sizes, none of the tokens
    assert str(big) in blob.decode("latin-1") and maps[1][:8].tobytes() not in blob
    copy = pickle.loads(blob)
    assert not copy._stream.mapped  # maps its own on first use
    assert all(torch.equal(a, b) for a, b in zip(copy[300], ds[300], strict=True))
    assert copy._stream.mapped
    documents = DocumentDataset(big, "text", "train")
    documents[0]
    assert len(pickle.dumps(documents)) < 1000


def _worker_pid(_: int) -> None:
    info = torch.utils.data.get_worker_info()
    assert not info.dataset._stream.mapped  # nothing mapped inherited: reopened here


def test_two_workers_train_two_steps(root: Path) -> None:
    torch.manual_seed(0)
    ds = BlockDataset(root, "text", "train")
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=2,
                        worker_init_fn=_worker_pid)
    model = nn.Sequential(nn.Embedding(50257, 8), nn.Linear(8, 50257))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    start = [p.detach().clone() for p in model.parameters()]
    losses = []
    for step, (x, y) in enumerate(loader):
        assert x.dtype == torch.uint16 and x.shape == (4, T)
        for row in range(4):  # in order, exactly the windows of the split
            w = window(root, 4 * step + row)
            assert np.array_equal(x[row].numpy(), w[:-1]) and np.array_equal(y[row].numpy(), w[1:])
        logits = model(x.long())
        loss = nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.long().view(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step == 1:
            break
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert losses[0] == pytest.approx(np.log(50257), rel=0.05)  # untrained: near uniform
    assert all(not torch.equal(a, b) for a, b in zip(start, model.parameters(), strict=True))
    assert not ds._stream.mapped  # the parent never mapped the shards: the workers did


def test_distributed_sampler_splits_the_windows(root: Path) -> None:
    ds = BlockDataset(root, "text", "train")
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
        sampler.set_epoch(1)
        order = list(sampler)
        rows = [x for x, _ in DataLoader(ds, batch_size=len(order), sampler=sampler)][0]
        for r, i in enumerate(order):
            assert np.array_equal(rows[r].numpy(), window(root, i)[:-1])
        seen.append(order)
    assert len(seen[0]) == len(seen[1]) == -(-len(ds) // 2)
    assert set(seen[0]) | set(seen[1]) == set(range(len(ds)))
    if len(ds) % 2 == 0:
        assert not set(seen[0]) & set(seen[1])


def test_documents_with_provenance(root: Path) -> None:
    sp = shards.open(root).split("text", "train")
    docs = DocumentDataset(root, "text", "train")
    assert len(docs) == 60
    for k in range(len(docs)):
        item = docs[k]
        assert np.array_equal(item["input_ids"].numpy(), sp.document_tokens(k))
        assert item["source"] == {"path": f"f{k}.txt"} and item["domain"] == "text"
        assert item["index"] == k and int(item["input_ids"][-1]) == 50256
    loader = DataLoader(docs, batch_size=5, num_workers=2, collate_fn=collate_documents,
                        sampler=DistributedSampler(docs, num_replicas=3, rank=1, shuffle=False))
    order = list(DistributedSampler(docs, num_replicas=3, rank=1, shuffle=False))
    got = [k for batch in loader for k in batch["index"]]
    assert got == order == list(range(1, 60, 3))
    batch = next(iter(loader))
    for row, k in enumerate(batch["index"]):
        n = sp.document(k).tokens
        assert batch["lengths"][row] == n
        assert np.array_equal(batch["input_ids"][row, :n].numpy(), sp.document_tokens(k))
        assert (batch["input_ids"][row, n:] == 50256).all()
        assert batch["source"][row] == {"path": f"f{k}.txt"}


def test_spawned_workers_reopen_by_path(root: Path) -> None:
    """With spawn, the dataset reaches the worker only by pickle: it must map the files there."""
    ds = BlockDataset(root, "text", "train")
    loader = DataLoader(ds, batch_size=len(ds), num_workers=1, multiprocessing_context="spawn")
    (x, y), = list(loader)
    assert np.array_equal(x.numpy(), np.stack([window(root, i)[:-1] for i in range(len(ds))]))
    assert not ds._stream.mapped


def test_shards_imports_without_torch() -> None:
    code = ("import sys, shards, shards.export, shards.scan; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
