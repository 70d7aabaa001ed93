"""The built-in steps of every task: read -> length_filter -> shuffle -> hash_split -> tokenize."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prep.readers import BadRecord, Document
from prep.shuffle import ShuffleBuffer
from prep.split import Splitter
from prep.steps.base import Doc, Step, TaskContext
from shards.tokenizer import encode_document, load_gpt2

if TYPE_CHECKING:
    import tiktoken

    from prep.task import DomainSettings

# Places of the built-in steps; a new step picks a number between them (`prep.steps`).
READ, LENGTH_FILTER, SHUFFLE, HASH_SPLIT, TOKENIZE = 0, 100, 200, 300, 400


# Per process: the tokenizer is built once, on first use. The plan loads it in the coordinator
# (`prep.plan`), so the local executor's forked workers inherit it (~0.1 s of each start).
@functools.lru_cache(maxsize=4)
def encoding(tokenizer_file: str | None) -> tiktoken.Encoding:
    return load_gpt2(tokenizer_file)


class Read(Step):
    """The reader's records as documents; unreadable ones counted, quoted and skipped (the
    commit judges the share of bad records over the partitions a domain uses)."""

    name, order = "read", READ
    counters = ("docs_seen", "bytes_seen", "docs_bad")
    provides = ("text", "raw", "source")

    def run(self, docs: Iterator[Document | BadRecord]) -> Iterator[Doc]:  # type: ignore[override]
        c, task = self.task.counters, self.task
        for rec in docs:
            c["docs_seen"] += 1
            if isinstance(rec, BadRecord):
                c["docs_bad"] += 1
                task.bad(rec.reason)
                continue
            try:
                raw = rec.text.encode("utf-8")
            except UnicodeEncodeError as e:  # a lone surrogate, from a "\ud800" JSON escape
                c["docs_bad"] += 1
                where = ", ".join(f"{k} {v}" for k, v in rec.source.items()) or "a record"
                task.bad(f"{where}: text is not encodable as UTF-8 ({e})")
                continue
            c["bytes_seen"] += len(raw)
            yield Doc(rec.text, raw, rec.source)


class LengthFilter(Step):
    """Drops empty documents and those outside [min_chars, max_chars] characters."""

    name, order = "length_filter", LENGTH_FILTER
    counters = ("docs_empty", "docs_too_short", "docs_too_long", "docs_filtered")
    needs = ("text",)

    def run(self, docs: Iterator[Doc]) -> Iterator[Doc]:
        lo, hi = self.settings.cfg.min_chars, self.settings.cfg.max_chars
        c = self.task.counters
        for doc in docs:
            n = len(doc.text)
            if not doc.text.strip():
                c["docs_empty"] += 1
            elif n < lo:
                c["docs_too_short"] += 1
            elif n > hi:
                c["docs_too_long"] += 1
            else:
                yield doc
                continue
            c["docs_filtered"] += 1


class Shuffle(Step):
    """The task's seeded shuffle buffer (`prep.shuffle`), bounded in documents and bytes."""

    name, order = "shuffle", SHUFFLE
    needs = ("raw",)

    def run(self, docs: Iterator[Doc]) -> Iterator[Doc]:
        cfg, t = self.settings.cfg, self.task
        buffer = ShuffleBuffer(cfg.shuffle_buffer, seed=f"{t.seed}:{t.domain}:{t.partition_key}",
                               max_bytes=int(cfg.shuffle_buffer_mb * 1e6),
                               size_of=lambda doc: len(doc.raw))
        return buffer(docs)


class HashSplit(Step):
    """Content sha256 once per document, and the train/eval split derived from it
    (`prep.split`: a pure function of the text and the salt)."""

    name, order = "hash_split", HASH_SPLIT
    needs = ("raw",)
    provides = ("digest", "eval")

    def run(self, docs: Iterator[Doc]) -> Iterator[Doc]:
        point = Splitter(self.settings.split_salt).point
        fraction = self.settings.cfg.eval_fraction
        sha256 = hashlib.sha256
        for doc in docs:
            doc.digest = sha256(doc.raw).digest()
            doc.eval = point(doc.digest) < fraction
            yield doc


class Tokenize(Step):
    """GPT-2 token ids of each document, EOT appended (`shards.tokenizer.encode_document`).

    The encoder is held by the step (`self.encoder`), so that another backend can be swapped
    in here without touching the rest of the pipeline."""

    name, order = "tokenize", TOKENIZE
    needs = ("text",)
    provides = ("tokens",)

    def __init__(self, settings: DomainSettings, task: TaskContext) -> None:
        super().__init__(settings, task)
        self.encoder = encoding(self.settings.tokenizer_file)

    def run(self, docs: Iterator[Doc]) -> Iterator[Doc]:
        enc = self.encoder
        for doc in docs:
            doc.tokens = encode_document(enc, doc.text)
            yield doc


STEPS = (Read, LengthFilter, Shuffle, HashSplit, Tokenize)
