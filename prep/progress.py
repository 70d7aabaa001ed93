"""What a prep run tells the person watching: rich progress on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from shards.format import DomainRecord, Manifest


class Reporter:
    """Silent reporter (`--quiet`); the base of the others."""

    def start_domain(self, name: str, budget_bytes: int | None) -> None: ...

    def update(self, name: str, *, docs: int, nbytes: int, tokens: int) -> None: ...

    def end_domain(self, name: str, record: DomainRecord) -> None: ...

    def summary(self, manifest: Manifest, out: str) -> None: ...

    def close(self) -> None: ...


class PlainReporter(Reporter):
    """One log line per domain event and every few seconds: for logs and pipes."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self.stream = stream or sys.stdout
        self.every_s = every_s
        self._t0: dict[str, float] = {}
        self._last = 0.0

    def _line(self, msg: str) -> None:
        print(f"[prep] {msg}", file=self.stream, flush=True)

    def start_domain(self, name: str, budget_bytes: int | None) -> None:
        self._t0[name] = self._last = time.perf_counter()
        budget = f"{budget_bytes / 1e6:g} MB" if budget_bytes else "no byte budget"
        self._line(f"{name}: started ({budget})")

    def update(self, name: str, *, docs: int, nbytes: int, tokens: int) -> None:
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            rate = tokens / max(now - self._t0[name], 1e-9)
            self._line(f"{name}: {docs} docs, {nbytes / 1e6:.2f} MB, {tokens} tokens, "
                       f"{rate:,.0f} tokens/s")

    def end_domain(self, name: str, record: DomainRecord) -> None:
        dt = time.perf_counter() - self._t0[name]
        tr, ev = record.splits["train"], record.splits["eval"]
        self._line(f"{name}: done in {dt:.1f}s: train {tr.docs} docs {tr.tokens} tokens, "
                   f"eval {ev.docs} docs {ev.tokens} tokens")

    def summary(self, manifest: Manifest, out: str) -> None:
        Console(file=self.stream, width=120, no_color=True).print(summary_table(manifest))
        self._line(f"wrote {out}/manifest.json ({manifest.run.get('tokens_per_s', 0):,.0f} "
                   f"tokens/s over {manifest.run.get('seconds', 0):.1f}s)")


class RichReporter(Reporter):
    """A live progress bar per domain: documents, MB against the budget, tokens/s."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description:<8}"),
            BarColumn(),
            TextColumn("{task.fields[docs]:>8} docs"),
            TextColumn("{task.completed:>8.2f}/{task.total:.2f} MB"),
            TextColumn("{task.fields[rate]:>10} tok/s"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.tasks: dict[str, TaskID] = {}
        self._t0: dict[str, float] = {}
        self.progress.start()

    def start_domain(self, name: str, budget_bytes: int | None) -> None:
        total = (budget_bytes or 0) / 1e6 or None
        self.tasks[name] = self.progress.add_task(name, total=total, docs=0, rate="-")
        self._t0[name] = time.perf_counter()

    def update(self, name: str, *, docs: int, nbytes: int, tokens: int) -> None:
        rate = tokens / max(time.perf_counter() - self._t0[name], 1e-9)
        self.progress.update(self.tasks[name], completed=nbytes / 1e6, docs=docs,
                             rate=f"{rate:,.0f}")

    def end_domain(self, name: str, record: DomainRecord) -> None:
        task = self.progress.tasks[self.tasks[name]]
        self.progress.update(self.tasks[name], total=task.completed)

    def summary(self, manifest: Manifest, out: str) -> None:
        self.close()
        self.console.print(summary_table(manifest))
        self.console.print(f"wrote [bold]{out}/manifest.json[/] "
                           f"({manifest.run.get('tokens_per_s', 0):,.0f} tokens/s over "
                           f"{manifest.run.get('seconds', 0):.1f}s)")

    def close(self) -> None:
        self.progress.stop()


def summary_table(manifest: Manifest) -> Table:
    t = Table(title=f"prep: {manifest.recipe.get('name')} (seed {manifest.seed}, "
                    f"block {manifest.block_size})")
    for col in ("domain", "split", "docs", "tokens", "blocks", "MB text", "shards",
                "filtered", "dedup", "bad"):
        t.add_column(col, justify="left" if col in ("domain", "split") else "right")
    for name, rec in manifest.domains.items():
        c = rec.counts
        for split, s in rec.splits.items():
            first = split == "train"
            t.add_row(name if first else "", split, f"{s.docs:,}", f"{s.tokens:,}",
                      f"{s.blocks:,}", f"{s.bytes_text / 1e6:.2f}", str(len(s.shards)),
                      f"{c.docs_filtered:,}" if first else "",
                      f"{c.docs_deduplicated:,}" if first else "",
                      f"{c.docs_bad:,}" if first else "")
    return t


def make_reporter(quiet: bool) -> Reporter:
    if quiet:
        return Reporter()
    if sys.stdout.isatty():
        return RichReporter()
    return PlainReporter()
