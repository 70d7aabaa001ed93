r"""Content-token n-grams as 64-bit hashes, and an index that answers "is this n-gram in the set?".

Shared by `shards audit` (the eval side's n-grams are the index, train streams against it) and
by prep's benchmark decontamination (the benchmarks' n-grams are the index, each train document
is looked up), so both hash identically: same table, same base, same n, same tokens skipped.

**Content tokens.** An n-gram is n consecutive *content* tokens of one document: the GPT-2 ids
whose bytes are whitespace only are left out before windows are formed (`content_mask`): GPT-2
has no token for a run of spaces, so on all tokens newline + 8 spaces + ``return self.`` would be
a 13-gram of most Python functions (docs/prep.md has the figures). A token is whitespace-only
when its bytes decode as UTF-8 to characters that all have the Unicode White_Space property
(tab, LF, VT, FF, CR, space, U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F,
U+205F, U+3000; not the separators U+001C-U+001F that Python's ``str.isspace`` adds, not
zero-width characters). In GPT-2's vocabulary that is 19 ids (``\t``
``\n`` ``\v`` ``\f`` ``\r`` ``" "`` ``"\n\n"`` and 12 tokens of no-break spaces, some with
spaces or a newline; pinned in tests/test_ngrams.py). A token that is a fragment of a multi-byte
whitespace character (U+3000 is two tokens) is not whitespace by itself and stays. Ids >= the
vocabulary (a damaged shard) are never skipped, and EOT stays: it separates documents.

GPT-2 puts a word's leading space in the word's token (" return"), so code re-indented with
spaces (4 -> 8, 8 -> 2, quoted deeper) has the same content tokens: the indentation is " "
tokens. A tab (or column 0) leaves the word without it ("\treturn" is ``\t`` + ``return``): a
spaces -> tabs copy changes the first content token of each line and matches only inside lines
of n or more content tokens (tests/test_ngrams.py shows both on real code).

**Hash.** A polynomial over per-token random words, modulo 2^64, of the content tokens c::

    h(c[i : i+n]) = sum_j TABLE[c[i+j]] * BASE**j   (mod 2^64)

TABLE holds 65,536 words from splitmix64 (any uint16 id, valid or damaged, hashes), BASE is odd.
Every window of an array is hashed with a handful of vectorised passes and no loop per token:
with S[k] = sum_{m<k} TABLE[x[m]] * BASE**m, the window at i is (S[i+n] - S[i]) * BASE**-i (odd
numbers are invertible modulo 2^64). Arrays are hashed in blocks of BLOCK windows, so memory
stays a few MB whatever the input. Two different n-grams share a hash with probability ~2^-64.
`window_hashes` hashes every window of the array it is given; `ngrams` keeps the content tokens
(a table lookup and a compress) and hashes their windows.

**Documents.** An n-gram never crosses a document boundary: a window that contains EOT is not an
n-gram (documents end with EOT in the shards). A document with fewer than n content tokens has
none.

**Index** (`NgramIndex`): the sorted unique hashes (8 bytes each), an optional owner per hash
(which benchmark file, which domain: the smallest owner id wins when several share a hash), a
blocked Bloom filter (16 bits per hash, one 64-bit word per lookup) that rejects almost every
absent hash with one memory access, and a bucket directory over the sorted hashes for the exact
check of the few the filter lets through. Measured in ``python -m shards.bench --index``: a plain
``np.searchsorted`` answers 0.6-3 M lookups/s at 1-30 M hashes, the filter in front of it
80-130 M/s, so the index keeps both (docs/checking.md has the figures).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from shards import atomic

NGRAM = 13  # tokens per n-gram: the audit's and decontamination's default
HASH_VERSION = "poly64-splitmix-content-v2"  # part of every saved index's identity
# v1 hashed windows of all tokens; v2 windows of content tokens (whitespace-only ids skipped)
HASH_SEED = 0x6E6772616D73  # "ngrams"
BLOCK = 1 << 16  # windows hashed per vectorised pass
BLOOM_BITS_PER_KEY = 16
BLOOM_PATTERNS = 4096  # precomputed 64-bit masks (a hash picks one by its low 12 bits)
BLOOM_K = 8  # bits set in each mask
BUCKET_KEYS = 1  # at least this many hashes per directory bucket, on average (1 to 2)
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                       + "".join(map(chr, range(0x2000, 0x200B))))  # Unicode White_Space

_M64 = (1 << 64) - 1
U64 = np.uint64


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's output function of each uint64 in `x` (Steele et al. 2014), vectorised."""
    z = x.astype(U64) + U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


