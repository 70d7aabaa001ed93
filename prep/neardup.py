"""Near-duplicate detection (MinHash LSH), on by default: a worker step and a commit hook.

- :class:`Signature` (worker step ``minhash``, after ``hash_split``, before ``tokenize``: it
  needs the text, not the tokens) computes each document's MinHash signature with
  `shards.minhash` (word 5-gram shingles, ``code`` or ``prose`` words: recipe key
  ``near_dedup_shingle``, by default ``code`` for a domain named code, else ``prose``) and stores
  it as three columns of the task's part files: ``minhash_sig`` (128 x uint16),
  ``minhash_bands`` (14 x uint64) and ``minhash_shingles`` (uint32). Documents are signed in
  batches of ~256 KB of text (a bounded look-ahead: the output order and every document's
  signature are those of one-by-one signing, so the step stays prefix-stable).
- :class:`NearDedup` (commit hook ``near_dedup``, after ``exact_dedup``) buckets every
  document's bands across all tasks and domains (`prep.lsh`), verifies each candidate pair by
  the signatures' estimated Jaccard (>= ``near_dedup_threshold``, default 0.8, of the
  document's domain), and clusters them (union-find in plan order): a document near earlier
  ones joins the earliest of their clusters, whose root, its first member in plan order, is the
  one kept. Clusters never merge once committed (a streaming commit cannot un-keep a document),
  so every cluster has exactly one root. ``near_dedup_mode = "remove"`` drops the other
  members; ``"group"`` keeps them all in the root's split (a document near clusters of both
  splits is dropped, counted as a conflict). Either way no verified near-duplicate pair
  straddles train/eval. Documents with fewer than 10 shingles are left to exact dedup
  (counted). ``near_dedup = false`` turns both off for a domain.

Counts (per domain): ``docs_near_duplicates`` (members found: removed, or grouped),
``docs_near_duplicates_across_domains`` (of which the root is in an earlier domain),
``docs_near_dedup_too_short``, in group mode ``docs_near_dup_moved`` and
``docs_near_dup_conflicts``, and the histogram ``near_dup_clusters:<size>`` of the clusters
whose root is in the domain. Before publishing, the hook writes up to
``near_dedup_examples`` clusters per domain (root and members, provenance and text) to
``_hooks/near_dedup/examples.jsonl`` in the dataset, for ``shards sample --near-dups``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prep.lsh import CAP, CONFLICT, MEMBER, NearDupState, Verdict
from prep.steps.base import (
    Column,
    CommitHook,
    Counters,
    Doc,
    DocReader,
    Group,
    HookOutput,
    Option,
    Step,
)
from shards.format import content_hash
from shards.minhash import DEFAULT_PARAMS, DEFAULT_THRESHOLD, KINDS, default_kind, signatures
from shards.neardups import EXAMPLES_FILE

if TYPE_CHECKING:
    from prep.plan import DomainPlan, Plan
    from prep.recipe import DomainConfig

PARAMS = DEFAULT_PARAMS
BATCH_BYTES = 256 << 10  # text signed per vectorised call (the measured optimum)
BATCH_DOCS = 4096
MODES = ("remove", "group")
SIZES = ((2, "2"), (3, "3"), (4, "4"), (8, "5-8"), (16, "9-16"), (64, "17-64"), (None, "65+"))
EXAMPLE_MEMBERS = 3  # members written per example cluster
COLUMNS = {"minhash_sig": Column("<u2", (PARAMS.bins,)),
           "minhash_bands": Column("<u8", (PARAMS.bands,)),
           "minhash_shingles": Column("<u4")}


def shingle_kind(cfg: DomainConfig) -> str:
    kind = cfg.options["near_dedup_shingle"]
    return kind if kind is not None else default_kind(cfg.name)


def size_key(n: int) -> str:
    return next(key for top, key in SIZES if top is None or n <= top)


class Signature(Step):
    """Each document's MinHash signature, as columns (see the module docstring)."""

    name, order = "minhash", 350
    options = {"near_dedup_shingle": Option(
        str | None, None, "words of near-dup shingles: code (identifiers, case kept) or prose "
        "(letters and digits, lowercased); default: code for a domain named code, else prose")}
    needs = ("raw",)

    @classmethod
    def enabled(cls, cfg: DomainConfig) -> bool:
        return bool(cfg.options["near_dedup"])

    @classmethod
    def check(cls, cfg: DomainConfig) -> None:
        kind = cfg.options["near_dedup_shingle"]
        if kind is not None and kind not in KINDS:
            raise ValueError(f"near_dedup_shingle must be {' or '.join(KINDS)}, got {kind!r}")

    @classmethod
    def columns(cls, cfg: DomainConfig) -> dict[str, Column]:
        return dict(COLUMNS)

    def run(self, docs: Iterator[Doc]) -> Iterator[Doc]:
        kind = shingle_kind(self.settings.cfg)
        batch: list[Doc] = []
        size = 0
        for doc in docs:
            batch.append(doc)
            size += len(doc.raw)
            if size >= BATCH_BYTES or len(batch) >= BATCH_DOCS:
                yield from _sign(batch, kind)
                batch, size = [], 0
        yield from _sign(batch, kind)


