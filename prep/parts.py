"""The files one task writes into the run's work directory, and their completion record.

``<work>/tasks/<task id>/`` holds, for the task's candidate documents in emission order:

- ``tokens.bin``: their GPT-2 token ids, each document followed by EOT, raw little-endian uint16;
- ``meta.npy``: one record per document (:data:`META_DTYPE`: content sha256, token count with
  EOT, characters, UTF-8 bytes, split);
- ``sources.jsonl``: one compact JSON provenance object per document;
- ``col.<name>.npy``: each column a step of the pipeline stores (`prep.steps.Column`), shape
  ``(n_docs, *shape)``;
- ``done.json``: the completion record (:class:`TaskRecord`): the steps' counters, sizes and
  sha256 of the files above, whether the partition was read to its end, written last.

A task writes everything into ``tasks/.<id>.tmp-<host>-<pid>/`` and renames that directory into place
at the end, so ``tasks/<id>/done.json`` exists only for a complete task; `--resume` re-hashes
the files against the record before trusting them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from prep.steps.base import Column, Doc
from shards import atomic
from shards.format import TOKEN_BYTES
from shards.tokenizer import file_sha256

TOKENS_NAME, META_NAME, SOURCES_NAME, DONE_NAME = ("tokens.bin", "meta.npy", "sources.jsonl",
                                                   "done.json")
PART_FILES = (TOKENS_NAME, META_NAME, SOURCES_NAME)
RECORD_VERSION = 2  # 2: counters as a mapping, docs/bytes/tokens of the part files apart
META_DTYPE = np.dtype([("digest", "u1", (32,)), ("tokens", "<u4"), ("chars", "<u4"),
                       ("nbytes", "<u4"), ("eval", "u1")])


def column_file(name: str) -> str:
    return f"col.{name}.npy"


@dataclass
class TaskRecord:
    """`done.json`: a task's completion record."""

    task: str  # the task id
    domain: str
    partition: str  # the partition's key
    partition_index: int
    level: int  # cap level: 0 is the first try; each level reads 4x further
    cap_bytes: int | None
    cap_tokens: int | None
    exhausted: bool  # the partition was read to its end (no document left beyond these)
    docs: int  # documents in the part files (the candidates: they passed every step)
    bytes: int  # their UTF-8 bytes
    tokens: int  # their tokens, EOT included
    counts: dict[str, int]  # the steps' counters (`prep.steps.Counters`), in pipeline order
    bad_examples: list[str]
    files: dict[str, dict[str, Any]]  # name -> {"bytes", "sha256"}
    provenance: dict[str, Any] | None  # the reader's partition record, when read to the end
    seconds: float = 0.0
    host: str = ""
    pid: int = 0
    version: int = RECORD_VERSION
    tokenizer: dict[str, Any] = field(default_factory=dict)  # encoder, version, sampled check

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskRecord:
        if d.get("version") != RECORD_VERSION:  # written by another version of prep: redone
            raise ValueError(f"task record version {d.get('version')!r}")
        return cls(**d)


class _HashedFile:
    def __init__(self, path: Path) -> None:
        self.f: BinaryIO = open(path, "wb")
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, b: bytes | memoryview) -> None:
        self.f.write(b)
        self.h.update(b)
        self.n += len(b)

    def close(self) -> dict[str, Any]:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        return {"bytes": self.n, "sha256": self.h.hexdigest()}


