"""One task: one partition of one domain, from raw records to part files (runs in a worker).

read -> filter (count bad, empty, too short, too long) -> seeded shuffle buffer -> hash once
(content sha256; the split derived from it) -> tokenize (GPT-2, EOT after each document) ->
part files (`prep.parts`), completion record last. A task's output is a pure function of its
partition, the recipe, the seed and its cap: it never depends on which worker, machine or
executor runs it, nor on when.

A budgeted domain's tasks are *capped*: a task stops once its emitted documents reach
`cap_bytes` or `cap_tokens` (the shuffle buffer makes any prefix of its output depend only on a
prefix of its input, so a task with a larger cap emits a superset, in the same order). The
commit asks for a task again with a larger cap (the next level) only if it needs more of that
partition than the cap gave.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep import faults
from prep.parts import MAX_BAD_EXAMPLES, PartsWriter, TaskCounts, TaskRecord
from prep.readers import BadRecord, Document, Partition, ReadSettings, open_reader
from prep.shuffle import ShuffleBuffer
from prep.split import Splitter
from shards.tokenizer import encode_document, load_gpt2

if TYPE_CHECKING:
    import tiktoken

    from prep.readers import Reader
    from prep.recipe import DomainConfig

CAP_GROWTH = 4  # each cap level reads this many times further into the partition


class TaskError(RuntimeError):
    """A task that cannot finish; the message says why and the fix."""


@dataclass(frozen=True)
class DomainSettings:
    """Everything a worker needs to run any task of one domain (picklable, sent with each)."""

    cfg: DomainConfig  # resolved
    read: ReadSettings
    seed: int
    split_salt: str
    tokenizer_file: str | None
    max_bad_fraction: float

    def reader_key(self) -> str:
        """What a domain's reader is built from, as JSON (the per-process cache's key)."""
        return json.dumps([asdict(self.cfg), asdict(self.read)], sort_keys=True)


@dataclass(frozen=True)
class TaskSpec:
    domain: str
    partition: Partition
    level: int
    cap_bytes: int | None
    cap_tokens: int | None

    @property
    def id(self) -> str:
        piece = self.partition.piece  # a piece of a stream partition (prep.readers.pieces)
        at = "" if piece is None else f".p{piece:05d}"
        return f"{self.domain}.{self.partition.index:06d}{at}.L{self.level}"

    def next_level(self) -> TaskSpec:
        grow = CAP_GROWTH
        return TaskSpec(self.domain, self.partition, self.level + 1,
                        None if self.cap_bytes is None else self.cap_bytes * grow,
                        None if self.cap_tokens is None else self.cap_tokens * grow)


@dataclass(frozen=True)
class TaskJob:
    spec: TaskSpec
    settings: DomainSettings
    tasks_dir: str


# Per process: the tokenizer and each domain's reader are built once, on first use. The plan
# loads the tokenizer in the coordinator (`prep.plan`), so the local executor's forked workers
# inherit it instead of loading it again (~0.1 s of each worker's start).
@functools.lru_cache(maxsize=4)
def encoding(tokenizer_file: str | None) -> tiktoken.Encoding:
    return load_gpt2(tokenizer_file)


@functools.lru_cache(maxsize=16)
def _reader(key: str) -> Reader:
    from prep.recipe import DomainConfig

    cfg, read = json.loads(key)
    return open_reader(DomainConfig(**cfg), ReadSettings(**{**read, "probe": False}))


def run_task(job: TaskJob) -> TaskRecord:
    """Run one task to its completion record (see the module docstring)."""
    t0 = time.perf_counter()
    spec, st = job.spec, job.settings
    faults.maybe_kill("task-start", spec.id)
    enc = encoding(st.tokenizer_file)
    reader = _reader(st.reader_key())
    counts = TaskCounts()
    bad: list[str] = []
    writer = PartsWriter(Path(job.tasks_dir), spec.id)
    try:
        docs = _filtered(reader.read(spec.partition), st, counts, bad)
        shuffled = ShuffleBuffer(st.cfg.shuffle_buffer, seed=f"{st.seed}:{spec.domain}:"
                                 f"{spec.partition.key}",
                                 max_bytes=int(st.cfg.shuffle_buffer_mb * 1e6),
                                 size_of=lambda item: len(item[1]))(docs)
        exhausted = _emit(shuffled, writer, enc, Splitter(st.split_salt),
                          st.cfg.eval_fraction, spec, counts)
        provenance = None
        if exhausted and hasattr(reader, "partition_record"):
            provenance = reader.partition_record(spec.partition)
        record = TaskRecord(
            task=spec.id, domain=spec.domain, partition=spec.partition.key,
            partition_index=spec.partition.index, level=spec.level, cap_bytes=spec.cap_bytes,
            cap_tokens=spec.cap_tokens, exhausted=exhausted, counts=counts, bad_examples=bad,
            files={}, provenance=provenance, seconds=round(time.perf_counter() - t0, 4),
            host=socket.gethostname(), pid=os.getpid())
        faults.maybe_kill("task-before-done", spec.id)
        return writer.finish(record)
    except BaseException:
        writer.abort()
        raise


def _filtered(records: Iterator[Document | BadRecord], st: DomainSettings, c: TaskCounts,
              bad: list[str]) -> Iterator[tuple[Document, bytes]]:
    """(document, UTF-8 bytes) of the records that pass the filters; the rest counted (the
    commit judges the share of bad records over the partitions a domain uses)."""
    lo, hi = st.cfg.min_chars, st.cfg.max_chars
    for rec in records:
        c.docs_seen += 1
        if isinstance(rec, BadRecord):
            c.docs_bad += 1
            if len(bad) < MAX_BAD_EXAMPLES:
                bad.append(rec.reason)
            continue
        try:
            raw = rec.text.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate, from a "\ud800" JSON escape
            c.docs_bad += 1
            if len(bad) < MAX_BAD_EXAMPLES:
                bad.append(f"{_where(rec.source)}: text is not encodable as UTF-8 ({e})")
            continue
        c.bytes_seen += len(raw)
        n = len(rec.text)
        if not rec.text.strip():
            c.docs_empty += 1
        elif n < lo:
            c.docs_too_short += 1
        elif n > hi:
            c.docs_too_long += 1
        else:
            yield rec, raw


def _emit(stream: Iterator[tuple[Document, bytes]], writer: PartsWriter,
          enc: tiktoken.Encoding, splitter: Splitter, eval_fraction: float, spec: TaskSpec,
          c: TaskCounts) -> bool:
    """Hash, split, tokenize and write documents until the stream ends (True) or a cap is
    reached with documents left (False)."""
    cap_b, cap_t = spec.cap_bytes, spec.cap_tokens
    sha256 = hashlib.sha256
    for doc, raw in stream:
        digest = sha256(raw).digest()
        tokens = encode_document(enc, doc.text)
        writer.add(tokens, digest, len(doc.text), len(raw),
                   splitter.point(digest) < eval_fraction, doc.source)
        c.docs += 1
        c.bytes += len(raw)
        c.tokens += len(tokens)
        if (cap_b is not None and c.bytes >= cap_b) or (cap_t is not None and c.tokens >= cap_t):
            return next(stream, None) is None
    return True


def bad_records_message(domain: str, n_bad: int, n_seen: int, limit: float, examples: list[str],
                        where: str = "") -> str:
    frac = n_bad / max(1, n_seen)
    lines = "\n  ".join(examples)
    return (f"domain {domain}{where}: {n_bad} of {n_seen} records were bad ({frac:.2%} > "
            f"--max-bad-fraction {limit:g}); first ones:\n  {lines}\nfix the source or the "
            "recipe (text_field?), or raise --max-bad-fraction to skip them")


def _where(source: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in source.items()) or "a record"