def _sign(batch: list[Doc], kind: str) -> Iterator[Doc]:
    if not batch:
        return
    s = signatures([d.raw for d in batch], kind, PARAMS)
    for i, doc in enumerate(batch):
        doc.columns["minhash_sig"] = s.sig[i]
        doc.columns["minhash_bands"] = s.bands[i]
        doc.columns["minhash_shingles"] = s.shingles[i]
        yield doc


class NearDedup(CommitHook):
    """Clusters near-duplicates across tasks and domains (see the module docstring)."""

    name, order = "near_dedup", 10
    options = {
        "near_dedup": Option(bool, True, "near-duplicate detection (MinHash LSH) in this domain"),
        "near_dedup_threshold": Option(float, DEFAULT_THRESHOLD, "estimated Jaccard similarity of word "
                                       "5-grams at which a document is a near-duplicate of an "
                                       "earlier one, in (0, 1]"),
        "near_dedup_mode": Option(str, "remove", "remove: keep a cluster's first document only; "
                                  "group: keep all, in the split of the first"),
        "near_dedup_examples": Option(int, 10, "clusters written to the dataset for `shards "
                                      "sample --near-dups` (per domain)"),
    }

    @classmethod
    def enabled(cls, cfg: DomainConfig) -> bool:
        return bool(cfg.options["near_dedup"])

    @classmethod
    def check(cls, cfg: DomainConfig) -> None:
        o = cfg.options
        if not 0 < o["near_dedup_threshold"] <= 1:
            raise ValueError(f"near_dedup_threshold must be in (0, 1], got "
                             f"{o['near_dedup_threshold']!r}")
        if o["near_dedup_mode"] not in MODES:
            raise ValueError(f"near_dedup_mode must be {' or '.join(MODES)}, got "
                             f"{o['near_dedup_mode']!r}")
        if o["near_dedup_examples"] < 0:
            raise ValueError(f"near_dedup_examples must be >= 0, got {o['near_dedup_examples']}")

    @classmethod
    def counter_names(cls, cfg: DomainConfig) -> tuple[str, ...]:
        group = cfg.options["near_dedup_mode"] == "group"
        return ("docs_near_duplicates", "docs_near_duplicates_across_domains",
                *(("docs_near_dup_moved", "docs_near_dup_conflicts") if group else ()),
                "docs_near_dedup_too_short", *(f"near_dup_clusters:{k}" for _, k in SIZES))

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.state: NearDupState | None = None
        self.starts: list[int] = []  # first id of each domain that indexes, in order
        self.names: list[str] = []
        self.settings: dict[str, dict[str, Any]] = {}
        self.examples: dict[str, dict[int, list[tuple[int, float, int]]]] = {}

    def start_domain(self, domain: DomainPlan) -> None:
        if self.state is None:
            folder = self.scratch if self.scratch is not None else Path(".")
            self.state = NearDupState(PARAMS.bands, PARAMS.bins, folder)
        cfg = domain.cfg
        self.domain = domain.name
        self.threshold = float(cfg.options["near_dedup_threshold"])
        self.mode = cfg.options["near_dedup_mode"]
        self.quota = int(cfg.options["near_dedup_examples"])
        self.starts.append(self.state.store.n)
        self.names.append(domain.name)
        self.settings[domain.name] = {"threshold": self.threshold, "mode": self.mode,
                                      "shingle": shingle_kind(cfg)}
        self.examples[domain.name] = {}

    def judge(self, group: Group) -> Any:
        assert self.state is not None
        signed = group.column("minhash_shingles") >= PARAMS.min_shingles
        before = group.keep.copy()
        live = np.flatnonzero(before & signed)
        keys, sigs = group.column("minhash_bands")[live], group.column("minhash_sig")[live]
        split = group.eval[live]
        v = self.state.judge(keys, sigs, split, self.threshold, self.mode == "group")
        if self.mode == "remove":
            group.keep[live[v.state != 0]] = False
        else:
            group.eval[live] = v.split
            group.keep[live[v.state == CONFLICT]] = False
        return live, v, before & ~signed, v.split != split

    def accept(self, group: Group, used: int, verdict: Any, counts: Counters) -> None:
        assert self.state is not None
        live, v, short, moved = verdict
        v: Verdict
        m = int(np.searchsorted(live, used))  # live documents among the first `used`
        rows = live[:m]
        self.state.accept(v, m, group.column("minhash_bands")[rows],
                          group.column("minhash_sig")[rows], group.eval[rows],
                          [group.tasks[t] for t in group.task[rows].tolist()], group.doc[rows])
        state = v.state[:m]
        member = state != 0
        counts["docs_near_duplicates"] += int(member.sum())
        counts["docs_near_duplicates_across_domains"] += int(
            (member & (v.root[:m] < self.starts[-1])).sum())
        counts["docs_near_dedup_too_short"] += int(short[:used].sum())
        if self.mode == "group":
            counts["docs_near_dup_moved"] += int((moved[:m] & (state == MEMBER)).sum())
            counts["docs_near_dup_conflicts"] += int((state == CONFLICT).sum())
        mine = self.examples[self.domain]
        for k in np.flatnonzero(member).tolist():
            root = int(v.root[k])
            if root in mine and len(mine[root]) < EXAMPLE_MEMBERS:
                mine[root].append((v.base + k, float(v.est[k]), int(state[k])))
            elif root not in mine and len(mine) < self.quota:
                mine[root] = [(v.base + k, float(v.est[k]), int(state[k]))]

    def domain_of(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.starts), ids, side="right") - 1

    def finish(self, counts: Mapping[str, Counters]) -> str | None:
        if self.state is None:
            return None
        self.state.index = type(self.state.index)(0)  # the index is no longer needed
        roots = self.state.clusters.roots()
        if len(roots):
            sizes = np.bincount(roots)
            big = np.flatnonzero(sizes >= 2)
            del roots
            for d, n in zip(self.domain_of(big).tolist(), sizes[big].tolist(), strict=True):
                counts[self.names[d]][f"near_dup_clusters:{size_key(n)}"] += 1
        return None

    def write(self, into: Path, read: DocReader) -> HookOutput | None:
        if self.state is None:
            return None
        into.mkdir(parents=True, exist_ok=True)
        store, clusters = self.state.store, self.state.clusters
        removed = {name: s["mode"] == "remove" for name, s in self.settings.items()}

        def doc(i: int, **extra: Any) -> dict[str, Any]:
            task, row = store.locate(i)
            text, source = read(task, row)
            dom = self.names[int(self.domain_of(np.array([i]))[0])]
            split = "eval" if bool(clusters.split(np.array([i]))[0]) else "train"
            return {"domain": dom, "split": split, "source": source,
                    "sha256": content_hash(text), **extra, "text": text}

        with open(into / EXAMPLES_FILE, "w", encoding="utf-8") as f:
            for name in self.names:  # clusters by the domain of their members, in plan order
                for root, members in self.examples[name].items():
                    record = {"domain": name, "kept": doc(root), "members": [
                        doc(i, estimate=round(e, 4), status=(
                            "conflict" if s == CONFLICT else
                            "removed" if removed[name] else "grouped"))
                        for i, e, s in members]}
                    f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        params = {"minhash": PARAMS.to_dict(), "hash": "word bytes in 8-byte chunks, splitmix64; "
                  "shingles: polynomial over words, splitmix64 (shards.minhash)",
                  "verify": f"estimated Jaccard over {PARAMS.bins} one-permutation bins",
                  "band_key_bits": 32, "bucket_cap": CAP, "domains": self.settings}
        return HookOutput(params, [EXAMPLES_FILE])


STEPS = (Signature,)
HOOKS = (NearDedup,)