class PartsWriter:
    """Writes one task's part files into a temporary directory; `finish` publishes them."""

    def __init__(self, tasks_dir: Path, task_id: str,
                 columns: dict[str, Column] | None = None) -> None:
        self.final = tasks_dir / task_id
        owner = f"{socket.gethostname()}-{os.getpid()}"  # tasks of many hosts share tasks_dir
        self.dir = tasks_dir / f".{task_id}{atomic.TMP_MARK}{owner}"
        if self.dir.exists():  # ours, so left by an earlier process with our host and PID
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self._tokens = _HashedFile(self.dir / TOKENS_NAME)
        self._sources = _HashedFile(self.dir / SOURCES_NAME)
        self._digests = bytearray()
        self._ints = array("I")  # tokens, chars, nbytes per document, interleaved
        self._eval = bytearray()
        self._columns = {name: (col, bytearray()) for name, col in (columns or {}).items()}
        self.docs = self.bytes = self.tokens = 0

    def add(self, doc: Doc) -> None:
        """Append one document that passed every step (tokens, digest and split set)."""
        tokens = doc.tokens
        assert tokens is not None and doc.digest, "the pipeline must hash and tokenize"
        self._tokens.write(memoryview(tokens).cast("B"))
        self._sources.write(json.dumps(doc.source, ensure_ascii=False, separators=(",", ":"))
                            .encode("utf-8") + b"\n")
        self._digests += doc.digest
        self._ints.extend((len(tokens), len(doc.text), len(doc.raw)))
        self._eval.append(doc.eval)
        for name, (col, buf) in self._columns.items():
            try:
                value = doc.columns[name]
            except KeyError:
                raise ValueError(f"no value of column {name!r} for {doc.where()}: the step "
                                 "that declares it must set doc.columns[name]") from None
            buf += np.asarray(value, dtype=col.dtype).reshape(col.shape).tobytes()
        self.docs += 1
        self.bytes += len(doc.raw)
        self.tokens += len(tokens)

    def finish(self, record: TaskRecord) -> TaskRecord:
        """Close the files, write done.json last, and move the directory into place."""
        files = {TOKENS_NAME: self._tokens.close(), SOURCES_NAME: self._sources.close()}
        n = len(self._eval)
        meta = np.zeros(n, dtype=META_DTYPE)
        meta["digest"] = np.frombuffer(bytes(self._digests), np.uint8).reshape(n, 32)
        ints = np.frombuffer(self._ints, dtype=np.uint32).reshape(n, 3)
        meta["tokens"], meta["chars"], meta["nbytes"] = ints[:, 0], ints[:, 1], ints[:, 2]
        meta["eval"] = np.frombuffer(bytes(self._eval), np.uint8)
        with open(self.dir / META_NAME, "wb") as f:
            np.save(f, meta, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        files[META_NAME] = {"bytes": (self.dir / META_NAME).stat().st_size,
                            "sha256": file_sha256(self.dir / META_NAME)}
        for name, (col, buf) in self._columns.items():
            path = self.dir / column_file(name)
            with open(path, "wb") as f:
                np.save(f, np.frombuffer(bytes(buf), dtype=col.dtype).reshape(n, *col.shape),
                        allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            files[path.name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        record.files = files
        atomic.write_text(self.dir / DONE_NAME, json.dumps(asdict(record), indent=1) + "\n")
        if self.final.exists() and not (self.final / DONE_NAME).is_file():
            shutil.rmtree(self.final)  # an unfinished leftover: no record, nothing to keep
        try:
            os.rename(self.dir, self.final)
        except OSError:  # the same task finished elsewhere meanwhile (a re-run array slice)
            if not (self.final / DONE_NAME).is_file():
                raise
            self.abort()
        atomic.fsync_dir(self.final.parent)
        return record

    def abort(self) -> None:
        for f in (self._tokens.f, self._sources.f):
            if not f.closed:
                f.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def read_record(task_dir: Path) -> TaskRecord | None:
    """The completion record of a finished task, or None if it has none (unfinished)."""
    try:
        return TaskRecord.from_dict(json.loads((task_dir / DONE_NAME).read_text("utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError):
        return None  # a damaged record: the task is redone


def check_parts(task_dir: Path, record: TaskRecord, *, rehash: bool) -> str | None:
    """Why the part files disagree with their record (None if they agree)."""
    for name in dict.fromkeys([*PART_FILES, *record.files]):
        want = record.files.get(name)
        path = task_dir / name
        if want is None or not path.is_file():
            return f"{path}: missing"
        size = path.stat().st_size
        if size != want["bytes"]:
            return f"{path}: {size} bytes, its completion record says {want['bytes']}"
        if rehash and file_sha256(path) != want["sha256"]:
            return f"{path}: sha256 differs from its completion record (damaged)"
    return None


class TaskParts:
    """Read access to a finished task's part files: tokens read with pread (no mapping, so a
    reader's memory does not grow with what it reads), metadata loaded."""

    def __init__(self, task_dir: Path) -> None:
        self.dir = task_dir
        self.meta: np.ndarray = np.load(task_dir / META_NAME, allow_pickle=False)
        self._fd: int | None = None
        self._starts: np.ndarray | None = None
        self._sources: list[bytes] | None = None

    def read_tokens(self, into: memoryview, start: int) -> None:
        """Fill `into` (bytes) with the tokens of tokens.bin from token `start` on."""
        if self._fd is None:
            self._fd = os.open(self.dir / TOKENS_NAME, os.O_RDONLY)
        at, done = start * TOKEN_BYTES, 0
        while done < len(into):
            n = os.preadv(self._fd, [into[done:]], at + done)
            if n <= 0:
                raise OSError(f"{self.dir / TOKENS_NAME}: ends at byte {at + done}, before the "
                              f"{len(into) - done} bytes its metadata says follow")
            done += n

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def starts(self) -> np.ndarray:
        """Each document's first token in tokens.bin."""
        if self._starts is None:
            lengths = self.meta["tokens"].astype(np.int64)
            self._starts = np.cumsum(lengths) - lengths
        return self._starts

    def column(self, name: str) -> np.ndarray:
        """A step's column (`prep.steps.Column`), memory-mapped: shape (docs, *shape)."""
        return np.load(self.dir / column_file(name), mmap_mode="r", allow_pickle=False)

    @property
    def sources(self) -> list[bytes]:
        """Each document's provenance, as its compact JSON bytes."""
        if self._sources is None:
            self._sources = (self.dir / SOURCES_NAME).read_bytes().split(b"\n")[:-1]
        return self._sources