@functools.cache
def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TABLE[65536], BASE**m and BASE**-m for m < BLOCK + the largest n), computed once."""
    table = splitmix64(np.arange(65536, dtype=U64) + U64(HASH_SEED))
    base = int(splitmix64(np.array([HASH_SEED], dtype=U64))[0]) | 1
    inv = base  # Newton's iteration for the inverse modulo 2^64
    for _ in range(6):
        inv = (inv * (2 - base * inv)) & _M64
    size = 2 * BLOCK
    pw = np.full(size, base, dtype=U64)
    pw[0] = 1
    ipw = np.full(size, inv, dtype=U64)
    ipw[0] = 1
    return table, np.cumprod(pw, dtype=U64), np.cumprod(ipw, dtype=U64)


def _check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= BLOCK:
        raise ValueError(f"n-gram length must be an integer in 1..{BLOCK}, got {n!r}")


def _hash_block(x: np.ndarray, n: int) -> np.ndarray:
    """Hashes of the len(x) - n + 1 windows of `x` (len(x) <= BLOCK + n - 1)."""
    table, pw, ipw = _tables()
    v = table[x]
    v *= pw[:len(x)]
    s = np.empty(len(x) + 1, dtype=U64)
    s[0] = 0
    np.cumsum(v, out=s[1:])
    h = s[n:] - s[:-n]
    h *= ipw[:len(h)]
    return h


def iter_window_hashes(tokens: np.ndarray, n: int = NGRAM) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, hashes) of every n-token window of `tokens`, BLOCK windows at a time.

    Windows with EOT inside are included (see `eot_free`); `tokens` may be a memmap view.
    """
    _check_n(n)
    count = len(tokens) - n + 1
    for start in range(0, max(count, 0), BLOCK):
        stop = min(start + BLOCK, count)
        yield start, _hash_block(tokens[start:stop + n - 1], n)


def window_hashes(tokens: np.ndarray, n: int = NGRAM) -> np.ndarray:
    """Hashes of all len(tokens) - n + 1 windows (EOT or not), as one uint64 array."""
    parts = [h for _, h in iter_window_hashes(tokens, n)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=U64)


def eot_free(starts: np.ndarray, eot_positions: np.ndarray, n: int) -> np.ndarray:
    """Which windows starting at `starts` hold no EOT (`eot_positions`: sorted, same origin)."""
    if not len(eot_positions):
        return np.ones(len(starts), dtype=bool)
    j = np.searchsorted(eot_positions, starts)
    nxt = eot_positions[np.minimum(j, len(eot_positions) - 1)]
    return (j == len(eot_positions)) | (nxt >= starts + n)


@functools.cache
def content_mask() -> np.ndarray:
    """bool[65536]: False for the GPT-2 ids whose bytes are whitespace only (see the module
    docstring), True for every other id: words, EOT, ids outside the vocabulary. Built once per
    process from the shipped ranks; read-only."""
    from shards.tokenizer import load_ranks
    mask = np.ones(65536, dtype=bool)
    mask[[t for raw, t in load_ranks().items() if is_whitespace(raw)]] = False
    mask.flags.writeable = False
    return mask


def is_whitespace(raw: bytes) -> bool:
    """Whether `raw` is non-empty UTF-8 whose characters are all Unicode White_Space."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text) and all(c in WHITESPACE for c in text)


def content(tokens: np.ndarray) -> np.ndarray:
    """The content tokens of `tokens` (whitespace-only ids left out, EOT kept): a new array, or
    `tokens` itself when it has no whitespace-only token (do not write to it)."""
    tokens = np.asarray(tokens)
    keep = content_mask().take(tokens)  # take and compress: ~2x faster than [] indexing
    return tokens if keep.all() else np.compress(keep, tokens)


def ngrams(tokens: np.ndarray, eot_id: int, n: int = NGRAM) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, starts) of the n-grams of `tokens`: the windows of its content tokens that hold
    no `eot_id`; each start is the position in `tokens` of the n-gram's first content token."""
    tokens = np.asarray(tokens)
    where = np.flatnonzero(content_mask().take(tokens))
    c = tokens[where]
    h = window_hashes(c, n)
    starts = np.arange(len(h), dtype=np.int64)
    keep = eot_free(starts, np.flatnonzero(c == eot_id), n)
    return h[keep], where[starts[keep]]


# --------------------------------------------------------------------------- the index


@functools.cache
def _bloom_masks() -> np.ndarray:
    """BLOOM_PATTERNS 64-bit masks with BLOOM_K distinct bits each (seeded, fixed)."""
    rng = np.random.Generator(np.random.PCG64(HASH_SEED))
    bits = np.argsort(rng.random((BLOOM_PATTERNS, 64)), axis=1)[:, :BLOOM_K].astype(U64)
    return np.bitwise_or.reduce(U64(1) << bits, axis=1)


