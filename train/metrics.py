"""OUT/metrics.jsonl and the terminal: what a run records, and reading it back.

One JSON object per line, each with a ``kind``: ``data_check`` (what was verified before step
0), ``resume`` (a resumed run's accepted option changes), ``train`` (every step), ``eval``
(every eval), ``warning``, ``summary`` (the end of a process). Only rank 0 writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shards.atomic import write_text
from shards.console import Out

METRICS_NAME = "metrics.jsonl"


class MetricsError(ValueError):
    """A metrics.jsonl that cannot be read."""


class MetricsLog:
    """Rank 0's terminal (rich on a TTY, plain lines otherwise) and OUT/metrics.jsonl."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out / METRICS_NAME
        self.out = Out()

    def record(self, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, allow_nan=True) + "\n")

    def line(self, text: str, style: str | None = None) -> None:
        if not self.enabled:
            return
        if self.out.console is not None:
            self.out.console.print(text, style=style, markup=False)
        else:
            print(text, flush=True)

    def table(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        if self.enabled:
            self.out.table(title, header, rows)
            self.out.file.flush()

    def warn(self, step: int, message: str, **extra: Any) -> None:
        self.record({"kind": "warning", "step": step, "message": message, **extra})
        self.line(f"warning: {message}", style="yellow")

    def eval_tables(self, ev: dict[str, Any]) -> None:
        """An eval record as tables: loss per domain, routing per MoE layer."""
        rows = [[dom, f"{v:.4f}" if v is not None else "-", str(ev["blocks"][dom])]
                for dom, v in ev["loss"].items()]
        macro = ev["loss_macro"]
        rows.append(["macro", f"{macro:.4f}" if macro is not None else "-", ""])
        self.table(f"eval at step {ev['step']}", ["domain", "lm loss", "blocks"], rows)
        for lay in ev["layers"]:
            E = len(lay["load"])
            rows = [[dom, *(f"{100 * v:.1f}" for v in fr)]
                    for dom, fr in lay["fractions"].items()]
            rows.append(["load", *(f"{100 * v:.1f}" for v in lay["load"])])
            imb = lay["imbalance"]
            imb_s = f"{imb:.2f}" if imb is not None else "-"
            self.table(f"layer {lay['layer']}: routing % (domain x expert), entropy "
                       f"{lay['entropy']:.3f}/{lay['max_entropy']:.3f} nats, imbalance {imb_s}",
                       ["domain", *(f"e{i}" for i in range(E))], rows)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of a metrics.jsonl; MetricsError naming the line of a damaged one."""
    if not path.is_file():
        raise MetricsError(f"{path}: no metrics here; is {path.parent} a train/moe.py run "
                           "directory?")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise MetricsError(f"{path}: line {n} is not JSON ({e}); the file is damaged") from e
        if not isinstance(rec, dict) or "kind" not in rec:
            raise MetricsError(f"{path}: line {n} has no 'kind' field")
        out.append(rec)
    return out


def truncate_metrics(path: Path, step: int) -> int:
    """On resume: drop the records after the checkpoint's step and the old summaries
    (atomically); a torn last line of a killed process goes too. Returns records dropped."""
    if not path.exists():
        return 0
    keep, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if rec.get("kind") != "summary" and int(rec.get("step", 0)) <= step:
            keep.append(line)
        else:
            dropped += 1
    write_text(path, "".join(x + "\n" for x in keep))
    return dropped
