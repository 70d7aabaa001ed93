"""MinHash signatures of documents and near-duplicate pairs: pure numpy, text in -> signature out.

prep's near-duplicate step (`prep.neardup`) and `shards audit` compute the same signatures with
this module, so a pair prep would have clustered is found again in a finished dataset.

**Shingles.** A document is cut into words, and every run of ``ngram`` (5) consecutive words is a
shingle. Two kinds of words (:data:`KINDS`):

- ``code``: maximal runs of identifier bytes (``[A-Za-z0-9_]`` and every byte >= 0x80, i.e.
  non-ASCII characters); case is kept. Re-indenting, re-wrapping or re-spacing changes nothing.
- ``prose``: maximal runs of letters and digits (ASCII alphanumerics and non-ASCII characters,
  minus the Latin-1 punctuation U+00A0-U+00BF and the general punctuation U+2000-U+206F: curly
  quotes, dashes, ellipses, special spaces), case-folded by setting bit 5 of every byte (ASCII
  letters and the capitals of Latin-1, Greek and most Cyrillic fold to their lowercase; digits
  are unchanged). Punctuation and whitespace are separators, so both are normalised away. Numbers
  are words like any other (two problems from one template with other numbers stay distinct).

**Hashes.** A word's hash is a 64-bit function of its bytes, read as little-endian 8-byte chunks
through an unaligned view (no per-byte arithmetic), each chunk mixed with the splitmix64
finaliser. A shingle's hash is the polynomial of its words' hashes (Rabin-Karp over words),
mixed again with the seed: a seeded random permutation of 64-bit shingle hashes.

**Signature.** One-permutation hashing (Li, Owen, Zhang 2012): the top bits of a shingle's
permuted hash choose one of ``bins`` (128) bins, and each bin keeps the minimum permuted hash of
the document's shingles that fall into it: one pass over the shingles, whatever the number of
bins. Two documents' signatures are compared over the bins not empty in both (the OPH
estimator: agreeing bins / bins not empty in both; measured on the labelled set of
`prep.bench.neardup` it beats optimal densification, whose copied bins are correlated). The
signature stores each bin's low 16 bits, 0 for an empty bin (b-bit MinHash, Li and König 2010:
a false agreement costs 2**-16 per bin), and ``bands`` LSH band keys, each a 64-bit hash of
``rows`` consecutive bins' full values (0: every bin of the band is empty, no key). Documents
with fewer than ``min_shingles`` shingles have no meaningful signature: :attr:`Signatures.signed`
is False for them, their row is all 0 (exact dedup covers them).

Everything is vectorised across a batch of documents (one call per ~1 MB of text): the cost per
byte is a few numpy passes over the bytes (word boundaries) and over the words (hashes).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

KINDS = ("code", "prose")
U64 = np.uint64
EMPTY = np.iinfo(np.uint64).max
BATCH_BYTES = 1 << 20  # text per vectorised call in the helpers below
_M1, _M2 = U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB)
_POLY = U64(0x100000001B3)  # the shingle polynomial's base (odd)
_FOLD = U64(0x2020202020202020)
_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


@dataclass(frozen=True)
class MinHashParams:
    """What a signature is a function of (recorded in the manifest): two signatures compare
    only if made with the same parameters."""

    ngram: int = 5  # words per shingle
    bands: int = 14  # LSH bands ...
    rows: int = 8  # ... of this many bins each (bands * rows <= bins)
    bins: int = 128  # one-permutation hashing bins (a power of two): the signature's length
    min_shingles: int = 10  # fewer: no signature (exact dedup only)
    seed: int = 0x6E656172  # the permutation; never the shuffle seed

    def __post_init__(self) -> None:
        if not (1 <= self.ngram <= 16 and self.rows >= 1 and self.bands >= 1
                and self.bands * self.rows <= self.bins <= 4096 and self.min_shingles >= 1
                and self.bins & (self.bins - 1) == 0):
            raise ValueError(f"MinHashParams out of range: {self}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


DEFAULT_PARAMS = MinHashParams()
DEFAULT_THRESHOLD = 0.8  # estimated Jaccard at which two documents are near-duplicates
DEFAULT_KIND = {"code": "code"}  # shingle kind by domain name; any other domain: prose


def default_kind(domain: str) -> str:
    """The shingle kind of a domain that names none: code for a domain named code, else prose."""
    return DEFAULT_KIND.get(domain, "prose")


@dataclass
class Signatures:
    """The signatures of a batch of documents, row i for document i."""

    shingles: np.ndarray  # (n,) uint32: shingle positions (0 for fewer words than ngram)
    sig: np.ndarray  # (n, bins) uint16: each bin's low 16 bits (0 where unsigned)
    bands: np.ndarray  # (n, bands) uint64: LSH band keys (0 where unsigned)
    min_shingles: int

    @property
    def signed(self) -> np.ndarray:
        return self.shingles >= self.min_shingles

    def __len__(self) -> int:
        return len(self.shingles)


def _mix(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    """splitmix64's finaliser (a bijection of uint64): into a new array, or in place."""
    x = x if inplace else x.copy()
    t = np.empty_like(x)  # one temporary, reused: fewer passes over fresh memory
    for shift, mult in ((30, _M1), (27, _M2)):
        np.right_shift(x, U64(shift), out=t)
        x ^= t
        x *= mult
    np.right_shift(x, U64(31), out=t)
    x ^= t
    return x


