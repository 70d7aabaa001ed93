"""Job arrays without Ray (Slurm arrays, Kubernetes indexed jobs): slices of the plan.

`--num-tasks N --task-index I` runs slice I: the plan's level-0 tasks at positions I, I+N,
I+2N, ... (`Plan.initial_tasks`), on this machine's `--workers` processes, into the shared work
directory; it takes no lock (each slice writes only its own tasks). A slice skips the tasks of a
domain whose finished tasks in the work directory (any slice's) already hold its budget, so a
budgeted array never reads a whole large corpus. At its end it writes
``slices/<I>-of-<N>.json`` (what it ran and skipped).

A stream partition's pieces (`prep.readers.pieces`) are not in the static plan (their number
is known only once the stream is read): piece j of the stream whose first piece is at position
P belongs to slice (P + j) mod N, so the pieces of one large file spread over every slice.
Each slice reads the stream itself (`prep.cutter`) and keeps only its own pieces.

`--commit-only` then commits: a task the commit needs that belongs to a slice that has not
finished makes it list the missing tasks and slices and stop; a task a finished slice skipped
(its budget looked held) or a continuation (a capped partition read further) it runs itself.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shards import atomic

if TYPE_CHECKING:
    from prep.parts import TaskRecord
    from prep.plan import Plan
    from prep.task import TaskSpec
    from prep.workdir import WorkDir

SLICES_DIR = "slices"


@dataclass
class Slices:
    """What the slice markers in a work directory say."""

    count: int | None = None  # N, if any slice finished
    finished: set[int] = field(default_factory=set)
    _positions: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, work: WorkDir) -> Slices:
        from prep.workdir import RunStateError

        out = cls()
        for p in sorted((work.root / SLICES_DIR).glob("*-of-*.json")):
            index, _, rest = p.stem.partition("-of-")
            if not (index.isdigit() and rest.isdigit()):
                continue
            if out.count not in (None, int(rest)):
                raise RunStateError(f"{work.root / SLICES_DIR} holds slices of different counts "
                                 f"({out.count} and {rest}): run every slice with the same "
                                 "--num-tasks")
            out.count = int(rest)
            out.finished.add(int(index))
        return out

    def owner(self, plan: Plan, spec: TaskSpec) -> int | None:
        """The slice that runs `spec` (a level-0 task), or None without slice markers."""
        if self.count is None or spec.level:
            return None
        if not self._positions:
            self._positions = positions(plan)
        return owner(self._positions, spec, self.count)


def positions(plan: Plan) -> dict[str, int]:
    """Each planned task's position in the static plan (what slices are cut by)."""
    return {s.id: i for i, s in enumerate(plan.initial_tasks())}


def owner(at: dict[str, int], spec: TaskSpec, count: int) -> int:
    """The slice of a level-0 task; a stream's piece j follows its first piece by j places."""
    piece = spec.partition.piece or 0
    first = spec if not piece else _first_piece(spec)
    return (at[first.id] + piece) % count


def record_owner(plan: Plan, at: dict[str, int], record: TaskRecord, count: int) -> int | None:
    """The slice whose task a finished record is (None for a continuation: level > 0)."""
    if record.level:
        return None
    d = next(d for d in plan.domains if d.name == record.domain)
    piece = (int(record.partition.rpartition("#")[2])
             if d.partitions[record.partition_index].stream else 0)
    return owner(at, d.task(record.partition_index, 0, piece), count)


def _first_piece(spec: TaskSpec) -> TaskSpec:
    from prep.readers.pieces import piece_of, stream_of
    from prep.task import TaskSpec as Spec

    return Spec(spec.domain, piece_of(stream_of(spec.partition), 0), 0, spec.cap_bytes,
                spec.cap_tokens)


def missing_message(plan: Plan, done: dict[str, TaskRecord], slices: Slices) -> str:
    missing = [s for s in plan.initial_tasks() if s.id not in done]
    pending = sorted({slices.owner(plan, s) for s in missing} - {None} - slices.finished)
    which = f" (slices not finished: {', '.join(map(str, pending))})" if pending else ""
    ids = ", ".join(s.id for s in missing[:20]) + (" ..." if len(missing) > 20 else "")
    return (f"--commit-only: {len(missing)} planned tasks are not done{which}: {ids}; run the "
            "slices that hold them (same options), then commit again")


def mark_slice(work: WorkDir, index: int, count: int, ran: list[str], skipped: list[str]) -> None:
    d = work.root / SLICES_DIR
    d.mkdir(exist_ok=True)
    atomic.write_text(d / f"{index}-of-{count}.json", json.dumps(
        {"host": socket.gethostname(), "ran": ran, "skipped": skipped}) + "\n")


def slice_tasks(plan: Plan, index: int, count: int) -> list[TaskSpec]:
    return plan.initial_tasks()[index::count]


def new_records(work: WorkDir, seen: dict[str, TaskRecord]) -> list[TaskRecord]:
    """Tasks finished (by any slice) since `seen` was brought up to date; adds them to it."""
    from prep.parts import read_record

    new = []
    if work.tasks.is_dir():
        for p in work.tasks.iterdir():
            if not p.name.startswith(".") and p.name not in seen:
                rec = read_record(p)
                if rec is not None and rec.task == p.name:
                    seen[rec.task] = rec
                    new.append(rec)
    return new


def own_work_only(plan: Plan, records: dict[str, TaskRecord], index: int,
                  count: int) -> dict[str, TaskRecord]:
    """The finished records of this slice's own tasks (the ones it verifies and may redo)."""
    at = positions(plan)
    return {k: v for k, v in records.items() if record_owner(plan, at, v, count) == index}
