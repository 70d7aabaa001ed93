"""Writing the final shards and document indexes from the commit's layouts (in workers).

Each shard of each (domain, split) is one job: it gathers its documents' tokens from the tasks'
part files (memory-mapped) in layout order, writes `shard_NNNNN.bin` and hashes it. Each split's
document index is one job. Jobs run in the executor's workers, in parallel, so the coordinator
never touches a token. The files land in the run's staging directory with the same relative
paths (`<domain>/<split>/...`) the published version directory will have.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zstandard

from prep import parts as parts_mod
from prep.commit import LAYOUT_DTYPE
from shards.format import DOC_INDEX_NAME, TOKEN_BYTES, shard_name
from shards.writer import index_line

WRITE_CHUNK = 1 << 20  # tokens gathered per write
INDEX_ZSTD_LEVEL = 3
TASK_CACHE = 32  # task part files kept open per job
ROWS_PER_READ = 4096  # layout rows turned into Python ints at a time


@dataclass(frozen=True)
class ShardJob:
    layout: str  # the split's layout file
    tasks_dir: str
    tasks: tuple[str, ...]  # layout slot -> task id
    out: str  # the shard file to write
    first_doc: int
    first_offset: int  # tokens of the first document that belong to the previous shard
    tokens: int  # tokens in this shard


@dataclass(frozen=True)
class IndexJob:
    layout: str
    tasks_dir: str
    tasks: tuple[str, ...]
    out: str
    shard_tokens: int


@dataclass
class FileResult:
    out: str
    bytes: int
    sha256: str
    docs: int = 0
    tokens: int = 0


class _Tasks:
    """Part files of the tasks a job reads, opened on first use (a small LRU)."""

    def __init__(self, tasks_dir: str, ids: tuple[str, ...]) -> None:
        self.dir, self.ids = Path(tasks_dir), ids
        self._open: OrderedDict[int, parts_mod.TaskParts] = OrderedDict()

    def __getitem__(self, slot: int) -> parts_mod.TaskParts:
        p = self._open.get(slot)
        if p is None:
            p = parts_mod.TaskParts(self.dir / self.ids[slot])
            self._open[slot] = p
            if len(self._open) > TASK_CACHE:
                self._open.popitem(last=False)[1].close()
        else:
            self._open.move_to_end(slot)
        return p

    def close(self) -> None:
        for p in self._open.values():
            p.close()
        self._open.clear()


def _layout(path: str) -> np.ndarray:
    if not os.path.getsize(path):
        return np.zeros(0, dtype=LAYOUT_DTYPE)
    return np.memmap(path, dtype=LAYOUT_DTYPE, mode="r")


def _rows(path: str, first: int) -> Iterator[tuple[int, int, int]]:
    """(slot, doc, tokens) of the layout's rows from `first` on, read a block at a time."""
    rows = _layout(path)
    for a in range(first, len(rows), ROWS_PER_READ):
        block = rows[a:a + ROWS_PER_READ]
        yield from zip(block["slot"].tolist(), block["doc"].tolist(), block["tokens"].tolist(),
                       strict=True)


def write_shard(job: ShardJob) -> FileResult:
    """Gather the shard's tokens from the part files (pread straight into the write buffer)."""
    tasks = _Tasks(job.tasks_dir, job.tasks)
    h = hashlib.sha256()
    buf = memoryview(bytearray(min(job.tokens, WRITE_CHUNK) * TOKEN_BYTES or 1))
    cap = len(buf) // TOKEN_BYTES
    filled = written = 0
    skip = job.first_offset
    try:
        with open(job.out, "wb") as f:
            for slot, doc, n_doc in _rows(job.layout, job.first_doc):
                left = job.tokens - written - filled
                if left <= 0:
                    break
                t = tasks[slot]
                start = int(t.starts[doc]) + skip
                n = min(n_doc - skip, left)
                skip = 0
                while n:
                    take = min(n, cap - filled)
                    t.read_tokens(buf[filled * TOKEN_BYTES:(filled + take) * TOKEN_BYTES], start)
                    filled, start, n = filled + take, start + take, n - take
                    if filled == cap:
                        f.write(buf)
                        h.update(buf)
                        written, filled = written + filled, 0
            if filled:
                view = buf[:filled * TOKEN_BYTES]
                f.write(view)
                h.update(view)
                written += filled
            f.flush()
            os.fsync(f.fileno())
    finally:
        tasks.close()
    return FileResult(job.out, written * TOKEN_BYTES, h.hexdigest(), tokens=written)


def write_index(job: IndexJob) -> FileResult:
    rows = _layout(job.layout)
    tasks = _Tasks(job.tasks_dir, job.tasks)
    h = hashlib.sha256()
    st = job.shard_tokens
    pos = 0
    with open(job.out, "wb") as raw:
        out = _Hashing(raw, h)
        with zstandard.ZstdCompressor(level=INDEX_ZSTD_LEVEL).stream_writer(
                out, closefd=False) as z:
            lines: list[str] = []
            for r in rows:
                t = tasks[int(r["slot"])]
                k = int(r["doc"])
                m = t.meta[k]
                lines.append(index_line(pos // st, pos % st, int(m["tokens"]), int(m["chars"]),
                                        m["digest"].tobytes().hex(),
                                        t.sources[k].decode("utf-8")))
                pos += int(r["tokens"])
                if len(lines) >= 4096:
                    z.write(("\n".join(lines) + "\n").encode("utf-8"))
                    lines = []
            if lines:
                z.write(("\n".join(lines) + "\n").encode("utf-8"))
        raw.flush()
        os.fsync(raw.fileno())
    return FileResult(job.out, out.n, h.hexdigest(), docs=len(rows), tokens=pos)


class _Hashing:
    def __init__(self, f, h) -> None:  # noqa: ANN001
        self.f, self.h, self.n = f, h, 0

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def shard_jobs(layout: str, tasks_dir: str, tasks: tuple[str, ...], out_dir: Path,
               shard_starts: list[tuple[int, int]], total: int, shard_tokens: int
               ) -> list[ShardJob]:
    return [ShardJob(layout, tasks_dir, tasks, str(out_dir / shard_name(s)), doc, off,
                     min(shard_tokens, total - s * shard_tokens))
            for s, (doc, off) in enumerate(shard_starts)]


def index_job(layout: str, tasks_dir: str, tasks: tuple[str, ...], out_dir: Path,
              shard_tokens: int) -> IndexJob:
    return IndexJob(layout, tasks_dir, tasks, str(out_dir / DOC_INDEX_NAME), shard_tokens)
