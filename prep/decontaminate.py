"""Benchmark decontamination: drop every train document that shares an n-gram with a benchmark.

Recipe keys (top level)::

    decontaminate = ["bench/*.jsonl", {path = "bench/gsm8k.jsonl", text_field = "question"}]
    decontaminate_ngram = 13          # content tokens per n-gram (default 13)
    decontaminate_text_field = "text" # the JSON field holding each text (default "text")

Each entry is a path or glob (resolved against the recipe's directory), or a table naming one
with its own text field. A benchmark file is JSON Lines (optionally .gz or .zst), one object per
line; every line must hold the text field (a string, or a list of strings indexed one by one).
`parse_decontaminate` validates the keys with one-line errors naming the key and the file.

`BenchmarkIndex.build` tokenizes every benchmark text with the encoder prep uses (the same GPT-2
ids it writes), hashes its n-grams with `shards.ngrams` (the hashing `shards audit` uses, so the
two agree: n consecutive content tokens, whitespace-only tokens skipped, so indentation neither
makes a match nor hides a re-indented copy; a text with fewer than n content tokens has none,
counted as ``texts_shorter_than_n``) and indexes them with the file as owner; each file's
statistics include its sha256 (`shards.hashing.file_sha256`). The index is saved in a cache
directory (prep: the run's, at plan time, `prep.decontaminate_steps`), named by a fingerprint of
the files' sha256, the n-gram length, the text fields, the hash version and the encoder, so a
resumed run, a later run or a second process reuses it (two processes saving the same index at once
keep the first); `BenchmarkIndex.open` memory-maps it (cheap once per worker process: the pages are
shared). `match(tokens)` returns the index of the benchmark file a document hits -- the first in
recipe order when it hits several -- or None; `match_many(docs)` answers for a batch of documents
at once, which is what a worker should call (measured on 2,154 stdlib paragraphs of ~133 tokens:
`match` 58 us per document, about as much as tokenizing it, `match_many` in batches of 256: 8 us).
`DecontaminationCounts` counts the dropped documents per file (prep itself counts with its commit
hook's counters).
"""

from __future__ import annotations

import functools
import glob
import gzip
import hashlib
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from shards.hashing import file_sha256
from shards.ngrams import BLOCK, HASH_VERSION, NGRAM, NgramIndex, ngrams
from shards.tokenizer import EOT_ID

KEY = "decontaminate"
NGRAM_KEY = "decontaminate_ngram"
FIELD_KEY = "decontaminate_text_field"
DEFAULT_TEXT_FIELD = "text"
INDEX_PREFIX = "decontaminate-"


class DecontaminationError(ValueError):
    """A bad `decontaminate` recipe key or benchmark file; the message is one line."""


@dataclass(frozen=True)
class BenchmarkFile:
    path: str  # absolute
    text_field: str = DEFAULT_TEXT_FIELD
    name: str = ""  # as the recipe wrote it (the glob's match, relative when it was)

    def label(self) -> str:
        return self.name or self.path


@dataclass(frozen=True)
class DecontaminateConfig:
    files: tuple[BenchmarkFile, ...]
    n: int = NGRAM

    def to_dict(self) -> dict[str, Any]:
        return {"ngram": self.n, "files": [asdict(f) for f in self.files]}


# --------------------------------------------------------------------------- recipe keys


