"""The deterministic commit: from finished tasks to each split's document layout.

Domains are committed in recipe order, each group of partitions in the seeded order
(`prep.order`): the group's documents are merged into one stream, exact duplicates are dropped
(first occurrence in this order wins, across tasks and across domains, counted), and the budget
takes documents from the front until it is reached. The kept documents of each (domain, split)
are appended to a layout file (task, document, tokens: 12 bytes per document), from which
`prep.assemble` writes the final shards and index in worker processes. Everything per document
is a numpy array operation; the dedup state is a :class:`~prep.dedup.KeySet` of 16 bytes per
kept document. The commit only reads task metadata (not tokens), so its cost per token is ~0.

When the merge needs more of a partition than its capped task gave, the commit asks for that
partition's next cap level (:attr:`Committer.waiting_for`) and resumes when it is done: what
the merge gave up to that point is committed, and the merge resumes from its state (it is
prefix-stable), so a group costs one pass over its documents however often it waits. A stream
partition (`prep.readers.pieces`) is read as pieces, one task each: its stream in the merge is
its pieces' documents one piece after another, and the commit asks for piece i+1 (at level 0)
only when the merge needs more than pieces 0..i hold and piece i was read to its end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prep import order
from prep.dedup import KeySet, first_occurrences, split_keys
from prep.parts import MAX_BAD_EXAMPLES, META_DTYPE, TaskParts, TaskRecord
from prep.plan import DomainPlan, Plan
from prep.readers import Partition
from prep.split import EVAL, TRAIN
from prep.task import TaskSpec, bad_records_message
from shards.format import CountsRecord

LAYOUT_DTYPE = np.dtype([("slot", "<u4"), ("doc", "<u4"), ("tokens", "<u4")])
_SPAN = 1 << 40  # (partition, document) as one sortable int64: documents per partition < this


class CommitError(RuntimeError):
    """The data cannot make a dataset (too few eval documents, too many bad records)."""


@dataclass
class SplitLayout:
    """The kept documents of one (domain, split), in stream order, on disk."""

    path: Path
    docs: int = 0
    tokens: int = 0
    bytes_text: int = 0
    shard_starts: list[tuple[int, int]] = field(default_factory=list)  # (doc, offset in doc)

    def append(self, rows: np.ndarray, nbytes: int, shard_tokens: int) -> None:
        if not len(rows):
            return
        lengths = rows["tokens"].astype(np.int64)
        ends = self.tokens + np.cumsum(lengths)
        first = -(-self.tokens // shard_tokens)  # shards starting in [tokens, ends[-1])
        for b in range(first * shard_tokens, int(ends[-1]), shard_tokens):
            i = int(np.searchsorted(ends, b, side="right"))
            start = int(ends[i] - lengths[i])
            self.shard_starts.append((self.docs + i, b - start))
        with open(self.path, "ab") as f:
            f.write(rows.tobytes())
        self.docs += len(rows)
        self.tokens = int(ends[-1])
        self.bytes_text += nbytes


@dataclass
class DomainResult:
    name: str
    counts: CountsRecord
    layouts: dict[str, SplitLayout]
    tasks: list[str]  # the layout's slots: task ids
    partitions: list[dict[str, Any]]  # one per partition read, in commit order
    budget_reached: bool = False
    bad_examples: list[str] = field(default_factory=list)


@dataclass
class _Group:
    """The current group's progress. Its merge is committed a segment at a time: up to each
    point where it needs more of a partition (a capped task read further, a stream's next
    piece), where the merge's state is kept to resume from (so a stream of n pieces costs one
    pass over its documents, not n)."""

    levels: dict[int, list[int]] = field(default_factory=dict)  # partition -> level per piece
    first: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> (first
    #                                  piece still read, its first document's index)
    state: order.MergeState | None = None
    used: int = 0  # merged positions committed
    retired: list[tuple[TaskSpec, TaskRecord]] = field(default_factory=list)  # pieces read out
    kept: dict[str, int] = field(default_factory=dict)  # partition (piece) key -> docs kept


class Committer:
    """Commits domains group by group as their tasks finish; see the module docstring."""

    def __init__(self, plan: Plan, layout_dir: Path, min_eval_docs: int,
                 max_bad_fraction: float) -> None:
        self.plan = plan
        self.layout_dir = layout_dir
        layout_dir.mkdir(parents=True, exist_ok=True)
        self.min_eval_docs = min_eval_docs
        self.max_bad_fraction = max_bad_fraction
        self.results: dict[str, DomainResult] = {}
        self.earlier = KeySet()  # kept keys of committed domains
        self._d = 0  # current domain
        self._g = 0  # current group
        self._group = _Group()
        self._slots: dict[str, int] = {}  # task id -> layout slot, current domain
        self._mine = KeySet()
        self._start_domain()

    # ------------------------------------------------------------------ state
    @property
    def finished(self) -> bool:
        return self._d >= len(self.plan.domains)

    @property
    def domain(self) -> DomainPlan:
        return self.plan.domains[self._d]

    def waiting_for(self) -> list[TaskSpec]:
        """The tasks the commit needs next: the current group's, at their cap levels (a
        stream's pieces from the first one the merge has not read out)."""
        if self.finished:
            return []
        d, gr = self.domain, self._group
        return [d.task(p, levels[piece], piece) for p in d.groups[self._g]
                for levels in [gr.levels.get(p, [0])]
                for piece in range(gr.first.get(p, (0, 0))[0], len(levels))]

    def all_unique(self) -> bool:
        """The leakage check: no kept content hash occurs twice, in any split of any domain
        (so no eval text is in train); checked by sorting every kept key anew."""
        return self.earlier.all_unique()

    # ------------------------------------------------------------------ advancing
    def advance(self, done: Mapping[str, TaskRecord], task_dir: Path) -> bool:
        """Commit as far as the finished tasks allow; True if anything moved."""
        moved = False
        while not self.finished:
            specs = self.waiting_for()
            if any(s.id not in done for s in specs):
                return moved
            self._commit_group(specs, [done[s.id] for s in specs], task_dir)
            moved = True
        return moved

    def _start_domain(self) -> None:
        if self.finished:
            return
        d = self.domain
        self._g, self._group, self._slots, self._mine = 0, _Group(), {}, KeySet()
        layouts = {}
        for split in (TRAIN, EVAL):
            path = self.layout_dir / f"{d.name}.{split}.bin"
            path.write_bytes(b"")  # an empty split has an empty layout
            layouts[split] = SplitLayout(path)
        self.results[d.name] = DomainResult(d.name, CountsRecord(), layouts, [], [])
        if not d.groups:  # a source with no partitions
            self._end_domain(budget_reached=False)

    def _commit_group(self, specs: list[TaskSpec], records: list[TaskRecord],
                      task_dir: Path) -> None:
        """Commit the group's next segment: its merge from where it stopped, up to the end,
        the budget, or the next point where it needs more of a partition."""
        d, res, gr = self.domain, self.results[self.domain.name], self._group
        group = d.groups[self._g]
        member = np.array([group.index(s.partition.index) for s in specs], dtype=np.int64)
        docs = np.array([r.counts.docs for r in records], dtype=np.int64)
        start = np.array([gr.first.get(p, (0, 0))[1] for p in group], dtype=np.int64)[member]
        for i in range(1, len(specs)):  # a task's first document in its partition's stream
            if member[i] == member[i - 1]:
                start[i] = start[i - 1] + docs[i - 1]
        counts = np.zeros(len(group), dtype=np.int64)
        np.maximum.at(counts, member, start + docs)
        last = dict(zip(member.tolist(), records, strict=True))  # each partition's last task
        m = order.merge(f"{self.plan.seed}:{d.name}:group:{self._g}", counts.tolist(),
                        [_read_out(d.partitions[p], last[j]) for j, p in enumerate(group)],
                        gr.state)
        task = np.searchsorted(member * _SPAN + start, m.part * _SPAN + m.doc, side="right") - 1
        doc = m.doc - start[task]
        rows = np.zeros(len(task), dtype=META_DTYPE)
        for i in np.unique(task):
            sel = task == i
            rows[sel] = TaskParts(task_dir / specs[i].id).meta[doc[sel]]
        hi, lo = split_keys(rows["digest"])
        across = self.earlier.contains(hi, lo)
        dup = across | self._mine.contains(hi, lo) | ~first_occurrences(hi, lo)
        cut = self._budget_cut(rows, ~dup, res)
        used = len(rows) if cut is None else cut + 1
        keep = ~dup[:used]
        self._mine.add(hi[:used][keep], lo[:used][keep])
        for s in specs:
            if s.id not in self._slots:
                self._slots[s.id] = len(res.tasks)
                res.tasks.append(s.id)
        slots = np.array([self._slots[s.id] for s in specs], dtype=np.uint32)
        kept, task, doc = rows[:used][keep], task[:used][keep], doc[:used][keep]
        for split, flag in ((TRAIN, 0), (EVAL, 1)):
            sel = kept["eval"] == flag
            lay = np.zeros(int(sel.sum()), dtype=LAYOUT_DTYPE)
            lay["slot"], lay["doc"], lay["tokens"] = slots[task[sel]], doc[sel], \
                kept["tokens"][sel]
            res.layouts[split].append(lay, int(kept["nbytes"][sel].sum()),
                                      self.plan.shard_tokens)
        c = res.counts
        c.docs_deduplicated += int(dup[:used].sum())
        c.docs_deduplicated_across_domains += int(across[:used].sum())
        c.docs_kept += len(kept)
        c.bytes_kept += int(kept["nbytes"].sum())
        for i, n in enumerate(np.bincount(task, minlength=len(specs)).tolist()):
            key = specs[i].partition.key
            gr.kept[key] = gr.kept.get(key, 0) + n
        gr.used += used
        if cut is None and m.stalled_on is not None:  # it needs more of a partition:
            gr.state = m.state
            p = group[m.stalled_on]
            levels = gr.levels.get(p, [0])
            gr.levels[p] = (levels + [0] if last[m.stalled_on].exhausted  # its next piece
                            else levels[:-1] + [levels[-1] + 1])  # its task, read further
            self._retire(specs, records, member, start, docs, m.state)
            return
        self._end_group(specs, records, budget_reached=cut is not None)

    def _retire(self, specs: list[TaskSpec], records: list[TaskRecord], member: np.ndarray,
                start: np.ndarray, docs: np.ndarray, state: order.MergeState) -> None:
        """Pieces the merge has read out (all their documents taken, each one's last task
        exhausted) leave the tasks waited for; the group's end still counts them."""
        gr, group = self._group, self.domain.groups[self._g]
        for i, (s, r) in enumerate(zip(specs, records, strict=True)):
            j = int(member[i])
            later = i + 1 < len(specs) and member[i + 1] == j
            if later and r.exhausted and start[i] + docs[i] <= state.taken[j]:
                gr.retired.append((s, r))
                gr.first[group[j]] = ((s.partition.piece or 0) + 1, int(start[i] + docs[i]))

    def _end_group(self, specs: list[TaskSpec], records: list[TaskRecord], *,
                   budget_reached: bool) -> None:
        d, res, gr = self.domain, self.results[self.domain.name], self._group
        group = d.groups[self._g]
        final = sorted(gr.retired + list(zip(specs, records, strict=True)),
                       key=lambda sr: (group.index(sr[0].partition.index),
                                       sr[0].partition.piece or 0))
        c = res.counts
        for _, r in final:
            t = r.counts
            c.docs_seen += t.docs_seen
            c.bytes_seen += t.bytes_seen
            c.docs_bad += t.docs_bad
            c.docs_empty += t.docs_empty
            c.docs_too_short += t.docs_too_short
            c.docs_too_long += t.docs_too_long
            res.bad_examples += r.bad_examples[:MAX_BAD_EXAMPLES - len(res.bad_examples)]
        c.docs_filtered = c.docs_empty + c.docs_too_short + c.docs_too_long
        c.docs_over_budget += sum(r.counts.docs for _, r in final) - gr.used
        for s, r in final:
            res.partitions.append({
                "index": s.partition.index, "key": s.partition.key, "task": s.id,
                "level": s.level, "exhausted": r.exhausted, "docs_seen": r.counts.docs_seen,
                "docs_candidates": r.counts.docs, "docs_kept": gr.kept.get(s.partition.key, 0),
                "provenance": r.provenance})
        self._group = _Group()
        if budget_reached:
            self._end_domain(budget_reached=True)
            return
        self._g += 1
        if self._g >= len(d.groups):
            self._end_domain(budget_reached=False)

    def _budget_cut(self, rows: np.ndarray, keep: np.ndarray, res: DomainResult) -> int | None:
        """Position of the document that reaches the domain's budget, or None."""
        d = self.domain
        cuts = []
        for budget, col, have in ((d.budget_bytes, "nbytes", res.counts.bytes_kept),
                                  (d.cfg.size_tokens, "tokens",
                                   sum(lay.tokens for lay in res.layouts.values()))):
            if budget is None:
                continue
            total = have + np.cumsum(np.where(keep, rows[col].astype(np.int64), 0))
            hit = np.flatnonzero(keep & (total >= budget))
            if len(hit):
                cuts.append(int(hit[0]))
        return min(cuts) if cuts else None

    def _end_domain(self, *, budget_reached: bool) -> None:
        d, res = self.domain, self.results[self.domain.name]
        res.budget_reached = budget_reached
        c = res.counts
        if c.docs_bad and c.docs_bad / max(1, c.docs_seen) > self.max_bad_fraction:
            raise CommitError(bad_records_message(d.name, c.docs_bad, c.docs_seen,
                                                  self.max_bad_fraction, res.bad_examples))
        n_eval, n_all = res.layouts[EVAL].docs, c.docs_kept
        if n_eval < self.min_eval_docs:
            raise CommitError(
                f"domain {d.name}: only {n_eval} eval documents, fewer than --min-eval-docs "
                f"{self.min_eval_docs} (eval_fraction {d.cfg.eval_fraction}, {n_all} documents "
                "kept); raise the size budget (--size-mb), raise --eval-fraction, or lower "
                "--min-eval-docs")
        self.earlier.update(self._mine)
        self._d += 1
        self._start_domain()


def _read_out(partition: Partition, record: TaskRecord) -> bool:
    """Whether a partition has no document beyond its tasks so far (`record`: its last one):
    that task read to its end and, for a stream partition, its piece was the stream's last."""
    if not record.exhausted:
        return False
    return not partition.stream or bool((record.provenance or {}).get("last"))
