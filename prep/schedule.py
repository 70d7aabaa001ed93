"""Which task to start next: what the commit waits for first, then tasks a domain may need.

The commit (`prep.commit`) consumes partitions group by group in the seeded order; the
scheduler keeps the workers busy ahead of it, several domains at once, but only while a domain
may still need more: once the finished tasks of a domain hold its budget, no new task of that
domain starts, so a budget reads what it needs plus at most the tasks already in flight. A task
started ahead of need that fails is remembered, and its error raised only if the commit comes to
need it: whether a run succeeds never depends on --workers or on timing.

Everything here is O(1) per task: a cursor into each domain's partition order, running totals.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prep.commit import Committer
from prep.parts import TaskRecord
from prep.plan import DomainPlan, Plan
from prep.task import TaskSpec


class Scheduler:
    def __init__(self, plan: Plan, done: dict[str, TaskRecord]) -> None:
        self.plan = plan
        self.done = done
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

    def finished(self, spec: TaskSpec, record: TaskRecord) -> None:
        self.running.discard(spec.id)
        self.done[spec.id] = record
        self.count([record])

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
            if spec.id not in self.done and spec.id not in self.running:
                out.append(spec)
        return out, None

    def ahead(self, committer: Committer) -> Iterator[TaskSpec]:
        """Level-0 tasks of the domains that may need more, one domain after another in turn."""
        live = [d for d in self.plan.domains
                if (d.name not in committer.results or d is committer.domain)
                and not committer.finished]
        while live:
            for d in list(live):
                spec = self._next(d) if self.may_need_more(d) else None
                if spec is None:
                    live.remove(d)
                else:
                    yield spec

    def _next(self, d: DomainPlan) -> TaskSpec | None:
        order, i = d.order, self._cursor[d.name]
        while i < len(order):
            spec = d.task(order[i])
            i += 1
            if spec.id not in self.done and spec.id not in self.running \
                    and spec.id not in self.failed:
                self._cursor[d.name] = i
                return spec
        self._cursor[d.name] = i
        return None
