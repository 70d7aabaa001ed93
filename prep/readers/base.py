"""What every reader is: partitions planned in the coordinator, read in a worker.

A reader turns one `[domains.<name>]` table of the recipe into documents. It does two jobs in
two places:

- in the coordinator, once: check what can be checked cheaply (files exist, the Hub or its local
  cache answers, a ZIP opens) and list the source's **partitions**: the units of the seeded
  order, in the source's natural order, known before any record is read (a group of small
  files, a byte range of a large plain file, runs of a Parquet file's row groups, a shard of a
  Hub dataset, a range of generated problems). The list depends only on the input, never on
  --workers, the executor or a resume;
- a partition that can only be read from its start (a large compressed file, a Hub shard: a
  *stream partition*, ``spec["cut"]``) is read as consecutive **pieces**, each a task of its
  own, cut where the content says (:mod:`prep.readers.pieces`): :meth:`Reader.cut` reads it
  once, in order, and the coordinator's cutter (:mod:`prep.cutter`) spills the pieces for the
  workers;
- in a worker, per task: :meth:`Reader.read` streams one partition's records as
  :class:`Document` or :class:`BadRecord`. A worker builds its own reader from the same
  :class:`~prep.recipe.DomainConfig` and :class:`ReadSettings` (``probe=False``), so a reader
  never needs to be pickled, and everything a worker must know that the coordinator resolved
  (a Hub revision, a snapshot directory, a downloaded file) travels in ``Partition.spec``.

Anything that makes the whole source unusable raises :class:`SourceError` naming the domain,
the file/URL/dataset and the fix; a single unreadable record is a :class:`BadRecord` that the
task counts and skips (up to --max-bad-fraction).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep.config import DEFAULT_PARTITION_MB

if TYPE_CHECKING:
    from prep.readers.pieces import Piece
    from prep.recipe import DomainConfig

DEFAULT_PARTITION_BYTES = int(DEFAULT_PARTITION_MB * 1e6)  # one partition (task) of file input


@dataclass
class Document:
    text: str  # the formatted document (the task applies the length filters)
    source: dict[str, Any] = field(default_factory=dict)  # small JSON-serialisable provenance


@dataclass
class BadRecord:
    reason: str  # names the file and row/line, what is wrong and the fix


class SourceError(Exception):
    """A source that cannot be read at all; the message names domain, origin and the fix."""


@dataclass(frozen=True)
class ReadSettings:
    """How readers cut and fetch their input; the same in the coordinator and every worker."""

    partition_bytes: int = DEFAULT_PARTITION_BYTES
    cache_dir: str | None = None  # downloads (the MathQA ZIP) go here; shared by all nodes
    probe: bool = True  # coordinator: check reachability and inputs; workers: False
    spill_dir: str | None = None  # where the run's cutter spills pieces (set per run; workers)


@dataclass(frozen=True)
class Partition:
    """One unit of work of one domain's source; JSON-serialisable (it goes into the plan)."""

    index: int  # position in the source's natural order (0, 1, ...)
    key: str  # stable, unique within the domain, human-readable: "a.jsonl", "b.jsonl@0+33554432"
    spec: dict[str, Any]  # what the reader needs to read it in a worker
    identity: str  # the input's identity for resume checks: sizes and mtimes, a revision, a hash
    size: int | None = None  # bytes of input, where known (progress only)

    @property
    def piece(self) -> int | None:
        """For one piece of a stream partition: its index in the stream (else None)."""
        return self.spec.get("piece")

    @property
    def stream(self) -> bool:
        """A stream partition: read as pieces of about ``spec["cut"]`` bytes of text."""
        return "cut" in self.spec and "piece" not in self.spec

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "key": self.key, "spec": self.spec,
                "identity": self.identity, "size": self.size}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Partition:
        return cls(index=int(d["index"]), key=str(d["key"]), spec=dict(d["spec"]),
                   identity=str(d["identity"]), size=d.get("size"))


class Reader:
    """Base of every reader; see the module docstring. Subclasses set `name`."""

    name: str = "?"

    def __init__(self, cfg: DomainConfig, settings: ReadSettings) -> None:
        self.cfg = cfg
        self.domain = cfg.name
        self.settings = settings

    def partitions(self) -> list[Partition]:
        """The source's partitions in natural order (coordinator; may be called in workers)."""
        raise NotImplementedError

    def partitions_after(self, partition: Partition) -> Iterator[Partition]:
        """The partitions that follow `partition`, in order, produced lazily (worker).

        Used by readers that wrap another one (WikiText grouping reads on into the next
        partitions to finish its last article). The default lists `partitions()`; a reader
        whose listing needs the network (hf) derives them from ``partition.spec`` instead.
        """
        return (p for p in self.partitions() if p.index > partition.index)

    def read(self, partition: Partition) -> Iterator[Document | BadRecord]:
        """Stream one partition's records, in order (worker); for a stream partition, one
        piece's records (``partition.piece``)."""
        raise NotImplementedError

    def cut(self, partition: Partition) -> Iterator[Piece]:
        """A stream partition's pieces, in order, from one sequential read (the coordinator's
        cutter; a worker without the piece's spill). Readers with stream partitions implement
        it with :func:`prep.readers.pieces.cut_lines` or :func:`~prep.readers.pieces.cut_rows`.
        """
        raise NotImplementedError(f"source {self.name!r} has no stream partitions")

    def partition_record(self, partition: Partition) -> dict[str, Any]:
        """The partition's input facts for the manifest (worker, after reading it to its end).

        For files: ``{"files": [{"path", "bytes", "sha256"}]}``, or for a byte range
        ``{"files": [{"path", "start", "end", "sha256"}]}``. Files are hashed here, in the
        workers, never in the coordinator; a reader may reuse digests computed while reading.
        """
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The manifest's `domains.<d>.source` record: reader, dataset, files, revision.

        Cheap (coordinator): it never hashes input; checksums come from `partition_record`."""
        raise NotImplementedError

    def format_rules(self) -> list[str]:
        """How records became documents, in words (the manifest's `format_rules`)."""
        raise NotImplementedError

    def notes(self) -> list[str]:
        """Lines worth telling the person running prep (e.g. "read from the local Hub cache")."""
        return []

    def _error(self, message: str) -> SourceError:
        return SourceError(f"[domains.{self.domain}] {message}")


def as_path(p: str | Path) -> Path:
    return p if isinstance(p, Path) else Path(p)
