"""The pieces that define a domain's document order: shuffle buffer, split, merge, dedup."""

import hashlib
import random

import numpy as np

from prep.dedup import KeySet, digest_keys, first_occurrences
from prep.order import merge, permutation, splitmix64, uniform_below
from prep.shuffle import ShuffleBuffer
from prep.split import EVAL, TRAIN, Splitter, assign_split, split_point


def test_shuffle_is_a_permutation_that_moves_items():
    items = list(range(5000))
    out = list(ShuffleBuffer(1000, seed=7)(iter(items)))
    assert sorted(out) == items  # every item exactly once
    assert out != items  # not a silent no-op
    moved = sum(a != b for a, b in zip(out, items, strict=False))
    assert moved > 4900


def test_shuffle_is_seeded():
    items = list(range(3000))
    a = list(ShuffleBuffer(500, seed="s:code")(items))
    assert a == list(ShuffleBuffer(500, seed="s:code")(items))
    assert a != list(ShuffleBuffer(500, seed="s:math")(items))


def test_shuffle_short_stream_and_buffer_of_one():
    assert sorted(ShuffleBuffer(100, seed=1)(range(10))) == list(range(10))
    assert list(ShuffleBuffer(1, seed=1)(range(10))) == list(range(10))  # size 1: identity


def test_shuffle_mixes_across_the_buffer():
    # with a full-size buffer the first output can come from anywhere in the stream
    firsts = {next(iter(ShuffleBuffer(1000, seed=s)(range(1000)))) for s in range(50)}
    assert max(firsts) > 500


def test_shuffle_bytes_bound_holds_and_output_starts_early():
    sizes = {i: 100 + (i * 37) % 900 for i in range(2000)}
    held: list[int] = []
    read = 0

    def stream():
        nonlocal read
        for i in range(2000):
            read += 1
            yield i

    out, read_at_first = [], None
    for x in ShuffleBuffer(10_000, seed=3, max_bytes=5000, size_of=sizes.get)(stream()):
        held.append(read - len(out) - 1)  # items read but not yet emitted, at each emission
        read_at_first = read if read_at_first is None else read_at_first
        out.append(x)
    assert sorted(out) == list(range(2000)) and out != list(range(2000))
    # never more than 5000 bytes held: at most ~5000/100 items, far below the 10,000 item cap
    assert max(held) <= 50
    assert read_at_first <= 51  # output started as soon as the bytes filled, not at the end


def test_shuffle_prefix_depends_only_on_input_prefix():
    full = list(ShuffleBuffer(50, seed=9)(range(1000)))
    part = list(ShuffleBuffer(50, seed=9)(range(600)))
    assert full[:550] == part[:550]  # the first 600 - 50 outputs need only 600 inputs


def test_split_is_a_pure_function_of_text_and_salt():
    docs = [f"document number {i}".encode() for i in range(20000)]
    splits = [assign_split(d, "salt-a", 0.05) for d in docs]
    assert splits == [assign_split(d, "salt-a", 0.05) for d in reversed(docs)][::-1]
    share = splits.count(EVAL) / len(splits)
    assert 0.04 < share < 0.06
    other = [assign_split(d, "salt-b", 0.05) for d in docs]
    assert other != splits  # the salt matters
    # a larger eval fraction only ever moves documents from train into eval
    wider = [assign_split(d, "salt-a", 0.10) for d in docs]
    assert all(w == EVAL for s, w in zip(splits, wider, strict=False) if s == EVAL)
    assert {TRAIN, EVAL} == set(splits)


def test_split_point_known_value_and_from_the_content_digest():
    # pinned: changing the hash construction would silently move documents between splits
    assert split_point(b"hello", "moe-shards-split-v1") == 0.5733946971478638
    digest = hashlib.sha256(b"hello").digest()
    point = int.from_bytes(hashlib.sha256(b"moe-shards-split-v1\x00" + digest).digest()[:8],
                           "big") / 2**64
    assert Splitter("moe-shards-split-v1").point(digest) == point == split_point(
        b"hello", "moe-shards-split-v1")


