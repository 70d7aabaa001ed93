"""Benchmark decontamination in prep: a worker step that finds each document's benchmark hit and
a commit hook that drops the train documents with one.

Recipe keys (top level: one value for every domain; `prep.decontaminate` parses and checks
them)::

    decontaminate = ["bench/*.jsonl", {path = "bench/gsm8k.jsonl", text_field = "question"}]
    decontaminate_ngram = 13          # content tokens per n-gram (default 13)
    decontaminate_text_field = "text" # the JSON field of each benchmark text (default "text")

- At plan time, in the coordinator, :meth:`Match.prepare` builds the n-gram index of every
  benchmark text ONCE (`BenchmarkIndex.build`, texts tokenized by tiktoken, the reference
  encoder: the ids prep writes whatever the backend) into the run's cache directory
  (``OUT/.prep-cache`` or ``--cache-dir``, shared by Ray and job-array workers), named by the
  files' sha256, n, text fields and encoder, so a second run or a resume reuses it. What it
  returns (the index's name and each file's sha256, text field, texts and n-grams) enters the
  run's fingerprint: a resume after a benchmark file changed is refused.
- :class:`Match` (worker step ``decontaminate_match``, after ``tokenize``: it needs the ids)
  opens the index memory-mapped once per worker process (`open_cached`) and stores each
  document's hit in the column ``decontaminate_hit``: the position of the first benchmark file
  (recipe order) sharing an n-gram with it, -1 for none. Documents are matched in batches
  (`BenchmarkIndex.match_many`): a bounded look-ahead of `BATCH_DOCS` documents, the output
  order and each document's hit are those of one-by-one matching (prefix-stable).
- :class:`Decontaminate` (commit hook ``decontaminate``, order 20: after exact dedup and the
  near-dup hook, whose group mode may move an eval document to train) drops every document
  whose final split is train and that has a hit. Eval documents are never dropped (nothing
  trains on them); they are counted.

Counts (per domain): ``docs_decontaminated`` (train documents dropped),
``docs_decontaminated:<file>`` per benchmark file (the file as the recipe's glob matched it),
``docs_benchmark_in_eval`` (eval documents with a hit, kept). The manifest's
``hooks.decontaminate.params`` records n, the hash, the encoder and each file's path, sha256,
text field, texts and distinct n-grams.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prep.decontaminate import (
    FIELD_KEY,
    KEY,
    NGRAM_KEY,
    BenchmarkIndex,
    DecontaminationError,
    open_cached,
    parse_decontaminate,
)
from prep.steps.base import (
    Column,
    CommitHook,
    Counters,
    Doc,
    DocReader,
    Group,
    HookOutput,
    Option,
    PrepareContext,
    Step,
    TaskContext,
    TaskError,
    TopKeyError,
)
from shards.ngrams import HASH_VERSION
from shards.tokenizer import EOT_ID, reference_encoder

if TYPE_CHECKING:
    from prep.recipe import DomainConfig
    from prep.task import DomainSettings

COLUMN = "decontaminate_hit"
BATCH_DOCS = 256  # documents matched per vectorised call (measured: ~8 us per document)
BATCH_TOKENS = 1 << 18  # ... or this many tokens, whichever comes first
MAX_KEY = 200  # characters of a keyed counter's key (`shards.format.COUNTER_RE`)


def enabled(cfg: DomainConfig) -> bool:
    return cfg.options[KEY] is not None


def labels(cfg: DomainConfig) -> list[str]:
    """The benchmark files' labels, in recipe order (after `prepare`)."""
    return list(cfg.prepared[Match.name]["files"])


def counter_key(label: str) -> str:
    return label if len(label) <= MAX_KEY else label[-MAX_KEY:]


