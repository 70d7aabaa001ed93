"""The cutter: each stream partition read once, in a thread of the coordinator, its pieces
spilled into the run's work directory for the workers (`prep.readers.pieces`).

**Where it runs.** In the process that schedules the tasks (the coordinator, or a job-array
slice), one thread per stream being read, started when the scheduler first wants one of its
pieces. Decompression and file writes release the GIL, and one thread decompresses ~0.3-1 GB/s
of text (zstd; gzip is slower, bz2 and xz much slower), enough for many workers that each
tokenize 10-50 MB/s; it costs no worker slot. Workers start on piece 0 as soon as it is
spilled, while the thread reads piece 1: the cut overlaps the work from the first piece on.

**How far ahead.** A thread pauses while the pieces spilled and not yet started (all streams
together) number ``LEAD_PER_SLOT`` per worker slot, unless the commit needs a later piece. So
a budgeted run reads a stream no further than its tasks need (plus that lead), and the spills
on disk stay a few pieces per worker: a piece's spill is removed once the tasks of it and of
every piece before it have read them to their end (a WikiText task reads on into the next
pieces to finish its last article).

**Resume.** Spills are the cutting process's own (``cuts/<host>-<pid>/``): a resumed run
reads each stream it still needs again from its start, spilling only the pieces that are not
finished; it decompresses the prefix again (~1 s per GB of text for zstd, measured against
re-tokenizing it: see docs/prep.md) but redoes no task. Spills of dead processes on this host
are removed when a cutter starts; the work directory goes, spills and all, after the publish.

**Slices and Ray.** Every task of a Ray run is scheduled by the coordinator, whose thread
spills into the work directory that every node sees. A job-array slice has no coordinator: it
runs a cutter of its own that reads every stream and spills only the pieces the slice owns
(`prep.executors.array`), so each slice decompresses each stream once.
"""

from __future__ import annotations

import bisect
import os
import shutil
import socket
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prep import faults
from prep.parts import TaskRecord
from prep.plan import DomainPlan, Plan
from prep.readers import ReadSettings, open_reader, pieces
from prep.task import TaskSpec
from shards import atomic

CUTS_DIR = "cuts"
LEAD_PER_SLOT = 2  # pieces spilled ahead of the tasks, per worker slot (all streams together)
OPEN_PER_SLOTS = 8  # a domain reads one more stream ahead of need per this many worker slots
POLL_S = 0.05  # how often a waiting run loop looks for new pieces while a worker slot is free
JOIN_S = 10.0  # how long close() waits for a thread to finish its current block


@dataclass
class _Stream:
    """One stream partition's cutting state (guarded by the cutter's condition)."""

    domain: DomainPlan
    index: int  # the partition
    skip: set[int]  # pieces not to spill: read to their end already, or not this process's
    queued: list[int] = field(default_factory=list)  # spilled, not started, ascending
    spilled: set[int] = field(default_factory=set)
    started: set[int] = field(default_factory=set)
    consumed: set[int] = field(default_factory=set)  # read to their end by a task
    foreign: set[int] = field(default_factory=set)  # another slice's pieces
    removed_below: int = 0  # spills of pieces below this are removed
    count: int | None = None  # pieces in the stream, once its end was read
    need: int = -1  # the highest piece the commit waits for
    error: BaseException | None = None
    error_at: int = 0  # the first piece the failed read did not produce
    thread: threading.Thread | None = None
    stop: bool = False


