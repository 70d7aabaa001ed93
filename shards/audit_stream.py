"""Reading a split for `shards audit`: bounded chunks, checked ids, whole documents.

`SplitStream(split, problems).pieces()` walks a split's shards in chunks of at most
``chunk_tokens`` tokens, each a read-only memory map of that part of one shard file, unmapped
when the next chunk is read (so resident memory stays one chunk, whatever the split's size).
Every chunk's token ids are checked against the vocabulary before anything uses them: a damaged
shard becomes a problem line naming the file and the token offset (`Problems`), and the pieces
carry the positions of the bad ids so that nothing decodes them.

A piece holds whole documents (each ending with its EOT): the part of a chunk after its last EOT
is carried into the next piece, so a document that runs over a chunk or shard boundary is whole
in exactly one piece and no n-gram is lost or invented at a boundary. Only the carried document
is copied; the rest of a piece is a view of the chunk's memory map.

`iter_doc_index(split)` streams the zstd JSON-lines document index in blocks (never the whole
index in memory), for the figures that need provenance or character counts.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from shards.format import TOKEN_BYTES, TOKEN_DTYPE, FormatError
from shards.reader import Split
from shards.scan import FileScan, token_problem

CHUNK_TOKENS = 1 << 20  # 2 MB of tokens mapped at a time (~40 bytes per token of work)
MAX_DOC_TOKENS = 1 << 26  # a "document" longer than this is damage (no EOT), cut and reported
INDEX_BLOCK = 4 << 20  # decompressed bytes of the document index parsed at a time


@dataclass
class Problems:
    """Problem lines found while auditing, one per damaged file or inconsistency."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        if line not in self.lines:
            self.lines.append(line)


@dataclass
class Piece:
    """Whole documents of a split: tokens[bounds[k]:bounds[k+1]] is document first_doc + k."""

    tokens: np.ndarray  # uint16; each document ends with EOT (except a damaged stream's tail)
    start: int  # stream position of tokens[0]
    first_doc: int  # ordinal (in the split) of the first document
    bounds: np.ndarray  # int64, documents + 1 entries
    eots: np.ndarray  # int64 positions of EOT in tokens
    bad: np.ndarray  # int64 positions of ids >= the vocabulary (usually empty)

    @property
    def docs(self) -> int:
        return len(self.bounds) - 1


