"""The base of the readers of local `data_files` (json, text, parquet).

Plan (coordinator): patterns expanded and stat'ed (never read), files packed into partitions
of up to ``partition_bytes`` of text, a larger plain file cut into byte ranges, a larger
compressed file (json, text) made a *stream partition* whose pieces are cut from its
decompressed text (:mod:`prep.readers.pieces`; piece i holds the lines that start in
``[i*P, (i+1)*P)``, the byte-range rule of a plain file). Read (worker): each file's identity
checked against the plan, its records streamed, its bytes hashed on the way so that
:meth:`FileReader.partition_record` costs nothing more after a full read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

from prep.readers import pieces
from prep.readers.base import BadRecord, Document, Partition, Reader
from prep.readers.files import (
    FileInfo,
    byte_ranges,
    check_unchanged,
    compression,
    empty_file_error,
    iter_decompressed,
    line_lists,
    pack_files,
    sha256_range,
    spec_identity,
    stat_file,
    text_size,
)
from prep.readers.paths import expand


class FileReader(Reader):
    """Readers of local `data_files` (json, text, parquet): expansion, partitions, identity
    checks and checksums. Subclasses implement :meth:`_read_file` (and may :meth:`_split`);
    line readers (``cuts_lines``) implement :meth:`_lines`, which reads stream pieces too."""

    cuts_lines = False  # a large compressed file is a stream partition cut into line pieces

    def __init__(self, cfg: Any, settings: Any) -> None:
        super().__init__(cfg, settings)
        self.text_field = cfg.text_field
        self.patterns = list(cfg.data_files)
        self._files: list[FileInfo] | None = None
        self._partitions: list[Partition] | None = None
        self._base: str | None = None  # the common folder of the files (partition keys)
        self._digests: dict[str, list[dict[str, Any]]] = {}
        self._pieces: dict[str, dict[str, Any]] = {}  # piece key -> its partition record
        self._stream_last: dict[str, int] = {}  # stream key -> index of its last piece
        if settings.probe:
            self._check_files(self.files)

    @property
    def files(self) -> list[FileInfo]:
        """The matched files in read order, with their identity (stat only, no reading)."""
        if self._files is None:
            files = []
            for path in expand(self.patterns, self._error):
                try:
                    info = stat_file(path)
                except OSError as e:
                    raise self._error(f"{path}: cannot read it ({e})") from e
                if info.size == 0:
                    raise self._error(empty_file_error(path))
                files.append(info)
            self._files = files
        return self._files

    def _check_files(self, files: list[FileInfo]) -> None:
        """Plan-time checks beyond existence (parquet reads each footer here)."""

    def display(self, path: str) -> str:
        """A path as partition keys show it: relative to the common folder of all files."""
        if self._base is None:
            self._base = os.path.commonpath([os.path.dirname(os.path.abspath(f.path))
                                             for f in self.files])
        return os.path.relpath(os.path.abspath(path), self._base)

    def partitions(self) -> list[Partition]:
        if self._partitions is None:
            out: list[Partition] = []
            limit = self.settings.partition_bytes
            for group in pack_files(self.files, limit, self._text_bytes):
                f = group[0]
                if len(group) == 1 and self._is_stream(f):
                    spec = {"files": [f.to_spec()], "cut": limit}
                    out.append(Partition(len(out), self.display(f.path), spec,
                                         spec_identity(spec), f.size))
                    continue
                parts = self._split(group[0]) if len(group) == 1 else None
                if not parts:
                    names = [self.display(f.path) for f in group]
                    key = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
                    parts = [(key, {"files": [f.to_spec() for f in group]},
                              sum(f.size for f in group))]
                for key, spec, size in parts:
                    out.append(Partition(len(out), key, spec, spec_identity(spec), size))
            self._partitions = out
        return self._partitions

    def _text_bytes(self, f: FileInfo) -> int:
        """The text a file holds, as partitions count it (an estimate for a compressed file)."""
        return text_size(f)

    def _is_stream(self, f: FileInfo) -> bool:
        """A compressed file larger than a partition is a stream partition (line readers)."""
        return (self.cuts_lines and compression(f.path) is not None
                and self._text_bytes(f) > self.settings.partition_bytes)

    def _split(self, f: FileInfo) -> list[tuple[str, dict[str, Any], int]] | None:
        """A file larger than partition_bytes as (key, spec, size) pieces, or None to keep it
        whole. Plain files split into byte ranges; compressed ones cannot be split."""
        if f.size <= self.settings.partition_bytes or compression(f.path) is not None:
            return None
        name = self.display(f.path)
        return [(f"{name}@{s}+{e - s}", {"files": [f.to_spec()], "start": s, "end": e}, e - s)
                for s, e in byte_ranges(f.size, self.settings.partition_bytes)]

    def read(self, partition: Partition) -> Iterator[Document | BadRecord]:
        if partition.piece is not None:
            yield from self._read_piece(partition)
            return
        spec = partition.spec
        start, end = spec.get("start"), spec.get("end")
        records = []
        for entry in spec["files"]:
            f = FileInfo.from_spec(entry)
            check_unchanged(f, self._error)
            hasher = hashlib.sha256()
            yield from self._read_file(f, start, end, hasher, spec)
            records.append(_record(f.path, f.size, start, end, hasher.hexdigest()))
        self._digests[partition.key] = records  # reached only when read to its end

    def _read_file(self, f: FileInfo, start: int | None, end: int | None, hasher: Any,
                   spec: dict[str, Any]) -> Iterator[Document | BadRecord]:
        """One file's records: the whole file (`start` None) or the plain range [start, end);
        feeds `hasher` the file's bytes (the range's, for a range)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ stream pieces

    def cut(self, partition: Partition) -> Iterator[pieces.Piece]:
        f = FileInfo.from_spec(partition.spec["files"][0])
        check_unchanged(f, self._error)
        hasher = hashlib.sha256()
        chunks = self._guard(f.path, iter_decompressed(f.path, hasher))
        head: list[bytes] = []
        for chunk in chunks:  # up to the first non-blank byte: what kind of stream is it?
            head.append(chunk)
            if chunk.lstrip(b" \t\r\n"):
                break
        if self._uncuttable(f.path, b"".join(head)):
            yield pieces.Piece(0, b"", 0, 0, last=True, whole=True)
            return
        for piece in pieces.cut_lines(chain(head, chunks), int(partition.spec["cut"])):
            if piece.last:  # the whole file was read: its checksum comes with the last piece
                piece.extra = {"bytes": f.size, "sha256": hasher.hexdigest()}
            yield piece

    def _uncuttable(self, path: str, head: bytes) -> bool:
        """Whether a stream must be read whole (a JSON array); `head` holds its bytes up to
        the first non-blank one. Raises on a stream with no records."""
        if not head:
            raise self._error(empty_file_error(path, "decompresses to nothing"))
        return False

    def _lines(self, path: str, blocks: Iterable[tuple[int, list[bytes]]],
               by_row: bool) -> Iterator[Document | BadRecord]:
        """Records of (offset, lines) blocks (line readers)."""
        raise NotImplementedError

    def _read_piece(self, partition: Partition) -> Iterator[Document | BadRecord]:
        f = FileInfo.from_spec(partition.spec["files"][0])
        check_unchanged(f, self._error)
        piece = pieces.load(self, partition)
        if piece.last:
            self._stream_last[pieces.stream_of(partition).key] = piece.index
        if piece.whole:  # read the file as one, the way a partition of it would be
            hasher = hashlib.sha256()
            yield from self._read_file(f, None, None, hasher, partition.spec)
            entry = _record(f.path, f.size, None, None, hasher.hexdigest())
        else:
            yield from self._piece_records(f, piece)
            entry = self._piece_entry(f, partition, piece)
        self._pieces[partition.key] = {"files": [entry], "last": piece.last}

    def _piece_records(self, f: FileInfo, piece: pieces.Piece) -> Iterator[Document | BadRecord]:
        """A piece's records from its payload (line readers: its lines)."""
        return self._lines(f.path, line_lists([(piece.start, piece.data)]),
                           by_row=piece.start == 0)

    def _piece_entry(self, f: FileInfo, partition: Partition,
                     piece: pieces.Piece) -> dict[str, Any]:
        """A piece's entry in its partition record: its range of the decompressed text and
        that text's sha256; the last piece also has the file's size and sha256 (the cutter
        read all of it)."""
        out: dict[str, Any] = {"path": f.path, "piece": piece.index, "text_start": piece.start,
                               "text_end": piece.end,
                               "text_sha256": hashlib.sha256(piece.data).hexdigest()}
        if piece.last:
            out.update(piece.extra)
        return out

    def partitions_after(self, partition: Partition) -> Iterator[Partition]:
        if partition.piece is None:
            return super().partitions_after(partition)
        key = pieces.stream_of(partition).key
        return chain(pieces.later_pieces(partition, lambda: self._stream_last.get(key)),
                     super().partitions_after(partition))

    def _guard(self, path: str, items: Iterable[Any]) -> Iterator[Any]:
        """`items`, with a read error (truncated/corrupt stream, I/O) as a SourceError."""
        try:
            yield from items
        except ValueError as e:
            raise self._error(f"{path}: {e}") from e
        except OSError as e:
            raise self._error(f"{path}: cannot read it ({e})") from e

    def partition_record(self, partition: Partition) -> dict[str, Any]:
        if partition.piece is not None:
            rec = self._pieces.pop(partition.key, None)
            if rec is None:  # not read to its end by this reader
                piece = pieces.load(self, partition)
                f = FileInfo.from_spec(partition.spec["files"][0])
                entry = (_record(f.path, f.size, None, None, sha256_range(f.path)) if piece.whole
                         else self._piece_entry(f, partition, piece))
                rec = {"files": [entry], "last": piece.last}
            return rec
        records = self._digests.pop(partition.key, None)
        if records is None:  # not read to its end by this reader: hash now
            start, end = partition.spec.get("start"), partition.spec.get("end")
            records = [_record(e["path"], e["size"], start, end,
                               sha256_range(e["path"], start or 0, end))
                       for e in partition.spec["files"]]
        return {"files": records}

    def describe(self) -> dict[str, Any]:
        files = self.files
        return {
            "reader": self.name,
            "data_files": self.patterns,
            "files": [{"path": f.path, "bytes": f.size} for f in files],
            "files_count": len(files),
            "files_bytes": sum(f.size for f in files),
            "synthetic": False,
            "description": (f"{len(files)} local {self.name} file(s), field "
                            f"{self.text_field!r}, read in sorted path order "
                            f"({self._how}); sha256 per partition in the task records"),
        }

    _how = "read natively"


def _record(path: str, size: int, start: int | None, end: int | None,
            sha256: str) -> dict[str, Any]:
    """A partition record's entry: a whole file's bytes, or a range's start and end."""
    if start is None:
        return {"path": path, "bytes": size, "sha256": sha256}
    return {"path": path, "start": start, "end": end, "sha256": sha256}

