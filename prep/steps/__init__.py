"""A task's worker steps and the commit's hooks: the registry, and how to add one.

Every task runs the steps its domain enables, in (order, name)::

    read (0) -> length_filter (100) -> shuffle (200) -> hash_split (300) -> minhash (350)
    -> tokenize (400) -> decontaminate_match (410, with `decontaminate`)

and the commit runs the enabled hooks, in (order, name), over each group of candidates
(`exact_dedup`, order 0, then `near_dedup`, 10, then `decontaminate`, 20). The contracts are in
:mod:`prep.steps.base`, the built-in steps in :mod:`prep.steps.builtin`, the exact-dedup hook in
:mod:`prep.dedup`, the near-dup step and hook in :mod:`prep.neardup`, benchmark decontamination
in :mod:`prep.decontaminate_steps`.

**Add a step**: one class and (usually) one recipe key, in a module listed in `MODULES` (its
`STEPS` tuple), or registered with :func:`registered` (tests)::

    class DropMarked(Filter):
        name, order = "drop_marked", 150          # after length_filter, before shuffle
        options = {"drop_marker": Option(str | None, None, "drop documents containing it")}
        counters = ("docs_marked",)
        needs = ("text",)

        @classmethod
        def enabled(cls, cfg):                    # on only where the recipe sets the key
            return cfg.options["drop_marker"] is not None

        def drop(self, doc):
            return "docs_marked" if self.settings.cfg.options["drop_marker"] in doc.text else None

``[domains.x] drop_marker = "XYZZY"`` turns it on for domain x; `docs_marked` then reaches the
task records (done.json), the manifest's ``domains.x.counts``, prep's summary and `shards
inspect`, with no other code. The rules:

- *Place*: text filters between 100 and 200 (before the shuffle: cheapest), steps that need the
  digest or the split between 300 and 400, steps that need token ids after 400. `needs` and
  `provides` (Doc fields text, raw, source, digest, eval, tokens, and column names) are checked
  when the recipe is loaded: a step placed before what it needs is a one-line error.
- *Pure and prefix-stable*: a step's output depends only on its partition, the recipe and the
  seed (seed anything random from ``task.seed``, ``task.domain``, ``task.partition_key``), and
  any prefix of it only on a prefix of its input (yield as you go; buffer boundedly, as the
  shuffle does). Never read the clock, the worker or the number of workers.
- *Counters*: declare every name in `counters` (or `counter_names(cfg)` for keyed families,
  ``docs_x:<key>``, e.g. one per benchmark file); count with ``self.count(name)``. A declared
  counter shows as 0 when nothing happened; an undeclared one fails the task.
- *Options*: `Option(kind, default, help, path=False)`; `check(cfg)` rejects bad values at plan
  time with a ValueError naming the key (it runs for every domain; `TopKeyError` for a
  top-level key, whose message then names no domain); `path=True` resolves
  relative paths against the recipe file; a `PrepConfig` field of the same name is its flag.
  Options are output-affecting: they are in the run's fingerprint (a resume with another value
  is refused). A knob that must not change the output (an encoder backend) belongs in
  `PrepConfig` and `DomainSettings`, not here. ``Option(..., top=True)``: a top-level recipe
  key instead (one value for every domain, as `decontaminate`); a domain table may not set it.
- *Shared resources* (an n-gram index, a second encoder): load them in a module-level
  ``functools.lru_cache`` function keyed by picklable settings, called from the step's
  ``__init__``: once per worker process (`encoding` in `prep.steps.builtin` is the model).
  What must be built once per run, not per worker (an index of benchmark n-grams), is built by
  the classmethod ``prepare(cfg, ctx)`` in the coordinator at plan time (`PrepareContext`: the
  recipe's directory, the run's cache directory shared by all workers, the tokenizer): it
  returns a JSON-able description that reaches workers and hooks as ``cfg.prepared[name]``
  and enters the run's fingerprint (`prep.decontaminate_steps.Match` is the model).
- *Failing*: raise `TaskError` naming the document (``doc.where()``) and the fix.
- *Metadata for the commit*: declare ``columns(cfg) -> {name: Column(dtype, shape)}`` and set
  ``doc.columns[name]`` on every document you pass on; it is stored as ``col.<name>.npy`` in the
  task's part files (checked on resume like the others) and read by hooks in stream order.

**Add a commit hook**: a :class:`~prep.steps.base.CommitHook` subclass in a module's `HOOKS`
(see `prep.dedup.ExactDedup`), with options and counters as for steps. One instance per run sees
every domain in recipe order and each group's candidates in stream order (`Group`: core rows,
``group.column(name)``, and `keep`/`eval`, which it may clear/set: drop a document or move it to
another split). `judge` decides without changing state (it may run again on the same group with
more documents); `accept` commits the first `used` documents and counts; `finish(counts)` runs
after the last domain: a final check (exact dedup's leakage check) and counts only known at the
end (a cluster-size histogram as keyed counters, into any domain's declared counters);
`write(into, read)` runs before publishing: files written into `into` (the new dataset's
``_hooks/<name>/``) are listed in the manifest's ``hooks.<name>`` with the parameters it returns,
and checked by `shards verify`. On-disk state goes in ``self.scratch`` (the work directory).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prep.steps.base import (
    Column,
    CommitHook,
    Counters,
    Doc,
    DocReader,
    Filter,
    Group,
    HookOutput,
    Option,
    PrepareContext,
    Step,
    TaskContext,
    TaskError,
    TopKeyError,
)

if TYPE_CHECKING:
    from prep.recipe import DomainConfig

# Modules whose STEPS and HOOKS tuples make the pipeline (imported on first use, so that
# `prep.recipe` can ask for options without importing readers or numpy-heavy modules first).
MODULES = ("prep.steps.builtin", "prep.dedup", "prep.neardup", "prep.decontaminate_steps")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_registered: list[type] = []  # added by `registered` (tests, plugins)


def components() -> list[type[Step] | type[CommitHook]]:
    """Every known step and hook class, checked for unique names and options."""
    out: list[Any] = []
    for m in MODULES:
        mod = importlib.import_module(m)
        out += [*getattr(mod, "STEPS", ()), *getattr(mod, "HOOKS", ())]
    out += _registered
    names: set[str] = set()
    keys: dict[str, str] = {}
    for c in out:
        if not NAME_RE.match(c.name) or c.name in names:
            raise ValueError(f"{c.__qualname__}: name {c.name!r} is invalid or taken")
        names.add(c.name)
        for k in c.options:
            if k in keys:
                raise ValueError(f"recipe key {k!r} is declared by both {keys[k]} and {c.name}")
            keys[k] = c.name
    return out


def steps() -> list[type[Step]]:
    return sorted((c for c in components() if issubclass(c, Step)), key=_place)


def hooks() -> list[type[CommitHook]]:
    return sorted((c for c in components() if issubclass(c, CommitHook)), key=_place)


def _place(c: type) -> tuple[int, str]:
    return (c.order, c.name)  # type: ignore[attr-defined]


def options() -> dict[str, Option]:
    """Every step's and hook's recipe keys."""
    return {k: o for c in components() for k, o in c.options.items()}


def top_options() -> dict[str, Option]:
    """The recipe keys written at the top level (one value for every domain)."""
    return {k: o for k, o in options().items() if o.top}


def resolve_options(given: dict[str, Any]) -> dict[str, Any]:
    """The domain's option values with every registered default filled in, in key order (a key
    no component declares is kept: the recipe refuses those, with the allowed keys)."""
    known = options()
    return {**{k: given.get(k, o.default) for k, o in sorted(known.items())},
            **{k: v for k, v in given.items() if k not in known}}


def check(cfg: DomainConfig) -> None:
    """Every component's own value checks for this domain (ValueError naming the key)."""
    for c in components():
        c.check(cfg)


