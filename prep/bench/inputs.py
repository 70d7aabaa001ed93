"""The inputs of `python -m prep.bench`: real code and generated mixed text, as JSONL.zst corpora.

- **code**: the running Python's standard library `.py` files (real code), repeated until the
  corpus holds the largest size asked for; each copy is made distinct by a first line
  ``# copy <n>: <path>`` and, from the second copy on, by a suffix ``Z<n>`` on every identifier
  that is not a keyword (:func:`renamed`); then every document that is still a near duplicate
  of an earlier one (:func:`drop_near_duplicates`: prep's own signatures and threshold; a file
  made mostly of numbers, say) is left out, so prep's default pipeline (near-duplicate removal
  on) keeps every document, and every tool's output holds the same ones. Written as several ``code-NNNNN.jsonl.zst`` files of about ``file_mb`` MB of text each
  (records ``{"text", "path"}``), like a real corpus; a smaller input is a prefix of the files.
  The **one-file** shape of an input is the same data as one ``.jsonl.zst`` (:func:`one_file`:
  the files' zstandard frames one after another, a valid multi-frame file).
- **mixed**: the old bench's generated input (:func:`generate_mixed`): unique documents, half
  stdlib code chunks, half Zipf-distributed prose-like words, near duplicates left out (two
  chunks of one file can overlap almost whole), written the same way.

Sizes are MB (1e6 bytes) of UTF-8 document text.
"""

from __future__ import annotations

import io
import json
import keyword
import os
import random
import re
import shutil
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zstandard

from prep.readers.stdlib import stdlib_files
from shards import minhash

NEAR_KIND = "prose"  # the shingles prep uses for the bench's domain ("data": not named code)
NEAR_THRESHOLD = 0.8  # prep's default near_dedup_threshold
MARGIN = 1.1  # text made beyond the size asked for, for the near duplicates left out
_KEYWORDS = "|".join(keyword.kwlist + keyword.softkwlist)
_IDENTIFIER = re.compile(rf"\b(?!(?:{_KEYWORDS})\b)[A-Za-z_][A-Za-z0-9_]*")

WORDS_SEED = 1234
ZSTD_LEVEL = 3


@dataclass
class Corpus:
    """Files of one generated corpus, each with the MB of text it holds."""

    name: str
    files: list[str]
    mb: list[float]

    def prefix(self, mb: float) -> list[str]:
        """The fewest leading files holding at least `mb` MB of text (all if fewer)."""
        total = 0.0
        for i, m in enumerate(self.mb):
            total += m
            if total >= mb - 1e-9:
                return self.files[:i + 1]
        return list(self.files)

    def size_of(self, files: list[str]) -> float:
        return sum(self.mb[:len(files)])


class _Writer:
    """Documents into numbered .jsonl.zst files of ~`file_mb` MB of text each."""

    def __init__(self, folder: Path, stem: str, file_mb: float) -> None:
        self.folder, self.stem, self.limit = folder, stem, file_mb * 1e6
        self.files: list[str] = []
        self.mb: list[float] = []
        self._raw = self._z = None
        self._size = 0
        self.total = 0
        self._cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)

    def add(self, record: dict[str, str]) -> None:
        if self._z is None:
            path = self.folder / f"{self.stem}-{len(self.files):05d}.jsonl.zst"
            self._raw = open(path, "wb")
            self._z = self._cctx.stream_writer(self._raw)
            self.files.append(str(path))
            self._size = 0
        self._z.write((json.dumps(record) + "\n").encode("utf-8"))
        n = len(record["text"].encode("utf-8"))
        self._size += n
        self.total += n
        if self._size >= self.limit:
            self.close()

    def close(self) -> None:
        if self._z is not None:
            self._z.close()  # closes the raw file too
            self.mb.append(self._size / 1e6)
            self._z = None


