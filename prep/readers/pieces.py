"""A stream partition read as pieces: content-defined cuts, and the spill files that carry a
piece from the cutter to a worker.

A **stream partition** (``spec["cut"] = P``) is an input that can only be read from its start:
a compressed file larger than one partition (a zstd/gzip/bz2/xz stream), the shard of a Hub
dataset with few shards, a Parquet row group larger than one partition. It stays ONE partition
of the plan (one unit of the seeded order, of the interleave groups and of the budget caps:
`prep.order`), but its records are read as consecutive **pieces**, one task each:

- piece ``i`` holds the records whose first byte lies at stream offset ``[i*P, (i+1)*P)``: the
  offset of a line in the decompressed text (:func:`cut_lines`: the byte-range rule of a plain
  file, applied to the decompressed stream), or of a row in the concatenation of the rows'
  texts, one byte more per row (:func:`cut_rows`). A record longer than P leaves the pieces it
  covers empty (they exist, and hold nothing);
- so the cuts depend on the content and P (``--partition-mb``) only: not on the file's name,
  mtime or compression, nor on --workers, the executor, slices or a resume. The piece count is
  known once the stream has been read to its end; nothing in the plan needs it.

One sequential read yields every piece in order. The cutter (`prep.cutter`) runs it once, in
the coordinator, and spills each piece into the run's work directory (:func:`write_spill`:
a JSON header line, then the payload; written to a temporary name and renamed); the worker that
runs the piece's task reads the spill (:func:`load`). A worker that finds no spill (it was
removed, or this process runs slices without a coordinator) runs the same read itself up to its
piece: slower (it re-reads the prefix), never different.

Payloads: the piece's raw lines for line streams (:func:`cut_lines`); JSON Lines of
``{"t": text, "p": {provenance}}`` or ``{"b": reason}`` (a bad row) for row streams
(:func:`row_line`, :func:`row_records`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prep.readers.base import BadRecord, Document, Partition

if TYPE_CHECKING:
    from prep.readers.base import Reader

SPILL_VERSION = 1


@dataclass
class Piece:
    index: int
    data: bytes  # the payload (see the module docstring)
    start: int  # stream offset of the piece's first record
    end: int  # stream offset just past its last record
    last: bool  # no record follows this piece
    whole: bool = False  # the stream cannot be cut (a JSON array): read the partition whole
    extra: dict[str, Any] = field(default_factory=dict)  # the last piece: the file's size, sha256


def piece_of(stream: Partition, i: int) -> Partition:
    """Piece `i` of a stream partition, as a partition (what its task reads)."""
    return Partition(stream.index, f"{stream.key}#{i}", {**stream.spec, "piece": i},
                     f"{stream.identity}#{i}")


def stream_of(piece: Partition) -> Partition:
    """The stream partition a piece belongs to."""
    spec = {k: v for k, v in piece.spec.items() if k != "piece"}
    return Partition(piece.index, piece.key.rpartition("#")[0], spec,
                     piece.identity.rpartition("#")[0])


# --------------------------------------------------------------------------- cutting


def cut_lines(chunks: Iterable[bytes], size: int) -> Iterator[Piece]:
    """The pieces of a byte stream: piece i holds the lines whose first byte lies in
    ``[i*size, (i+1)*size)`` (the last line may lack its "\n"). A piece is yielded once the
    first byte after it has been read (so that `last` is known), or at the end."""
    buf = bytearray()
    base = 0  # stream offset of buf[0]
    i, start = 0, 0  # piece i begins at `start`
    scan = 0  # no "\n" that could end piece i lies before this offset
    for chunk in chunks:
        buf += chunk
        while True:
            bound = (i + 1) * size  # piece i owns the lines that start before `bound`
            nl = buf.find(b"\n", max(bound - 1, start, scan) - base)
            if nl < 0:
                scan = base + len(buf)
                break
            if nl + 1 == len(buf):  # whether a byte follows that line is not known yet
                scan = base + nl
                break
            cut = base + nl + 1
            yield Piece(i, bytes(memoryview(buf)[start - base:nl + 1]), start, cut, last=False)
            for empty in range(i + 1, cut // size):  # a line longer than `size` covers them
                yield Piece(empty, b"", cut, cut, last=False)
            i, start = cut // size, cut
            del buf[:cut - base]
            base = cut
    yield Piece(i, bytes(memoryview(buf)[start - base:]), start, base + len(buf), last=True)


def row_line(text: str | None, provenance: dict[str, Any] | None = None,
             bad: str | None = None) -> tuple[int, bytes]:
    """(stream bytes, payload line) of one row of a row stream: a document's text and
    provenance, or the reason it is bad. Its stream bytes are its text's UTF-8 length + 1.
    (ASCII JSON: a lone surrogate in a text survives the trip as its escape.)"""
    if bad is not None:
        return 1, json.dumps({"b": bad}).encode() + b"\n"
    assert text is not None
    line = json.dumps({"t": text, "p": provenance or {}}).encode() + b"\n"
    return len(text.encode("utf-8", "surrogatepass")) + 1, line


def cut_rows(rows: Iterable[tuple[int, bytes]], size: int) -> Iterator[Piece]:
    """The pieces of a row stream of (stream bytes, payload line) pairs (:func:`row_line`):
    piece i holds the rows whose stream offset lies in ``[i*size, (i+1)*size)``."""
    lines: list[bytes] = []
    at = 0  # stream offset of the next row
    i, start = 0, 0
    for nbytes, line in rows:
        if at >= (i + 1) * size:  # this row starts a later piece
            yield Piece(i, b"".join(lines), start, at, last=False)
            for empty in range(i + 1, at // size):
                yield Piece(empty, b"", at, at, last=False)
            i, start, lines = at // size, at, []
        lines.append(line)
        at += nbytes
    yield Piece(i, b"".join(lines), start, at, last=True)


def row_records(data: bytes) -> Iterator[Document | BadRecord]:
    """The records of a row-stream payload, as :func:`row_line` wrote them."""
    for line in data.splitlines():
        row = json.loads(line)
        yield Document(row["t"], row["p"]) if "t" in row else BadRecord(row["b"])


# --------------------------------------------------------------------------- spills


def spill_path(spill_dir: str, domain: str, piece: Partition) -> str:
    return os.path.join(spill_dir, f"{domain}.{piece.index:06d}.p{piece.piece:05d}")


def write_spill(path: str, piece: Piece) -> int:
    """Write a piece's spill (temporary name, then renamed into place); returns its bytes."""
    head = {"v": SPILL_VERSION, "piece": piece.index, "start": piece.start, "end": piece.end,
            "last": piece.last, "whole": piece.whole, "bytes": len(piece.data),
            "extra": piece.extra}
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(json.dumps(head).encode() + b"\n")
        f.write(piece.data)
    os.replace(tmp, path)
    return len(piece.data)


