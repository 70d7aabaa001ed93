"""The contracts of the pipeline's pieces: documents, counters, worker steps, commit hooks.

A **step** (:class:`Step`) is one stage of a task in a worker: it takes the stream of
documents and yields the documents it keeps, possibly annotated. It must be a pure function of
its partition, the recipe and the seed, and *prefix-stable*: any prefix of its output depends
only on a prefix of its input (a lazy generator that never looks ahead further than it must).
That is what lets a capped task stop early and a larger cap emit a superset of a smaller one's
output in the same order, and what keeps --workers, executors and resume byte-identical.

A **commit hook** (:class:`CommitHook`) is the cross-partition counterpart: it runs in the
coordinator's commit over each group of candidate documents, in the plan's stream order, with
the metadata the steps stored (core columns and the steps' own :class:`Column`\\s). It may drop
documents and override their train/eval split, keeping state across groups and domains.

Both count through one mapping, :class:`Counters` (counter name -> int): a task's counters go
into its completion record, the commit sums them per domain with the hooks' and its own, and the
manifest, the progress summary and `shards inspect` show the mapping as it is. A counter is
declared by the step or hook that counts it (it appears as 0 when nothing happened); keyed
counts (one per benchmark file, say) are named ``<name>:<key>`` (`shards.format.COUNTER_RE`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from shards.format import COUNTER_RE

if TYPE_CHECKING:
    from prep.plan import DomainPlan, Plan
    from prep.recipe import DomainConfig
    from prep.task import DomainSettings

MAX_BAD_EXAMPLES = 5  # bad records quoted per task and per domain
COLUMN_RE = r"^[a-z][a-z0-9_]{0,63}$"


class TaskError(RuntimeError):
    """A task that cannot finish; the message says why and the fix (e.g. names the document)."""


class TopKeyError(ValueError):
    """A bad value of a top-level recipe key (``Option(top=True)``), raised by a component's
    `check`: its message is not prefixed with a domain."""


class Counters(dict[str, int]):
    """Counter name -> count, in declaration order (the order every report shows)."""

    @classmethod
    def of(cls, names: Iterable[str]) -> Counters:
        """Declared counters, all 0."""
        return cls((check_counter(n), 0) for n in names)

    def __missing__(self, name: str) -> int:  # ``counts[name] += 1`` of an undeclared name
        raise KeyError(f"counter {name!r} is not declared by any step or hook of this pipeline "
                       "(add it to their `counters` or `counter_names`)")

    def add(self, other: Mapping[str, int]) -> None:
        """Add another mapping's counts (names it has and this one lacks are appended)."""
        for k, v in other.items():
            self[k] = self.get(k, 0) + int(v)


def check_counter(name: str) -> str:
    if not isinstance(name, str) or not COUNTER_RE.match(name):
        raise ValueError(f"counter name {name!r} is not allowed: lowercase letters, digits and "
                         "'_', starting with a letter, optionally ':<key>' (a keyed count)")
    return name


@dataclass(frozen=True)
class Option:
    """A recipe key of a step or hook, per domain (``[domains.<name>] <key> = value``).

    `kind` is a type as DomainConfig's annotations write them (int, float, str, bool, list[str],
    ``X | None``); the recipe checks values against it and fills `default` in. With `path`, a
    relative path (str or list[str]) resolves against the recipe file, as `data_files` do. A
    `PrepConfig` field of the same name, when given (not None), overrides the recipe's value:
    that is how a key gets a command-line flag."""

    kind: Any
    default: Any
    help: str
    path: bool = False
    top: bool = False  # a top-level recipe key (above the domain tables): one value, every domain


@dataclass(frozen=True)
class PrepareContext:
    """What a component's :meth:`~_Component.prepare` may use, in the coordinator at plan time."""

    recipe: str  # the recipe (its file, or its name): messages start with it
    base: Path  # the directory relative paths of recipe keys resolve against (the recipe's)
    cache_dir: Path  # the run's cache directory (`ReadSettings.cache_dir`), shared by workers
    tokenizer_file: str | None  # the GPT-2 ranks (`shards.tokenizer.reference_encoder`)
    tokenizer_sha256: str  # ... and their sha256
    memo: dict[str, Any]  # shared by every prepare call of one plan (work several domains share)


