"""The built-in steps of every task: read -> length_filter -> shuffle -> hash_split -> tokenize."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prep.readers import BadRecord, Document
from prep.shuffle import ShuffleBuffer
from prep.split import Splitter
from prep.steps.base import Doc, Step, TaskContext, TaskError
from shards.conformance import EncoderMismatch, SampledCheck
from shards.tokenizer import load_encoder, reference_encoder

if TYPE_CHECKING:
    from prep.task import DomainSettings

# Places of the built-in steps; a new step picks a number between them (`prep.steps`).
READ, LENGTH_FILTER, SHUFFLE, HASH_SPLIT, TOKENIZE = 0, 100, 200, 300, 400


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
    """GPT-2 token ids of each document, EOT appended, by the run's encoder backend
    (`shards.tokenizer.load_encoder`: chosen and checked once per process; the ids never depend
    on it), and a deterministic sample of documents (by content hash, 1 in
    `--tokenizer-check-every`) re-encoded by tiktoken: a difference fails the task naming the
    document, before anything of it is written. What the check did goes into the task record's
    `tokenizer`, apart from the domain's counters, so that the manifest's domains are the same
    whatever the backend."""

    name, order = "tokenize", TOKENIZE
    needs = ("text", "digest")
    provides = ("tokens",)

    def __init__(self, settings: DomainSettings, task: TaskContext) -> None:
        super().__init__(settings, task)
        st = self.settings
        self.encoder = load_encoder(st.tokenizer_backend, st.tokenizer_file)
        self.check = SampledCheck(st.tokenizer_check_every, self.encoder,
                                  lambda: reference_encoder(st.tokenizer_file),
                                  f"{task.domain} {task.partition_key}")

    def run(self, docs: Iterator[Doc]) -> Iterator[Doc]:
        encode, check = self.encoder.encode_document, self.check
        for doc in docs:
            doc.tokens = encode(doc.text)
            try:
                check(doc.digest, doc.text, doc.tokens, doc.source)
            except EncoderMismatch as e:
                raise TaskError(str(e)) from e
            yield doc

    def record(self) -> dict[str, Any]:
        """The task record's `tokenizer`: the backend, its version and the check's counts."""
        return self.check.record()


STEPS = (Read, LengthFilter, Shuffle, HashSplit, Tokenize)
