"""Reading a dataset's files: the one way to read a shard, a split's tokens and a document index.

- :func:`scan_file`: one read of one file, its sha256 and, for a shard, its token-id and EOT
  checks; `shards verify` and the check `shards.open` runs (shards/check.py) read files through
  it and word what it finds with :func:`sha_problem` and :func:`token_problem`.
- :func:`token_chunks`: a split's tokens in stream order, one reused buffer at a time, every
  token id checked against the vocabulary and each shard's sha256 against the manifest.
- :func:`index_batches`: a document index parsed as a stream, batch by batch (one parser, with
  errors naming the file and line); :func:`read_doc_index` is all of it as a list.
- :func:`document_batches`: a split's index, checked to tile its token stream (each document
  starts where the previous one ended, they cover it exactly, as many as the manifest says)
  and, at its end, against the index file's sha256; :func:`documents` reads it beside
  :func:`token_chunks` and yields each document with its tokens.

The streaming readers serve the tools that read a whole split once, front to back (`shards
export`, `shards.to_hf`): memory stays at one chunk of tokens and one batch of documents
whatever the split's size, and every byte read is checked on the way (no second read). Files are
found by the manifest's paths (``Split.record``), never built from names.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import zstandard

from shards.format import TOKEN_BYTES, TOKEN_DTYPE, FormatError
from shards.hashing import BLOCK_BYTES, blocks

if TYPE_CHECKING:
    from shards.reader import Split

CHUNK_BYTES = BLOCK_BYTES  # read size of scan_file and token_chunks (whole tokens)
DOC_BATCH = 1 << 14  # documents per batch of index_batches and document_batches
INDEX_READ_BYTES = 1 << 20  # decompressed bytes read at a time from a document index


@dataclass
class DocInfo:
    """One line of a split's document index, with its position in the index."""

    index: int  # position in the split's stream order
    shard: int  # shard holding the first token
    offset: int  # first token within that shard
    tokens: int  # EOT included
    chars: int
    sha256: str  # shards.format.content_hash of the text
    source: dict[str, Any]  # provenance


# --------------------------------------------------------------------------- one file


@dataclass
class FileScan:
    """One pass over one file: its size, its sha256 (when hashed) and the token checks."""

    path: Path
    sha256: str | None
    size: int
    bad_tokens: int = 0  # ids >= vocab size
    first_bad: tuple[int, int] | None = None  # (token offset in the file, id)
    eot_positions: np.ndarray | None = None  # within the shard, when asked for


def first_bad_id(toks: np.ndarray, vocab_size: int) -> int | None:
    """The position of the first id >= `vocab_size` in `toks`, or None (one vectorized max)."""
    if int(toks.max(initial=0)) < vocab_size:
        return None
    return int(np.flatnonzero(toks >= vocab_size)[0])