def _unicode_punctuation(buf: np.ndarray, w: np.ndarray) -> None:
    """Clear `w` on the bytes of U+00A0-U+00BF and U+2000-U+206F (prose separators)."""
    c2 = np.flatnonzero(buf[:-1] == 0xC2)
    if len(c2):
        c2 = c2[buf[c2 + 1] >= 0xA0]  # continuation bytes are <= 0xBF
        w[c2] = False
        w[c2 + 1] = False
    e2 = np.flatnonzero(buf[:-2] == 0xE2)
    if len(e2):
        b1, b2 = buf[e2 + 1], buf[e2 + 2]
        e2 = e2[(b1 == 0x80) | ((b1 == 0x81) & (b2 < 0xB0))]
        for k in range(3):
            w[e2 + k] = False


def _word_hashes(raws: Sequence[bytes], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(word hashes uint64, each document's first word, with the word count appended) of a
    batch, words in text order. A word of <= 8 bytes hashes to a bijection of its bytes (no
    collisions); longer words chain their 8-byte chunks through the mixer."""
    if kind not in KINDS:
        raise ValueError(f"shingle kind must be one of {', '.join(KINDS)}, got {kind!r}")
    data = b"\n" + b"\n".join(raws) + b"\n"  # separators around every document
    buf = np.frombuffer(data + bytes(8), dtype=np.uint8)  # zero padding: 8-byte reads past
    body = buf[:len(data)]
    w = np.bitwise_or(body, 0x20)
    w -= np.uint8(97)
    w = w < 26  # letters
    w |= (body - np.uint8(48)) < 10  # digits
    w |= body >= 0x80
    if kind == "code":
        w |= body == 95
    else:
        _unicode_punctuation(body, w)
    edges = np.flatnonzero(w[1:] != w[:-1])
    edges += 1
    start, end = edges[0::2], edges[1::2]
    length = end - start
    at = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf.data, strides=(1,))  # unaligned
    h = at[start]
    if kind == "prose":
        h |= _FOLD
    h &= _MASKS[np.minimum(length, 8)]
    h *= _M1  # a bijection: words of <= 8 bytes never collide
    ext = np.flatnonzero(length > 8)
    if len(ext):  # every later 8-byte chunk of the longer words, added in mixed with its place
        more = (length[ext] - 1) >> 3
        lead = np.cumsum(more) - more
        word = np.repeat(ext, more)
        k = np.arange(len(word)) - np.repeat(lead, more) + 1
        chunk = at[start[word] + 8 * k]
        if kind == "prose":
            chunk |= _FOLD
        chunk &= _MASKS[np.minimum(length[word] - 8 * k, 8)]
        chunk ^= k.astype(U64) * _M2
        h[ext] += np.add.reduceat(_mix(chunk), lead)
    firsts = np.zeros(len(raws) + 1, dtype=np.int64)  # each document's first byte in `buf`
    firsts[1:] = np.cumsum([len(r) + 1 for r in raws])
    firsts += 1
    return h, np.searchsorted(start, firsts)


def shingle_hashes(raws: Sequence[bytes], kind: str, ngram: int = 5,
                   seed: int = DEFAULT_PARAMS.seed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(permuted 64-bit shingle hashes, the document of each, shingles per document) of a
    batch, shingles in text order; a shingle across two documents has document ``len(raws)``.
    """
    h, first = _word_hashes(raws, kind)
    counts = np.maximum(np.diff(first) - (ngram - 1), 0)  # shingles per document
    n = len(h) - ngram + 1
    if n <= 0 or not counts.any():
        return np.zeros(0, U64), np.zeros(0, np.int64), counts
    sh = h[:n].copy()
    for j in range(1, ngram):
        sh *= _POLY
        sh += h[j:n + j]
    sh ^= U64(seed & 0xFFFFFFFFFFFFFFFF)
    z = _mix(sh, inplace=True)
    doc = np.repeat(np.arange(len(counts), dtype=np.int64), np.diff(first))[:n]
    # the last ngram - 1 positions of each document start shingles that straddle two documents
    tail = (first[1:, None] - np.arange(1, ngram)[None, :]).ravel()
    doc[tail[(tail >= np.repeat(first[:-1], ngram - 1)) & (tail < n)]] = len(counts)
    return z, doc, counts


def shingle_set(text: str | bytes, kind: str, ngram: int = 5) -> np.ndarray:
    """The distinct shingle hashes of one document (sorted): exact Jaccard, for tests and the
    accuracy bench."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    z, doc, _ = shingle_hashes([raw], kind, ngram)
    return np.unique(z[doc == 0])


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted sets of shingle hashes (1.0 for two empty)."""
    union = len(np.union1d(a, b))
    return len(np.intersect1d(a, b, assume_unique=True)) / union if union else 1.0


def signatures(raws: Sequence[bytes], kind: str,
               params: MinHashParams = DEFAULT_PARAMS) -> Signatures:
    """The signatures of a batch of documents (UTF-8 bytes), row i for document i; each row
    depends only on its document (not on the batch)."""
    n, bins = len(raws), params.bins
    bits = bins.bit_length() - 1
    z, doc, counts = shingle_hashes(raws, kind, params.ngram, params.seed)
    doc <<= bits
    doc |= (z >> U64(64 - bits)).astype(np.int64)  # the bin: the top bits
    table = np.full((n + 1) << bits, EMPTY, dtype=U64)  # row n: shingles across documents
    np.minimum.at(table, doc, z)
    table = table[:n << bits].reshape(n, bins)
    signed = counts >= params.min_shingles
    sig = table.astype(np.uint16)
    sig[sig == 0] = 1
    sig[table == EMPTY] = 0
    sig[~signed] = 0
    bands = band_keys(table, params)
    bands[~signed] = 0
    return Signatures(counts.astype(np.uint32), sig, bands, params.min_shingles)


def band_keys(table: np.ndarray, params: MinHashParams) -> np.ndarray:
    """(n, bands) uint64: each band's key, a hash of its rows' 32-bit bin values."""
    n = len(table)
    used = table[:, :params.bands * params.rows].reshape(n, params.bands, params.rows)
    key = (used * _row_weights(params.rows, params.seed)).sum(axis=2, dtype=U64)
    key += np.arange(params.bands, dtype=U64)
    key = _mix(key)
    key[key == 0] = 1
    key[(used == EMPTY).all(axis=2)] = 0  # no shingle in the band: no key
    return key


@functools.lru_cache(maxsize=8)
def _row_weights(rows: int, seed: int) -> np.ndarray:
    """Random odd multipliers of a band's rows (a universal hash of the row values)."""
    return _mix(np.arange(rows, dtype=U64) + U64(seed & 0xFFFFFFFF)) | U64(1)


def estimate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of signatures (row-wise for (n, bins) arrays): the share of
    bins they agree in among the bins not empty in both (Li, Owen, Zhang 2012)."""
    a, b = np.asarray(a), np.asarray(b)
    match = ((a == b) & (a != 0)).sum(axis=-1)
    return match / np.maximum(((a != 0) | (b != 0)).sum(axis=-1), 1)


def batches(texts: Iterable[str | bytes], max_bytes: int = BATCH_BYTES
            ) -> Iterator[list[bytes]]:
    """UTF-8 documents in consecutive batches of about `max_bytes` of text."""
    batch: list[bytes] = []
    size = 0
    for t in texts:
        raw = t.encode("utf-8") if isinstance(t, str) else t
        batch.append(raw)
        size += len(raw)
        if size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def bucket_pairs(keys: np.ndarray, cap: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs within one set: (i, j), j < i, rows sharing a non-zero key in some
    column (an LSH band), each row paired with at most the `cap` earliest rows of each of its
    buckets. Unique, sorted by (i, j)."""
    n = len(keys)
    found = []
    pos = np.arange(n)
    for b in range(keys.shape[1] if n else 0):
        order = np.argsort(keys[:, b], kind="stable")  # buckets, rows in order within each
        k = keys[order, b]
        new = np.ones(n, dtype=bool)
        new[1:] = k[1:] != k[:-1]
        first = np.maximum.accumulate(np.where(new, pos, 0))
        rank = pos - first
        ok = (k != 0) & (rank > 0)
        m = np.minimum(rank[ok], cap)
        lead = np.cumsum(m) - m
        j = np.repeat(first[ok], m) + np.arange(int(m.sum())) - np.repeat(lead, m)
        found.append(np.repeat(order[ok], m).astype(np.int64) * n + order[j])
    code = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    return code // max(n, 1), code % max(n, 1)


class BandLookup:
    """The band keys of a fixed set of documents, sorted per band, for queries from another
    set: memory 16 bytes per (document, band)."""

    def __init__(self, bands: np.ndarray) -> None:
        self.order = np.argsort(bands, axis=0, kind="stable")
        self.keys = np.take_along_axis(bands, self.order, axis=0)

    def query(self, bands: np.ndarray, cap: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (query row, set row) sharing a non-zero band key, at most `cap` set rows per
        query and band (the first in set order); unique, sorted."""
        found = []
        n = len(self.keys)
        for b in range(bands.shape[1]):
            q = bands[:, b]
            left = np.searchsorted(self.keys[:, b], q, side="left")
            right = np.searchsorted(self.keys[:, b], q, side="right")
            m = np.where(q != 0, np.minimum(right - left, cap), 0)
            lead = np.cumsum(m) - m
            at = np.repeat(left, m) + np.arange(int(m.sum())) - np.repeat(lead, m)
            rows = np.repeat(np.arange(len(q)), m)
            found.append(rows.astype(np.int64) * max(n, 1) + self.order[at, b])
        code = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
        return code // max(n, 1), code % max(n, 1)


def cross_pairs(train_texts: Iterable[str | bytes], eval_texts: Sequence[str | bytes],
                kind: str, threshold: float = DEFAULT_THRESHOLD, params: MinHashParams = DEFAULT_PARAMS,
                batch_bytes: int = BATCH_BYTES, cap: int = 32
                ) -> Iterator[tuple[int, int, float]]:
    """Near-duplicate pairs across two sets (a finished dataset's train and eval documents of
    one domain, for `shards audit`): (train index, eval index, estimated Jaccard) for every
    pair whose LSH bands meet and whose estimate is >= `threshold`, in train order. Memory:
    the eval set's signatures and band index (~0.5 KB per eval document) and one batch of
    train documents (`batch_bytes` of text): the train side is streamed."""
    ev = [signatures(b, kind, params) for b in batches(eval_texts, batch_bytes)]
    if not ev:
        return
    sig = np.concatenate([s.sig for s in ev])
    index = BandLookup(np.concatenate([s.bands for s in ev]))
    done = 0
    for batch in batches(train_texts, batch_bytes):
        tr = signatures(batch, kind, params)
        i, j = index.query(tr.bands, cap)
        est = estimate(tr.sig[i], sig[j])
        ok = est >= threshold
        for a, b, e in zip(i[ok].tolist(), j[ok].tolist(), est[ok].tolist(), strict=True):
            yield done + a, b, e
        done += len(batch)