class Match(Step):
    """Each document's first benchmark file sharing an n-gram with it (see the module doc)."""

    name, order = "decontaminate_match", 410
    options = {
        KEY: Option(Any, None, "benchmark files (JSON Lines; paths or globs relative to the "
                    "recipe, or tables {path, text_field}): train documents sharing an n-gram "
                    "with any of their texts are dropped", top=True),
        NGRAM_KEY: Option(int | None, None, "content tokens per decontamination n-gram "
                          "(whitespace-only tokens skipped; default 13)", top=True),
        FIELD_KEY: Option(str | None, None, "the JSON field holding each benchmark text "
                          "(default \"text\")", top=True),
    }
    needs = ("tokens",)

    @classmethod
    def enabled(cls, cfg: DomainConfig) -> bool:
        return enabled(cfg)

    @classmethod
    def check(cls, cfg: DomainConfig) -> None:
        """The keys' values are checked when the index is built (`prepare`, plan time); here
        only what is ignored without it."""
        if not enabled(cfg):
            for k in (NGRAM_KEY, FIELD_KEY):
                if cfg.options[k] is not None:
                    raise TopKeyError(f"{k} is set but {KEY} is not; add {KEY} = "
                                      '["bench/*.jsonl"] (benchmark files) or remove it')

    @classmethod
    def columns(cls, cfg: DomainConfig) -> dict[str, Column]:
        return {COLUMN: Column("<i4")}

    @classmethod
    def prepare(cls, cfg: DomainConfig, ctx: PrepareContext) -> Any:
        raw = {k: cfg.options[k] for k in cls.options if cfg.options[k] is not None}
        key = repr(sorted(raw.items()))
        if key not in ctx.memo:  # every domain has the same keys: built (or found) once
            ctx.memo[key] = _build(raw, ctx)
        return ctx.memo[key]

    def __init__(self, settings: DomainSettings, task: TaskContext) -> None:
        super().__init__(settings, task)
        name = settings.cfg.prepared[self.name]["index"]
        path = Path(settings.read.cache_dir or ".") / name
        if not (path / "index.json").is_file():
            raise TaskError(f"the benchmark n-gram index {path} is missing (the run's cache "
                            "directory must be on storage every worker sees); re-run the same "
                            "command with --resume to rebuild it")
        self.index = open_cached(str(path))

    def run(self, docs: Iterator[Doc]) -> Iterator[Doc]:
        batch: list[Doc] = []
        tokens = 0
        for doc in docs:
            batch.append(doc)
            tokens += len(doc.tokens)  # type: ignore[arg-type]
            if len(batch) >= BATCH_DOCS or tokens >= BATCH_TOKENS:
                yield from self._mark(batch)
                batch, tokens = [], 0
        yield from self._mark(batch)

    def _mark(self, batch: list[Doc]) -> Iterator[Doc]:
        if not batch:
            return
        hits = self.index.match_many([d.tokens for d in batch])  # type: ignore[misc]
        for doc, hit in zip(batch, hits, strict=True):
            doc.columns[COLUMN] = -1 if hit is None else hit
            yield doc


def _build(raw: dict[str, Any], ctx: PrepareContext) -> dict[str, Any]:
    try:
        dc = parse_decontaminate(raw, base=ctx.base, where=ctx.recipe)
        assert dc is not None
        encoder = f"gpt2 ranks {ctx.tokenizer_sha256[:16]}"
        ref = reference_encoder(ctx.tokenizer_file)
        index = BenchmarkIndex.build(dc, encode=ref.encode_ordinary, cache_dir=ctx.cache_dir,
                                     encoder_id=encoder, eot_id=EOT_ID)
    except DecontaminationError as e:
        raise ValueError(str(e)) from None
    assert index.path is not None
    files = {}
    for s in index.stats:
        files[counter_key(s["file"])] = {k: s[k] for k in (
            "sha256", "text_field", "texts", "texts_shorter_than_n", "ngrams")}
    if len(files) != len(index.stats):
        raise ValueError(f"{KEY}: two benchmark files have the same last {MAX_KEY} characters "
                         "of their names; rename one")
    return {"index": index.path.name, "ngram": index.n, "hash": HASH_VERSION, "encoder": encoder,
            "files": files, "paths": [s["path"] for s in index.stats]}


class Decontaminate(CommitHook):
    """Drops train documents with a benchmark hit (see the module docstring)."""

    name, order = "decontaminate", 20

    @classmethod
    def enabled(cls, cfg: DomainConfig) -> bool:
        return enabled(cfg)

    @classmethod
    def counter_names(cls, cfg: DomainConfig) -> tuple[str, ...]:
        return ("docs_decontaminated", *(f"docs_decontaminated:{f}" for f in labels(cfg)),
                "docs_benchmark_in_eval")

    def start_domain(self, domain: Any) -> None:
        self.labels = labels(domain.cfg)
        self.params = domain.cfg.prepared[Match.name]

    def judge(self, group: Group) -> Any:
        hit = group.column(COLUMN)
        drop = group.keep & ~group.eval & (hit >= 0)  # the split after every earlier hook
        group.keep &= ~drop
        return drop

    def accept(self, group: Group, used: int, verdict: Any, counts: Counters) -> None:
        hit = group.column(COLUMN)[:used]
        drop = verdict[:used]
        counts["docs_decontaminated"] += int(drop.sum())
        per_file = np.bincount(hit[drop], minlength=len(self.labels))
        for label, n in zip(self.labels, per_file.tolist(), strict=True):
            counts[f"docs_decontaminated:{label}"] += n
        evals = group.keep[:used] & group.eval[:used] & (hit >= 0)
        counts["docs_benchmark_in_eval"] += int(evals.sum())

    def write(self, into: Path, read: DocReader) -> HookOutput | None:
        params = getattr(self, "params", None)
        if params is None:  # no domain enabled it
            return None
        files = [{"file": label, "path": path, **rec} for (label, rec), path in
                 zip(params["files"].items(), params["paths"], strict=True)]
        return HookOutput({"ngram": params["ngram"], "hash": params["hash"],
                           "encoder": params["encoder"], "index": params["index"],
                           "drops": "train documents (final split) sharing an n-gram with a "
                                    "benchmark text; eval documents are kept and counted",
                           "files": files}, [])


STEPS = (Match,)
HOOKS = (Decontaminate,)
