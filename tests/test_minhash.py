"""shards.minhash: shingling rules, signatures independent of their batch, the estimator against
exact Jaccard and against datasketch (a test oracle), band candidates, cross-set pairs."""

from __future__ import annotations

import random

import numpy as np
import pytest
from prep_fixture import WORDS

from shards import minhash as mh


def words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(n)]


def variant(ws: list[str], rng: random.Random, changes: int) -> list[str]:
    out = list(ws)
    for _ in range(changes):
        out[rng.randrange(len(out))] = f"zz{rng.randrange(10**6)}"
    return out


def test_code_words_keep_case_and_ignore_layout_prose_words_fold_case_and_punctuation():
    code = "def f(x):\n    return x_max + Y  # done\n"
    same = "def f( x ) :\n\treturn x_max+Y#done"
    assert np.array_equal(mh.shingle_set(code, "code"), mh.shingle_set(same, "code"))
    assert not np.array_equal(mh.shingle_set(code, "code"),
                              mh.shingle_set(code.replace("Y", "y"), "code"))
    prose = "The Quick, brown fox -- jumps over: the “lazy” dog… Twice!"
    plain = "the quick brown fox jumps over the lazy dog twice"
    assert np.array_equal(mh.shingle_set(prose, "prose"), mh.shingle_set(plain, "prose"))
    assert len(mh.shingle_set(plain, "prose")) == 6  # 10 words, 5-word shingles
    # '_' joins a code identifier but separates prose words; numbers are words
    assert len(mh.shingle_set("a_b c d e f", "code")) == 1
    assert len(mh.shingle_set("a_b c d e f", "prose")) == 2
    assert not np.array_equal(mh.shingle_set("cost is 12 rupees for 3 pens", "prose"),
                              mh.shingle_set("cost is 15 rupees for 3 pens", "prose"))
    with pytest.raises(ValueError, match="shingle kind must be one of code, prose, got 'x'"):
        mh.signatures([b"a"], "x")


def test_a_signature_depends_on_its_document_only_and_short_documents_are_unsigned():
    rng = random.Random(1)
    docs = [" ".join(words(rng, rng.randint(0, 300))).encode() for _ in range(60)]
    docs += [b"", b"one two three four", "non-ASCII wörter “quoted” — ok".encode() * 3]
    for kind in mh.KINDS:
        batch = mh.signatures(docs, kind)
        for i, d in enumerate(docs):
            one = mh.signatures([d], kind)
            assert np.array_equal(one.sig[0], batch.sig[i])
            assert np.array_equal(one.bands[0], batch.bands[i])
            assert one.shingles[0] == batch.shingles[i] == max(0, len(d.split()) - 4) or \
                b"\xe2" in d
        short = batch.shingles < 10
        assert short.any() and not batch.signed[short].any()
        assert not batch.sig[short].any() and not batch.bands[short].any()
        assert batch.signed[~short].all()
        long = batch.shingles > 200  # a band without a shingle in its 8 bins has no key
        assert long.sum() > 20 and (batch.bands[long] != 0).all()


def test_the_estimate_follows_exact_jaccard_and_agrees_with_datasketch():
    datasketch = pytest.importorskip("datasketch")
    rng = random.Random(2)
    pairs = []
    for changes in (0, 1, 2, 4, 8, 16, 40, 100):
        for _ in range(5):
            base = words(rng, rng.randint(150, 400))
            pairs.append((base, variant(base, rng, changes)))
    raw = [" ".join(w).encode() for p in pairs for w in p]
    s = mh.signatures(raw, "prose")
    ours, exact, oracle = [], [], []
    for k in range(len(pairs)):
        a, b = 2 * k, 2 * k + 1
        sa, sb = (mh.shingle_set(raw[i], "prose") for i in (a, b))
        exact.append(mh.jaccard(sa, sb))
        ours.append(float(mh.estimate(s.sig[a], s.sig[b])))
        m = [datasketch.MinHash(num_perm=128, seed=1) for _ in range(2)]
        for h, x in zip(m, (sa, sb), strict=True):
            h.update_batch([v.tobytes() for v in x])
        oracle.append(m[0].jaccard(m[1]))
    ours, exact, oracle = map(np.array, (ours, exact, oracle))
    assert np.abs(ours - exact).max() < 0.12 and np.abs(oracle - exact).max() < 0.12
    assert np.abs(ours - exact).mean() < 0.04 and abs((ours - exact).mean()) < 0.02
    clear = np.abs(exact - 0.8) > 0.1  # away from the threshold the decisions are the same
    assert ((ours >= 0.8) == (oracle >= 0.8))[clear].all()
    assert ((ours >= 0.8) == (exact >= 0.8))[clear].all()


def test_bands_meet_for_near_duplicates_and_not_for_distinct_documents():
    rng = random.Random(3)
    base = [words(rng, 200) for _ in range(50)]
    near = [variant(w, rng, 2) for w in base]  # exact Jaccard ~0.9
    raw = [" ".join(w).encode() for w in base + near]
    s = mh.signatures(raw, "prose")
    i, j = mh.bucket_pairs(s.bands)
    assert (j < i).all()
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    assert found == {(50 + k, k) for k in range(50)}
    assert (mh.estimate(s.sig[i], s.sig[j]) > 0.8).all()
    assert mh.bucket_pairs(s.bands, cap=1)[0].size == 50


def test_cross_pairs_equal_a_brute_force_reference():
    rng = random.Random(4)
    train = [words(rng, rng.randint(50, 300)) for _ in range(120)]
    evals = [variant(train[k], rng, 1) for k in (3, 50, 119)] + [variant(train[7], rng, 60)]
    evals += [words(rng, 100) for _ in range(20)]
    train_t, eval_t = [" ".join(w) for w in train], [" ".join(w) for w in evals]
    got = list(mh.cross_pairs(iter(train_t), eval_t, "prose", batch_bytes=5000))
    ref = []
    for a, t in enumerate(train_t):
        for b, e in enumerate(eval_t):
            if mh.jaccard(mh.shingle_set(t, "prose"), mh.shingle_set(e, "prose")) >= 0.8:
                ref.append((a, b))
    assert [(a, b) for a, b, _ in got] == ref == [(3, 0), (50, 1), (119, 2)]
    assert all(0.8 <= e <= 1 for _, _, e in got)
    assert list(mh.cross_pairs(iter(train_t), [], "prose")) == []
