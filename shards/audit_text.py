"""`shards audit`'s text checks, streamed: format artifacts (from the tokens) and diversity (from
the document index), with the same figures the audit always reported, computed without decoding
whole documents and without holding a split in memory.

Artifacts work on tokens through per-token tables built once from the GPT-2 vocabulary: which
tokens hold a carriage return, a C0 control character or a non-ASCII byte, and each token's
first and last byte. Only the non-ASCII tokens are decoded (to find invisible and C1 control
characters, which BPE may split over several tokens), and the first 20 tokens of each document
(its 20-character prefix); a document whose first or last character is not ASCII is decoded at
that end only. Results equal decoding every document with ``errors="replace"`` and searching the
text, for the valid UTF-8 prep writes (tests/test_audit.py checks it against that reference).
Token ids outside the vocabulary are never decoded: a document holding one is counted as damaged
and left out of the shares (the stream reports the file and offset).

Memory: a few tables (~1 MB), one piece, and 8 bytes per train document for the repeated-prefix
count (16 with the distinct-source count), which must see every document to be exact.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections import Counter
from typing import Any

import numpy as np

from shards.audit_stream import Piece, doc_records, iter_doc_index
from shards.reader import Split, _gpt2

PREFIX_CHARS = 20
TOP = 10
# Provenance keys that name where a document came from (not "file"/"id": the input file
# or the row), most specific first.
SOURCE_KEYS = ("repo_name", "repo", "title", "path", "url", "topic")
INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb]")
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0/C1 but \t \n \r
CR, C0, HIGH = 1, 2, 4  # token flags


@functools.cache
def _vocab() -> dict[str, Any]:
    """Per-token tables over all 65,536 uint16 ids (ids outside the vocabulary: empty)."""
    enc = _gpt2()
    raw = [enc.decode_single_token_bytes(t) for t in range(enc.n_vocab)]
    raw[enc.eot_token] = b""  # EOT ends a document; it is not text
    raw += [b""] * (65536 - len(raw))
    lens = np.array([len(b) for b in raw], dtype=np.int64)
    ctrl = set(range(0x20)) - {9, 10, 13} | {0x7F}
    flags = np.array([(CR if 13 in b else 0) | (C0 if ctrl & set(b) else 0)
                      | (HIGH if any(c >= 0x80 for c in b) else 0) for b in raw], dtype=np.uint8)
    invisible = np.array([c for c in range(0x10000) if INVISIBLE.match(chr(c))], dtype=np.int64)
    return {"raw": raw, "lens": lens, "offs": np.cumsum(lens) - lens, "flags": flags,
            "flat": np.frombuffer(b"".join(raw), dtype=np.uint8),
            "first": np.array([b[0] if b else 0 for b in raw], dtype=np.uint8),
            "last": np.array([b[-1] if b else 0 for b in raw], dtype=np.uint8),
            "space": np.array([chr(c).isspace() for c in range(128)]),
            "invisible": invisible}


def decode_flat(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, byte offset of each token) of `tokens` decoded back to back (vectorised)."""
    v = _vocab()
    lens = v["lens"][tokens]
    ends = np.cumsum(lens)
    starts = ends - lens
    total = int(ends[-1]) if len(ends) else 0
    idx = np.repeat(v["offs"][tokens] - starts, lens) + np.arange(total)
    return v["flat"][idx], starts


def _text(tokens: np.ndarray) -> str:
    raw = _vocab()["raw"]
    return b"".join(raw[t] for t in tokens.tolist()).decode("utf-8", "replace")


def _hash20(rows: np.ndarray) -> np.ndarray:
    """64-bit hashes of the rows of a (docs, 20) uint8 array (63 bits, never 0)."""
    pad = np.zeros((len(rows), 24), dtype=np.uint8)
    pad[:, :PREFIX_CHARS] = rows
    lanes = pad.view(np.uint64)
    h = np.full(len(rows), 0x243F6A8885A308D3, dtype=np.uint64)
    for j in range(3):
        h = (h ^ lanes[:, j]) * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(29)
    return h | np.uint64(1)


def _hash_str(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(),
                          "little") | 1


def ranked(keys: np.ndarray, k: int) -> tuple[int, list[tuple[int, int]], int]:
    """(distinct keys, the k commonest as (ordinal of first occurrence, count) -- count desc,
    then first seen, like Counter.most_common -- and how many entries share their key with
    another) of `keys` (uint64 per ordinal; 0 = no key)."""
    ordinals = np.flatnonzero(keys)
    if not len(ordinals):
        return 0, [], 0
    order = ordinals[np.argsort(keys[ordinals], kind="stable")]
    s = keys[order]
    first = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    counts = np.diff(np.r_[first, len(s)])
    first_ord = order[first]
    top = np.lexsort((first_ord, -counts))[:k]
    repeated = int(counts[counts > 1].sum())
    return len(first), [(int(first_ord[i]), int(counts[i])) for i in top], repeated


