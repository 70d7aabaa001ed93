"""A split streamed in bounded memory: its tokens chunk by chunk, its documents batch by batch.

For the tools that read a whole split once, front to back (`shards export`, `shards.to_hf`):
memory stays at one chunk of tokens and one batch of documents whatever the split's size, and
every byte read is checked against the manifest on the way (no second read).

- :func:`token_chunks` reads the split's shards in order into one reused buffer, checks every
  token id against the vocabulary and each shard's sha256 against the manifest.
- :func:`document_batches` decompresses the document index as a stream, checks that the
  documents tile the token stream (each starts where the previous ended, they cover it exactly,
  as many as the manifest declares) and, at its end, the index file's sha256.

Files are found by the manifest's paths (``Split.record``), never built from names.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import zstandard

from shards.format import TOKEN_BYTES, TOKEN_DTYPE, FormatError
from shards.reader import DocInfo, Split

CHUNK_BYTES = 8 << 20  # read size of token_chunks: an even number of bytes, whole tokens
DOC_BATCH = 1 << 14  # documents per batch of document_batches
INDEX_READ_BYTES = 1 << 20  # decompressed bytes read at a time from a document index


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
    buf = bytearray(max(TOKEN_BYTES, chunk_bytes - chunk_bytes % TOKEN_BYTES))
    view = memoryview(buf)
    for i, rec in enumerate(split.record.shards):
        path = ds.root / rec.path
        h = hashlib.sha256()
        done = 0
        with open(path, "rb") as f:
            while done < rec.bytes:
                n = f.readinto(view[:min(len(buf), rec.bytes - done)])
                if not n:
                    raise FormatError(f"{path}: ends after {done} bytes, the manifest declares "
                                      f"{rec.bytes}; the shard is truncated: re-copy the dataset")
                if n % TOKEN_BYTES:  # a short read mid-token: complete it
                    n += f.readinto(view[n:n + 1])
                h.update(view[:n])
                toks = np.frombuffer(buf, dtype=TOKEN_DTYPE, count=n // TOKEN_BYTES)
                if int(toks.max(initial=0)) >= vocab:
                    bad = int(np.flatnonzero(toks >= vocab)[0])
                    raise FormatError(
                        f"{path}: token {done // TOKEN_BYTES + bad} has id {int(toks[bad])}, not "
                        f"below the vocabulary size {vocab}; the shard is corrupt: run `python -m "
                        "shards verify` and re-copy the dataset or re-run prep")
                yield Chunk(i, done // TOKEN_BYTES, toks)
                done += n
        if h.hexdigest() != rec.sha256:
            raise FormatError(f"{path}: sha256 {h.hexdigest()} differs from the manifest's "
                              f"{rec.sha256}: the shard's bytes changed; re-copy the dataset or "
                              "re-run prep")


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
            int(d["shard"]), int(d["offset"]), int(d["tokens"]), int(d["chars"])
            dict(d.get("source") or {})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise FormatError(f"{path}: line {first_line + k}: not a document record ({e!r}); "
                              'expected {"shard", "offset", "tokens", "chars", "sha256", '
                              '"source"}') from e
    raise AssertionError("unreachable: the batch parsed line by line")


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
    pos = 0  # where the next document must start
    count = 0
    line_no = 0
    with open(path, "rb") as raw:
        hashing = _HashingReader(raw)
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(hashing, closefd=False)
            pending = b""
            while True:
                block = reader.read(INDEX_READ_BYTES)
                data = pending + block
                lines = data.split(b"\n")
                pending = lines.pop() if block else b""
                if not block and pending.strip():
                    lines.append(pending)
                lines = [x for x in lines if x.strip()]
                for s in range(0, len(lines), batch):
                    part = lines[s:s + batch]
                    docs = _parse(part, line_no + 1, path, count)
                    for k, d in enumerate(docs):
                        if not 0 <= d.shard < len(split.record.shards):
                            raise FormatError(
                                f"{path}: line {line_no + 1 + k}: shard {d.shard} outside "
                                f"0..{len(split.record.shards) - 1}")
                        start = int(starts[d.shard]) + d.offset
                        if start != pos or d.tokens <= 0:
                            raise FormatError(
                                f"{path}: line {line_no + 1 + k}: document starts at token "
                                f"{start} with {d.tokens} tokens, but the previous documents end "
                                f"at {pos}; the index does not tile the token stream: run "
                                "`python -m shards verify` and re-run prep")
                        pos += d.tokens
                    line_no += len(part)
                    count += len(docs)
                    yield docs
                if not block:
                    break
        except zstandard.ZstdError as e:
            raise FormatError(f"{path}: document index is not valid zstandard data ({e}); "
                              "re-copy the dataset or re-run prep") from e
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