def _bloom_slots(h: np.ndarray, words: int) -> tuple[np.ndarray, np.ndarray]:
    """(word index, mask) of each hash: the word from the top 32 bits, the mask from the low 12."""
    w = ((h >> U64(32)) * U64(words)) >> U64(32)  # < 2^32: viewing it as int64 is exact
    return w.view(np.int64), _bloom_masks()[(h & U64(BLOOM_PATTERNS - 1)).view(np.int64)]


def sort_unique_inplace(h: np.ndarray) -> np.ndarray:
    """Sort `h` in place and return its unique values in `h`'s own buffer, shrunk to fit (no
    copy of the whole array: peak memory is `h` plus one small block)."""
    h.sort()
    if len(h) < 2:
        return h
    out = 1
    step = 1 << 20
    for start in range(1, len(h), step):
        block = h[start:start + step]
        keep = block != h[start - 1:start - 1 + len(block)]
        k = int(np.count_nonzero(keep))
        h[out:out + k] = block[keep]  # out <= start: never overwrites what is still to be read
        out += k
    if h.flags.owndata and h.flags.c_contiguous:
        h.resize((out,), refcheck=False)  # give the tail back (realloc shrinks in place)
        return h
    return h[:out]


class NgramIndex:
    """A set of n-gram hashes with fast membership and, optionally, an owner per hash.

    Build with :meth:`build` (or :meth:`from_sorted`), query with :meth:`lookup` (position of each
    hash in `hashes`, -1 when absent) or :meth:`contains`; :meth:`save`/:meth:`load` keep it as
    .npy files that several processes can map without copying.
    """

    def __init__(self, n: int, hashes: np.ndarray, owners: np.ndarray | None = None,
                 bloom: np.ndarray | None = None, directory: np.ndarray | None = None) -> None:
        _check_n(n)
        self.n = n
        self.hashes = hashes  # sorted, unique uint64
        self.owners = owners  # int32 per hash, or None
        self.bloom = bloom if bloom is not None else self._make_bloom(hashes)
        self.bits = max(0, int(np.log2(max(len(hashes), 1) / BUCKET_KEYS)))
        self.directory = directory if directory is not None else self._make_directory(hashes)

    # -------------------------------------------------------------- building
    @classmethod
    def build(cls, hashes: np.ndarray, n: int = NGRAM, owners: np.ndarray | None = None,
              *, in_place: bool = False) -> NgramIndex:
        """The index of `hashes` (any order, repeats allowed). With `owners` (one small
        non-negative int per hash), each unique hash keeps the smallest owner it came with.
        `in_place`: sort `hashes` itself (no copy: 8 bytes per hash at peak, not 16)."""
        if owners is None:
            h = hashes if in_place else np.array(hashes, dtype=U64)
            return cls(n, sort_unique_inplace(h))
        if len(owners) != len(hashes):
            raise ValueError(f"{len(owners)} owners for {len(hashes)} hashes")
        order = np.lexsort((owners, hashes))  # by hash, then owner: the first of a run is min
        h = hashes[order]
        first = np.ones(len(h), dtype=bool)
        first[1:] = h[1:] != h[:-1]
        return cls(n, h[first], np.asarray(owners)[order][first].astype(np.int32))

    @classmethod
    def from_parts(cls, parts: Iterable[tuple[np.ndarray, int]], n: int = NGRAM) -> NgramIndex:
        """The index of several hash arrays, each with its owner id (in any order)."""
        hs, os_ = [], []
        for h, owner in parts:
            u = sort_unique_inplace(np.array(h, dtype=U64))
            hs.append(u)
            os_.append(np.full(len(u), owner, dtype=np.int32))
        if not hs:
            return cls(n, np.zeros(0, U64), np.zeros(0, np.int32))
        return cls.build(np.concatenate(hs), n, np.concatenate(os_))

    @staticmethod
    def _make_bloom(h: np.ndarray) -> np.ndarray:
        words = max(1, -(-len(h) * BLOOM_BITS_PER_KEY // 64))
        bloom = np.zeros(words, dtype=U64)
        for start in range(0, len(h), 1 << 20):  # blocks: ~30 bytes per hash of temporaries
            w, m = _bloom_slots(h[start:start + (1 << 20)], words)  # w sorted, as h is
            first = np.flatnonzero(np.r_[True, w[1:] != w[:-1]])
            bloom[w[first]] |= np.bitwise_or.reduceat(m, first)
        return bloom

    def _make_directory(self, h: np.ndarray) -> np.ndarray:
        """Start of each bucket (hashes whose top `bits` bits are its number) in `hashes`."""
        dtype = np.uint32 if len(h) < (1 << 32) else np.int64
        if self.bits == 0:
            return np.array([0, len(h)], dtype=dtype)
        out = np.empty((1 << self.bits) + 1, dtype=dtype)
        out[-1] = len(h)
        step = 1 << 20
        for start in range(0, 1 << self.bits, step):  # blocks: no per-bucket temporaries
            firsts = np.arange(start, min(start + step, 1 << self.bits), dtype=U64)
            out[start:start + len(firsts)] = np.searchsorted(h, firsts << U64(64 - self.bits))
        return out

    # -------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def nbytes(self) -> int:
        extra = self.owners.nbytes if self.owners is not None else 0
        return self.hashes.nbytes + self.bloom.nbytes + self.directory.nbytes + extra

    def maybe(self, h: np.ndarray) -> np.ndarray:
        """Bloom filter: False means absent for sure; True means probably present (~0.5% of
        absent hashes pass)."""
        w, m = _bloom_slots(h, len(self.bloom))
        return (self.bloom[w] & m) == m

    def find(self, h: np.ndarray) -> np.ndarray:
        """Exact: the position of each hash in `hashes`, -1 where absent (no filter)."""
        h = np.asarray(h, dtype=U64)
        if len(h) <= BLOCK:
            return self._find(h)
        out = np.empty(len(h), dtype=np.int64)
        for start in range(0, len(h), BLOCK):  # blocks: the temporaries stay in cache
            out[start:start + BLOCK] = self._find(h[start:start + BLOCK])
        return out

    def _find(self, h: np.ndarray) -> np.ndarray:
        if not len(h) or not len(self.hashes):
            return np.full(len(h), -1, dtype=np.int64)
        if self.bits:
            bucket = (h >> U64(64 - self.bits)).view(np.int64)
        else:
            bucket = np.zeros(len(h), dtype=np.int64)
        pos = self.directory[bucket].astype(np.int64)
        end = self.directory[bucket + 1].astype(np.int64)
        v = self.hashes[np.minimum(pos, len(self.hashes) - 1)]
        out = np.where(v == h, pos, -1)  # the bucket's first hash: most lookups end here
        todo = np.flatnonzero((v < h) & (pos + 1 < end))
        while len(todo):  # walk on through the bucket (sorted, 1-2 long on average)
            p = pos[todo] + 1
            pos[todo] = p
            v = self.hashes[p]
            q = h[todo]
            hit = v == q
            out[todo[hit]] = p[hit]
            todo = todo[(v < q) & (p + 1 < end[todo])]
        return out

    def lookup(self, h: np.ndarray) -> np.ndarray:
        """`find` behind the Bloom filter: the fast path for mostly absent hashes."""
        out = np.full(len(h), -1, dtype=np.int64)
        cand = np.flatnonzero(self.maybe(h))
        if len(cand):
            out[cand] = self.find(h[cand])
        return out

    def contains(self, h: np.ndarray) -> np.ndarray:
        return self.lookup(h) >= 0

    # -------------------------------------------------------------- files
    def save(self, path: Path, meta: dict | None = None, *, replace: bool = True) -> None:
        """Write the index as a directory of .npy files and index.json, atomically: the files
        go to a temporary directory that is renamed to `path` (an existing `path` is replaced;
        with ``replace=False`` it is kept and this copy discarded: for an index named by its
        content, which another process may have saved first and be reading)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        arrays = {"hashes": self.hashes, "bloom": self.bloom, "directory": self.directory}
        if self.owners is not None:
            arrays["owners"] = self.owners
        for name, a in arrays.items():
            with atomic.atomic_open(tmp / f"{name}.npy") as f:
                np.save(f, np.ascontiguousarray(a))
        info = {"hash": HASH_VERSION, "n": self.n, "hashes": len(self.hashes),
                "arrays": sorted(arrays), "meta": meta or {}}
        atomic.write_text(tmp / "index.json", json.dumps(info, indent=1, sort_keys=True) + "\n")
        if path.exists():
            if not replace:
                shutil.rmtree(tmp)
                return
            shutil.rmtree(path)
        try:
            os.rename(tmp, path)
        except OSError:  # saved by another process since the check above
            if replace or not path.exists():
                raise
            shutil.rmtree(tmp)
            return
        atomic.fsync_dir(path.parent)

    @classmethod
    def load(cls, path: Path, *, mmap: bool = True) -> tuple[NgramIndex, dict]:
        """(index, meta) from :meth:`save`'s directory; arrays memory-mapped read-only by
        default, so processes loading the same index share its pages."""
        path = Path(path)
        info = json.loads((path / "index.json").read_text(encoding="utf-8"))
        if info.get("hash") != HASH_VERSION:
            raise ValueError(f"{path}: n-gram index made with hash {info.get('hash')!r}, this "
                             f"version hashes with {HASH_VERSION!r}; rebuild it")
        mode = "r" if mmap else None
        a = {name: np.load(path / f"{name}.npy", mmap_mode=mode) for name in info["arrays"]}
        index = cls(int(info["n"]), a["hashes"], a.get("owners"), a["bloom"], a["directory"])
        return index, info.get("meta", {})