@dataclass(frozen=True)
class Column:
    """A per-document metadata array a step stores (``col.<name>.npy`` in the task's part
    files, shape ``(n_docs, *shape)``), read back by commit hooks in stream order."""

    dtype: str  # a numpy dtype string: "<u8", "u1", "<f4", ...
    shape: tuple[int, ...] = ()


class Doc:
    """One document on its way through a task's steps.

    `text`, `raw` (its UTF-8 bytes) and `source` (provenance) come from ``read``; `digest`
    (content sha256) and `eval` (its split) from ``hash_split``; `tokens` (uint16 ids, EOT
    last) from ``tokenize``; `columns` holds each step :class:`Column`'s value."""

    __slots__ = ("text", "raw", "source", "digest", "eval", "tokens", "columns")

    def __init__(self, text: str, raw: bytes, source: dict[str, Any]) -> None:
        self.text = text
        self.raw = raw
        self.source = source
        self.digest: bytes = b""
        self.eval = False
        self.tokens: np.ndarray | None = None
        self.columns: dict[str, Any] = {}

    def where(self) -> str:
        """The document's provenance in words, for messages."""
        return ", ".join(f"{k} {v}" for k, v in self.source.items()) or "a document"


class TaskContext:
    """What a task's steps share: which partition, its seed, the counters, bad examples."""

    def __init__(self, domain: str, partition_key: str, partition_index: int, level: int,
                 seed: int, counters: Counters) -> None:
        self.domain = domain
        self.partition_key = partition_key
        self.partition_index = partition_index
        self.level = level
        self.seed = seed
        self.counters = counters
        self.bad_examples: list[str] = []

    def count(self, name: str, n: int = 1) -> None:
        try:
            self.counters[name] += n
        except KeyError as e:
            raise TaskError(e.args[0]) from None

    def bad(self, reason: str) -> None:
        """Quote a bad record (the first few of each task are kept)."""
        if len(self.bad_examples) < MAX_BAD_EXAMPLES:
            self.bad_examples.append(reason)


class _Component:
    """What steps and hooks share: a name, a place, options, declared counters."""

    name: ClassVar[str] = ""
    order: ClassVar[int] = 0  # place: components run by (order, name)
    counters: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[Mapping[str, Option]] = {}

    @classmethod
    def enabled(cls, cfg: DomainConfig) -> bool:
        """Whether this domain uses it (from its recipe keys); on by default."""
        return True

    @classmethod
    def check(cls, cfg: DomainConfig) -> None:
        """Reject bad option values at plan time with a one-line ValueError naming the key
        (the recipe prefixes the domain); also a place to fail fast on a missing file. Runs
        for every domain, enabled or not (a bad value is an error even where it is off)."""

    @classmethod
    def counter_names(cls, cfg: DomainConfig) -> tuple[str, ...]:
        """The counters it declares for this domain (override for keyed counters)."""
        return cls.counters

    @classmethod
    def prepare(cls, cfg: DomainConfig, ctx: PrepareContext) -> Any:
        """Coordinator-side work at plan time, once per domain that enables it, before any
        task: build a resource every worker shares (an index, in ``ctx.cache_dir``) and return
        a JSON-able description of it (None: nothing), which reaches every worker and hook as
        ``cfg.prepared[<name>]`` and enters the run's fingerprint (a resume where it differs
        is refused, naming the difference). It must depend only on the recipe and the input
        (never on the cache's path or the clock). A ValueError is a one-line plan error."""
        return None


class Step(_Component):
    """One stage of a task; see the module docstring for the contract.

    Subclasses set `name` and `order` (see `prep.steps` for the built-ins' places), declare
    `counters`, `options`, what Doc fields or columns they read (`needs`) and set
    (`provides`, plus their `columns`), and implement :meth:`run`. An instance lives for one
    task; anything costly to build (an index, an encoder) comes from a per-process cache."""

    needs: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def columns(cls, cfg: DomainConfig) -> dict[str, Column]:
        """Per-document metadata it stores, by column name (set ``doc.columns[name]``)."""
        return {}

    def __init__(self, settings: DomainSettings, task: TaskContext) -> None:
        self.settings = settings
        self.task = task

    def count(self, name: str, n: int = 1) -> None:
        self.task.count(name, n)

    def run(self, docs: Iterator[Any]) -> Iterator[Doc]:
        raise NotImplementedError