def read_spill(path: str) -> Piece | None:
    """A piece from its spill, or None if there is none (or it is incomplete)."""
    try:
        with open(path, "rb") as f:
            head = json.loads(f.readline())
            data = f.read()
    except (OSError, ValueError):
        return None
    if head.get("v") != SPILL_VERSION or len(data) != head.get("bytes"):
        return None
    return Piece(head["piece"], data, head["start"], head["end"], head["last"],
                 head["whole"], head["extra"])


def load(reader: Reader, piece: Partition) -> Piece:
    """A piece of a stream partition: from the run's spill, else by cutting the stream again
    from its start up to this piece (the same bytes, only slower)."""
    spill_dir = reader.settings.spill_dir
    if spill_dir:
        got = read_spill(spill_path(spill_dir, reader.domain, piece))
        if got is not None and got.index == piece.piece:
            return got
    pieces = reader.cut(stream_of(piece))
    try:
        for got in pieces:
            if got.index == piece.piece or got.whole:
                return got
            if got.last:
                break
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
    raise reader._error(f"{piece.key}: the stream ends before piece {piece.piece} (the input "
                        "changed since the run was planned?); plan the run again")


def later_pieces(piece: Partition, last: Callable[[], int | None]) -> Iterator[Partition]:
    """The pieces after `piece` in its stream, while they exist; ``last()`` (asked again after
    each one is consumed) is the index of the stream's last piece once known."""
    stream = stream_of(piece)
    j = (piece.piece or 0) + 1
    while (n := last()) is None or j <= n:
        yield piece_of(stream, j)
        j += 1