def parse_decontaminate(raw: Mapping[str, Any], *, base: Path,
                        where: str) -> DecontaminateConfig | None:
    """The decontamination settings of a recipe's top-level table `raw`, or None when it has no
    `decontaminate` key. `base`: the directory relative paths resolve against (the recipe's);
    `where`: the recipe, named at the start of every error."""
    if KEY not in raw:
        for k in (NGRAM_KEY, FIELD_KEY):
            if k in raw:
                raise DecontaminationError(f"{where}: {k} is set but {KEY} is not; add {KEY} = "
                                           '["bench/*.jsonl"] (benchmark files) or remove it')
        return None
    n = raw.get(NGRAM_KEY, NGRAM)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= BLOCK:
        raise DecontaminationError(f"{where}: {NGRAM_KEY} must be an integer from 1 to {BLOCK} "
                                   f"(content tokens per n-gram; default {NGRAM}), got {n!r}")
    default_field = raw.get(FIELD_KEY, DEFAULT_TEXT_FIELD)
    if not isinstance(default_field, str) or not default_field:
        raise DecontaminationError(f"{where}: {FIELD_KEY} must be a non-empty string (the JSON "
                                   f"field holding each benchmark text), got {default_field!r}")
    entries = raw[KEY]
    if isinstance(entries, str | dict):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        raise DecontaminationError(f"{where}: {KEY} must be a list of benchmark files or globs "
                                   f'(e.g. ["bench/*.jsonl"]), got {entries!r}')
    files: list[BenchmarkFile] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        pattern, text_field = _entry(entry, default_field, f"{where}: {KEY}[{i}]")
        for name, path in _expand(pattern, base, f"{where}: {KEY}[{i}]"):
            if path not in seen:  # a file listed twice keeps its first place
                seen.add(path)
                files.append(BenchmarkFile(path, text_field, name))
    return DecontaminateConfig(tuple(files), n)


def _entry(entry: Any, default_field: str, where: str) -> tuple[str, str]:
    if isinstance(entry, str) and entry:
        return entry, default_field
    if isinstance(entry, dict):
        bad = set(entry) - {"path", "text_field"}
        if bad or not isinstance(entry.get("path"), str) or not entry["path"]:
            raise DecontaminationError(f"{where}: a table needs `path` (a file or glob) and may "
                                       f"have `text_field`, got {entry!r}")
        tf = entry.get("text_field", default_field)
        if not isinstance(tf, str) or not tf:
            raise DecontaminationError(f"{where}: text_field must be a non-empty string, got "
                                       f"{tf!r}")
        return entry["path"], tf
    raise DecontaminationError(f"{where}: expected a path or glob string, or a table {{path = "
                               f'"...", text_field = "..."}}, got {entry!r}')


def _expand(pattern: str, base: Path, where: str) -> list[tuple[str, str]]:
    """(name as written, absolute path) of the regular files `pattern` names, sorted."""
    full = Path(pattern).expanduser()
    full = full if full.is_absolute() else base / full
    if glob.has_magic(pattern):
        matches = sorted(p for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
    else:
        matches = [str(full)] if full.is_file() else []
    if not matches:
        what = "matches no file" if glob.has_magic(pattern) else "is not a file"
        raise DecontaminationError(f"{where}: {pattern!r} {what} (resolved against {base}); "
                                   "fix the path or remove the entry")
    out = []
    for m in matches:
        rel = Path(m).relative_to(base) if Path(m).is_relative_to(base) else Path(m)
        out.append((str(rel) if not Path(pattern).is_absolute() else m, str(Path(m).resolve())))
    return out


# --------------------------------------------------------------------------- benchmark files


def _open_text(path: Path) -> io.TextIOBase:
    raw = path.open("rb")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8")
    if path.suffix == ".zst":
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True),
                                encoding="utf-8")
    return io.TextIOWrapper(raw, encoding="utf-8")


def read_texts(bf: BenchmarkFile) -> Iterator[str]:
    """Every text of a benchmark file; errors name the key, the file and the line."""
    where = f"{KEY}: {bf.label()}"
    try:
        with _open_text(Path(bf.path)) as f:
            for no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise DecontaminationError(f"{where}: line {no} is not JSON ({e}); a "
                                               "benchmark file is JSON Lines") from None
                value = rec.get(bf.text_field) if isinstance(rec, dict) else None
                if isinstance(value, str):
                    yield value
                elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                    yield from value
                else:
                    have = ", ".join(list(rec)[:8]) if isinstance(rec, dict) else type(rec).__name__
                    raise DecontaminationError(
                        f"{where}: line {no} has no string field {bf.text_field!r} (it has: "
                        f"{have}); set text_field for this file")
    except (OSError, UnicodeDecodeError, EOFError, zstandard.ZstdError) as e:
        raise DecontaminationError(f"{where}: cannot read {bf.path}: {e}") from None