class Filter(Step):
    """A step that keeps or drops each document on its own: implement :meth:`drop`."""

    def drop(self, doc: Doc) -> str | None:
        """None to keep the document, else the (declared) counter that counts its drop."""
        raise NotImplementedError

    def run(self, docs: Iterator[Doc]) -> Iterator[Doc]:
        drop, count = self.drop, self.task.count
        for doc in docs:
            why = drop(doc)
            if why is None:
                yield doc
            else:
                count(why)


class Group:
    """One commit group's candidate documents in stream order, as the hooks see them.

    `rows` holds the core metadata (`prep.parts.META_DTYPE`: digest, tokens, chars, nbytes,
    eval); `keep` starts all True and `eval` as the tasks assigned it: a hook clears `keep` to
    drop a document and sets `eval` to move one (True: eval, False: train). `task` and `doc`
    locate each row (the group's task index, the document's row in that task's part files).
    """

    def __init__(self, domain: DomainPlan, index: int, tasks: list[str], rows: np.ndarray,
                 task: np.ndarray, doc: np.ndarray,
                 load_column: Callable[[str], np.ndarray]) -> None:
        self.domain = domain
        self.index = index
        self.tasks = tasks
        self.rows = rows
        self.task = task
        self.doc = doc
        self.keep = np.ones(len(rows), dtype=bool)
        self.eval = rows["eval"].astype(bool)
        self._load = load_column
        self._columns: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> np.ndarray:
        """A step's column for these documents, in stream order, shape (len(self), *shape)."""
        if name not in self._columns:
            self._columns[name] = self._load(name)
        return self._columns[name]


# (task id, document row) -> (text, provenance) of a document a task emitted
DocReader = Callable[[str, int], tuple[str, dict[str, Any]]]


@dataclass
class HookOutput:
    """What a commit hook publishes with the dataset (`CommitHook.write`): parameters and the
    names of the files it wrote into its directory; the manifest lists them under
    ``hooks.<name>`` with size and sha256, and `shards verify` checks them."""

    params: dict[str, Any]
    files: list[str]


class CommitHook(_Component):
    """Cross-partition work in the commit (exact dedup today): one instance per run.

    Called for every domain in recipe order: :meth:`start_domain`, then per group
    :meth:`judge` (may be called again on the same group with more documents when the commit
    needs more of a capped partition: it must not change state, and its verdict on a document
    may depend only on the documents before it and on committed state), then :meth:`accept`
    once with how many leading documents the commit used (the budget may stop it mid-group):
    update the state with those and count. :meth:`finish` runs after the last domain (a final
    check, and counts only known at the end, such as a cluster-size histogram).
    Hooks run in (order, name); each sees what earlier ones dropped or moved.
    :meth:`write` runs once the data is assembled, before publishing: a hook may write files
    into the new dataset (examples for a reviewer) and record its parameters."""

    # A directory of the run's work directory for a hook's on-disk state (files named after
    # the hook), set by the commit; the commit is redone from scratch on --resume.
    scratch: Path | None = None

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def start_domain(self, domain: DomainPlan) -> None: ...

    def judge(self, group: Group) -> Any:
        """Clear `group.keep` / set `group.eval` where needed; returns what `accept` needs."""
        raise NotImplementedError

    def accept(self, group: Group, used: int, verdict: Any, counts: Counters) -> None:
        """Documents ``[:used]`` are committed with the final ``group.keep``/``group.eval``
        (after every hook): add them to the state and count into `counts`."""
        raise NotImplementedError

    def end_domain(self) -> None: ...

    def finish(self, counts: Mapping[str, Counters]) -> str | None:
        """After the last domain, with every domain's counters by name (to count what is only
        known at the end, into declared counters): a final check over everything committed,
        returning the error message if it fails."""
        return None

    def write(self, into: Path, read: DocReader) -> HookOutput | None:
        """Before publishing (after :meth:`finish`): write files into `into` (the hook's own
        directory in the new dataset version, ``_hooks/<name>/``; `read` gives any candidate
        document's text and provenance) and say what the manifest records; None: nothing."""
        return None
