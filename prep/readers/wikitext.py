"""``group = "wikitext"``: WikiText regrouping, rows are lines and documents whole articles.

WikiText (Merity et al. 2016) ships one line per row. An article starts at a level-1 heading
line `` = Title = `` (exactly one ``=`` on each side); `` = = Section = = `` and deeper headings
are subsections inside the current article. This wrapper turns any row reader (``hf``, or
local ``text`` / ``json`` / ``parquet``) into a stream of articles.

Partitions are the inner reader's, and the articles are exactly those of one sequential read:
an article belongs to the partition holding its heading row. ``read(p)`` skips p's leading
rows before its first heading (they end the previous partition's article; in the first
partition they belong to no article) and, after p's last row, reads on into the following
partitions up to the next heading.

HF rows end with ``"\\n"`` while the text reader strips line breaks; trailing ``\\r``/``\\n``
are removed from every row first, so both give identical articles.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from prep.readers.base import BadRecord, Document, Partition, Reader
from prep.readers.pieces import Piece

# " = Title = " -> "Title"; the title neither starts nor ends with '=' (that would be a
# subsection heading such as " = = Career = = ").
_TITLE = re.compile(r"^= ([^=](?:.*[^=])?) =$")


def article_title(line: str) -> str | None:
    """The title if `line` is a level-1 WikiText heading, else None."""
    if "=" not in line:  # most lines: skip the strip and the regex
        return None
    m = _TITLE.match(line.strip())
    return m.group(1).strip() if m else None


def group_articles(rows: Iterable[Document | BadRecord]) -> Iterator[Document | BadRecord]:
    """Articles from line rows; BadRecords pass through in place.

    Article text: the heading line and every line up to the next level-1 heading, joined with
    "\\n", outer whitespace stripped. Provenance: the first row's, plus ``title``. Lines before
    the first heading belong to no article and are dropped (counted nowhere).
    """
    title: str | None = None
    lines: list[str] = []
    first: dict[str, Any] = {}
    for item in rows:
        if isinstance(item, BadRecord):
            yield item
            continue
        line = item.text.rstrip("\r\n")
        heading = article_title(line)
        if heading is not None:
            if title is not None:
                yield Document("\n".join(lines).strip(), {**first, "title": title})
            title, lines, first = heading, [line], dict(item.source)
        elif title is not None:
            lines.append(line)
    if title is not None:
        yield Document("\n".join(lines).strip(), {**first, "title": title})


class WikiTextArticles(Reader):
    """Wraps a line-row reader; yields whole WikiText articles."""

    name = "wikitext"

    def __init__(self, inner: Reader) -> None:
        super().__init__(inner.cfg, inner.settings)
        self.inner = inner

    def partitions(self) -> list[Partition]:
        return self.inner.partitions()

    def partitions_after(self, partition: Partition) -> Iterator[Partition]:
        return self.inner.partitions_after(partition)

    def read(self, partition: Partition) -> Iterator[Document | BadRecord]:
        return group_articles(self._rows(partition))

    def cut(self, partition: Partition) -> Iterator[Piece]:
        return self.inner.cut(partition)  # pieces are the inner reader's rows

    def _rows(self, partition: Partition) -> Iterator[Document | BadRecord]:
        """The partition's rows, then the following partitions' rows up to the next heading
        (their bad rows are theirs to count), if the partition holds a heading at all."""
        headed = False
        for item in self.inner.read(partition):
            if not headed and isinstance(item, Document):
                headed = article_title(item.text) is not None
            yield item
        if not headed:
            return
        for after in self.inner.partitions_after(partition):
            rows = self.inner.read(after)
            try:
                for item in rows:
                    if isinstance(item, Document):
                        if article_title(item.text) is not None:
                            return
                        yield item
            finally:
                close = getattr(rows, "close", None)
                if close is not None:
                    close()

    def partition_record(self, partition: Partition) -> dict[str, Any]:
        return self.inner.partition_record(partition)

    def describe(self) -> dict[str, Any]:
        out = dict(self.inner.describe())
        out["group"] = "wikitext"
        if "description" in out:
            out["description"] += "; line rows regrouped into whole WikiText articles"
        return out

    def format_rules(self) -> list[str]:
        return self.inner.format_rules() + [
            "rows are lines: trailing line breaks removed, then regrouped into articles; an "
            "article starts at a level-1 heading ' = Title = ' (one '=' each side; ' = = Sub = = ' "
            "headings stay inside the article) and runs to the next one",
            "article text = its lines (heading included) joined with '\\n', outer whitespace "
            "stripped; lines before the first heading form no article and are dropped",
            "across partitions: an article belongs to the partition holding its heading, which "
            "reads on into the next partitions to finish it",
        ]

    def notes(self) -> list[str]:
        return self.inner.notes()
