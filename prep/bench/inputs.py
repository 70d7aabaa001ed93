"""The inputs of `python -m prep.bench`: real code and generated mixed text, as JSONL.zst corpora.

- **code**: the running Python's standard library `.py` files (real code), repeated until the
  corpus holds the largest size asked for; each copy is made distinct by a first line
  ``# copy <n>: <path>``, so no document is a duplicate of another and every tool keeps all of
  them. Written as several ``code-NNNNN.jsonl.zst`` files of about ``file_mb`` MB of text each
  (records ``{"text", "path"}``), like a real corpus; a smaller input is a prefix of the files.
  The **one-file** shape of an input is the same data as one ``.jsonl.zst`` (:func:`one_file`:
  the files' zstandard frames one after another, a valid multi-frame file).
- **mixed**: the old bench's generated input (:func:`generate_mixed`): unique documents, half
  stdlib code chunks, half Zipf-distributed prose-like words, written the same way.

Sizes are MB (1e6 bytes) of UTF-8 document text.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

from prep.readers.stdlib import stdlib_files

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


def write_code(folder: Path, mb: float, file_mb: float) -> Corpus:
    """The real-code corpus of at least `mb` MB of text (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = stdlib_documents()
    w = _Writer(folder, "code", file_mb)
    copy = 0
    while w.total < mb * 1e6:
        for rel, text in docs:
            w.add({"text": f"# copy {copy}: {rel}\n{text}", "path": f"copy{copy}/{rel}"})
            if w.total >= mb * 1e6:
                break
        copy += 1
    w.close()
    return Corpus("code", w.files, w.mb)


def write_mixed(folder: Path, mb: float, file_mb: float, seed: int = 0) -> Corpus:
    """The old bench's generated input of ~`mb` MB (see :func:`generate_mixed`)."""
    folder.mkdir(parents=True, exist_ok=True)
    w = _Writer(folder, "mixed", file_mb)
    for text in generate_mixed(mb, seed):
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