def test_counter_generator_is_pinned_and_vectorized():
    # splitmix64 reference values (seed 0): the stream must never change across versions
    assert [int(x) for x in splitmix64(0, 0, 3)] == [
        0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    assert (splitmix64(5, 10, 5) == splitmix64(5, 0, 15)[10:]).all()  # any window, same draws
    u = uniform_below(1, 0, 100_000, 8)
    assert u.min() == 0 and u.max() == 7 and abs(np.bincount(u).mean() - 12_500) < 1
    assert np.bincount(u).min() > 12_000
    assert sorted(permutation("k", 50)) == list(range(50)) and permutation("k", 50) != list(
        range(50)) and permutation("k", 50) == permutation("k", 50) != permutation("j", 50)


def test_merge_takes_every_document_once_in_each_partitions_order():
    counts = [300, 0, 120, 45]
    m = merge("g", counts, [True] * 4)
    assert m.stalled_on is None and len(m.part) == sum(counts)
    for j, c in enumerate(counts):
        assert (m.doc[m.part == j] == np.arange(c)).all()
    head = m.part[:60]  # early on, documents come from every non-empty partition
    assert set(head.tolist()) == {0, 2, 3}
    assert merge("g", counts, [True] * 4).part.tolist() == m.part.tolist()
    assert merge("h", counts, [True] * 4).part.tolist() != m.part.tolist()


def test_merge_of_a_capped_partition_is_a_prefix_of_the_full_merge():
    full = merge("g", [100, 50, 80], [True, True, True])
    capped = merge("g", [100, 10, 80], [True, False, True])
    n = len(capped.part)
    assert capped.stalled_on == 1 and 10 < n < 230
    assert (full.part[:n] == capped.part).all() and (full.doc[:n] == capped.doc).all()
    assert full.part[n] == 1 and full.doc[n] == 10  # where it stalled: partition 1's 11th doc


def test_leakage_check_compares_low_halves_where_high_halves_repeat(monkeypatch):
    from prep import dedup

    monkeypatch.setattr(dedup, "CHECK_CHUNK", 7)  # neighbours straddle the chunks
    hi = np.repeat(np.arange(50, dtype=np.uint64), 2)  # every 64-bit prefix twice ...
    lo = np.tile(np.array([5, 9], dtype=np.uint64), 50)  # ... with two different low halves
    ks = KeySet()
    for a, b in ((0, 30), (30, 60), (60, 100)):  # runs of 30 and 30 merge, then 40 merges
        ks.add(hi[a:b], lo[a:b])
    assert len(ks) == 100 and ks.all_unique()
    assert ks.contains(hi, lo).all() and not ks.contains(hi, lo + np.uint64(1)).any()
    ks.add(hi[73:74], lo[73:74])  # a key already there: the check must catch it
    assert not ks.all_unique()


def test_keyset_and_first_occurrences():
    digests = np.frombuffer(b"".join(hashlib.sha256(str(i).encode()).digest()
                                     for i in range(5000)), np.uint8).reshape(-1, 32)
    hi, lo = digest_keys(digests)
    ks = KeySet()
    for a, b in ((0, 1000), (1000, 1500), (1500, 3000)):
        ks.add(hi[a:b], lo[a:b])
    found = ks.contains(hi, lo)
    assert found[:3000].all() and not found[3000:].any() and len(ks) == 3000
    assert not ks.contains(hi[:10], lo[:10] ^ np.uint64(1)).any()  # same 64 bits, other key
    assert ks.nbytes == 16 * 3000 and ks.all_unique()
    ks.add(hi[:1], lo[:1])
    assert not ks.all_unique()
    rng = random.Random(0)
    seq = [rng.randrange(50) for _ in range(500)]
    x = np.array(seq, dtype=np.uint64)
    firsts = first_occurrences(x, x * np.uint64(3))
    assert firsts.tolist() == [seq.index(v) == i for i, v in enumerate(seq)]


def test_a_stalled_merge_resumed_with_more_documents_is_the_merge_of_all_of_them():
    """The commit resumes a group's merge where it stopped (a capped task read further, a
    stream's next piece): the segments, one after another, are the one merge of the totals."""
    rng = random.Random(5)
    for trial in range(200):
        k = rng.randint(1, 5)
        final = [rng.randint(0, 150) for _ in range(k)]
        whole = merge(f"t{trial}", final, [True] * k)
        counts = [min(f, rng.randint(0, 20)) for f in final]
        done = [c == f and rng.random() < 0.5 for c, f in zip(counts, final, strict=True)]
        state, parts, docs = None, [], []
        while True:
            m = merge(f"t{trial}", counts, done, state)
            parts.append(m.part)
            docs.append(m.doc)
            if m.stalled_on is None:
                break
            j = m.stalled_on
            counts[j] = min(final[j], counts[j] + rng.randint(0, 30))
            done[j] = counts[j] == final[j] and (done[j] or rng.random() < 0.7)
            state = m.state
        assert np.concatenate(parts).tolist() == whole.part.tolist()
        assert np.concatenate(docs).tolist() == whole.doc.tolist()