def scan_file(path: Path, *, sha256: bool = True, vocab_size: int | None = None,
              eot_id: int | None = None) -> FileScan:
    """Read `path` once: sha256 (``sha256=True``), token ids >= `vocab_size` (when given), and
    the positions of `eot_id` tokens (when given); blocks of CHUNK_BYTES, vectorized."""
    h = hashlib.sha256() if sha256 else None
    size = bad = 0
    first_bad = None
    eots = []
    tokens = vocab_size is not None or eot_id is not None
    with path.open("rb") as f:
        for view in blocks(f, block=CHUNK_BYTES, multiple=TOKEN_BYTES):
            if h is not None:
                h.update(view)
            if tokens:
                toks = np.frombuffer(view, dtype=TOKEN_DTYPE, count=len(view) // TOKEN_BYTES)
                if vocab_size is not None and (k := first_bad_id(toks, vocab_size)) is not None:
                    if first_bad is None:
                        first_bad = (size // TOKEN_BYTES + k, int(toks[k]))
                    bad += int((toks >= vocab_size).sum())
                if eot_id is not None:
                    eots.append(np.flatnonzero(toks == eot_id) + size // TOKEN_BYTES)
            size += len(view)
    scan = FileScan(path, h.hexdigest() if h is not None else None, size, bad, first_bad)
    if eot_id is not None:
        scan.eot_positions = np.concatenate(eots) if eots else np.zeros(0, dtype=np.int64)
    return scan


def sha_problem(scan: FileScan, expected: str, kind: str) -> str | None:
    """The problem line for a file whose sha256 is not the manifest's, else None."""
    if scan.sha256 is None or scan.sha256 == expected:
        return None
    return (f"{scan.path}: sha256 {scan.sha256} differs from the manifest's {expected}: the "
            f"{kind}'s bytes changed (corruption or an edit); re-copy the dataset or re-run prep")


def token_problem(scan: FileScan, vocab_size: int, *, sha_differs: bool = False) -> str | None:
    """The problem line for a shard holding token ids >= the vocabulary, else None
    (`sha_differs`: say in the same line that its sha256 is not the manifest's either)."""
    if not scan.bad_tokens:
        return None
    pos, tid = scan.first_bad or (0, 0)
    also = " and its sha256 differs from the manifest's" if sha_differs else ""
    return (f"{scan.path}: {scan.bad_tokens} token id(s) >= vocab size {vocab_size} (first at "
            f"token offset {pos}: {tid}){also}; the shard is damaged: re-copy the dataset or "
            "re-run prep")


# --------------------------------------------------------------------------- a split's tokens


@dataclass
class Chunk:
    """Tokens [offset, offset + len(tokens)) of one shard of a split."""

    shard: int  # position in the split's shard list
    offset: int  # first token within that shard
    tokens: np.ndarray  # uint16; a view of a reused buffer, valid until the next chunk


def token_chunks(split: Split, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """The split's tokens in stream order, at most `chunk_bytes` at a time.

    Raises FormatError naming the shard when a token id is >= the vocabulary size (with its
    offset), when a shard ends early, or when a shard's sha256 differs from the manifest's. The
    last is known only at the shard's end: a consumer must not publish what it wrote before the
    iterator is exhausted.
    """
    ds = split.dataset
    vocab = ds.vocab_size
    buffer = bytearray(max(TOKEN_BYTES, chunk_bytes - chunk_bytes % TOKEN_BYTES))
    for i, rec in enumerate(split.record.shards):
        path = ds.root / rec.path
        h = hashlib.sha256()
        done = 0
        with open(path, "rb") as f:
            for view in blocks(f, 0, rec.bytes, multiple=TOKEN_BYTES, buffer=buffer):
                h.update(view)
                toks = np.frombuffer(view, dtype=TOKEN_DTYPE, count=len(view) // TOKEN_BYTES)
                if (bad := first_bad_id(toks, vocab)) is not None:
                    raise FormatError(
                        f"{path}: token {done // TOKEN_BYTES + bad} has id {int(toks[bad])}, not "
                        f"below the vocabulary size {vocab}; the shard is corrupt: run `python -m "
                        "shards verify` and re-copy the dataset or re-run prep")
                yield Chunk(i, done // TOKEN_BYTES, toks)
                done += len(view)
        if done < rec.bytes:
            raise FormatError(f"{path}: ends after {done} bytes, the manifest declares "
                              f"{rec.bytes}; the shard is truncated: re-copy the dataset")
        if h.hexdigest() != rec.sha256:
            raise FormatError(f"{path}: sha256 {h.hexdigest()} differs from the manifest's "
                              f"{rec.sha256}: the shard's bytes changed; re-copy the dataset or "
                              "re-run prep")


# --------------------------------------------------------------------------- the document index


class _HashingReader(io.RawIOBase):
    """Reads a binary file while hashing every byte read (the compressed index)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.h = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.f.readinto(b)
        if n:
            self.h.update(memoryview(b)[:n])
        return n or 0

    def drain(self) -> str:
        """Hash what is left of the file; the sha256 of the whole file."""
        while block := self.f.read(1 << 20):
            self.h.update(block)
        return self.h.hexdigest()


def _parse(lines: list[bytes], first_line: int, path: Any, start: int) -> list[DocInfo]:
    try:  # one parse per batch; line by line only to name a bad line
        rows = json.loads(b"[" + b",".join(lines) + b"]")
        return [DocInfo(index=start + k, shard=int(d["shard"]), offset=int(d["offset"]),
                        tokens=int(d["tokens"]), chars=int(d["chars"]), sha256=str(d["sha256"]),
                        source=dict(d.get("source") or {})) for k, d in enumerate(rows)]
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    for k, line in enumerate(lines):
        try:
            d = json.loads(line)
            int(d["shard"]), int(d["offset"]), int(d["tokens"]), int(d["chars"]), d["sha256"]
            dict(d.get("source") or {})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise FormatError(f"{path}: line {first_line + k}: not a document record ({e!r}); "
                              'expected {"shard", "offset", "tokens", "chars", "sha256", '
                              '"source"}') from e
    raise AssertionError("unreachable: the batch parsed line by line")


def index_batches(path: Path, batch: int = DOC_BATCH,
                  hashing: _HashingReader | None = None) -> Iterator[tuple[int, list[DocInfo]]]:
    """The document index at `path`, parsed as a stream: (line number of the batch's first
    record, its documents), `batch` at a time. FormatError names the file (and the line) for
    data that is not zstandard or a line that is not a document record. With `hashing` (a
    reader of the opened file), bytes come through it, so the caller can hash them."""
    if hashing is None:
        with open(path, "rb") as raw:
            yield from index_batches(path, batch, _HashingReader(raw))
        return
    count = line_no = 0
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(hashing, closefd=False)
        pending = b""
        while True:
            block = reader.read(INDEX_READ_BYTES)
            lines = (pending + block).split(b"\n")
            pending = lines.pop() if block else b""
            lines = [x for x in lines if x.strip()]
            for s in range(0, len(lines), batch):
                part = lines[s:s + batch]
                docs = _parse(part, line_no + 1, path, count)
                yield line_no + 1, docs
                line_no += len(part)
                count += len(docs)
            if not block:
                return
    except zstandard.ZstdError as e:
        raise FormatError(f"{path}: document index is not valid zstandard data ({e}); "
                          "re-copy the dataset or re-run prep") from e


def read_doc_index(path: Path) -> list[DocInfo]:
    """The whole document index at `path` (see :func:`index_batches`)."""
    return [d for _, docs in index_batches(path) for d in docs]


def document_batches(split: Split, batch: int = DOC_BATCH) -> Iterator[list[DocInfo]]:
    """The split's documents in stream order, `batch` at a time, checked against the stream.

    Raises FormatError naming the index file (and line) when a record is malformed, when a
    document does not start where the previous one ended, when the documents do not cover the
    split's tokens or number differently from the manifest, or when the index file's sha256
    differs from the manifest's (checked at the end, as for shards).
    """
    rec = split.record
    path = split.dataset.root / rec.doc_index.path
    starts = split.shard_starts
    pos = count = 0  # where the next document must start; documents so far
    with open(path, "rb") as raw:
        hashing = _HashingReader(raw)
        for first, docs in index_batches(path, batch, hashing):
            for k, d in enumerate(docs):
                if not 0 <= d.shard < len(rec.shards):
                    raise FormatError(f"{path}: line {first + k}: shard {d.shard} outside "
                                      f"0..{len(rec.shards) - 1}")
                start = int(starts[d.shard]) + d.offset
                if start != pos or d.tokens <= 0:
                    raise FormatError(
                        f"{path}: line {first + k}: document starts at token {start} with "
                        f"{d.tokens} tokens, but the previous documents end at {pos}; the "
                        "index does not tile the token stream: run `python -m shards verify` "
                        "and re-run prep")
                pos += d.tokens
            count += len(docs)
            yield docs
        digest = hashing.drain()
    if pos != split.num_tokens or count != split.num_docs:
        raise FormatError(f"{path}: {count} documents covering {pos} tokens, but the manifest "
                          f"declares {split.num_docs} documents and {split.num_tokens} tokens; "
                          "run `python -m shards verify` and re-run prep")
    if digest != rec.doc_index.sha256:
        raise FormatError(f"{path}: sha256 {digest} differs from the manifest's "
                          f"{rec.doc_index.sha256}: the document index changed; re-copy it or "
                          "re-run prep")


def documents(split: Split, batch: int = DOC_BATCH,
              chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[DocInfo, np.ndarray]]:
    """Each document of the split with its tokens (EOT included; a copy the caller may keep),
    in stream order: :func:`document_batches` and :func:`token_chunks` read side by side, with
    all their checks. Memory: one batch of documents, one chunk, the current document."""
    chunks = token_chunks(split, chunk_bytes)
    rest = np.zeros(0, dtype=TOKEN_DTYPE)  # what the previous document left of the chunk
    for docs in document_batches(split, batch):
        for d in docs:
            parts = [rest[:d.tokens].copy()]
            rest = rest[d.tokens:]
            need = d.tokens - len(parts[0])
            while need:
                chunk = next(chunks, None)
                if chunk is None:
                    raise FormatError(f"{split.dataset.root / split.record.doc_index.path}: "
                                      f"document {d.index} runs past the end of the shards; "
                                      "run `python -m shards verify` and re-run prep")
                parts.append(chunk.tokens[:need].copy())
                rest = chunk.tokens[need:]
                need -= len(parts[-1])
            yield d, parts[0] if len(parts) == 1 else np.concatenate(parts)
    for _ in chunks:  # runs the last shard's sha256 check; no tokens may be left
        raise FormatError(f"{split.domain}/{split.name}: the shards hold more tokens than the "
                          "document index covers; run `python -m shards verify`")
