"""train/data.py: the training sampler and the eval blocks, on small hand-made datasets."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

import shards
from shards.writer import DocEntry, SplitWriter, manifest_for, write_manifest
from train.data import DataError, TrainSampler, parse_domain_weights, widen_int16
from train.eval_data import EvalSet, eval_windows


def build_dataset(root: Path, streams: dict[str, dict[str, np.ndarray]], *, block_size: int,
                  shard_tokens: int) -> Path:
    """Write a dataset whose token streams are given exactly: {domain: {split: uint16 array}}."""
    root.mkdir(parents=True, exist_ok=True)
    records = {}
    for name, splits in streams.items():
        records[name] = {}
        for split, toks in splits.items():
            w = SplitWriter(root, name, split, shard_tokens, block_size)
            step = 97
            for i in range(0, len(toks), step):
                chunk = toks[i:i + step].astype(np.uint16)
                w.add(chunk, [DocEntry(tokens=len(chunk), chars=len(chunk), nbytes=len(chunk),
                                       sha256=f"{name}-{split}-{i}")])
            records[name][split] = w.close()
    man = manifest_for(records, origin="test", block_size=block_size, shard_tokens=shard_tokens)
    write_manifest(root, man)
    return root


def tagged(domain_id: int, n: int) -> np.ndarray:
    """Tokens that say where they come from: domain in the top bits, position below."""
    return ((domain_id << 13) + np.arange(n) % 8192).astype(np.uint16)


@pytest.fixture(scope="module")
def ds3(tmp_path_factory):
    """Three domains of very different sizes; shards of 64 tokens (block 16)."""
    root = tmp_path_factory.mktemp("ds3")
    sizes = {"code": 1000, "math": 300, "prose": 5000}
    streams = {d: {"train": tagged(i, n), "eval": tagged(i, n // 5 + 3)}
               for i, (d, n) in enumerate(sizes.items())}
    build_dataset(root, streams, block_size=16, shard_tokens=64)
    return shards.open(root)


def test_windows_equal_memmap_tokens_and_domains(ds3):
    s = TrainSampler(ds3, block_size=16, batch_size=64, seed=3)
    for _ in range(5):
        state = s.rng.bit_generator.state
        dom, shard, start = s.draw()
        s.rng.bit_generator.state = state
        s.batches -= 1
        b = s.next_batch()
        assert b.x.dtype == torch.int64 and b.x.shape == (64, 16) and b.y.shape == (64, 16)
        assert b.domain.tolist() == dom.tolist()
        for i in range(64):
            sp = ds3.split(ds3.domains[dom[i]], "train")
            mm = sp.shards[shard[i]]
            assert start[i] + 17 <= len(mm)  # the window stays inside its shard
            want = np.asarray(mm[start[i]:start[i] + 17], dtype=np.int64)
            assert b.x[i].tolist() == want[:-1].tolist()
            assert b.y[i].tolist() == want[1:].tolist()
            assert (want >> 13 == dom[i]).all()  # tokens carry their domain: label is right


def test_default_weights_equal_token_share(ds3):
    s = TrainSampler(ds3, block_size=16, batch_size=100, seed=0)
    counts = np.zeros(3)
    for _ in range(60):
        counts += np.bincount(s.next_batch().domain.numpy(), minlength=3)
    share = counts / counts.sum()
    assert np.abs(share - 1 / 3).max() < 0.03, share  # 6000 rows: sd ~0.006


def test_domain_weights_respected(ds3):
    w = parse_domain_weights("code=1, math=0,prose=3", ds3.domains)
    assert w == {"code": 0.25, "math": 0.0, "prose": 0.75}
    s = TrainSampler(ds3, block_size=16, batch_size=100, weights=w, seed=1)
    counts = np.zeros(3)
    for _ in range(60):
        counts += np.bincount(s.next_batch().domain.numpy(), minlength=3)
    assert counts[1] == 0
    assert abs(counts[0] / counts.sum() - 0.25) < 0.03


def test_shard_chosen_by_valid_starts(tmp_path):
    # shards of 64, 64 and a last one of 20 tokens; block 16 -> 48, 48, 4 valid starts
    root = build_dataset(tmp_path / "d", {"a": {"train": tagged(0, 148), "eval": tagged(0, 40)}},
                         block_size=16, shard_tokens=64)
    s = TrainSampler(shards.open(root), block_size=16, batch_size=1000, seed=0)
    _, shard, start = s.draw()
    frac = np.bincount(shard, minlength=3) / 1000
    assert np.abs(frac - np.array([48, 48, 4]) / 100).max() < 0.05
    assert start[shard == 2].max() <= 3 and start.max() <= 47


@pytest.mark.parametrize("spec, msg", [
    ("code=1,math=1", "lacks prose: give every domain of the dataset a weight"),
    ("code=1,math=1,prose=1,wiki=2", "'wiki' is not a domain of the dataset"),
    ("code=1,math=x,prose=1", "must be a finite number >= 0, got .x."),
    ("code=1,math=-1,prose=1", "must be a finite number >= 0"),
    ("code=0,math=0,prose=0", "every weight is 0"),
    ("code,math=1,prose=1", "is not NAME=WEIGHT"),
])
def test_bad_domain_weights(spec, msg):
    with pytest.raises(DataError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        parse_domain_weights(spec, ["code", "math", "prose"])


def test_block_too_large_is_clear(ds3):
    with pytest.raises(DataError, match=r"domain 'code'.*no window of block_size\+1=65"):
        TrainSampler(ds3, block_size=64, batch_size=2)


def test_state_round_trip_continues_sequence(ds3):
    a = TrainSampler(ds3, block_size=16, batch_size=8, seed=7)
    for _ in range(3):
        a.next_batch()
    sd = a.state_dict()
    rest = [a.next_batch() for _ in range(4)]
    b = TrainSampler(ds3, block_size=16, batch_size=8, seed=999)  # seed comes from the state
    b.load_state_dict(torch.load(_save(sd), weights_only=True))
    assert b.batches == 3
    for want in rest:
        got = b.next_batch()
        assert torch.equal(got.x, want.x) and torch.equal(got.domain, want.domain)
    with pytest.raises(DataError, match="batch_size=8, this run has 4"):
        TrainSampler(ds3, block_size=16, batch_size=4).load_state_dict(sd)


def test_prefetched_batch_is_not_consumed_until_returned(ds3):
    plain = TrainSampler(ds3, block_size=16, batch_size=8, seed=7)
    want = [plain.next_batch() for _ in range(4)]
    a = TrainSampler(ds3, block_size=16, batch_size=8, seed=7)
    a.next_batch()
    a.prefetch()
    a.prefetch()  # one batch ahead at most: a second call keeps the waiting one
    sd = a.state_dict()  # the stream after batch 1: the prefetched batch 2 is not consumed
    assert sd["batches"] == 1 and a.batches == 2
    got = [a.next_batch(), a.next_batch()]
    b = TrainSampler(ds3, block_size=16, batch_size=8, seed=0)
    b.load_state_dict(torch.load(_save(sd), weights_only=True))
    again = [b.next_batch() for _ in range(3)]
    for g, w in zip([want[0], *got, *again], [want[0], want[1], want[2], *want[1:]],
                    strict=True):
        assert torch.equal(g.x, w.x) and torch.equal(g.y, w.y) and torch.equal(g.domain, w.domain)
    b.prefetch()
    b.load_state_dict(sd)  # a load drops the waiting batch
    assert torch.equal(b.next_batch().x, want[1].x)


def _save(obj) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_ranks_draw_different_streams(ds3):
    a = TrainSampler(ds3, block_size=16, batch_size=8, seed=7, rank=0).next_batch()
    b = TrainSampler(ds3, block_size=16, batch_size=8, seed=7, rank=1).next_batch()
    c = TrainSampler(ds3, block_size=16, batch_size=8, seed=7, rank=0).next_batch()
    assert not torch.equal(a.x, b.x) and torch.equal(a.x, c.x)


def test_eval_windows_layout():
    w = eval_windows([64, 64, 20], 16)
    # (64-1)//16 = 3 windows in a full shard, (20-1)//16 = 1 in the last
    assert w.tolist() == [[0, 0], [0, 16], [0, 32], [1, 0], [1, 16], [1, 32], [2, 0]]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_covers_every_block_once(ds3, world):
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for rank in range(world):
        ev = EvalSet(ds3, block_size=16, batch_size=5, rank=rank, world_size=world)
        for d in range(3):
            n = 0
            for x, y, n_valid in ev.batches(d):
                n += 1
                assert torch.equal(x[:, 1:], y[:, :-1])
                if n_valid:
                    assert len(x) == n_valid
                    seen[d].extend(x[:, 0].tolist())
            assert n == ev.num_batches[d]  # every rank runs the same number of batches
    for d, name in enumerate(ds3.domains):
        sp = ds3.split(name, "eval")
        want = []
        for mm in sp.shards:
            for start in range(0, len(mm) - 16, 16):
                want.append(int(mm[start]))
        assert sorted(seen[d]) == sorted(want)
        assert len(set(seen[d])) == len(seen[d])  # tokens are unique positions: no repeats


def test_eval_max_blocks_is_deterministic_spread(ds3):
    ev = EvalSet(ds3, block_size=16, batch_size=4, max_blocks=5)
    full = EvalSet(ds3, block_size=16, batch_size=4)
    assert ev.total_blocks[2] == 5 and full.total_blocks[2] > 5
    w = ev.windows[2]
    assert w[0].tolist() == full.windows[2][0].tolist()
    assert w[-1].tolist() == full.windows[2][-1].tolist()


def test_int16_widening_keeps_ids_above_32767():
    # the CUDA path moves uint16 bytes as int16 and widens on the device
    ids = np.array([[0, 1, 32767, 32768, 50256, 65535]], dtype=np.uint16)
    host = torch.from_numpy(ids)
    assert widen_int16(host.view(torch.int16)).tolist() == [[0, 1, 32767, 32768, 50256, 65535]]
