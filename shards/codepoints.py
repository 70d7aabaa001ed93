"""Where a fast encoder's Unicode tables differ from tiktoken's, found code point by code point,
and the guard that sends the documents holding such a code point to tiktoken.

GPT-2's pretokenizer splits text by character class (``\\s``, ``\\p{L}``, ``\\p{N}``, the rest), so
an encoder whose Unicode tables are of another version writes other ids for every text holding
a code point the versions class differently. Measured (this module's scan): gigatoken 0.10.0
classes 4,657 code points as letters that tiktoken 0.12-0.14 does not (those new in Unicode 17:
CJK Extension J U+323B0-U+33479 and 25 smaller ranges); fastokens 0.3.5 classes one, U+180E
MONGOLIAN VOWEL SEPARATOR, as whitespace. Neither differs on any other code point probed.

The verdict on a backend's build: the scan, then the conformance corpus through the guard
(`shards.conformance`). The scan: every code point except surrogates goes into one short probe
text that puts it before a contraction, between a letter and a digit, after punctuation and
after whitespace (:func:`probe`); the probes of 256 code points make one block. A backend
encodes all 4,344 blocks (~50 MB of rare characters: gigatoken ~2.5 s, fastokens ~3.5 s, once)
and each block's ids are compared with tiktoken's digest, stored in the conformance corpus; in
a block that differs, each code point's probe is compared with tiktoken's ids. The verdict
depends only on the backend's build (version and compiled library's sha256), the ranks, the
corpus and this probe, so it is kept per process (a forked worker inherits its coordinator's)
and per machine (a small JSON file in ``~/.cache/moe-shards``, or ``$MOE_SHARDS_CACHE_DIR``;
``off`` turns it off): a worker loads its backend (~0.05 s) and looks the verdict up.

A backend whose divergent set holds an ASCII code point is refused: its documents cannot be
told apart cheaply (an ASCII document skips the guard), and it is broken beyond tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from shards import atomic
from shards.encoders import Encoder

PROBE_VERSION = 1
BLOCK = 256
N_BLOCKS = 0x110000 // BLOCK
MAX_PREFIXES = 32  # beyond this many UTF-8 prefixes, the guard uses its regex alone
CACHE_ENV = "MOE_SHARDS_CACHE_DIR"

Ranges = list[list[int]]  # [[first, last], ...] code points, sorted, inclusive


def probe(c: str) -> str:
    """The probe text of one code point: before a contraction, between a letter and a digit,
    after punctuation, after a whitespace run (each a different piece if its class differs)."""
    return f"{c}'s a{c}1 !{c}  {c}\n"


def block_points(b: int) -> range | list[int]:
    lo = b * BLOCK
    if 0xD800 <= lo < 0xE000:
        return []  # surrogates: not text
    return range(lo, lo + BLOCK)


def block_text(b: int) -> str:
    return "".join(probe(chr(c)) for c in block_points(b))


def _digest(ids: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(ids, dtype=np.uint16).tobytes(),
                           digest_size=16).hexdigest()


def block_digests(reference: Encoder, blocks: Iterable[int] = range(N_BLOCKS)) -> list[str]:
    """tiktoken's digest of each block's ids ("" for the surrogate blocks)."""
    return [_digest(reference.encode_document(t)) if (t := block_text(b)) else ""
            for b in blocks]


def divergent(encoder: Encoder, reference: Encoder, digests: list[str] | None,
              blocks: Iterable[int] = range(N_BLOCKS)) -> Ranges:
    """The code points whose probe `encoder` encodes differently from `reference` (or raises
    on). `digests`: the reference's block digests, all blocks (None: encode the blocks with
    `reference`). A block that differs while none of its probes alone does counts whole
    (conservative)."""
    bad: list[int] = []
    for b in blocks:
        text = block_text(b)
        if not text:
            continue
        want = digests[b] if digests is not None else _digest(reference.encode_document(text))
        if _encodes_to(encoder, text, want):
            continue
        found = [c for c in block_points(b)
                 if not _encodes_to(encoder, p := probe(chr(c)),
                                    _digest(reference.encode_document(p)))]
        bad += found or list(block_points(b))
    return to_ranges(bad)


def _encodes_to(encoder: Encoder, text: str, want: str) -> bool:
    try:
        return _digest(encoder.encode_document(text)) == want
    except Exception:  # a backend that fails on a code point diverges on it
        return False


def to_ranges(points: list[int]) -> Ranges:
    out: Ranges = []
    for c in sorted(points):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def count(ranges: Ranges) -> int:
    return sum(z - a + 1 for a, z in ranges)


def describe(ranges: Ranges, most: int = 4) -> str:
    """'4,657 code points (U+323B0-U+33479, U+088F, ... 26 ranges)'."""
    def one(a: int, z: int) -> str:
        return f"U+{a:04X}" if a == z else f"U+{a:04X}-U+{z:04X}"
    big = sorted(ranges, key=lambda r: r[0] - r[1])[:most]
    text = ", ".join(one(a, z) for a, z in big)
    more = f", ... {len(ranges)} ranges" if len(ranges) > most else ""
    n = count(ranges)
    return f"{n:,} code point{'s' if n != 1 else ''} ({text}{more})"


class Guard:
    """Whether a (non-ASCII) text holds a divergent code point: the UTF-8 bytes searched for the
    code points' 2-byte prefixes (fast), then, only if one occurs, a regex of the code points."""

    def __init__(self, ranges: Ranges) -> None:
        self.ranges = ranges
        cls = "".join(re.escape(chr(a)) if a == z else f"{re.escape(chr(a))}-{re.escape(chr(z))}"
                      for a, z in ranges)
        self._rx = re.compile(f"[{cls}]") if ranges else None
        prefixes = {chr(c).encode("utf-8", "surrogatepass")[:2]
                    for a, z in ranges for c in range(a, z + 1)}
        self._prefixes = sorted(prefixes) if len(prefixes) <= MAX_PREFIXES else None

    def __bool__(self) -> bool:
        return self._rx is not None

    def hits(self, text: str) -> bool:
        if self._rx is None:
            return False
        if self._prefixes is not None:
            raw = text.encode("utf-8", "surrogatepass")
            if not any(p in raw for p in self._prefixes):
                return False
        return self._rx.search(text) is not None


