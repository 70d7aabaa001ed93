"""shards.ngrams: the hash is the documented polynomial, n-grams never cross EOT, and the index
answers exactly what a Python set would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shards import ngrams as ng
from shards.ngrams import BLOCK, NgramIndex, ngrams, sort_unique_inplace, window_hashes
from shards.tokenizer import EOT_ID

M64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """splitmix64's output function in plain Python integers (the reference)."""
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def reference_hash(window: list[int]) -> int:
    base = splitmix64(ng.HASH_SEED) | 1
    return sum(splitmix64(t + ng.HASH_SEED) * pow(base, j, 1 << 64)
               for j, t in enumerate(window)) & M64


def test_hash_is_the_documented_polynomial() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 65536, BLOCK + 40).astype(np.uint16)  # over a block boundary
    h = window_hashes(x, 13)
    assert len(h) == len(x) - 12
    for i in (0, 1, BLOCK - 13, BLOCK - 1, BLOCK, BLOCK + 1, len(h) - 1):
        assert int(h[i]) == reference_hash(x[i:i + 13].tolist()), i


def test_hash_values_are_pinned() -> None:
    """Saved indexes (prep's decontamination cache) depend on these values: if they change,
    HASH_VERSION must change too."""
    assert int(window_hashes(np.arange(13, dtype=np.uint16))[0]) == 8170687235601895811
    assert int(window_hashes(np.array([EOT_ID, 0, 65535], dtype=np.uint16), 2)[1]) == \
        10904193486594627146
    assert ng.HASH_VERSION == "poly64-splitmix-v1"


def test_equal_ngrams_hash_equal_anywhere() -> None:
    rng = np.random.default_rng(1)
    gram = rng.integers(0, 50257, 13).astype(np.uint16)
    a = np.r_[rng.integers(0, 50257, BLOCK - 5), gram, rng.integers(0, 50257, 9)]
    b = np.r_[gram, [EOT_ID]]
    ha, hb = window_hashes(a.astype(np.uint16)), window_hashes(b.astype(np.uint16))
    assert ha[BLOCK - 5] == hb[0]
    big = rng.integers(0, 50257, 300_000).astype(np.uint16)  # distinct windows, distinct hashes
    assert len(np.unique(window_hashes(big))) == len(big) - 12


def test_ngrams_never_cross_eot() -> None:
    s = np.array([1, 2, 3, 4, EOT_ID, 1, 2, 3, 4, 5, EOT_ID], dtype=np.uint16)
    h, starts = ngrams(s, EOT_ID, n=3)
    assert starts.tolist() == [0, 1, 5, 6, 7]
    assert h[0] == h[2] and h[1] == h[3] and len(set(h.tolist())) == 3
    assert len(ngrams(s[:2], EOT_ID, n=3)[0]) == 0  # shorter than n
    assert len(ngrams(np.array([7, 8, EOT_ID, 9, 10], dtype=np.uint16), EOT_ID, n=3)[0]) == 0
    assert ngrams(s, EOT_ID, n=1)[1].tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("n", [0, -1, BLOCK + 1, 2.5, True])
def test_bad_n(n: object) -> None:
    with pytest.raises(ValueError, match="n-gram length must be an integer"):
        window_hashes(np.zeros(20, dtype=np.uint16), n)  # type: ignore[arg-type]


def test_sort_unique_inplace() -> None:
    a = np.array([5, 3, 5, 1, 3, 3, 9, 0], dtype=np.uint64)
    assert sort_unique_inplace(a).tolist() == [0, 1, 3, 5, 9]
    big = np.random.default_rng(2).integers(0, 1000, 3_000_000).astype(np.uint64)
    assert np.array_equal(sort_unique_inplace(big.copy()), np.unique(big))


@pytest.mark.parametrize("size", [0, 1, 2, 3, 1000, 200_000])
def test_index_answers_like_a_set(size: int) -> None:
    rng = np.random.default_rng(size)
    keys = rng.integers(0, 1 << 63, size, dtype=np.int64).view(np.uint64)
    keys = np.r_[keys, keys[: size // 3]]  # repeats
    index = NgramIndex.build(keys)
    assert np.array_equal(index.hashes, np.unique(keys))
    absent = rng.integers(0, 1 << 63, 5000, dtype=np.int64).view(np.uint64) | np.uint64(1 << 63)
    q = np.r_[keys[::7], absent, np.array([0, 2**64 - 1], dtype=np.uint64)]
    want = np.isin(q, keys)
    for method in (index.lookup, index.find):
        pos = method(q)
        assert np.array_equal(pos >= 0, want)
        assert np.array_equal(index.hashes[pos[pos >= 0]], q[pos >= 0])
    assert not (~index.maybe(keys)).any()  # the filter never drops a present hash
    assert np.array_equal(index.contains(q), want)


def test_bloom_filter_lets_few_absent_through() -> None:
    rng = np.random.default_rng(3)
    index = NgramIndex.build(rng.integers(0, 1 << 63, 100_000, dtype=np.int64).view(np.uint64))
    absent = rng.integers(0, 1 << 63, 200_000, dtype=np.int64).view(np.uint64) | np.uint64(1 << 63)
    assert index.maybe(absent).mean() < 0.01
    assert index.bloom.nbytes == 100_000 * 2  # 16 bits per hash


def test_owners_keep_the_smallest() -> None:
    a = np.array([1, 2, 3], dtype=np.uint64)
    b = np.array([3, 4, 4, 2], dtype=np.uint64)
    c = np.array([9, 1], dtype=np.uint64)
    index = NgramIndex.from_parts([(b, 1), (c, 2), (a, 0)], n=5)
    assert index.hashes.tolist() == [1, 2, 3, 4, 9]
    assert index.owners.tolist() == [0, 0, 0, 1, 2]
    assert index.n == 5


def test_save_and_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    keys = rng.integers(0, 1 << 63, 10_000, dtype=np.int64).view(np.uint64)
    index = NgramIndex.from_parts([(keys[:6000], 0), (keys[4000:], 1)], n=7)
    index.save(tmp_path / "idx", {"files": ["a", "b"]})
    index.save(tmp_path / "idx", {"files": ["a", "b"]})  # replaces it
    back, meta = NgramIndex.load(tmp_path / "idx")
    assert meta == {"files": ["a", "b"]} and back.n == 7
    assert isinstance(back.hashes, np.memmap)  # mapped, not read
    assert np.array_equal(back.lookup(keys), index.lookup(keys))
    assert np.array_equal(back.owners, index.owners)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temporary left
    info = (tmp_path / "idx" / "index.json").read_text().replace(ng.HASH_VERSION, "old-hash")
    (tmp_path / "idx" / "index.json").write_text(info)
    with pytest.raises(ValueError, match="made with hash 'old-hash'.*rebuild it"):
        NgramIndex.load(tmp_path / "idx")