def one_file(parts: list[str], path: Path) -> str:
    """The files `parts` as one .jsonl.zst (their frames concatenated): the same documents, in
    the same order, as one big compressed file."""
    with open(path, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    return str(path)


def stdlib_documents() -> list[tuple[str, str]]:
    """(relative path, text) of the standard library's .py files, in sorted path order."""
    root = sysconfig.get_paths()["stdlib"]
    out = []
    for rel in stdlib_files(root):
        try:
            with open(os.path.join(root, rel), encoding="utf-8") as f:
                out.append((rel, f.read()))
        except (OSError, UnicodeDecodeError):
            continue
    return out


def drop_near_duplicates(texts: list[str], kind: str = NEAR_KIND,
                         threshold: float = NEAR_THRESHOLD) -> list[bool]:
    """Which documents to keep so that no two kept ones are near duplicates by prep's own test
    (`shards.minhash` signatures, estimated Jaccard >= `threshold` over any shared LSH band):
    a document is dropped when it matches any earlier one. Every candidate pair is compared
    (no bucket cap), so prep, whatever its order, finds no pair among the kept ones."""
    sigs = [minhash.signatures(b, kind) for b in minhash.batches(texts)]
    if not sigs:
        return []
    sig = np.concatenate([x.sig for x in sigs])
    bands = np.concatenate([x.bands for x in sigs])
    i, j = minhash.bucket_pairs(bands, cap=len(texts))
    near = minhash.estimate(sig[i], sig[j]) >= threshold
    keep = np.ones(len(texts), dtype=bool)
    keep[i[near]] = False
    return keep.tolist()


def renamed(text: str, copy: int) -> str:
    """`text` with ``Z<copy>`` after every identifier that is not a Python keyword (copy 0:
    unchanged): a bijection of the document's words, so two copies share no shingle but those
    made of keywords alone, while one copy keeps the originals' pairwise similarities."""
    return text if copy == 0 else _IDENTIFIER.sub(rf"\g<0>Z{copy}", text)


def write_code(folder: Path, mb: float, file_mb: float) -> Corpus:
    """The real-code corpus of at least `mb` MB of text (see the module docstring): the copies
    are made first, then every document that is a near duplicate of an earlier one is left out
    (a file made mostly of numbers keeps them in every copy), then the rest is written."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = stdlib_documents()
    target = mb * 1e6
    records: list[tuple[str, str]] = []
    made, copy = 0, 0
    while made < target * MARGIN:
        for rel, text in docs:
            t = f"# copy {copy}: {rel}\n{renamed(text, copy)}"
            records.append((f"copy{copy}/{rel}", t))
            made += len(t.encode("utf-8"))
            if made >= target * MARGIN:
                break
        copy += 1
    w = _Writer(folder, "code", file_mb)
    for (path, text), keep in zip(records, drop_near_duplicates([t for _, t in records]),
                                  strict=True):
        if keep and w.total < target:
            w.add({"text": text, "path": path})
    w.close()
    return Corpus("code", w.files, w.mb)


def write_mixed(folder: Path, mb: float, file_mb: float, seed: int = 0) -> Corpus:
    """The old bench's generated input of ~`mb` MB (see :func:`generate_mixed`)."""
    folder.mkdir(parents=True, exist_ok=True)
    w = _Writer(folder, "mixed", file_mb)
    texts = list(generate_mixed(mb * 1.25, seed))  # a margin for the near duplicates left out
    for text, keep in zip(texts, drop_near_duplicates(texts), strict=True):
        if keep and w.total < mb * 1e6:
            w.add({"text": text})
    w.close()
    return Corpus("mixed", w.files, w.mb)


def generate_mixed(mb: float, seed: int = 0) -> Iterator[str]:
    """~`mb` MB of unique documents, half code (stdlib chunks), half prose-like text (the old
    bench's `generate_input`, yielding the documents instead of writing one file)."""
    rng = random.Random(seed)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code_files = sorted(p for p in stdlib.glob("*.py") if p.stat().st_size > 2000)
    code = [p.read_text(encoding="utf-8", errors="replace") for p in code_files[:150]]
    wrng = random.Random(WORDS_SEED)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    vocab = ["".join(wrng.choice(letters) for _ in range(wrng.randint(2, 9))) for _ in range(20000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]  # Zipf-like word frequencies
    target = int(mb * 1e6)
    written = n = 0
    while written < target:
        if n % 2 == 0:
            src = rng.choice(code)
            start = rng.randrange(max(1, len(src) - 6000))
            text = f"# bench document {n}\n" + src[start:start + rng.randint(1000, 6000)]
        else:
            words = rng.choices(vocab, weights, k=rng.randint(200, 1200))
            sents, i = [], 0
            while i < len(words):
                k = rng.randint(6, 25)
                sents.append(" ".join(words[i:i + k]).capitalize() + ".")
                i += k
            text = f"Document {n}. " + " ".join(sents)
        yield text
        written += len(text.encode("utf-8"))
        n += 1


def read_texts(files: list[str]) -> Iterator[str]:
    """The `text` of every record of the corpus files, in file order."""
    for path in files:
        with open(path, "rb") as raw:
            stream = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw),
                                      encoding="utf-8")
            for line in stream:
                yield json.loads(line)["text"]