class TextScan:
    """Format artifacts of one train split, fed piece by piece (`feed`), then `result`."""

    def __init__(self, split: Split) -> None:
        self.split = split
        self.docs = 0
        self.damaged = 0
        self.counts = Counter({"lead": 0, "trail": 0, "invis": 0, "cr": 0, "ctrl": 0})
        self.invisible: dict[int, list[int]] = {}  # code point -> [count, first position]
        self.first_chars: dict[str, list[int]] = {}  # char -> [count, first doc]
        self.first_tokens = np.zeros(65536, dtype=np.int64)
        self.first_token_doc = np.full(65536, np.iinfo(np.int64).max, dtype=np.int64)
        self.prefixes: list[np.ndarray] = []  # uint64 per document, 0: none

    def feed(self, p: Piece) -> None:
        v = _vocab()
        toks = p.tokens
        b = p.bounds
        ok = np.ones(p.docs, dtype=bool)
        if len(p.bad):
            ok[np.searchsorted(b, p.bad, side="right") - 1] = False
        self.docs += p.docs
        self.damaged += p.docs - int(ok.sum())
        ordinal = p.first_doc + np.arange(p.docs)
        flags = v["flags"][toks]
        marked = np.flatnonzero(flags)
        doc_of = np.searchsorted(b, marked, side="right") - 1
        mflags = flags[marked]

        def docs_with(sel: np.ndarray) -> np.ndarray:
            hit = np.zeros(p.docs, dtype=bool)
            hit[doc_of[sel]] = True
            return hit & ok

        self.counts["cr"] += int(docs_with((mflags & CR) != 0).sum())
        ctrl = docs_with((mflags & C0) != 0)
        high = marked[(mflags & HIGH) != 0]
        invis = np.zeros(p.docs, dtype=bool)
        if len(high):
            cps, pos = _multibyte(toks, high)
            doc = np.searchsorted(b, pos, side="right") - 1
            keep = ok[doc]
            cps, pos, doc = cps[keep], pos[keep], doc[keep]
            ctrl[doc[(cps >= 0x80) & (cps <= 0x9F)]] = True
            inv = np.isin(cps, v["invisible"])
            invis[doc[inv]] = True
            for cp, first, count in zip(*_first_counts(cps[inv], pos[inv] + p.start),
                                        strict=True):
                entry = self.invisible.setdefault(cp, [0, first])
                entry[0] += count
        self.counts["ctrl"] += int(ctrl.sum())
        self.counts["invis"] += int(invis.sum())
        self._ends(p, ok, ordinal)
        self._prefixes(p, ok)

    def _ends(self, p: Piece, ok: np.ndarray, ordinal: np.ndarray) -> None:
        """First and last characters (leading/trailing whitespace) and first tokens."""
        v = _vocab()
        toks, b = p.tokens, p.bounds
        first_tok = toks[b[:-1]][ok]
        np.add.at(self.first_tokens, first_tok, 1)
        np.minimum.at(self.first_token_doc, first_tok, ordinal[ok])
        start, end = b[:-1], b[1:] - np.isin(b[1:] - 1, p.eots)  # text tokens [start, end)
        text = ok & (end > start)
        for k in np.flatnonzero(ok & ~text):
            self._first_char("", int(ordinal[k]))
        fb = np.where(text, v["first"][toks[np.minimum(start, len(toks) - 1)]], 0)
        lb = np.where(text, v["last"][toks[np.maximum(end - 1, 0)]], 0)
        ascii_first = text & (fb < 0x80)
        self.counts["lead"] += int(v["space"][fb[ascii_first]].sum())
        self.counts["trail"] += int(v["space"][lb[text & (lb < 0x80)]].sum())
        firsts, idx = np.unique(fb[ascii_first], return_index=True)
        counts = np.bincount(fb[ascii_first], minlength=128)
        for c, i in zip(firsts.tolist(), idx.tolist(), strict=True):
            self._first_char(chr(c), int(ordinal[ascii_first][i]), int(counts[c]))
        for k in np.flatnonzero(text & (fb >= 0x80)):
            ch = _text(toks[start[k]:min(start[k] + 4, end[k])])[:1]
            self.counts["lead"] += ch.isspace()
            self._first_char(ch, int(ordinal[k]))
        for k in np.flatnonzero(text & (lb >= 0x80)):
            self.counts["trail"] += _text(toks[max(start[k], end[k] - 4):end[k]])[-1:].isspace()

    def _first_char(self, ch: str, ordinal: int, count: int = 1) -> None:
        entry = self.first_chars.setdefault(ch, [0, ordinal])
        entry[0] += count
        entry[1] = min(entry[1], ordinal)

    def _prefixes(self, p: Piece, ok: np.ndarray) -> None:
        """A hash of each document's first 20 characters (0: shorter, or damaged)."""
        toks, b = p.tokens, p.bounds
        start, end = b[:-1], b[1:] - np.isin(b[1:] - 1, p.eots)  # text tokens [start, end)
        take = np.where(ok, np.minimum(end - start, PREFIX_CHARS), 0)  # >= 20 bytes if 20
        cum = np.cumsum(take)
        first = cum - take  # each document's first token in `sel`
        sel = np.repeat(start - first, take) + np.arange(int(cum[-1]) if len(cum) else 0)
        raw, offs = decode_flat(toks[sel])
        out = np.zeros(p.docs, dtype=np.uint64)
        has = take > 0
        if len(raw):
            edges = np.r_[offs, len(raw)]
            byte0 = np.where(has, edges[np.minimum(first, len(offs))], 0)
            nbytes = np.where(has, edges[cum] - byte0, 0)
            cols = np.arange(PREFIX_CHARS)
            rows = raw[np.minimum(byte0[:, None] + cols, len(raw) - 1)]
            high = ((rows >= 0x80) & (cols < nbytes[:, None])).any(axis=1)
            simple = has & ~high & (nbytes >= PREFIX_CHARS)
            out[simple] = _hash20(rows[simple])
            for k in np.flatnonzero(has & high):
                s = _text(toks[start[k]:min(start[k] + 4 * PREFIX_CHARS, end[k])])
                if len(s) >= PREFIX_CHARS:
                    out[k] = _hash_str(s[:PREFIX_CHARS])
        self.prefixes.append(out)

    def result(self) -> dict[str, Any]:
        enc = _gpt2()
        n = self.docs - self.damaged
        share = (lambda c: c / n) if n else (lambda c: 0.0)
        keys = np.concatenate(self.prefixes) if self.prefixes else np.zeros(0, np.uint64)
        self.prefixes = []
        _, top, repeated = ranked(keys, TOP)
        texts = _prefix_texts(self.split, [o for o, c in top if c > 1])
        inv = sorted(self.invisible.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
        chars = sorted(self.first_chars.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
        ids = np.flatnonzero(self.first_tokens)
        ids = ids[np.lexsort((self.first_token_doc[ids], -self.first_tokens[ids]))][:TOP]
        return {
            "docs": n,
            "damaged_docs": self.damaged,
            "leading_whitespace": share(self.counts["lead"]),
            "trailing_whitespace": share(self.counts["trail"]),
            "invisible_chars": share(self.counts["invis"]),
            "invisible_char_counts": {f"U+{cp:04X} {unicodedata.name(chr(cp), '?')}": c
                                      for cp, (c, _) in inv},
            "carriage_returns": share(self.counts["cr"]),
            "control_chars": share(self.counts["ctrl"]),
            "first_chars": [{"char": _show(c), "share": share(cnt)}
                            for c, (cnt, _) in chars[:TOP]],
            "first_tokens": [{"id": int(t), "text": _show(enc.decode_bytes([int(t)]).decode(
                "utf-8", "replace")), "share": share(int(self.first_tokens[t]))} for t in ids],
            "repeated_prefix_share": share(repeated),
            "repeated_prefixes": [{"prefix": _show(texts.get(o, "?")), "docs": c}
                                  for o, c in top if c > 1],
        }


def _multibyte(toks: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(code point, token position) of each 2- or 3-byte UTF-8 character made by the non-ASCII
    tokens at `high` (sorted positions), whether inside one token or spread over adjacent ones."""
    raw, offs = decode_flat(toks[high])
    pos = np.repeat(high, _vocab()["lens"][toks[high]])  # token position of each byte
    r = raw.astype(np.int64)
    m = len(r)
    nxt = lambda a, k: np.r_[a[k:], np.full(k, -1, a.dtype)]  # noqa: E731
    r1, r2 = nxt(r, 1), nxt(r, 2)
    p1, p2 = nxt(pos, 1), nxt(pos, 2)
    cont1 = (r1 >= 0x80) & (r1 < 0xC0) & (p1 - pos <= 1)
    cont2 = cont1 & (r2 >= 0x80) & (r2 < 0xC0) & (p2 - p1 <= 1) & (p2 >= 0)
    two = (r >= 0xC2) & (r < 0xE0) & cont1
    three = (r >= 0xE0) & (r < 0xF0) & cont2
    cp = np.full(m, -1, dtype=np.int64)
    cp[two] = ((r[two] & 0x1F) << 6) | (r1[two] & 0x3F)
    cp[three] = ((r[three] & 0x0F) << 12) | ((r1[three] & 0x3F) << 6) | (r2[three] & 0x3F)
    valid = (two | (three & (cp >= 0x800) & ((cp < 0xD800) | (cp > 0xDFFF))))
    return cp[valid], pos[valid]


def _first_counts(keys: np.ndarray, pos: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """(distinct key, first position, count) of `keys` (positions increasing)."""
    if not len(keys):
        return [], [], []
    u, first, counts = np.unique(keys, return_index=True, return_counts=True)
    return u.tolist(), pos[first].tolist(), counts.tolist()


def _prefix_texts(split: Split, ordinals: list[int]) -> dict[int, str]:
    """The 20-character prefix of the documents `ordinals`, via the document index."""
    out = {}
    vocab = split.dataset.vocab_size
    for k, rec in doc_records(split, set(ordinals)).items():
        try:
            start = int(split.shard_starts[int(rec["shard"])]) + int(rec["offset"])
            toks = split.tokens(start, min(start + int(rec["tokens"]), split.num_tokens,
                                           start + 4 * PREFIX_CHARS))
        except (KeyError, ValueError, TypeError, IndexError):
            continue
        toks = toks[toks != split.dataset.eot_id]
        if len(toks) and int(toks.max()) < vocab:
            out[k] = _text(np.asarray(toks))[:PREFIX_CHARS]
    return out


def _show(s: str) -> str:
    """`s` with non-printable characters (newlines, invisible ones) escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in s)


# --------------------------------------------------------------------------- diversity


def source_key(present: dict[str, int], docs: int) -> str | None:
    """The first of SOURCE_KEYS that at least 90% of documents' provenance has."""
    for key in SOURCE_KEYS:
        if docs and present.get(key, 0) >= 0.9 * docs:
            return key
    return None


def _percentiles(values: Counter[int]) -> dict[str, float]:
    if not values:
        return {}
    keys = np.array(sorted(values), dtype=np.int64)
    x = np.repeat(keys, [values[k] for k in keys.tolist()])  # transient: one length per doc
    p = np.percentile(x, [10, 50, 90, 99])
    return {"min": int(x.min()), "p10": float(p[0]), "p50": float(p[1]), "p90": float(p[2]),
            "p99": float(p[3]), "max": int(x.max()), "mean": float(x.mean())}


def _key_hashes(values: list[Any]) -> np.ndarray:
    """In-process 64-bit hashes of str(value) (never 0), for counting distinct values."""
    return np.array([hash(str(v)) for v in values], dtype=np.int64).view(np.uint64) | np.uint64(1)


def diversity(split: Split) -> dict[str, Any]:
    """Sources and lengths of a split's documents, in one streaming pass over its index (and a
    short one for the names of the top sources)."""
    present: Counter[str] = Counter()
    keyed: dict[str, list[np.ndarray]] = {}  # source key -> hashes of str(value), every doc
    tokens: Counter[int] = Counter()
    chars: Counter[int] = Counter()
    docs = 0
    none = _key_hashes([None])[0]
    for rows in iter_doc_index(split):
        srcs = [r.get("source") or {} for r in rows]
        for key in SOURCE_KEYS:
            vals = [x.get(key) for x in srcs]
            have = sum(1 for v in vals if v is not None and v != "")
            if have and key not in keyed:  # first seen: earlier documents had none
                keyed[key] = [np.full(docs, none, dtype=np.uint64)]
            if key in keyed:
                present[key] += have
                keyed[key].append(_key_hashes(vals))
        for field_, counter in (("tokens", tokens), ("chars", chars)):
            u, c = np.unique(np.array([int(r.get(field_, 0)) for r in rows], dtype=np.int64),
                             return_counts=True)
            counter.update(dict(zip(u.tolist(), c.tolist(), strict=True)))
        docs += len(rows)
    key = source_key(present, docs)
    out: dict[str, Any] = {"docs": docs, "source_key": key}
    if key is not None:
        distinct, top, _ = ranked(np.concatenate(keyed.pop(key)), TOP)
        keyed.clear()
        recs = doc_records(split, {o for o, _ in top})
        names = [(str((recs.get(o, {}).get("source") or {}).get(key)), c) for o, c in top]
        out |= {"distinct_sources": distinct,
                "top1_share": top[0][1] / docs,
                "top10_share": sum(c for _, c in top) / docs,
                "top_sources": [{"source": s, "docs": c} for s, c in names]}
    else:
        out |= {"distinct_sources": None, "top1_share": None, "top10_share": None,
                "top_sources": []}
    out["length_tokens"] = _percentiles(tokens)
    out["length_chars"] = _percentiles(chars)
    return out
