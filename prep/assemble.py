"""Writing the final shards and document indexes from the commit's layouts (in workers).

Each shard of each (domain, split) is written by up to PIECES_MAX *piece* jobs at once, each
gathering one token range of the shard from the tasks' part files (pread) in layout order and
writing it in place (the coordinator creates the file at its final size); once a shard's pieces
are done, one job hashes the file and syncs it to disk (a sha256 cannot be computed in pieces).
Each split's document index is one job. Jobs run in the executor's workers, in parallel, so the
coordinator never touches a token, and one large shard no longer leaves all workers but one
idle at the end of a run. The files land in the run's staging directory with the same relative
paths (`<domain>/<split>/...`) the published version directory will have.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from prep import parts as parts_mod
from prep.commit import LAYOUT_DTYPE
from prep.executors import ExecutorError
from shards.atomic import fsync_dir
from shards.format import DOC_INDEX_NAME, TOKEN_BYTES, shard_name
from shards.hashing import hash_range
from shards.writer import HashingWriter, index_line

WRITE_CHUNK = 1 << 20  # tokens gathered per write
INDEX_ZSTD_LEVEL = 3
TASK_CACHE = 32  # task part files kept open per job
ROWS_PER_READ = 4096  # layout rows turned into Python ints at a time
PIECES_MAX = 8  # a shard is written by at most this many jobs ...
PIECE_MIN_TOKENS = 1 << 22  # ... of at least this many tokens each (8 MB)


@dataclass(frozen=True)
class PieceJob:
    layout: str  # the split's layout file
    tasks_file: str  # JSON list: layout slot -> task id
    tasks_dir: str
    out: str  # the shard file (already at its final size)
    first_doc: int  # the layout row holding the piece's first token
    first_offset: int  # ... and that token's position in its document
    tokens: int  # tokens in this piece
    at: int  # the piece's first token's position in the shard


@dataclass(frozen=True)
class HashJob:
    out: str
    tokens: int


@dataclass(frozen=True)
class IndexJob:
    layout: str
    tasks_file: str
    tasks_dir: str
    out: str
    shard_tokens: int


@dataclass
class FileResult:
    out: str
    bytes: int
    sha256: str
    docs: int = 0
    tokens: int = 0


@dataclass
class SplitFiles:
    """One split's written files: its shards in order and its document index."""

    shards: list[FileResult]
    index: FileResult


class _Tasks:
    """Part files of the tasks a job reads, opened on first use (a small LRU)."""

    def __init__(self, tasks_dir: str, tasks_file: str) -> None:
        self.dir = Path(tasks_dir)
        self.ids: list[str] = json.loads(Path(tasks_file).read_text("utf-8"))
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


# --------------------------------------------------------------------------- jobs (workers)


def write_piece(job: PieceJob) -> FileResult:
    """Gather the piece's tokens from the part files (pread straight into the write buffer)
    and write them at the piece's place in the shard file."""
    tasks = _Tasks(job.tasks_dir, job.tasks_file)
    buf = memoryview(bytearray(min(job.tokens, WRITE_CHUNK) * TOKEN_BYTES or 1))
    cap = len(buf) // TOKEN_BYTES
    filled = written = 0
    skip = job.first_offset
    fd = os.open(job.out, os.O_WRONLY)
    try:
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
                    _pwrite(fd, buf, (job.at + written) * TOKEN_BYTES)
                    written, filled = written + filled, 0
        if filled:
            _pwrite(fd, buf[:filled * TOKEN_BYTES], (job.at + written) * TOKEN_BYTES)
            written += filled
    finally:
        os.close(fd)
        tasks.close()
    if written != job.tokens:
        raise ValueError(f"{job.out}: the layout ends {job.tokens - written} tokens short")
    return FileResult(job.out, written * TOKEN_BYTES, "", tokens=written)


def _pwrite(fd: int, data: memoryview, at: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], at + done)


def hash_shard(job: HashJob) -> FileResult:
    """sha256 of a shard whose pieces are all written; synced to disk."""
    h = hashlib.sha256()
    with open(job.out, "rb") as f:
        n = hash_range(h, f)
        os.fsync(f.fileno())
    if n != job.tokens * TOKEN_BYTES:
        raise ValueError(f"{job.out}: {n} bytes, {job.tokens * TOKEN_BYTES} expected")
    return FileResult(job.out, n, h.hexdigest(), tokens=job.tokens)


