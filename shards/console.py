"""Output for the `python -m shards` commands: rich tables on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table


class Out:
    """Writes titled tables and lines to `file` (stdout): rich when it is a TTY, else plain."""

    def __init__(self, file: TextIO | None = None) -> None:
        self.file = file if file is not None else sys.stdout
        self.rich = self.file.isatty()
        self.console = Console(file=self.file, highlight=False) if self.rich else None

    def line(self, text: str = "") -> None:
        if self.console is not None:
            self.console.print(text, markup=False)
        else:
            print(text, file=self.file)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        cells = [[_cell(c) for c in r] for r in rows]
        if self.console is not None:
            t = Table(title=title, title_justify="left")
            for i, c in enumerate(columns):
                t.add_column(c, justify="left" if i == 0 else "right", overflow="fold",
                             no_wrap=i == 0)
            for r in cells:
                t.add_row(*r)
            self.console.print(t)
            return
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        print(f"== {title}", file=self.file)
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
              file=self.file)
        for r in cells:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(),
                  file=self.file)
        print(file=self.file)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)
