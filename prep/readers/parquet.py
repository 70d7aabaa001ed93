"""``source = "parquet"``: local Parquet files, read with pyarrow directly.

Plan time opens every file's footer (no data): a file that is not Parquet, has no rows, or has
no string column `text_field` is an error naming the file (and the columns it has). A file
counts for what its text column holds uncompressed (the footer says, per row group; a file's
size on disk understates its text 3-5x). Files pack into partitions like other file sources;
a file holding more than ``partition_bytes`` splits into runs of whole row groups, each with
the byte range it covers (the ranges of a file tile it: the first starts at 0, the last ends at
the file's end, so their checksums cover every byte once). A single row group larger than that
(pyarrow writes up to 1Mi rows per group by default: gigabytes of text) is a stream partition
(`prep.readers.pieces`): the cutter reads its rows once and cuts them into pieces by the bytes
of their texts, so one big row group still feeds every worker. Provenance: ``{"file", "row"}``,
the row's absolute index in the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from prep.readers import files, pieces
from prep.readers.base import BadRecord, Document, Partition
from prep.readers.files import FileInfo
from prep.readers.local import FileReader
from prep.readers.rows import FIRST_RECORD, PROVENANCE_FIELDS, bad_field, jsonable

BATCH_ROWS = 1000  # rows per Arrow batch


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def row_group_starts(md: pq.FileMetaData) -> list[int]:
    """The file offset where each row group's first page begins."""
    starts = []
    for k in range(md.num_row_groups):
        rg = md.row_group(k)
        offsets = []
        for c in range(rg.num_columns):
            col = rg.column(c)
            offsets.append(col.data_page_offset)
            if col.has_dictionary_page and col.dictionary_page_offset:
                offsets.append(col.dictionary_page_offset)
        starts.append(min(offsets))
    return starts


