"""Which task to start next: what the commit waits for first, then tasks a domain may need.

The commit (`prep.commit`) consumes partitions group by group in the seeded order; the
scheduler keeps the workers busy ahead of it, several domains at once, but only while a domain
may still need more: once the finished tasks of a domain hold its budget, no new task of that
domain starts, so a budget reads what it needs plus at most the tasks already in flight. A task
started ahead of need that fails is remembered, and its error raised only if the commit comes to
need it: whether a run succeeds never depends on --workers or on timing.

Everything here is O(1) per task: a cursor into each domain's partition order, running totals.

A stream partition's pieces (`prep.readers.pieces`) become tasks as the cutter (`prep.cutter`)
spills them: a piece the commit needs starts once its spill is there; ahead of need, the cursor
opens a domain's streams one at a time (more on many slots: `Cutter.max_open`) and hands out
their pieces in order as they appear.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prep.commit import Committer
from prep.parts import TaskRecord
from prep.plan import DomainPlan, Plan
from prep.task import TaskSpec

if TYPE_CHECKING:
    from prep.cutter import Cutter


class Scheduler:
    def __init__(self, plan: Plan, done: dict[str, TaskRecord],
                 cutter: Cutter | None = None) -> None:
        self.plan = plan
        self.done = done
        self.cutter = cutter
        self._open: dict[str, list[int]] = {d.name: [] for d in plan.domains}  # streams
        self.running: set[str] = set()
        self.failed: dict[str, BaseException] = {}
        self._cursor = {d.name: 0 for d in plan.domains}
        self._have = {d.name: [0, 0] for d in plan.domains}  # bytes, tokens of finished tasks
        self._counted: set[str] = set()
        self.count(done.values())

    def count(self, records: Iterable[TaskRecord]) -> None:
        """Add finished tasks to the domains' totals (each task once)."""
        for rec in records:
            if rec.task not in self._counted:
                self._counted.add(rec.task)
                have = self._have.setdefault(rec.domain, [0, 0])
                have[0] += rec.bytes
                have[1] += rec.tokens

    def started(self, spec: TaskSpec) -> None:
        self.running.add(spec.id)
        if self.cutter is not None:
            self.cutter.started(spec)

    def finished(self, spec: TaskSpec, record: TaskRecord) -> None:
        self.running.discard(spec.id)
        self.done[spec.id] = record
        self.count([record])
        if self.cutter is not None:
            self.cutter.finished(spec, record)

    def failed_task(self, spec: TaskSpec, error: BaseException) -> None:
        self.running.discard(spec.id)
        self.failed[spec.id] = error

    def may_need_more(self, d: DomainPlan) -> bool:
        """False once the domain's finished tasks hold its budget (before dedup)."""
        have_b, have_t = self._have[d.name]
        if d.budget_bytes is not None and have_b >= d.budget_bytes:
            return False
        return not (d.cfg.size_tokens is not None and have_t >= d.cfg.size_tokens)

    def needed(self, committer: Committer) -> tuple[list[TaskSpec], BaseException | None]:
        """The tasks the commit waits for that are neither done nor running, and the error of
        one it waits for that failed (the run cannot go on), if any."""
        out = []
        for spec in committer.waiting_for():
            if spec.id in self.failed:
                return [], self.failed[spec.id]
            if spec.id in self.done or spec.id in self.running:
                continue
            if spec.partition.piece is not None:
                if self.cutter is None:  # (a cutter is made by every run that has streams)
                    raise RuntimeError("internal: a stream piece to run without a cutter")
                try:
                    if not self.cutter.ready(spec):
                        continue  # its spill is on the way
                except Exception as e:  # the stream's read failed before this piece
                    return [], e
            out.append(spec)
        return out, None

    def ahead(self, committer: Committer) -> Iterator[TaskSpec]:
        """Level-0 tasks of the domains that may need more, one domain after another in turn."""
        live = [d for d in self.plan.domains
                if (d.name not in committer.results or d is committer.domain)
                and not committer.finished]
        while live:
            for d in list(live):
                more = self.may_need_more(d)
                if not more and self.cutter is not None:
                    self.cutter.stop(d)  # its streams: no further than the commit asks
                spec = self._next(d) if more else None
                if spec is None:
                    live.remove(d)
                else:
                    yield spec

    def _next(self, d: DomainPlan) -> TaskSpec | None:
        opened = self._open[d.name]
        for p in list(opened):  # streams the cursor passed: their next spilled piece
            spec, more = self._next_piece(d, p)
            if not more:
                opened.remove(p)
            if spec is not None:
                return spec
        order, i = d.order, self._cursor[d.name]
        while i < len(order):
            if d.partitions[order[i]].stream:
                if self.cutter is None or len(opened) >= self.cutter.max_open:
                    break  # the open streams come first
                opened.append(order[i])
                self._cursor[d.name] = i = i + 1
                spec, more = self._next_piece(d, opened[-1])
                if not more:
                    opened.pop()
                if spec is not None:
                    return spec
                continue
            spec = d.task(order[i])
            i += 1
            if self._new(spec):
                self._cursor[d.name] = i
                return spec
        self._cursor[d.name] = i
        return None

    def _new(self, spec: TaskSpec) -> bool:
        return spec.id not in self.done and spec.id not in self.running \
            and spec.id not in self.failed

    def _next_piece(self, d: DomainPlan, p: int) -> tuple[TaskSpec | None, bool]:
        """The next spilled piece of stream `p` to start, and whether more may come."""
        assert self.cutter is not None
        while (j := self.cutter.next_queued(d, p)) is not None:
            spec = d.task(p, 0, j)
            if self._new(spec):
                return spec, True
            self.cutter.started(spec)  # done already (a resume) or running: not again
        return None, not self.cutter.complete(d, p)