def pipeline(cfg: DomainConfig) -> tuple[type[Step], ...]:
    """The steps this domain runs, in order; ValueError if one needs what no earlier gives."""
    chosen = tuple(s for s in steps() if s.enabled(cfg))
    have: set[str] = set()
    for s in chosen:
        missing = [n for n in s.needs if n not in have]
        if missing:
            raise ValueError(f"step {s.name} (order {s.order}) needs {', '.join(missing)}, which "
                             "no earlier step provides; give it a later order")
        have |= set(s.provides) | set(s.columns(cfg))
    return chosen


def domain_hooks(cfg: DomainConfig) -> list[type[CommitHook]]:
    return [h for h in hooks() if h.enabled(cfg)]


def prepare(cfg: DomainConfig, ctx: PrepareContext) -> dict[str, Any]:
    """What this domain's steps and hooks prepared at plan time (`_Component.prepare`), by
    component name, in pipeline order (those that returned None are left out)."""
    out = {}
    for c in (*pipeline(cfg), *domain_hooks(cfg)):
        value = c.prepare(cfg, ctx)
        if value is not None:
            out[c.name] = value
    return out


def task_counters(cfg: DomainConfig, chosen: tuple[type[Step], ...]) -> tuple[str, ...]:
    return tuple(n for s in chosen for n in s.counter_names(cfg))


def columns(cfg: DomainConfig, chosen: tuple[type[Step], ...]) -> tuple[tuple[str, Column], ...]:
    out: dict[str, Column] = {}
    for s in chosen:
        for name, col in s.columns(cfg).items():
            if not NAME_RE.match(name) or name in out:
                raise ValueError(f"step {s.name}: column name {name!r} is invalid or taken")
            out[name] = col
    return tuple(out.items())


@contextmanager
def registered(*classes: type) -> Iterator[None]:
    """Steps or hooks known for the duration of the block (tests; forked workers inherit)."""
    _registered.extend(classes)
    try:
        components()  # refuse clashes now
        yield
    finally:
        for c in classes:
            _registered.remove(c)


__all__ = ["Column", "CommitHook", "Counters", "Doc", "DocReader", "Filter", "Group",
           "HookOutput", "MODULES", "Option", "PrepareContext",
           "Step", "TaskContext", "TaskError", "TopKeyError", "check", "columns", "components", "domain_hooks",
           "hooks", "options", "pipeline", "prepare", "registered", "resolve_options", "steps",
           "task_counters", "top_options"]
