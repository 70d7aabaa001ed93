"""``source = "json"``: local JSON Lines and JSON array files (.gz .zst .bz2 .xz too).

Read natively: bytes decompressed by suffix, cut into lines, ``json.loads`` per line (three
times faster than datasets' JSON builder, and a byte range of a large plain file can be read
alone). A file whose first non-blank byte is ``[`` is a JSON array, parsed incrementally and
never split.

Provenance: ``{"file", "row"}`` (0-based line of a JSON Lines file, element of an array) for
partitions that start at the file's start; ``{"file", "byte"}`` (the line's offset) for the
later byte ranges of a split file, and for the later pieces of a large compressed file (the
offset in its decompressed text: `prep.readers.pieces`). A malformed or non-UTF-8 line, a line
nested deeper than the parser allows, or a record without a string text field, is a BadRecord
naming the file and line; in a file's first record it is an error (the file is probably not
JSON Lines, or text_field is wrong).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any

from prep.readers import files
from prep.readers.base import BadRecord, Document
from prep.readers.files import FileInfo
from prep.readers.local import FileReader
from prep.readers.rows import FIRST_RECORD, add_provenance, bad_field

_WHITESPACE = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
NOT_JSONL = " (the file's first record: is it JSON Lines? check data_files)"


class JsonReader(FileReader):
    name = "json"
    _how = "decompressed by suffix, one json.loads per line; JSON arrays parsed incrementally"
    cuts_lines = True

    def format_rules(self) -> list[str]:
        return [f"each record's {self.text_field!r} field is one document, unchanged",
                "a JSON Lines file has one record per line (blank lines skipped); a file "
                "starting with '[' is a JSON array of records",
                "records that are malformed JSON, not UTF-8, or whose field is missing or not a "
                "string are counted as bad and skipped (in a file's first record it is an "
                "error: the file or the field name is probably wrong)"]

    def _split(self, f: FileInfo) -> list[tuple[str, dict[str, Any], int]] | None:
        parts = super()._split(f)
        if parts and _first_byte(f.path) == b"[":
            return None  # a JSON array cannot be cut into byte ranges
        return parts

    def _uncuttable(self, path: str, head: bytes) -> bool:
        """A compressed JSON array is read whole (never cut); no records at all is an error."""
        first = head.lstrip(_WHITESPACE)
        if not first:
            what = "holds only blank lines, no records" if head else "decompresses to nothing"
            raise self._error(files.empty_file_error(path, what))
        return first.removeprefix(_BOM).startswith(b"[")

    def _read_file(self, f: FileInfo, start: int | None, end: int | None, hasher: Any,
                   spec: dict[str, Any]) -> Iterator[Document | BadRecord]:
        path = f.path
        if start is not None:
            blocks = files.open_lines(path, start, end, hasher)
            yield from self._lines(path, self._guard(path, blocks), by_row=start == 0)
            return
        chunks = self._guard(path, files.iter_decompressed(path, hasher))
        head: list[bytes] = []
        for chunk in chunks:  # peek: an array or JSON Lines?
            head.append(chunk)
            if chunk.lstrip(_WHITESPACE):
                break
        first = b"".join(head).lstrip(_WHITESPACE)
        if not first:
            what = ("holds only blank lines, no records" if any(head)
                    else "decompresses to nothing")
            raise self._error(files.empty_file_error(path, what))
        stream = chain(head, chunks)
        if first.removeprefix(_BOM).startswith(b"["):
            yield from self._array(path, stream)
        else:
            yield from self._lines(path, files.line_lists(files.with_offsets(stream)), by_row=True)

    def _lines(self, path: str, blocks: Iterable[tuple[int, list[bytes]]],
               by_row: bool) -> Iterator[Document | BadRecord]:
        """The hot path: one parse per line, provenance from PROVENANCE_FIELDS."""
        loads, field = _LOADS, self.text_field
        key = "row" if by_row else "byte"
        first = by_row  # this range holds the file's first record
        row = 0
        for at, lines in blocks:
            for raw in lines:
                pos = row if by_row else at
                row += 1
                at += len(raw) + 1
                try:
                    obj = loads(raw)
                except (ValueError, RecursionError) as e:  # RecursionError: nested too deep
                    if not raw.strip(_WHITESPACE):
                        continue  # a blank line
                    obj = self._retry_bom(raw, first)
                    if obj is None:
                        bad = files.bad_line(path, raw, pos, by_row, e)
                        if first:
                            raise self._error(bad + NOT_JSONL) from e
                        yield BadRecord(bad)
                        continue
                text = obj.get(field) if type(obj) is dict else None
                if type(text) is str:
                    yield Document(text, add_provenance({"file": path, key: pos}, obj))
                else:
                    where = f"{path} {key} {pos}"
                    if first:
                        raise self._error(bad_field(where, field, obj) + FIRST_RECORD)
                    yield BadRecord(bad_field(where, field, obj))
                first = False

    @staticmethod
    def _retry_bom(raw: bytes, first: bool) -> Any:
        if first and raw.startswith(_BOM):
            try:
                return json.loads(raw[len(_BOM):].decode())
            except (ValueError, RecursionError):
                return None
        return None

    def _array(self, path: str, stream: Iterable[bytes]) -> Iterator[Document | BadRecord]:
        try:
            for i, obj in enumerate(iter_json_array(_decoded(stream, self, path), path)):
                text = obj.get(self.text_field) if type(obj) is dict else None
                if type(text) is str:
                    yield Document(text, add_provenance({"file": path, "row": i}, obj))
                elif i == 0:
                    raise self._error(bad_field(f"{path} row 0", self.text_field, obj)
                                      + FIRST_RECORD)
                else:
                    yield BadRecord(bad_field(f"{path} row {i}", self.text_field, obj))
        except ValueError as e:  # the parser's own messages name the file
            raise self._error(f"{e}; fix or re-create the file") from e
        except RecursionError as e:  # an element nested too deep: no way to skip just it
            raise self._error(f"{path}: an element of the JSON array is nested deeper than "
                              "Python's JSON parser allows; flatten or remove it") from e


def _json_lines_parser() -> Callable[[bytes], Any]:
    """One line's value: msgspec's decoder where installed (bytes in, no str copy: 1.8x
    ``json.loads(raw.decode())`` on code, 1.2x on UTF-8 prose, `prep.bench.stages`), and for
    any line it refuses (NaN, a lone surrogate escape, bad bytes or JSON, ...) json's own
    verdict, value or error, so that what a line gives never depends on msgspec."""
    def plain(raw: bytes) -> Any:
        return json.loads(raw.decode())

    try:
        import msgspec
    except ImportError:
        return plain
    decode = msgspec.json.Decoder().decode

    def fast(raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception:
            return plain(raw)

    return fast


_LOADS = _json_lines_parser()


def _decoded(chunks: Iterable[bytes], reader: JsonReader, path: str) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    try:
        for chunk in chunks:
            yield decoder.decode(chunk)
        yield decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        raise reader._error(f"{path}: bytes are not UTF-8 ({e.reason}); re-encode the file "
                            "as UTF-8") from e


def _first_byte(path: str) -> bytes:
    """The first non-blank byte of a plain file (after a UTF-8 BOM), or b"" if none."""
    with open(path, "rb") as f:
        while block := f.read(files.CHUNK):
            rest = block.lstrip(_WHITESPACE).removeprefix(_BOM)
            if rest:
                return rest[:1]
    return b""


def iter_json_array(chunks: Iterable[str], where: str) -> Iterator[Any]:
    """The elements of a JSON array read incrementally from text chunks.

    Each element is decoded with ``json.JSONDecoder.raw_decode`` from a buffer refilled chunk
    by chunk, so the whole array never sits in memory at once. Raises ValueError naming
    `where` and the element index on malformed input.
    """
    decoder = json.JSONDecoder()
    source = iter(chunks)
    buf = ""
    pos = 0
    eof = False

    def fill() -> bool:
        nonlocal buf, pos, eof
        while not eof:
            chunk = next(source, None)
            if chunk is None:
                eof = True
            elif chunk:
                buf = buf[pos:] + chunk
                pos = 0
                return True
        return False

    def peek() -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not fill():
                return ""

    if peek() != "[":
        raise ValueError(f"{where}: not a JSON array (it should start with '[')")
    pos += 1
    index = 0
    if peek() == "]":
        return
    while True:
        if peek() == "":
            raise ValueError(f"{where}: ends inside the array after element {index - 1}; "
                             "the file is truncated")
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as e:
                if not fill():
                    raise ValueError(f"{where}: element {index} is malformed JSON "
                                     f"({e.msg}) or the file is truncated") from e
        # A scalar could stop at the buffer's end; objects/arrays cannot (they need a closer).
        if end == len(buf) and not isinstance(value, dict | list) and fill():
            continue
        pos = end
        yield value
        index += 1
        sep = peek()
        if sep == ",":
            pos += 1
        elif sep == "]":
            return
        else:
            raise ValueError(f"{where}: expected ',' or ']' after element {index - 1}, found "
                             f"{sep!r}" if sep else f"{where}: ends after element {index - 1} "
                             "without ']'; the file is truncated")
