"""The base of the readers of local `data_files` (json, text, parquet).

Plan (coordinator): patterns expanded and stat'ed (never read), files packed into partitions
of up to ``partition_bytes``, a larger plain file cut into byte ranges. Read (worker): each
file's identity checked against the plan, its records streamed, its bytes hashed on the way so
that :meth:`FileReader.partition_record` costs nothing more after a full read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

from prep.readers.base import BadRecord, Document, Partition, Reader
from prep.readers.files import (
    FileInfo,
    byte_ranges,
    check_unchanged,
    compression,
    empty_file_error,
    pack_files,
    sha256_range,
    spec_identity,
    stat_file,
)
from prep.readers.paths import expand


class FileReader(Reader):
    """Readers of local `data_files` (json, text, parquet): expansion, partitions, identity
    checks and checksums. Subclasses implement :meth:`_read_file` (and may :meth:`_split`)."""

    def __init__(self, cfg: Any, settings: Any) -> None:
        super().__init__(cfg, settings)
        self.text_field = cfg.text_field
        self.patterns = list(cfg.data_files)
        self._files: list[FileInfo] | None = None
        self._partitions: list[Partition] | None = None
        self._base: str | None = None  # the common folder of the files (partition keys)
        self._digests: dict[str, list[dict[str, Any]]] = {}
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
            for group in pack_files(self.files, self.settings.partition_bytes):
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

    def _split(self, f: FileInfo) -> list[tuple[str, dict[str, Any], int]] | None:
        """A file larger than partition_bytes as (key, spec, size) pieces, or None to keep it
        whole. Plain files split into byte ranges; compressed ones cannot be split."""
        if f.size <= self.settings.partition_bytes or compression(f.path) is not None:
            return None
        name = self.display(f.path)
        return [(f"{name}@{s}+{e - s}", {"files": [f.to_spec()], "start": s, "end": e}, e - s)
                for s, e in byte_ranges(f.size, self.settings.partition_bytes)]

    def read(self, partition: Partition) -> Iterator[Document | BadRecord]:
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

    def _guard(self, path: str, items: Iterable[Any]) -> Iterator[Any]:
        """`items`, with a read error (truncated/corrupt stream, I/O) as a SourceError."""
        try:
            yield from items
        except ValueError as e:
            raise self._error(f"{path}: {e}") from e
        except OSError as e:
            raise self._error(f"{path}: cannot read it ({e})") from e

    def partition_record(self, partition: Partition) -> dict[str, Any]:
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
