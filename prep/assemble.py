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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zstandard

from prep import parts as parts_mod
from prep.commit import LAYOUT_DTYPE, DomainResult
from shards.atomic import fsync_dir
from shards.format import DOC_INDEX_NAME, TOKEN_BYTES, shard_name
from shards.writer import HashingWriter, index_line

WRITE_CHUNK = 1 << 20  # tokens gathered per write
INDEX_ZSTD_LEVEL = 3
TASK_CACHE = 32  # task part files kept open per job
INDEX_CHUNK = 1 << 16  # documents formatted at a time


@dataclass(frozen=True)
class ShardJob:
    layout: str  # the split's layout file
    tasks_dir: str
    tasks: tuple[str, ...]  # layout slot -> task id
    out: str  # the shard file to write
    first_doc: int
    end_doc: int  # one past the last document with tokens in this shard
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
    tokens: int = 0
    docs: int | None = None  # documents, for an index


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
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(slot)
        return p


def _layout(path: str) -> np.ndarray:
    if not os.path.getsize(path):
        return np.zeros(0, dtype=LAYOUT_DTYPE)
    return np.memmap(path, dtype=LAYOUT_DTYPE, mode="r")


def _sources(rows: np.ndarray, tasks: _Tasks) -> np.ndarray:
    """Each layout row's first token in its task's tokens.bin (vectorized per task)."""
    slots = rows["slot"].astype(np.int64)
    docs = rows["doc"].astype(np.int64)
    start = np.empty(len(rows), dtype=np.int64)
    for slot in np.unique(slots):
        sel = slots == slot
        start[sel] = tasks[int(slot)].starts[docs[sel]]
    return start


def write_shard(job: ShardJob) -> FileResult:
    """Gather the shard's documents from the part files: consecutive documents of one task
    that follow each other in its tokens.bin are copied as one run."""
    rows = np.asarray(_layout(job.layout)[job.first_doc:job.end_doc])
    tasks = _Tasks(job.tasks_dir, job.tasks)
    src = _sources(rows, tasks)
    take = rows["tokens"].astype(np.int64)
    src[0] += job.first_offset
    take[0] -= job.first_offset
    take[-1] -= int(take.sum()) - job.tokens  # the last document may run on into the next
    slots = rows["slot"].astype(np.int64)
    # runs: a new run wherever the task changes or the source is not contiguous
    cut = np.ones(len(rows), dtype=bool)
    cut[1:] = (slots[1:] != slots[:-1]) | (src[1:] != src[:-1] + take[:-1])
    starts = np.flatnonzero(cut)
    lengths = np.add.reduceat(take, starts) if len(starts) else starts
    h = hashlib.sha256()
    with open(job.out, "wb") as f:
        for slot, s, n in zip(slots[starts].tolist(), src[starts].tolist(), lengths.tolist(),
                              strict=True):
            tokens = tasks[slot].tokens
            for a in range(s, s + n, WRITE_CHUNK):
                view = memoryview(np.ascontiguousarray(tokens[a:min(a + WRITE_CHUNK, s + n)]))
                view = view.cast("B")
                f.write(view)
                h.update(view)
        f.flush()
        os.fsync(f.fileno())
    return FileResult(job.out, job.tokens * TOKEN_BYTES, h.hexdigest(), tokens=job.tokens)


def write_index(job: IndexJob) -> FileResult:
    rows_all = _layout(job.layout)
    tasks = _Tasks(job.tasks_dir, job.tasks)
    h = hashlib.sha256()
    st = job.shard_tokens
    pos = 0
    with open(job.out, "wb") as raw:
        with zstandard.ZstdCompressor(level=INDEX_ZSTD_LEVEL).stream_writer(
                HashingWriter(raw, h), closefd=False) as z:
            for a in range(0, len(rows_all), INDEX_CHUNK):
                rows = np.asarray(rows_all[a:a + INDEX_CHUNK])
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
    return FileResult(job.out, os.path.getsize(job.out), h.hexdigest(), tokens=pos,
                      docs=len(rows_all))


def jobs_for(results: dict[str, DomainResult], tasks_dir: Path, staging: Path,
             shard_tokens: int) -> list[tuple[str, str, ShardJob | IndexJob]]:
    """Every shard and index job of the committed layouts, as (domain, split, job)."""
    jobs: list[tuple[str, str, ShardJob | IndexJob]] = []
    for name, res in results.items():
        ids = tuple(res.tasks)
        for split, lay in res.layouts.items():
            out = staging / name / split
            out.mkdir(parents=True, exist_ok=True)
            nxt = lay.shard_starts[1:]
            for s, (doc, off) in enumerate(lay.shard_starts):
                # one past the last document with tokens here: the next shard's first document,
                # if that one starts inside this shard, else the one before it
                end = nxt[s][0] + (nxt[s][1] > 0) if s < len(nxt) else lay.docs
                jobs.append((name, split, ShardJob(
                    str(lay.path), str(tasks_dir), ids, str(out / shard_name(s)), doc, end, off,
                    min(shard_tokens, lay.tokens - s * shard_tokens))))
            jobs.append((name, split, IndexJob(str(lay.path), str(tasks_dir), ids,
                                               str(out / DOC_INDEX_NAME), shard_tokens)))
    return jobs


def fsync_tree(root: Path) -> None:
    """fsync every directory under `root` (and `root`): new entries survive a power loss."""
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        fsync_dir(d)
    fsync_dir(root)
