"""What a prep run tells the person watching: rich progress on a terminal, plain lines otherwise.

Fed by the tasks' completion records, so it works the same under every executor: per domain,
tasks done of those planned, documents, MB of text and tokens/s. The summary at the end shows
the splits and every counter of the manifest (`counts_table`), whatever steps made them.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from shards.format import Manifest
from shards.inspect_cmd import counter_rows

if TYPE_CHECKING:
    from prep.parts import TaskRecord
    from prep.plan import Plan


@dataclass
class _Domain:
    planned: int  # partitions (a stream partition's pieces are found as it is read)
    latest: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # key -> counts

    @property
    def tasks(self) -> int:
        """Partitions and pieces read (one read again further counts once)."""
        return len(self.latest)

    @property
    def total(self) -> int:
        return max(self.planned, self.tasks)

    def sum(self, i: int) -> int:
        return sum(v[i] for v in self.latest.values())

    @property
    def docs(self) -> int:
        return self.sum(0)

    @property
    def bytes(self) -> int:
        return self.sum(1)

    @property
    def tokens(self) -> int:
        return self.sum(2)


class Reporter:
    """Silent reporter (`--quiet`); the base of the others. Keeps the per-domain tallies."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.domains: dict[str, _Domain] = {}

    def note(self, line: str) -> None: ...

    def start(self, plan: Plan, done: dict[str, TaskRecord]) -> None:
        self.t0 = time.perf_counter()
        self.domains = {d.name: _Domain(planned=len(d.partitions)) for d in plan.domains}
        for rec in done.values():  # reused by a resume
            Reporter.task_done(self, rec.domain, rec)

    def task_done(self, domain: str, record: TaskRecord) -> None:
        d = self.domains.setdefault(domain, _Domain(planned=0))
        old = d.latest.get(record.partition)
        if old is None or record.docs >= old[0]:  # a continuation reads further than the first
            d.latest[record.partition] = (record.docs, record.bytes, record.tokens)

    def assembling(self, jobs: int) -> None: ...

    def summary(self, manifest: Manifest, out: str) -> None: ...

    def close(self) -> None: ...

    def rate(self, d: _Domain) -> float:
        return d.tokens / max(time.perf_counter() - self.t0, 1e-9)


class PlainReporter(Reporter):
    """A line per event, throttled to one every few seconds per domain: for logs and pipes."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        super().__init__()
        self.stream = stream or sys.stdout
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def _line(self, msg: str) -> None:
        print(f"[prep] {msg}", file=self.stream, flush=True)

    def note(self, line: str) -> None:
        self._line(line)

    def start(self, plan: Plan, done: dict[str, TaskRecord]) -> None:
        super().start(plan, done)
        for d in plan.domains:
            budget = (f"{d.cfg.size_mb:g} MB" if d.cfg.size_mb is not None else "") + (
                f" {d.cfg.size_tokens} tokens" if d.cfg.size_tokens is not None else "")
            self._line(f"{d.name}: {len(d.partitions)} partitions, budget {budget.strip()}")

    def task_done(self, domain: str, record: TaskRecord) -> None:
        super().task_done(domain, record)
        now = time.perf_counter()
        if now - self._last.get(domain, 0.0) >= self.every_s:
            self._last[domain] = now
            d = self.domains[domain]
            self._line(f"{domain}: {d.tasks}/{d.total} tasks, {d.docs:,} docs, "
                       f"{d.bytes / 1e6:.2f} MB, {self.rate(d):,.0f} tokens/s")

    def assembling(self, jobs: int) -> None:
        self._line(f"committed; writing shards and indexes ({jobs} jobs)")

    def summary(self, manifest: Manifest, out: str) -> None:
        console = Console(file=self.stream, width=120, no_color=True)
        console.print(summary_table(manifest))
        console.print(counts_table(manifest))
        self._line(_wrote(manifest, out))


class RichReporter(Reporter):
    """A live progress bar per domain: tasks done/planned, documents, MB, tokens/s."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description:<8}"), BarColumn(),
            TextColumn("{task.completed:>5.0f}/{task.total:.0f} tasks"),
            TextColumn("{task.fields[docs]:>9} docs"), TextColumn("{task.fields[mb]:>8} MB"),
            TextColumn("{task.fields[rate]:>11} tok/s"), TimeElapsedColumn(),
            console=self.console)
        self.bars: dict[str, TaskID] = {}

    def note(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False)

    def start(self, plan: Plan, done: dict[str, TaskRecord]) -> None:
        super().start(plan, done)
        self.progress.start()
        for d in plan.domains:
            self.bars[d.name] = self.progress.add_task(d.name, total=len(d.partitions), docs=0,
                                                       mb="0.00", rate="-")

    def task_done(self, domain: str, record: TaskRecord) -> None:
        super().task_done(domain, record)
        d = self.domains[domain]
        if domain in self.bars:
            self.progress.update(self.bars[domain], completed=d.tasks, total=d.total,
                                 docs=f"{d.docs:,}",
                                 mb=f"{d.bytes / 1e6:.2f}", rate=f"{self.rate(d):,.0f}")

    def assembling(self, jobs: int) -> None:
        self.progress.stop()
        self.console.print(f"committed; writing shards and indexes ({jobs} jobs)")

    def summary(self, manifest: Manifest, out: str) -> None:
        self.close()
        self.console.print(summary_table(manifest))
        self.console.print(counts_table(manifest))
        self.console.print(_wrote(manifest, out), markup=False)

    def close(self) -> None:
        self.progress.stop()


def _wrote(manifest: Manifest, out: str) -> str:
    r = manifest.run
    return (f"wrote {out}/manifest.json ({r.get('tokens_per_s', 0):,.0f} tokens/s over "
            f"{r.get('seconds', 0):.1f}s; {r.get('tasks_done', 0)} tasks, "
            f"{r.get('tasks_reused', 0)} reused)")


def summary_table(manifest: Manifest) -> Table:
    t = Table(title=f"prep: {manifest.recipe.get('name')} (seed {manifest.seed}, "
                    f"block {manifest.block_size})")
    for col in ("domain", "split", "docs", "tokens", "blocks", "MB text", "shards",
                "partitions"):
        t.add_column(col, justify="left" if col in ("domain", "split") else "right")
    for name, rec in manifest.domains.items():
        for split, s in rec.splits.items():
            first = split == "train"
            t.add_row(name if first else "", split, f"{s.docs:,}", f"{s.tokens:,}",
                      f"{s.blocks:,}", f"{s.bytes_text / 1e6:.2f}", str(len(s.shards)),
                      (f"{rec.order.get('partitions_read', '?')}/"
                       f"{rec.order.get('partitions_planned', '?')}") if first else "")
    return t


def counts_table(manifest: Manifest) -> Table:
    """Every counter of every domain (`shards.format`: an open mapping), a row per counter."""
    t = Table(title="counts (what the steps and the commit did, per domain)")
    t.add_column("counter")
    for name in manifest.domains:
        t.add_column(name, justify="right")
    for key, values in counter_rows(manifest.domains):
        t.add_row(key, *("" if v is None else f"{v:,}" for v in values))
    return t


def make_reporter(quiet: bool) -> Reporter:
    if quiet:
        return Reporter()
    if sys.stdout.isatty():
        return RichReporter()
    return PlainReporter()
