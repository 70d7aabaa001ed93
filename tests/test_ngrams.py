"""shards.ngrams: the hash is the documented polynomial, n-grams are windows of content tokens
(whitespace-only tokens skipped: re-indented code matches, shared indentation does not) that
never cross EOT, and the index answers exactly what a Python set would."""

from __future__ import annotations

import collections
import fractions
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
from shards_fixture import gpt2

from shards import ngrams as ng
from shards.ngrams import (
    BLOCK,
    NgramIndex,
    content,
    content_mask,
    eot_free,
    ngrams,
    sort_unique_inplace,
    window_hashes,
)
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
    # n-grams: the windows of the content tokens (here 0..12 with whitespace between)
    x = np.array([0, 220, 1, 198, 198, 2, 628, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 197, EOT_ID, 13,
                  65535, 220, 50257], dtype=np.uint16)
    assert ngrams(x, EOT_ID)[0].tolist() == [8170687235601895811]
    h, starts = ngrams(x, EOT_ID, 2)
    assert starts.tolist() == [0, 2, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 19, 20]
    assert int(h[-1]) == 3307514650422875478  # 65535 and 50257 (damaged ids) hash, 220 skipped
    assert np.flatnonzero(~content_mask()).tolist() == [
        197, 198, 199, 200, 201, 220, 628, 1849, 4603, 5624, 8828, 11504, 17811, 22686, 33477,
        39172, 44320, 45706, 47654]
    assert ng.HASH_VERSION == "poly64-splitmix-content-v2"


# plain Python, independent of shards.ngrams: the characters with the Unicode White_Space
# property (PropList.txt)
WHITE_SPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)}


def test_whitespace_only_tokens_are_those_of_the_unicode_definition() -> None:
    enc = gpt2()
    mask = content_mask()
    assert mask.shape == (65536,) and not mask.flags.writeable
    for t in range(EOT_ID):
        raw = enc.decode_single_token_bytes(t)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # a fragment of a character: content
            text = ""
        assert mask[t] == (not text or not set(text) <= WHITE_SPACE), (t, raw)
    assert mask[EOT_ID:].all()  # EOT separates documents; damaged ids hash
    assert all(mask[enc.encode_ordinary(c)].all() for c in "\x1c\x1f\u200b\ufeff")
    mixed = enc.encode_ordinary("\xa0\xa0\xa0\xa0 \n\n\t\r\n\u3000x")
    assert mask[mixed].tolist() == [False] * 6 + [True] * 3  # U+3000: two fragments, content


def raw_ngrams(tokens: np.ndarray, n: int = 13) -> set[int]:
    """The n-grams before whitespace-only tokens were skipped: windows of all tokens."""
    h = window_hashes(tokens, n)
    starts = np.arange(len(h))
    return set(h[eot_free(starts, np.flatnonzero(tokens == EOT_ID), n)].tolist())


def ids(text: str) -> np.ndarray:
    return np.array(gpt2().encode_ordinary(text), dtype=np.uint16)


def grams(text: str, n: int = 13) -> set[int]:
    return set(ngrams(ids(text), EOT_ID, n)[0].tolist())


def reindent(code: str, scale: float) -> str:
    """Every line's leading spaces times `scale` (at least one space where there were some)."""
    return re.sub(r"(?m)^ +", lambda m: " " * max(1, int(len(m.group()) * scale)), code)


REAL = {f.__name__: inspect.getsource(f) for f in (
    collections.Counter.most_common, fractions.Fraction.limit_denominator,
    json.JSONEncoder.default)}


@pytest.mark.parametrize("name", list(REAL))
def test_reindented_code_has_the_same_ngrams(name: str) -> None:
    """Real stdlib methods re-indented with spaces (4 -> 2, 4 -> 8, quoted 4 deeper): the same
    content tokens, so the same n-grams (on all tokens, the n-grams over indentation differ)."""
    code = REAL[name]
    orig = ids(code)
    for copy in (reindent(code, 0.5), reindent(code, 2), code.replace("\n", "\n    ")):
        tokens = ids(copy)
        assert len(tokens) != len(orig)  # the whitespace differs ...
        assert np.array_equal(content(tokens), content(orig))  # ... the content does not
        assert grams(copy) == grams(code) and len(grams(code)) > 50
        assert raw_ngrams(orig) - raw_ngrams(tokens)  # on all tokens, some are lost


def test_a_word_keeps_its_space_after_indentation_but_not_after_a_tab() -> None:
    """GPT-2 puts a space into the word's token (" return"); indentation by spaces is separate
    " " tokens before it, so any depth of spaces leaves the same word token. A tab (or column
    0) leaves the word without its space: a spaces -> tabs copy changes the first content
    token of each line and matches only inside lines of n or more content tokens."""
    assert ids("\n        return x").tolist() == [198] + [220] * 7 + ids(" return x").tolist()
    assert ids("\n  return x")[-2:].tolist() == ids("\n            return x")[-2:].tolist()
    assert ids("\n\treturn x").tolist() == [198, 197] + ids("return x").tolist()
    assert ids(" return").tolist() != ids("return").tolist()
    code = REAL["most_common"]
    tabs = re.sub(r"(?m)^( {4})+", lambda m: "\t" * (len(m.group()) // 4), code)
    assert len(grams(tabs) & grams(code)) < 0.5 * len(grams(code))


ACCESSORS = [
    "class Rectangle:\n    def area(self):\n        return self.width * self.height\n",
    "class Person:\n    def full_name(self):\n        return self.first + ' ' + self.last\n",
]


def test_shared_indentation_and_return_self_is_not_a_match() -> None:
    """Two different methods share `(self):`, a newline, 8 spaces and `return self.`: 14 tokens,
    so a 13-gram of all tokens, but 6 content tokens in a row: no content 13-gram (nor 7-gram);
    a re-indented copy of either matches it."""
    a, b = ACCESSORS
    assert raw_ngrams(ids(a)) & raw_ngrams(ids(b))
    assert not grams(a) & grams(b)
    assert grams(a, 6) & grams(b, 6) and not grams(a, 7) & grams(b, 7)
    assert grams(reindent(a, 0.5)) == grams(a) and grams(reindent(b, 2)) == grams(b)


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