def write_index(job: IndexJob) -> FileResult:
    """The split's document index: one JSON line per document (`shards.writer.index_line`),
    zstandard-compressed, hashed as written."""
    rows_all = _layout(job.layout)
    tasks = _Tasks(job.tasks_dir, job.tasks_file)
    h = hashlib.sha256()
    st = job.shard_tokens
    pos = 0
    with open(job.out, "wb") as raw:
        with zstandard.ZstdCompressor(level=INDEX_ZSTD_LEVEL).stream_writer(
                HashingWriter(raw, h), closefd=False) as z:
            for a in range(0, len(rows_all), ROWS_PER_READ):
                rows = np.asarray(rows_all[a:a + ROWS_PER_READ])
                lengths = rows["tokens"].astype(np.int64)
                at = pos + np.cumsum(lengths) - lengths
                pos += int(lengths.sum())
                lines = []
                for slot, doc, start, n in zip(rows["slot"].tolist(), rows["doc"].tolist(),
                                               at.tolist(), lengths.tolist(), strict=True):
                    t = tasks[slot]
                    m = t.meta[doc]
                    lines.append(index_line(start // st, start % st, n, int(m["chars"]),
                                            m["digest"].tobytes().hex(),
                                            t.sources[doc].decode("utf-8")))
                z.write(("\n".join(lines) + "\n").encode("utf-8"))
        raw.flush()
        os.fsync(raw.fileno())
    tasks.close()
    return FileResult(job.out, os.path.getsize(job.out), h.hexdigest(), docs=len(rows_all),
                      tokens=pos)


# --------------------------------------------------------------------------- planning, running


@dataclass
class SplitJobs:
    """The jobs that write one split: each shard's pieces, then its hash; the index."""

    pieces: list[list[PieceJob]]  # per shard
    hashes: list[HashJob]  # per shard
    index: IndexJob


def jobs_for_split(layout: str, tasks_file: str, tasks_dir: str, out_dir: Path,
                   shard_starts: list[tuple[int, int]], total: int,
                   shard_tokens: int) -> SplitJobs:
    """The jobs that write one (train or eval) split: each of its shards cut into pieces,
    its file created at its final size. Reads the layout rows of one shard at a time (12 bytes
    per document of that shard)."""
    rows = _layout(layout)
    pieces, hashes = [], []
    for s, (doc, off) in enumerate(shard_starts):
        n = min(shard_tokens, total - s * shard_tokens)
        out = str(out_dir / shard_name(s))
        with open(out, "wb") as f:
            f.truncate(n * TOKEN_BYTES)
        end_doc = shard_starts[s + 1][0] + 1 if s + 1 < len(shard_starts) else len(rows)
        lengths = rows["tokens"][doc:end_doc].astype(np.int64)
        ends = np.cumsum(lengths) - off  # each document's end, from the shard's first token
        k = max(1, min(PIECES_MAX, n // PIECE_MIN_TOKENS))
        at = [n * j // k for j in range(k)] + [n]
        jobs = []
        for a, b in zip(at, at[1:], strict=False):
            i = int(np.searchsorted(ends, a, side="right"))
            jobs.append(PieceJob(layout, tasks_file, tasks_dir, out, doc + i,
                                 a - int(ends[i] - lengths[i]), b - a, a))
        pieces.append(jobs)
        hashes.append(HashJob(out, n))
    index = IndexJob(layout, tasks_file, tasks_dir, str(out_dir / DOC_INDEX_NAME), shard_tokens)
    return SplitJobs(pieces, hashes, index)


def run(executor: Any, splits: dict[Any, SplitJobs]) -> dict[Any, SplitFiles]:
    """Run every split's jobs on `executor` (at most its slots in flight), each shard's hash
    as soon as its pieces are done; returns the written files by split key. A failed job
    raises its OSError (a full disk), or ExecutorError naming the file."""
    indexes: dict[Any, FileResult] = {}
    shards: dict[tuple[Any, int], FileResult] = {}
    queue: list[tuple[Any, Any, Any]] = []  # (function, job, (key, shard or None))
    left: dict[tuple[Any, int], int] = {}
    for key, sj in splits.items():
        for s, jobs in enumerate(sj.pieces):
            left[key, s] = len(jobs)
            queue += [(write_piece, j, (key, s)) for j in jobs]
    queue += [(write_index, sj.index, (key, None)) for key, sj in splits.items()]
    pending: dict[Any, tuple[Any, Any]] = {}
    while queue or pending:
        while queue and len(pending) < executor.slots:
            fn, job, where = queue.pop(0)
            pending[executor.submit(fn, job)] = (job, where)
        for handle, res, err in executor.wait(list(pending)):
            job, (key, s) = pending.pop(handle)
            if err is not None:
                if isinstance(err, OSError):
                    raise err
                raise ExecutorError(f"writing {job.out} failed: {type(err).__name__}: {err}")
            if isinstance(job, IndexJob):
                indexes[key] = res
            elif isinstance(job, HashJob):
                shards[key, s] = res
            else:
                left[key, s] -= 1
                if not left[key, s]:  # the shard is complete: hash it next
                    queue.insert(0, (hash_shard, splits[key].hashes[s], (key, s)))
    return {key: SplitFiles([shards[key, s] for s in range(len(sj.hashes))], indexes[key])
            for key, sj in splits.items()}


def write_tasks_file(path: Path, tasks: list[str]) -> str:
    """The layout's slot -> task id list, for the jobs to read (not pickled into each job)."""
    path.write_text(json.dumps(tasks), encoding="utf-8")
    return str(path)



def fsync_tree(root: Path) -> None:
    """fsync every directory under `root` (and `root`): new entries survive a power loss."""
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        fsync_dir(d)
    fsync_dir(root)
