"""WikiText regrouping: rows are lines, documents are whole articles.

WikiText (Merity et al. 2016) ships one line per row. An article starts at a level-1 heading
line `` = Title = `` (exactly one ``=`` on each side); `` = = Section = = `` and deeper headings
are subsections inside the current article. This wrapper turns any row reader (``hf``, or
local ``text`` / ``json`` / ``parquet``) into a stream of articles.

HF rows end with ``"\\n"`` while datasets' local text builder strips line breaks; trailing
``\\r``/``\\n`` are removed from every row first, so both give identical articles.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from prep.sources import BadRecord, Document, Source

# " = Title = " -> "Title"; the title neither starts nor ends with '=' (that would be a
# subsection heading such as " = = Career = = ").
_TITLE = re.compile(r"^= ([^=](?:.*[^=])?) =$")


def article_title(line: str) -> str | None:
    """The title if `line` is a level-1 WikiText heading, else None."""
    m = _TITLE.match(line.strip())
    return m.group(1).strip() if m else None


def group_articles(rows: Iterator[Document | BadRecord]) -> Iterator[Document | BadRecord]:
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


class WikiTextArticles(Source):
    """Wraps a line-row source; yields whole WikiText articles."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.domain = inner.domain

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
        ]

    def __iter__(self) -> Iterator[Document | BadRecord]:
        return group_articles(iter(self.inner))