class ParquetReader(FileReader):
    name = "parquet"
    _how = "pyarrow, row group by row group"

    def __init__(self, cfg: Any, settings: Any) -> None:
        self._meta: dict[str, pq.FileMetaData] = {}
        super().__init__(cfg, settings)

    def format_rules(self) -> list[str]:
        return [f"each row's {self.text_field!r} column is one document, unchanged",
                "rows whose value is null are counted as bad and skipped (in a file's first "
                "row it is an error)"]

    def _check_files(self, infos: list[FileInfo]) -> None:
        for f in infos:
            self.metadata(f.path)

    def metadata(self, path: str) -> pq.FileMetaData:
        """A file's footer, checked: readable, has rows and a string `text_field` column."""
        md = self._meta.get(path)
        if md is None:
            try:
                md = pq.read_metadata(path)
                schema = md.schema.to_arrow_schema()
            except (pa.ArrowException, OSError, ValueError) as e:
                raise self._error(f"{path}: not a readable Parquet file ({type(e).__name__}: "
                                  f"{e}); re-download or re-export it") from e
            if self.text_field not in schema.names:
                raise self._error(f"{path}: no column {self.text_field!r} (columns: "
                                  f"{', '.join(schema.names) or 'none'}); set text_field in "
                                  "the recipe")
            kind = schema.field(self.text_field).type
            if not _is_string(kind):
                raise self._error(f"{path}: column {self.text_field!r} holds {kind}, not "
                                  "strings; set text_field in the recipe to a string column")
            if md.num_rows == 0:
                raise self._error(files.empty_file_error(path, "has no rows"))
            self._meta[path] = md
        return md

    def _text_bytes(self, f: FileInfo) -> int:
        md = self.metadata(f.path)
        return sum(self._group_text(md, k) for k in range(md.num_row_groups))

    def _group_text(self, md: pq.FileMetaData, k: int) -> int:
        """The uncompressed bytes of row group k's text column (its whole size if unnamed)."""
        rg = md.row_group(k)
        cols = [rg.column(c) for c in range(rg.num_columns)]
        named = [c for c in cols if c.path_in_schema == self.text_field]
        return sum(c.total_uncompressed_size for c in (named or cols))

    def _split(self, f: FileInfo) -> list[tuple[str, dict[str, Any], int]] | None:
        limit = self.settings.partition_bytes
        md = self.metadata(f.path)
        if self._text_bytes(f) <= limit:
            return None
        runs: list[list[int]] = []
        size = 0
        for k in range(md.num_row_groups):
            rg_bytes = self._group_text(md, k)
            if not runs or size + rg_bytes > limit:
                runs.append([])
                size = 0
            runs[-1].append(k)
            size += rg_bytes
        starts = row_group_starts(md)
        name = self.display(f.path)
        out = []
        for j, run in enumerate(runs):
            a, b = run[0], run[-1] + 1
            start = 0 if j == 0 else starts[a]
            end = f.size if j == len(runs) - 1 else starts[b]
            spec: dict[str, Any] = {"files": [f.to_spec()], "start": start, "end": end,
                                    "row_groups": [a, b]}
            if b == a + 1 and self._group_text(md, a) > limit:
                spec["cut"] = limit  # one large row group: its rows cut into pieces
            groups = f"{a}" if b == a + 1 else f"{a}-{b - 1}"
            out.append((f"{name}#rg{groups}", spec, end - start))
        return out

    # ------------------------------------------------------------------ a large row group

    def cut(self, partition: Partition) -> Iterator[pieces.Piece]:
        """A large row group's rows, cut by the bytes of their texts (one read); the last
        piece carries the sha256 of the file's bytes the row group covers."""
        spec = partition.spec
        f = FileInfo.from_spec(spec["files"][0])
        files.check_unchanged(f, self._error)
        hasher = hashlib.sha256()
        rows = (pieces.row_line(r.text, r.source) if isinstance(r, Document)
                else pieces.row_line(None, bad=r.reason)
                for r in self._read_file(f, spec["start"], spec["end"], hasher, spec))
        for piece in pieces.cut_rows(rows, int(spec["cut"])):
            if piece.last:
                piece.extra = {"start": spec["start"], "end": spec["end"],
                               "sha256": hasher.hexdigest()}
            yield piece

    def _piece_records(self, f: FileInfo, piece: pieces.Piece) -> Iterator[Document | BadRecord]:
        return pieces.row_records(piece.data)

    def _piece_entry(self, f: FileInfo, partition: Partition,
                     piece: pieces.Piece) -> dict[str, Any]:
        out: dict[str, Any] = {"path": f.path, "row_groups": partition.spec["row_groups"],
                               "piece": piece.index, "text_start": piece.start,
                               "text_end": piece.end,
                               "rows_sha256": hashlib.sha256(piece.data).hexdigest()}
        if piece.last:
            out.update(piece.extra)
        return out

    def _read_file(self, f: FileInfo, start: int | None, end: int | None, hasher: Any,
                   spec: dict[str, Any]) -> Iterator[Document | BadRecord]:
        path = f.path
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise self._error(f"{path}: not a readable Parquet file ({type(e).__name__}: "
                              f"{e}); re-download or re-export it") from e
        md = pf.metadata
        a, b = spec.get("row_groups", [0, md.num_row_groups])
        row = sum(md.row_group(k).num_rows for k in range(a))
        names = pf.schema_arrow.names
        field = self.text_field
        if field not in names:
            raise self._error(f"{path}: no column {field!r} (columns: {', '.join(names)}); "
                              "set text_field in the recipe")
        cols = [field] + [k for k in PROVENANCE_FIELDS if k in names and k != field]
        batches = pf.iter_batches(batch_size=BATCH_ROWS, row_groups=list(range(a, b)),
                                  columns=cols, use_threads=False)
        rows = _Rows(pf)
        for batch in self._arrow_guard(path, batches):
            texts = batch.column(0).to_pylist()
            prov = [(k, batch.column(i).to_pylist()) for i, k in enumerate(cols) if i]
            for j, text in enumerate(texts):
                if type(text) is str:
                    source = {"file": path, "row": row + j}
                    for k, values in prov:
                        if values[j] is not None:
                            source[k] = jsonable(values[j])
                    yield Document(text, source)
                    continue
                reason = bad_field(f"{path} row {row + j}", field, rows.get(row + j))
                if row + j == 0:
                    raise self._error(reason + FIRST_RECORD)
                yield BadRecord(reason)
            row += batch.num_rows
        files.hash_range(hasher, path, start or 0, end)

    def _arrow_guard(self, path: str, batches: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from batches
        except (pa.ArrowException, OSError, ValueError) as e:
            raise self._error(f"{path}: cannot read its rows ({type(e).__name__}: {e}); "
                              "re-download or re-export it") from e


class _Rows:
    """Whole rows by absolute index (for bad-row messages), one row group cached."""

    def __init__(self, pf: pq.ParquetFile) -> None:
        self.pf = pf
        self.group: tuple[int, int, pa.Table] | None = None  # (index, first row, table)

    def get(self, row: int) -> dict[str, Any]:
        md = self.pf.metadata
        if self.group is None or not 0 <= row - self.group[1] < self.group[2].num_rows:
            first = 0
            for k in range(md.num_row_groups):
                n = md.row_group(k).num_rows
                if row < first + n:
                    self.group = (k, first, self.pf.read_row_group(k, use_threads=False))
                    break
                first += n
        assert self.group is not None
        return self.group[2].slice(row - self.group[1], 1).to_pylist()[0]
