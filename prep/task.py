"""One task: one partition of one domain, from raw records to part files (runs in a worker).

The task runs its domain's steps (`prep.steps`: read -> length_filter -> shuffle -> hash_split
-> tokenize, plus those the recipe enables) as a chain of lazy generators and writes what comes
out to part files (`prep.parts`), completion record last, with the steps' counters in it. A
task's output is a pure function of its partition, the recipe, the seed and its cap: it never
depends on which worker, machine or executor runs it, nor on when.

A budgeted domain's tasks are *capped*: a task stops once its emitted documents reach
`cap_bytes` or `cap_tokens` (every step is prefix-stable: any prefix of its output depends only
on a prefix of its input, so a task with a larger cap emits a superset, in the same order). The
commit asks for a task again with a larger cap (the next level) only if it needs more of that
partition than the cap gave.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep import faults
from prep import steps as registry
from prep.parts import PartsWriter, TaskRecord
from prep.readers import Partition, ReadSettings, open_reader
from prep.steps import Column, Counters, Doc, Step, TaskContext, TaskError
from prep.steps.builtin import Tokenize
from shards.tokenizer import DEFAULT_BACKEND

if TYPE_CHECKING:
    from prep.readers import Reader
    from prep.recipe import DomainConfig

CAP_GROWTH = 4  # each cap level reads this many times further into the partition


@dataclass(frozen=True)
class DomainSettings:
    """Everything a worker needs to run any task of one domain (picklable, sent with each)."""

    cfg: DomainConfig  # resolved
    read: ReadSettings
    seed: int
    split_salt: str
    tokenizer_file: str | None
    max_bad_fraction: float
    tokenizer_backend: str = DEFAULT_BACKEND  # as requested: each worker chooses and checks
    tokenizer_check_every: int = 0  # SampledCheck's 1 in N (0: off)

    # The domain's pipeline, resolved from the recipe when the plan is made (in the
    # coordinator): the step classes travel with the settings to every worker.
    steps: tuple[type[Step], ...] = field(init=False)
    counters: tuple[str, ...] = field(init=False)  # the steps' declared counters, in order
    columns: tuple[tuple[str, Column], ...] = field(init=False)  # their metadata columns

    def __post_init__(self) -> None:
        steps = registry.pipeline(self.cfg)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "counters", registry.task_counters(self.cfg, steps))
        object.__setattr__(self, "columns", registry.columns(self.cfg, steps))

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


# Per process: each domain's reader is built once, on first use.
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
    reader = _reader(st.reader_key())
    task = TaskContext(spec.domain, spec.partition.key, spec.partition.index, spec.level,
                       st.seed, Counters.of(st.counters))
    writer = PartsWriter(Path(job.tasks_dir), spec.id, dict(st.columns))
    try:
        stream: Iterator[Any] = reader.read(spec.partition)
        steps = [step(st, task) for step in st.steps]
        for step in steps:
            stream = step.run(stream)
        exhausted = _emit(stream, writer, spec)
        provenance = None
        if exhausted and hasattr(reader, "partition_record"):
            provenance = reader.partition_record(spec.partition)
        record = TaskRecord(
            task=spec.id, domain=spec.domain, partition=spec.partition.key,
            partition_index=spec.partition.index, level=spec.level, cap_bytes=spec.cap_bytes,
            cap_tokens=spec.cap_tokens, exhausted=exhausted, docs=writer.docs,
            bytes=writer.bytes, tokens=writer.tokens, counts=dict(task.counters),
            bad_examples=task.bad_examples, files={}, provenance=provenance,
            seconds=round(time.perf_counter() - t0, 4), host=socket.gethostname(),
            pid=os.getpid(),
            tokenizer=next((s.record() for s in steps if isinstance(s, Tokenize)), {}))
        faults.maybe_kill("task-before-done", spec.id)
        return writer.finish(record)
    except BaseException:
        writer.abort()
        raise


def _emit(stream: Iterator[Doc], writer: PartsWriter, spec: TaskSpec) -> bool:
    """Write the pipeline's documents until it ends (True) or a cap is reached with documents
    left (False)."""
    cap_b, cap_t = spec.cap_bytes, spec.cap_tokens
    for doc in stream:
        writer.add(doc)
        if ((cap_b is not None and writer.bytes >= cap_b)
                or (cap_t is not None and writer.tokens >= cap_t)):
            return next(stream, None) is None
    return True


def bad_records_message(domain: str, n_bad: int, n_seen: int, limit: float, examples: list[str],
                        where: str = "") -> str:
    frac = n_bad / max(1, n_seen)
    lines = "\n  ".join(examples)
    return (f"domain {domain}{where}: {n_bad} of {n_seen} records were bad ({frac:.2%} > "
            f"--max-bad-fraction {limit:g}); first ones:\n  {lines}\nfix the source or the "
            "recipe (text_field?), or raise --max-bad-fraction to skip them")


__all__ = ["CAP_GROWTH", "DomainSettings", "TaskError", "TaskJob", "TaskSpec",
           "bad_records_message", "run_task"]  # TaskError: re-exported
