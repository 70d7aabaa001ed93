"""Writing the format of `shards.format`: token shards, document indexes, the manifest."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import zstandard

from shards import atomic
from shards.format import (
    DOC_INDEX_NAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    TOKEN_BYTES,
    DocIndexRecord,
    DomainRecord,
    FormatError,
    LeakageRecord,
    Manifest,
    ShardRecord,
    SplitRecord,
    shard_name,
    split_dir,
)
from shards.tokenizer import tokenizer_record


@dataclass
class DocEntry:
    """One document handed to a SplitWriter: its token count (EOT included) and metadata."""

    tokens: int
    chars: int
    nbytes: int
    sha256: str
    source: dict[str, Any] = field(default_factory=dict)


def source_json(source: Mapping[str, Any]) -> str:
    """A document's provenance as the index writes it: compact JSON, UTF-8 kept as is."""
    return json.dumps(source, ensure_ascii=False, separators=(",", ":"))


def index_line(shard: int, offset: int, tokens: int, chars: int, sha256: str,
               source: str) -> str:
    """One line of a document index (`source` is `source_json` of the provenance): the one
    definition, byte-identical to ``json.dumps`` of the record with compact separators."""
    return (f'{{"shard":{shard},"offset":{offset},"tokens":{tokens},"chars":{chars},'
            f'"sha256":"{sha256}","source":{source}}}')


class SplitWriter:
    """Appends token arrays to one (domain, split) stream, cutting shards of `shard_tokens`.

    Files are written under ``work_root/<domain>/<split>/``; the records name them relative to
    the dataset root, so `work_root` can be a temporary directory renamed into place later.
    """

    def __init__(self, work_root: Path, domain: str, split: str, shard_tokens: int,
                 block_size: int, zstd_level: int = 3) -> None:
        if shard_tokens <= 0 or shard_tokens % block_size:
            raise FormatError(
                f"shard_tokens={shard_tokens} must be a positive multiple of block_size="
                f"{block_size}, so that no block straddles two shards"
            )
        self.rel_dir = split_dir(domain, split)
        self.dir = Path(work_root) / self.rel_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_tokens = shard_tokens
        self.block_size = block_size
        self.shards: list[ShardRecord] = []
        self.tokens = 0
        self.docs = 0
        self.bytes_text = 0
        self._file: BinaryIO | None = None
        self._hash: Any = None
        self._in_shard = 0
        self._index_path = self.dir / DOC_INDEX_NAME
        self._index_raw = open(self._index_path, "wb")
        self._index_hash = hashlib.sha256()
        self._index = zstandard.ZstdCompressor(level=zstd_level).stream_writer(
            HashingWriter(self._index_raw, self._index_hash), closefd=False
        )

    # -------------------------------------------------------------------------- writing
    def add(self, tokens: np.ndarray, docs: Sequence[DocEntry]) -> None:
        """Append the concatenated tokens of `docs` (each ending in EOT), in order."""
        if tokens.dtype != np.uint16:
            raise TypeError(f"tokens must be uint16, got {tokens.dtype}")
        if sum(d.tokens for d in docs) != len(tokens):
            raise ValueError("the documents' token counts do not add up to the tokens given")
        pos = self.tokens
        lines = []
        for d in docs:
            lines.append(index_line(pos // self.shard_tokens, pos % self.shard_tokens, d.tokens,
                                    d.chars, d.sha256, source_json(d.source)))
            pos += d.tokens
            self.bytes_text += d.nbytes
        if lines:
            self._index.write(("\n".join(lines) + "\n").encode("utf-8"))
        self.docs += len(docs)
        buf = tokens.astype("<u2", copy=False)
        while len(buf):
            if self._file is None:
                self._open_shard()
            take = min(len(buf), self.shard_tokens - self._in_shard)
            chunk = memoryview(buf[:take]).cast("B")
            self._file.write(chunk)
            self._hash.update(chunk)
            self._in_shard += take
            self.tokens += take
            buf = buf[take:]
            if self._in_shard == self.shard_tokens:
                self._close_shard()

    def close(self) -> SplitRecord:
        if self._file is not None:
            self._close_shard()
        self._index.close()
        self._index_raw.flush()
        os.fsync(self._index_raw.fileno())
        self._index_raw.close()
        return SplitRecord(
            docs=self.docs,
            tokens=self.tokens,
            blocks=self.tokens // self.block_size,
            bytes_text=self.bytes_text,
            shards=self.shards,
            doc_index=DocIndexRecord(
                path=f"{self.rel_dir}/{DOC_INDEX_NAME}",
                docs=self.docs,
                bytes=self._index_path.stat().st_size,
                sha256=self._index_hash.hexdigest(),
            ),
        )

    def abort(self) -> None:
        for f in (self._file, self._index_raw):
            if f is not None and not f.closed:
                f.close()

    # -------------------------------------------------------------------------- shards
    def _open_shard(self) -> None:
        name = shard_name(len(self.shards))
        self._file = open(self.dir / name, "wb")
        self._hash = hashlib.sha256()
        self._in_shard = 0

    def _close_shard(self) -> None:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        name = shard_name(len(self.shards))
        self.shards.append(ShardRecord(
            path=f"{self.rel_dir}/{name}",
            tokens=self._in_shard,
            bytes=self._in_shard * TOKEN_BYTES,
            sha256=self._hash.hexdigest(),
        ))
        self._file = None


class HashingWriter:
    """A file wrapper that hashes what is written through it (the compressed index bytes)."""

    def __init__(self, f: BinaryIO, h: Any) -> None:
        self._f, self._h = f, h

    def write(self, b: bytes) -> int:
        self._h.update(b)
        return self._f.write(b)

    def flush(self) -> None:
        self._f.flush()


def write_manifest(root: Path, manifest: Manifest) -> Path:
    """Write ``root/manifest.json`` atomically and durably (`shards.atomic`)."""
    return atomic.write_text(Path(root) / MANIFEST_NAME, manifest.to_json())


def manifest_for(splits: Mapping[str, Mapping[str, SplitRecord]], *, origin: str,
                 block_size: int, shard_tokens: int, seed: int = 0, eval_fraction: float = 0.0,
                 shuffle_buffer: int = 1, counts: Mapping[str, dict[str, int]] | None = None,
                 leakage: Mapping[str, LeakageRecord] | None = None) -> Manifest:
    """The manifest of splits written with SplitWriter outside `prep` (tests, benchmarks).

    `origin` stands in for what prep would record of its run (recipe, source, rules); counts and
    leakage default to empty and passed.
    """
    passed = LeakageRecord(eval_hashes_in_train=0, cross_domain_duplicates=0, passed=True)
    domains = {
        name: DomainRecord(
            name=name, source={"reader": origin, "synthetic": True}, format_rules=[origin],
            shuffle_buffer=shuffle_buffer, size_budget_bytes=None, token_budget=None, budget_reached=False,
            min_chars=0, max_chars=0, eval_fraction=eval_fraction,
            counts=dict((counts or {}).get(name) or {}),
            leakage=(leakage or {}).get(name) or passed, splits=dict(recs))
        for name, recs in splits.items()
    }
    return Manifest(
        format=FORMAT_NAME, format_version=FORMAT_VERSION, recipe={"name": origin},
        config={"origin": origin}, seed=seed, split_salt=origin, block_size=block_size,
        shard_tokens=shard_tokens, tokenizer=tokenizer_record(), domains=domains,
        leakage_passed=all(d.leakage.passed for d in domains.values()))
