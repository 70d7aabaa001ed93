"""The two file formats of `shards export`: Megatron-LM's indexed dataset and llm.c's token files.

Each writer streams one split (`shards.scan.token_chunks`: one chunk in memory, every source
byte and token id checked) into files under a staging directory and returns their records
(path, size, sha256). See `shards.export` for the layout of an export and its manifest.

- Megatron-LM (``megatron.core.datasets.indexed_dataset``): ``<prefix>.bin`` holds the tokens as
  written (uint16); ``<prefix>.idx`` is the MMIDIDX index: the 9-byte magic ``MMIDIDX\\0\\0``,
  version 1 (<u8), the dtype code (<u1, 8 = uint16), the sequence count and the document-index
  count (<u8 each), then the sequence lengths (<i4), their byte offsets in the .bin (<i8) and the
  document indices (<i8, 0..n: one sequence per document).
- llm.c (``llmc/dataloader.h``): a header of 256 little-endian int32 (magic 20240520, version 1
  for uint16 GPT-2 tokens, the token count, zeros), then the tokens. Its loader checks the file
  size against the count, asserts that every file holds at least B*T*processes+1 tokens, and
  seeks with ``fseek(f, (int) current_offset, SEEK_SET)``: a file of 2 GiB or more fails there
  ("Failed to seek in file"), so a file holds at most LLMC_MAX_FILE_TOKENS tokens (2**31 - 1
  bytes with the header).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shards import atomic
from shards.format import TOKEN_BYTES, FormatError
from shards.hashing import hash_range
from shards.reader import Split
from shards.scan import token_chunks


class ExportError(ValueError):
    """Export options, data or an output directory that cannot be used; the message says the fix."""


MMIDIDX_MAGIC = b"MMIDIDX\x00\x00"
MMIDIDX_VERSION = 1
MMIDIDX_UINT16 = 8  # Megatron's DType code of numpy.uint16
LLMC_MAGIC = 20240520
LLMC_VERSION = 1  # uint16 GPT-2 tokens
LLMC_HEADER_INTS = 256
LLMC_HEADER_BYTES = 4 * LLMC_HEADER_INTS
LLMC_MAX_FILE_BYTES = 2**31 - 1  # dataloader.h seeks with `(int) current_offset`: under 2 GiB
LLMC_MAX_FILE_TOKENS = (LLMC_MAX_FILE_BYTES - LLMC_HEADER_BYTES) // TOKEN_BYTES  # 1,073,741,311
LLMC_SPLIT_NAME = {"train": "train", "eval": "val"}
LAYOUTS = {
    "megatron": "Megatron-LM indexed dataset per split: <prefix>.bin holds the uint16 tokens, "
                "<prefix>.idx (MMIDIDX v1, dtype code 8) one sequence per document and the "
                "document indices 0..n",
    "llmc": "llm.c token files per split: 256 x int32 header (magic 20240520, version 1, token "
            "count), then uint16 tokens; equal files of at most shard_tokens tokens",
}


@dataclass
class FileRecord:
    path: str  # relative to the export directory
    bytes: int
    sha256: str
    tokens: int | None = None  # token files; None for a Megatron .idx


def _hash_file(f: Any, size: int) -> str:
    f.flush()
    h = hashlib.sha256()
    if (n := hash_range(h, f, 0, size)) != size:
        raise OSError(f"{f.name}: ended after {n} of {size} bytes written")
    return h.hexdigest()


def write_megatron(split: Split, stage: Path, prefix: str) -> list[FileRecord]:
    """``prefix.bin`` and ``prefix.idx`` (MMIDIDX) of `split` under `stage`, in one pass.

    Document boundaries are the EOT tokens: the format ends every document with one and nothing
    else is EOT (`shards verify` checks them against the document index). Their count must equal
    the manifest's documents and the split must end with one. The .idx sections are written at
    their offsets as the EOTs are found, so memory holds one chunk's worth of lengths.
    """
    n = split.num_docs
    eot = split.dataset.eot_id
    head = len(MMIDIDX_MAGIC) + struct.calcsize("<QBQQ")
    lengths_at, pointers_at, docs_at = head, head + 4 * n, head + 12 * n
    idx_size = docs_at + 8 * (n + 1)
    h = hashlib.sha256()
    ntok = k = last_end = 0
    with atomic.atomic_open(stage / f"{prefix}.bin") as fb, \
            atomic.atomic_open(stage / f"{prefix}.idx", "w+b") as fi:
        fi.write(MMIDIDX_MAGIC + struct.pack("<QBQQ", MMIDIDX_VERSION, MMIDIDX_UINT16, n, n + 1))
        fi.seek(docs_at)
        fi.write(struct.pack("<q", 0))
        for chunk in token_chunks(split):
            view = memoryview(chunk.tokens).cast("B")
            fb.write(view)
            h.update(view)
            ends = np.flatnonzero(chunk.tokens == eot) + (ntok + 1)  # one past each EOT
            ntok += len(chunk.tokens)
            if not len(ends):
                continue
            if k + len(ends) > n:
                raise FormatError(f"{split.dataset.root}: {split.domain}/{split.name} holds more "
                                  f"EOT tokens than its {n} documents; run `python -m shards "
                                  "verify`")
            lens = np.diff(ends, prepend=last_end)
            if int(lens.max()) > np.iinfo(np.int32).max:
                raise ExportError(f"{split.domain}/{split.name}: a document of "
                                  f"{int(lens.max())} tokens exceeds Megatron's int32 lengths")
            fi.seek(lengths_at + 4 * k)
            fi.write(lens.astype("<i4").tobytes())
            fi.seek(pointers_at + 8 * k)
            fi.write((TOKEN_BYTES * (ends - lens)).astype("<i8").tobytes())
            fi.seek(docs_at + 8 * (k + 1))
            fi.write(np.arange(k + 1, k + len(ends) + 1, dtype="<i8").tobytes())
            k += len(ends)
            last_end = int(ends[-1])
        if k != n or last_end != ntok:
            raise FormatError(f"{split.dataset.root}: {split.domain}/{split.name} holds {k} "
                              f"EOT-terminated documents and {ntok - last_end} tokens after the "
                              f"last EOT; the manifest declares {n} documents, each ending with "
                              "EOT: run `python -m shards verify`")
        files = [FileRecord(f"{prefix}.bin", ntok * TOKEN_BYTES, h.hexdigest(), ntok),
                 FileRecord(f"{prefix}.idx", idx_size, _hash_file(fi, idx_size))]
    return files


def write_llmc(split: Split, stage: Path, stem: str, max_tokens: int) -> list[FileRecord]:
    """``stem_000000.bin``... of `split` under `stage`: equal files of <= `max_tokens` tokens."""
    total = split.num_tokens
    if total == 0:
        return []
    n_files = -(-total // max_tokens)
    base, extra = divmod(total, n_files)
    chunks = token_chunks(split)
    pending = np.zeros(0, dtype=np.uint16)
    files = []
    for i in range(n_files):
        ntok = base + (i < extra)
        header = np.zeros(LLMC_HEADER_INTS, dtype="<i4")
        header[:3] = (LLMC_MAGIC, LLMC_VERSION, ntok)
        h = hashlib.sha256(header.tobytes())
        rel = f"{stem}_{i:06d}.bin"
        with atomic.atomic_open(stage / rel) as f:
            f.write(header.tobytes())
            need = ntok
            while need:
                if not len(pending):
                    pending = next(chunks).tokens
                view = memoryview(pending[:need]).cast("B")
                f.write(view)
                h.update(view)
                need -= len(view) // TOKEN_BYTES
                pending = pending[len(view) // TOKEN_BYTES:]
        files.append(FileRecord(rel, header.nbytes + ntok * TOKEN_BYTES, h.hexdigest(), ntok))
    for _ in chunks:  # runs the last shard's sha256 check; no tokens may be left
        raise FormatError(f"{split.domain}/{split.name}: the shards hold more tokens than the "
                          f"manifest's {total}; run `python -m shards verify`")
    return files
