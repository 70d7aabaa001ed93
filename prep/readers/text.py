"""``source = "text"``: local text files (.gz .zst .bz2 .xz too), one row per line.

A row is a line without its trailing "\\n" or "\\r\\n" (lines split at "\\n" only). Provenance,
partitions and error rules are the json reader's: ``{"file", "row"}`` from a file's start,
``{"file", "byte"}`` in the later byte ranges of a split file; a non-UTF-8 line is a BadRecord
naming the file and line, and an error in a file's first line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prep.readers import files
from prep.readers.base import BadRecord, Document
from prep.readers.files import FileInfo
from prep.readers.local import FileReader
from prep.readers.rows import FIRST_RECORD

TEXT_FIELD = "text"


class TextReader(FileReader):
    name = "text"
    _how = "decompressed by suffix, split at '\\n'"
    cuts_lines = True

    def __init__(self, cfg: Any, settings: Any) -> None:
        super().__init__(cfg, settings)
        if cfg.text_field != TEXT_FIELD:
            raise self._error(f"source 'text' gives each line as the field {TEXT_FIELD!r}, not "
                              f"{cfg.text_field!r}; remove text_field or set text_field = "
                              f"{TEXT_FIELD!r}")

    def format_rules(self) -> list[str]:
        return ["each line of each file is one document (its 'text' field), without its "
                "trailing '\\n' or '\\r\\n'",
                "lines that are not UTF-8 are counted as bad and skipped (in a file's first "
                "line it is an error: the file is probably not text)"]

    def _read_file(self, f: FileInfo, start: int | None, end: int | None, hasher: Any,
                   spec: dict[str, Any]) -> Iterator[Document | BadRecord]:
        path = f.path
        blocks = self._guard(path, files.open_lines(path, start, end, hasher))
        empty = True
        for item in self._lines(path, blocks, by_row=not start):
            empty = False
            yield item
        if empty and start is None:
            raise self._error(files.empty_file_error(path, "decompresses to nothing"))

    def _lines(self, path: str, blocks: Iterable[tuple[int, list[bytes]]],
               by_row: bool) -> Iterator[Document | BadRecord]:
        key = "row" if by_row else "byte"
        row = 0
        for at, lines in blocks:
            for raw in lines:
                pos = row if by_row else at
                row += 1
                at += len(raw) + 1
                try:
                    text = raw.decode()
                except UnicodeDecodeError as e:
                    bad = files.bad_line(path, raw, pos, by_row, e)
                    if by_row and pos == 0:
                        raise self._error(bad + FIRST_RECORD) from e
                    yield BadRecord(bad)
                    continue
                if text.endswith("\r"):
                    text = text[:-1]
                yield Document(text, {"file": path, key: pos})