def fingerprint(cfg: DecontaminateConfig, encoder_id: str,
                digests: Sequence[str] | None = None) -> str:
    """What the index is a function of: files' bytes (their sha256, `digests` when known),
    their order and text fields, n, the hash and the encoder. Names the cached index."""
    digests = [file_sha256(f.path) for f in cfg.files] if digests is None else digests
    parts = [HASH_VERSION, str(cfg.n), encoder_id]
    parts += [f"{f.text_field}\0{d}" for f, d in zip(cfg.files, digests, strict=True)]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- the index


@dataclass
class BenchmarkIndex:
    """The n-grams of every benchmark text, each owned by the first file (recipe order) that
    has it."""

    index: NgramIndex
    files: list[str]  # labels, recipe order: match() returns a position in this list
    stats: list[dict[str, Any]] = field(default_factory=list)  # per file: texts, short, ngrams
    path: Path | None = None  # the saved index (pass it to workers), when saved
    eot_id: int = EOT_ID

    @property
    def n(self) -> int:
        return self.index.n

    @classmethod
    def build(cls, files: Sequence[str | Path | BenchmarkFile] | DecontaminateConfig,
              text_field: str = DEFAULT_TEXT_FIELD, n: int = NGRAM,
              encode: Callable[[str], np.ndarray] | None = None, *,
              cache_dir: Path | None = None, encoder_id: str = "gpt2",
              base: Path | None = None, eot_id: int = EOT_ID) -> BenchmarkIndex:
        """Index the benchmark `files` (paths or globs resolved against `base`, BenchmarkFile
        entries, or a parsed config, whose n then wins), tokenized by `encode` (text -> uint16
        ids, as prep writes them). With `cache_dir`, reuse the index saved there for the same
        inputs (same files' sha256, n, fields, encoder_id), or save it there."""
        if encode is None:
            raise TypeError("BenchmarkIndex.build needs encode (text -> token ids)")
        cfg = _config(files, text_field, n, base or Path.cwd())
        path = None
        try:
            digests = [file_sha256(f.path) for f in cfg.files]
        except OSError as e:
            raise DecontaminationError(f"{KEY}: cannot read {e.filename}: {e.strerror}") from None
        if cache_dir is not None:
            path = Path(cache_dir) / index_name(cfg, encoder_id, digests)
            if (path / "index.json").is_file():
                return cls.open(path)
        parts, stats = [], []
        for i, (bf, digest) in enumerate(zip(cfg.files, digests, strict=True)):
            hashes, texts, short = [], 0, 0
            for t in read_texts(bf):
                h, _ = ngrams(np.asarray(encode(t)), eot_id, cfg.n)
                texts += 1
                short += not len(h)
                hashes.append(h)
            joined = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
            parts.append((joined, i))
            stats.append({"file": bf.label(), "path": bf.path, "sha256": digest,
                          "text_field": bf.text_field, "texts": texts, "texts_shorter_than_n": short,
                          "ngrams": int(len(np.unique(joined)))})
        out = cls(NgramIndex.from_parts(parts, cfg.n), [bf.label() for bf in cfg.files], stats,
                  None, eot_id)
        if path is not None:  # another process may have saved the same index meanwhile: the
            out.index.save(path, {"files": out.files, "stats": stats, "eot_id": eot_id,  # first
                                  "encoder": encoder_id}, replace=False)  # one stays
            return cls.open(path)
        return out

    @classmethod
    def open(cls, path: str | Path) -> BenchmarkIndex:
        """A saved index, memory-mapped read-only."""
        index, meta = NgramIndex.load(Path(path))
        return cls(index, list(meta["files"]), list(meta.get("stats", [])), Path(path),
                   int(meta.get("eot_id", EOT_ID)))

    def match(self, tokens: np.ndarray) -> int | None:
        """The position (in `files`) of the first benchmark file sharing an n-gram with this
        document's `tokens` (uint16 ids, EOT anywhere ends a document), or None."""
        h, _ = ngrams(np.asarray(tokens), self.eot_id, self.n)
        if not len(h) or not len(self.index):
            return None
        pos = self.index.lookup(h)
        pos = pos[pos >= 0]
        if not len(pos):
            return None
        return int(self.index.owners[pos].min())

    def match_many(self, docs: Sequence[np.ndarray]) -> list[int | None]:
        """`match` of each document, hashed together in a few vectorised passes (the cheap way
        for a worker: hash a batch of tokenized documents at once)."""
        if not docs:
            return []
        eot = np.array([self.eot_id], dtype=np.uint16)
        parts = [p for d in docs for p in (np.asarray(d, dtype=np.uint16), eot)]
        lengths = np.array([len(d) + 1 for d in docs], dtype=np.int64)
        starts = np.r_[0, np.cumsum(lengths)[:-1]]
        h, pos = ngrams(np.concatenate(parts), self.eot_id, self.n)
        out: list[int | None] = [None] * len(docs)
        if not len(h) or not len(self.index):
            return out
        where = self.index.lookup(h)
        hit = where >= 0
        doc = np.searchsorted(starts, pos[hit], side="right") - 1
        best = np.full(len(docs), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(best, doc, self.index.owners[where[hit]].astype(np.int64))
        for k in np.flatnonzero(best != np.iinfo(np.int64).max):
            out[int(k)] = int(best[k])
        return out

    def describe(self) -> dict[str, Any]:
        """For the manifest: n, and per file its counts."""
        return {"ngram": self.n, "files": self.stats}


def _config(files: Sequence[str | Path | BenchmarkFile] | DecontaminateConfig, text_field: str,
            n: int, base: Path) -> DecontaminateConfig:
    if isinstance(files, DecontaminateConfig):
        return files
    out: list[BenchmarkFile] = []
    for f in files:
        if isinstance(f, BenchmarkFile):
            out.append(f)
        else:
            out += [BenchmarkFile(p, text_field, nm) for nm, p in _expand(str(f), base, KEY)]
    return DecontaminateConfig(tuple(out), n)


def index_name(cfg: DecontaminateConfig, encoder_id: str,
               digests: Sequence[str] | None = None) -> str:
    """The saved index's directory name (in a cache directory): a function of its inputs."""
    return f"{INDEX_PREFIX}{fingerprint(cfg, encoder_id, digests)[:32]}"


@functools.lru_cache(maxsize=4)
def open_cached(path: str) -> BenchmarkIndex:
    """`BenchmarkIndex.open`, once per worker process and path."""
    return BenchmarkIndex.open(path)


@dataclass
class DecontaminationCounts:
    """Documents checked and dropped per benchmark file (a task's, or merged: order-free)."""

    files: list[str]
    checked: int = 0
    dropped: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.dropped:
            self.dropped = [0] * len(self.files)

    def add(self, hit: int | None) -> bool:
        """Count one document's `match` result; True when it is to be dropped."""
        self.checked += 1
        if hit is None:
            return False
        self.dropped[hit] += 1
        return True

    def merge(self, other: DecontaminationCounts) -> None:
        if other.files != self.files:
            raise ValueError("decontamination counts of different benchmark files")
        self.checked += other.checked
        self.dropped = [a + b for a, b in zip(self.dropped, other.dropped, strict=True)]

    @property
    def total(self) -> int:
        return sum(self.dropped)

    def to_dict(self) -> dict[str, Any]:
        return {"docs_checked": self.checked, "docs_dropped": self.total,
                "dropped_by_file": dict(zip(self.files, self.dropped, strict=True))}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DecontaminationCounts:
        by = dict(d["dropped_by_file"])
        return cls(list(by), int(d["docs_checked"]), [int(v) for v in by.values()])
