"""The deterministic commit: from finished tasks to each split's document layout.

Domains are committed in recipe order, each group of partitions in the seeded order
(`prep.order`): the group's documents are merged into one stream, the commit hooks
(`prep.steps.CommitHook`; exact dedup, `prep.dedup`: first occurrence in this order wins,
across tasks and domains) drop documents or move them between splits, and the budget takes
documents from the front until it is reached. The kept documents of each (domain, split) are
appended to a layout file (task, document, tokens: 12 bytes per document), from which
`prep.assemble` writes the final shards and index in worker processes. Everything per document
is a numpy array operation. The commit only reads task metadata (not tokens), so its cost per
token is ~0.

Each domain's counters (`prep.steps.Counters`) are its tasks' counters summed (the tasks the
commit used), then the hooks', then the commit's own (`COMMIT_COUNTERS`).

When the merge needs more of a partition than its capped task gave, the commit asks for that
partition's next cap level (:attr:`Committer.waiting_for`) and resumes when it is done: what
the merge gave up to that point is committed, and the merge resumes from its state (it is
prefix-stable), so a group costs one pass over its documents however often it waits. A stream
partition (`prep.readers.pieces`) is read as pieces, one task each: its stream in the merge is
its pieces' documents one piece after another, and the commit asks for piece i+1 (at level 0)
only when the merge needs more than pieces 0..i hold and piece i was read to its end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prep import order
from prep import steps as registry
from prep.parts import META_DTYPE, TaskParts, TaskRecord
from prep.plan import DomainPlan, Plan
from prep.readers import Partition
from prep.split import EVAL, TRAIN
from prep.steps.base import MAX_BAD_EXAMPLES, CommitHook, Counters, Group, HookOutput
from prep.task import TaskSpec, bad_records_message
from shards.format import HOOKS_DIR
from shards.tokenizer import reference_encoder

COMMIT_COUNTERS = ("docs_kept", "bytes_kept", "docs_over_budget")
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
    counts: Counters
    layouts: dict[str, SplitLayout]
    tasks: list[str]  # the layout's slots: task ids
    partitions: list[dict[str, Any]]  # one per partition read, in commit order
    budget_reached: bool = False
    bad_examples: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)  # the tasks' pipeline
    hooks: list[str] = field(default_factory=list)  # the commit hooks this domain ran


class DocReader:
    """A candidate document's text (decoded from its task's tokens, EOT dropped) and
    provenance, for commit hooks' files (`CommitHook.write`); part files opened as needed."""

    def __init__(self, task_dir: Path, plan: Plan) -> None:
        self.task_dir = task_dir
        self.enc = reference_encoder(plan.domains[0].settings.tokenizer_file
                                     if plan.domains else None).encoding
        self.parts: dict[str, TaskParts] = {}

    def __call__(self, task: str, row: int) -> tuple[str, dict[str, Any]]:
        if task not in self.parts:
            self.parts[task] = TaskParts(self.task_dir / task)
        p = self.parts[task]
        n = int(p.meta["tokens"][row]) - 1  # without EOT
        buf = bytearray(2 * n)
        p.read_tokens(memoryview(buf), int(p.starts[row]))
        ids = np.frombuffer(bytes(buf), dtype="<u2").tolist()
        return self.enc.decode_bytes(ids).decode("utf-8"), json.loads(p.sources[row])

    def __enter__(self) -> DocReader:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.parts.values():
            p.close()


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
        self.hooks: list[CommitHook] = [h(plan) for h in registry.hooks()]
        for h in self.hooks:
            h.scratch = layout_dir
        self.task_dir: Path | None = None  # where the tasks' part files are (advance's)
        self._active: list[CommitHook] = []  # the current domain's hooks
        self._d = 0  # current domain
        self._g = 0  # current group
        self._group = _Group()
        self._slots: dict[str, int] = {}  # task id -> layout slot, current domain
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

    def final_check(self) -> str | None:
        """The hooks' checks over everything committed (exact dedup's: the leakage check, no
        kept content hash twice, so no eval text in train): the first failure's message."""
        counts = {name: res.counts for name, res in self.results.items()}
        for h in self.hooks:
            problem = h.finish(counts)
            if problem is not None:
                return problem
        return None

    def write_hooks(self, staging: Path) -> dict[str, tuple[HookOutput, Path]]:
        """Each hook's files, written into ``staging/_hooks/<name>/`` (`CommitHook.write`):
        hook name -> (its output, its directory)."""
        out = {}
        with DocReader(self.task_dir or Path("."), self.plan) as read:
            for h in self.hooks:
                into = staging / HOOKS_DIR / h.name
                written = h.write(into, read)
                if written is not None:
                    out[h.name] = (written, into)
        return out

    # ------------------------------------------------------------------ advancing
    def advance(self, done: Mapping[str, TaskRecord], task_dir: Path) -> bool:
        """Commit as far as the finished tasks allow; True if anything moved."""
        self.task_dir = task_dir
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
        self._g, self._group, self._slots = 0, _Group(), {}
        layouts = {}
        for split in (TRAIN, EVAL):
            path = self.layout_dir / f"{d.name}.{split}.bin"
            path.write_bytes(b"")  # an empty split has an empty layout
            layouts[split] = SplitLayout(path)
        self._active = [h for h in self.hooks if h.enabled(d.cfg)]
        names = [*d.settings.counters, *(n for h in self._active for n in h.counter_names(d.cfg)),
                 *COMMIT_COUNTERS]
        self.results[d.name] = DomainResult(
            d.name, Counters.of(names), layouts, [], [],
            steps=[s.name for s in d.settings.steps], hooks=[h.name for h in self._active])
        for h in self._active:
            h.start_domain(d)
        if not d.groups:  # a source with no partitions
            self._end_domain(budget_reached=False)

    def _commit_group(self, specs: list[TaskSpec], records: list[TaskRecord],
                      task_dir: Path) -> None:
        """Commit the group's next segment: its merge from where it stopped, up to the end,
        the budget, or the next point where it needs more of a partition. The hooks judge and
        accept each segment once (a later segment sees the earlier ones as committed state)."""
        d, res, gr = self.domain, self.results[self.domain.name], self._group
        group = d.groups[self._g]
        member = np.array([group.index(s.partition.index) for s in specs], dtype=np.int64)
        docs = np.array([r.docs for r in records], dtype=np.int64)
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
        parts = {int(i): TaskParts(task_dir / specs[i].id) for i in np.unique(task)}
        columns = dict(d.settings.columns)

        def gather(pick: Callable[[TaskParts], np.ndarray], dtype: Any,
                   shape: tuple[int, ...] = ()) -> np.ndarray:
            """Each merged position's row of a per-document array of its task."""
            out = np.zeros((len(task), *shape), dtype=dtype)
            for i, p in parts.items():
                sel = task == i
                out[sel] = pick(p)[doc[sel]]
            return out

        rows = gather(lambda p: p.meta, META_DTYPE)
        seg = Group(d, self._g, [s.id for s in specs], rows, task, doc,
                    lambda name: gather(lambda p: p.column(name), columns[name].dtype,
                                        columns[name].shape))
        verdicts = [h.judge(seg) for h in self._active]
        cut = self._budget_cut(rows, seg.keep, res)
        used = len(rows) if cut is None else cut + 1
        c = res.counts
        for h, verdict in zip(self._active, verdicts, strict=True):
            h.accept(seg, used, verdict, c)
        for s in specs:
            if s.id not in self._slots:
                self._slots[s.id] = len(res.tasks)
                res.tasks.append(s.id)
        slots = np.array([self._slots[s.id] for s in specs], dtype=np.uint32)
        keep = seg.keep[:used]
        kept, is_eval = rows[:used][keep], seg.eval[:used][keep]
        kept_task, kept_doc = task[:used][keep], doc[:used][keep]
        for split, flag in ((TRAIN, False), (EVAL, True)):
            sel = is_eval == flag
            lay = np.zeros(int(sel.sum()), dtype=LAYOUT_DTYPE)
            lay["slot"], lay["doc"], lay["tokens"] = slots[kept_task[sel]], kept_doc[sel], \
                kept["tokens"][sel]
            res.layouts[split].append(lay, int(kept["nbytes"][sel].sum()),
                                      self.plan.shard_tokens)
        c["docs_kept"] += len(kept)
        c["bytes_kept"] += int(kept["nbytes"].sum())
        for i, n in enumerate(np.bincount(kept_task, minlength=len(specs)).tolist()):
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
            c.add(r.counts)
            res.bad_examples += r.bad_examples[:MAX_BAD_EXAMPLES - len(res.bad_examples)]
        c["docs_over_budget"] += sum(r.docs for _, r in final) - gr.used
        for s, r in final:
            res.partitions.append({
                "index": s.partition.index, "key": s.partition.key, "task": s.id,
                "level": s.level, "exhausted": r.exhausted,
                "docs_seen": r.counts.get("docs_seen", 0), "docs_candidates": r.docs,
                "docs_kept": gr.kept.get(s.partition.key, 0),
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
        for budget, col, have in ((d.budget_bytes, "nbytes", res.counts["bytes_kept"]),
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
        bad, seen = res.counts.get("docs_bad", 0), res.counts.get("docs_seen", 0)
        if bad and bad / max(1, seen) > self.max_bad_fraction:
            raise CommitError(bad_records_message(d.name, bad, seen, self.max_bad_fraction,
                                                  res.bad_examples))
        n_eval, n_all = res.layouts[EVAL].docs, res.counts["docs_kept"]
        if n_eval < self.min_eval_docs:
            raise CommitError(
                f"domain {d.name}: only {n_eval} eval documents, fewer than --min-eval-docs "
                f"{self.min_eval_docs} (eval_fraction {d.cfg.eval_fraction}, {n_all} documents "
                "kept); raise the size budget (--size-mb), raise --eval-fraction, or lower "
                "--min-eval-docs")
        for h in self._active:
            h.end_domain()
        self._d += 1
        self._start_domain()


def _read_out(partition: Partition, record: TaskRecord) -> bool:
    """Whether a partition has no document beyond its tasks so far (`record`: its last one):
    that task read to its end and, for a stream partition, its piece was the stream's last."""
    if not record.exhausted:
        return False
    return not partition.stream or bool((record.provenance or {}).get("last"))