class Cutter:
    """The stream partitions of one run (or slice), cut by threads (see the module doc)."""

    def __init__(self, plan: Plan, work_root: Path, slots: int, done: Mapping[str, TaskRecord],
                 owns: Callable[[TaskSpec], bool] | None = None) -> None:
        root = work_root / CUTS_DIR
        _remove_dead(root)
        self.dir = root / f"{socket.gethostname()}-{os.getpid()}"
        self.dir.mkdir(parents=True, exist_ok=True)
        plan.use_spill_dir(str(self.dir))
        self.lead = max(2, LEAD_PER_SLOT * slots)
        self.max_open = max(1, slots // OPEN_PER_SLOTS)
        self.done = done
        self.owns = owns
        self.domains = {d.name: d for d in plan.domains}
        self.cond = threading.Condition()
        self.streams: dict[tuple[str, int], _Stream] = {}
        self.spills = 0  # pieces spilled (this process)
        self._closing = False
        # a slice's streams: every one of the plan (any may hold pieces the slice owns)
        self._unopened = deque((d, p) for d in plan.domains for p in d.order
                               if d.partitions[p].stream) if owns is not None else deque()
        self._feeding: list[_Stream] = []

    # ------------------------------------------------------------------ the scheduler's side

    def ready(self, spec: TaskSpec) -> bool:
        """Whether a piece task the commit needs can start now (its spill is there). Else the
        stream's thread is told to read on to it (started again if it ended), and the read's
        error, if it failed before this piece, is raised."""
        st = self._open(spec)
        j = spec.partition.piece or 0
        with self.cond:
            if j in st.spilled:
                return True
            if st.error is not None and j >= st.error_at:
                raise st.error
            st.need = max(st.need, j)
            st.skip.discard(j)
            if st.thread is None:
                self._start(st)
            self.cond.notify_all()
            return False

    def next_queued(self, d: DomainPlan, p: int) -> int | None:
        """The first piece of a stream that is spilled and not started (reading starts)."""
        st = self._open_stream(d, p)
        with self.cond:
            return st.queued[0] if st.queued else None

    def complete(self, d: DomainPlan, p: int) -> bool:
        """Whether a stream was read to its end with every spilled piece started."""
        st = self._open_stream(d, p)
        with self.cond:
            return st.count is not None and not st.queued and st.thread is None

    def started(self, spec: TaskSpec) -> None:
        st = self.streams.get((spec.domain, spec.partition.index))
        if st is None or spec.partition.piece is None:
            return
        with self.cond:
            j = spec.partition.piece
            st.started.add(j)
            if j in st.queued:
                st.queued.remove(j)
            self.cond.notify_all()

    def finished(self, spec: TaskSpec, record: TaskRecord) -> None:
        """A piece's task is done: once it and all before it were read to their end, their
        spills go."""
        st = self.streams.get((spec.domain, spec.partition.index))
        if st is None or spec.partition.piece is None or not record.exhausted:
            return
        with self.cond:
            st.consumed.add(spec.partition.piece)
            self._remove_read(st)

    def stop(self, d: DomainPlan) -> None:
        """Stop reading the domain's streams ahead of need (its budget is held)."""
        with self.cond:
            for st in self.streams.values():
                if st.domain is d and st.need < 0:
                    st.stop = True
            self._unopened = deque((e, p) for e, p in self._unopened if e is not d)
            self.cond.notify_all()

    # ------------------------------------------------------------------ a slice's side

    def next_owned(self, done: Mapping[str, TaskRecord]) -> TaskSpec | None:
        """A slice: the next of its own pieces that is spilled and not done (opening the
        plan's streams in order, `max_open` at a time), or None for now."""
        while True:
            for st in list(self._feeding):
                with self.cond:
                    j = st.queued[0] if st.queued else None
                    over = st.stop or (st.count is not None and st.thread is None
                                       and not st.queued)
                if j is not None:
                    spec = st.domain.task(st.index, 0, j)
                    self.started(spec)
                    if spec.id not in done:
                        return spec
                    break  # look again from the first stream
                if over:
                    self._feeding.remove(st)
            else:
                if not self._unopened or len(self._feeding) >= self.max_open:
                    return None
                d, p = self._unopened.popleft()
                self._feeding.append(self._open_stream(d, p))

    def owned_left(self) -> bool:
        """A slice: whether a stream may still give it pieces."""
        with self.cond:
            return bool(self._unopened) or any(
                not st.stop and not (st.count is not None and st.thread is None
                                     and not st.queued) for st in self._feeding)

    def busy(self) -> bool:
        """Whether a thread is reading (a piece may appear without any task finishing)."""
        with self.cond:
            return any(st.thread is not None for st in self.streams.values())

    def poll_s(self, free_slots: bool) -> float | None:
        """How long the run loop may wait for tasks before looking for new pieces."""
        return POLL_S if free_slots and self.busy() else None

    def wait(self, timeout: float = POLL_S) -> None:
        with self.cond:
            self.cond.wait(timeout)

    def close(self) -> None:
        """Stop every thread and remove this process's spills."""
        with self.cond:
            self._closing = True
            self.cond.notify_all()
            threads = [st.thread for st in self.streams.values() if st.thread is not None]
        for t in threads:
            t.join(JOIN_S)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ streams

    def _open(self, spec: TaskSpec) -> _Stream:
        return self._open_stream(self.domains[spec.domain], spec.partition.index)

    def _open_stream(self, d: DomainPlan, p: int) -> _Stream:
        key = (d.name, p)
        with self.cond:
            st = self.streams.get(key)
            if st is None:
                st = self.streams[key] = _Stream(d, p, self._skip(d, p))
                self._start(st)
            return st

    def _skip(self, d: DomainPlan, p: int) -> set[int]:
        """Pieces whose tasks already read them to their end (a resume)."""
        prefix = f"{d.name}.{p:06d}.p"
        return {int(t[len(prefix):].split(".")[0]) for t, r in self.done.items()
                if t.startswith(prefix) and r.exhausted}

    def _start(self, st: _Stream) -> None:
        if st.count is not None and all(j in st.spilled or j in st.consumed or j in st.skip
                                        for j in range(st.count)):
            return  # nothing left to spill
        st.stop, st.error = False, None
        st.thread = threading.Thread(target=self._cut, args=(st,), daemon=True,
                                     name=f"cut-{st.domain.name}-{st.index}")
        st.thread.start()

    def _wanted(self, st: _Stream, j: int) -> bool:
        """Whether to spill piece j. A slice spills its own pieces, and for a group (WikiText
        reads on into the next piece) the piece after each of its own."""
        if j in st.skip or j in st.spilled or j in st.consumed:
            return False
        if self.owns is None or self.owns(st.domain.task(st.index, 0, j)):
            return True
        st.foreign.add(j)
        return (st.domain.cfg.group is not None and j > 0
                and self.owns(st.domain.task(st.index, 0, j - 1)))

    def _full(self, st: _Stream, j: int) -> bool:
        return (j > st.need and sum(len(s.queued) for s in self.streams.values()) >= self.lead
                and st.queued != [])

    def _cut(self, st: _Stream) -> None:
        d = st.domain
        read = d.settings.read
        reader = open_reader(d.settings.cfg, ReadSettings(read.partition_bytes, read.cache_dir,
                                                          probe=False))
        produced = 0
        try:
            for piece in reader.cut(d.partitions[st.index]):
                j = piece.index
                with self.cond:
                    spill = self._wanted(st, j)
                    while spill and self._full(st, j) and not (st.stop or self._closing):
                        self.cond.wait()
                    if st.stop or self._closing:
                        return
                if spill:
                    pieces.write_spill(self._path(st, j), piece)
                produced = j + 1
                with self.cond:
                    if spill:
                        self.spills += 1
                        faults.maybe_kill("cut", self.spills)
                        st.spilled.add(j)
                        if j not in st.started:
                            bisect.insort(st.queued, j)
                    if piece.last:
                        st.count = j + 1
                    self.cond.notify_all()
                if piece.last:
                    break
        except BaseException as e:  # the error is raised where the commit needs a piece
            with self.cond:
                st.error, st.error_at = e, produced
        finally:
            with self.cond:
                st.thread = None
                self.cond.notify_all()

    def _remove_read(self, st: _Stream) -> None:
        """Remove the spills of the leading pieces that are read to their end."""
        while (j := st.removed_below) in st.consumed or j in st.skip or j in st.foreign:
            if j in st.spilled:
                try:
                    os.unlink(self._path(st, j))
                except FileNotFoundError:
                    pass
                st.spilled.discard(j)
            st.removed_below += 1

    def _path(self, st: _Stream, j: int) -> str:
        piece = pieces.piece_of(st.domain.partitions[st.index], j)
        return pieces.spill_path(str(self.dir), st.domain.name, piece)


def _remove_dead(root: Path) -> None:
    """Spill folders of this host's cutting processes that are gone (a kill)."""
    if not root.is_dir():
        return
    host = socket.gethostname()
    for p in root.iterdir():
        h, _, pid = p.name.rpartition("-")
        if h == host and pid.isdigit() and not atomic.pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