class SplitStream:
    """One pass over a split's tokens; see the module docstring."""

    def __init__(self, split: Split, problems: Problems, chunk_tokens: int = CHUNK_TOKENS) -> None:
        self.split = split
        self.problems = problems
        self.chunk_tokens = max(1, int(chunk_tokens))
        self.eot = split.dataset.eot_id
        self.vocab = split.dataset.vocab_size
        self.docs = 0  # documents seen (EOTs, plus an unterminated tail)
        self.tokens = 0

    def chunks(self) -> Iterator[tuple[np.ndarray, int, np.ndarray]]:
        """(tokens, stream position, positions of bad ids) of each chunk, shard by shard."""
        root = self.split.dataset.root
        pos = 0
        for rec in self.split.record.shards:
            path = root / rec.path
            bad_count, first_bad = 0, None
            for off in range(0, rec.tokens, self.chunk_tokens):
                count = min(self.chunk_tokens, rec.tokens - off)
                chunk = np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=off * TOKEN_BYTES,
                                  shape=(count,))
                bad = np.zeros(0, dtype=np.int64)
                if int(chunk.max()) >= self.vocab:
                    bad = np.flatnonzero(chunk >= self.vocab)
                    if first_bad is None:
                        first_bad = (off + int(bad[0]), int(chunk[bad[0]]))
                    bad_count += len(bad)
                yield chunk, pos, bad
                del chunk
                pos += count
            if bad_count:
                scan = FileScan(Path(path), None, rec.tokens * TOKEN_BYTES, bad_count, first_bad)
                self.problems.add(str(token_problem(scan, self.vocab)))

    def pieces(self) -> Iterator[Piece]:
        """Whole-document pieces of the split, in stream order."""
        carry: list[np.ndarray] = []  # the unfinished document (copies)
        carry_bad: list[np.ndarray] = []
        carry_start = 0
        carried = 0
        for chunk, pos, bad in self.chunks():
            self.tokens += len(chunk)
            eots = np.flatnonzero(chunk == self.eot)
            if not len(eots):
                if not carried:
                    carry_start = pos
                carry.append(np.array(chunk))
                carry_bad.append(bad + (pos - carry_start))
                carried += len(chunk)
                if carried > MAX_DOC_TOKENS:
                    self.problems.add(
                        f"{self.split.dataset.root / self.split.record.doc_index.path}: no EOT "
                        f"in {carried:,} tokens from stream position {carry_start:,} of "
                        f"{self.split.domain}/{self.split.name}: not a document stream (damaged "
                        "shards); audited as if a document ended there")
                    yield self._piece(carry, carry_bad, carry_start)
                    carry, carry_bad, carried = [], [], 0
                continue
            cut = int(eots[0]) + 1
            if carried:  # the carried document ends in this chunk: one small copy
                carry.append(np.array(chunk[:cut]))
                carry_bad.append(bad[bad < cut] + (pos - carry_start))
                yield self._piece(carry, carry_bad, carry_start)
            else:
                cut = 0
            end = int(eots[-1]) + 1
            if end > cut:
                sel = (bad >= cut) & (bad < end)
                yield self._make(chunk[cut:end], pos + cut, eots[eots >= cut] - cut,
                                 bad[sel] - cut)
            carry, carry_bad, carried, carry_start = [], [], 0, pos + end
            if end < len(chunk):
                carry = [np.array(chunk[end:])]
                carry_bad = [bad[bad >= end] - end]
                carried = len(chunk) - end
        if carried:
            yield self._piece(carry, carry_bad, carry_start)
            self.problems.add(
                f"{self.split.dataset.root / self.split.record.shards[-1].path}: the last "
                f"{carried:,} tokens of {self.split.domain}/{self.split.name} have no EOT: every "
                "document must end with EOT (truncated or damaged shard); run `shards verify`")
        if self.docs != self.split.num_docs:
            self.problems.add(
                f"{self.split.dataset.root / self.split.record.doc_index.path}: the shards of "
                f"{self.split.domain}/{self.split.name} hold {self.docs:,} documents (EOT-ended) "
                f"but the manifest declares {self.split.num_docs:,}; run `shards verify`")

    def _piece(self, carry: list[np.ndarray], carry_bad: list[np.ndarray], start: int) -> Piece:
        toks = np.concatenate(carry) if len(carry) > 1 else carry[0]
        return self._make(toks, start, np.flatnonzero(toks == self.eot), np.concatenate(carry_bad))

    def _make(self, toks: np.ndarray, start: int, eots: np.ndarray, bad: np.ndarray) -> Piece:
        ends = eots + 1
        if not len(ends) or ends[-1] != len(toks):
            ends = np.r_[ends, len(toks)]
        bounds = np.r_[np.zeros(1, dtype=np.int64), ends.astype(np.int64)]
        piece = Piece(toks, start, self.docs, bounds, eots.astype(np.int64), bad.astype(np.int64))
        self.docs += piece.docs
        return piece


# --------------------------------------------------------------------------- document index


def iter_doc_index(split: Split) -> Iterator[list[dict[str, Any]]]:
    """The split's document index as lists of records, block by block, in stream order."""
    path = split.dataset.root / split.record.doc_index.path
    try:
        with open(path, "rb") as raw:
            reader = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
            rest = b""
            line_no = 0
            while True:
                block = reader.read(INDEX_BLOCK)
                data = rest + block
                if block:
                    cut = data.rfind(b"\n") + 1
                    data, rest = data[:cut], data[cut:]
                lines = [x for x in data.split(b"\n") if x.strip()]
                if lines:
                    yield _parse(path, lines, line_no)
                    line_no += data.count(b"\n")
                if not block:
                    return
    except zstandard.ZstdError as e:
        raise FormatError(f"{path}: document index is not valid zstandard data ({e}); re-copy "
                          "the dataset or re-run prep") from e


def _parse(path: Path, lines: list[bytes], line_no: int) -> list[dict[str, Any]]:
    try:
        rows = json.loads(b"[" + b",".join(lines) + b"]")
        if all(isinstance(r, dict) for r in rows):
            return rows
    except ValueError:
        pass
    for k, line in enumerate(lines):
        try:
            if not isinstance(json.loads(line), dict):
                raise ValueError("not an object")
        except ValueError as e:
            raise FormatError(f"{path}: line {line_no + k + 1}: not a document record ({e}); "
                              "re-copy the dataset or re-run prep") from e
    raise AssertionError("unreachable")


def doc_records(split: Split, wanted: set[int]) -> dict[int, dict[str, Any]]:
    """The index records of documents `wanted` (ordinals), in one streaming pass."""
    out: dict[int, dict[str, Any]] = {}
    k = 0
    if not wanted:
        return out
    last = max(wanted)
    for rows in iter_doc_index(split):
        for r in rows:
            if k in wanted:
                out[k] = r
            k += 1
        if k > last:
            break
    return out