# --------------------------------------------------------------------------- the verdict cache

# A backend build's verdict: {"divergent": Ranges, "mismatch": one line or None}; per process
# (a forked worker inherits its coordinator's) and per machine (a JSON file per key)
_memo: dict[str, dict[str, Any]] = {}


def verdict_key(identity: dict[str, Any], ranks_sha256: str, corpus_sha256: str) -> str:
    """What a verdict depends on: the backend's build, the ranks, the corpus, the probe."""
    blob = json.dumps({"probe": PROBE_VERSION, "ranks": ranks_sha256, "corpus": corpus_sha256,
                       **identity}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def remember(key: str, verdict: dict[str, Any]) -> None:
    _memo[key] = verdict


def cached_verdict(key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The verdict for `key`: this process's, this machine's cache, or `compute()` (kept)."""
    if key in _memo:
        return _memo[key]
    folder = cache_dir()
    path = folder / f"verdict-{key[:32]}.json" if folder is not None else None
    if path is not None:
        try:
            data = json.loads(path.read_text())
            if data.get("key") == key:
                _memo[key] = data["verdict"]
                return _memo[key]
        except (OSError, ValueError, KeyError):
            pass
    verdict = compute()
    _memo[key] = verdict
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(path, json.dumps({"key": key, "verdict": verdict}) + "\n")
        except OSError:
            pass  # a read-only home: each process checks for itself
    return verdict


def cache_dir() -> Path | None:
    env = os.environ.get(CACHE_ENV)
    if env == "off":
        return None
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "moe-shards"


class GuardedEncoder(Encoder):
    """A fast backend whose documents holding a divergent code point (`guard`) are encoded by
    tiktoken (`reference`) instead; ``routed`` counts them."""

    def __init__(self, fast: Encoder, reference: Encoder, guard: Guard, verdict_key: str = ""
                 ) -> None:
        super().__init__(fast.eot_id, fast.version)
        self.name = fast.name
        self.fast, self.reference, self.guard = fast, reference, guard
        self.verdict_key = verdict_key  # the verdict (scan and conformance check) it was built on
        self.routed = 0

    def encode_ordinary(self, text: str) -> np.ndarray:
        if self.guard and not text.isascii() and self.guard.hits(text):
            return self.reference.encode_ordinary(text)
        return self.fast.encode_ordinary(text)

    def encode_document(self, text: str) -> np.ndarray:
        if self.guard and not text.isascii() and self.guard.hits(text):
            self.routed += 1
            return self.reference.encode_document(text)
        return self.fast.encode_document(text)
