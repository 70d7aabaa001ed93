"""The run's work directory, the lock on OUT, and what --resume may reuse.

``OUT/.prep-work-<fingerprint[:16]>/`` holds ``plan.json`` (the run's settings and input
identity), ``tasks/<task id>/`` (each finished task's part files and completion record),
``layout/`` (the commit's layouts) and ``staging/`` (the assembled data, until published). It is
named by the run's fingerprint, so the same command finds it again and another command does not.
It survives a kill or a failure (that is what --resume continues) and is removed after a
successful publish; a work directory with finished tasks in it is never deleted silently.

``OUT/.prep.lock`` is held (``flock``) by the one process that may plan, commit and publish into
OUT; a second run is refused with the first one's PID and host. The kernel drops the lock when
its holder dies, even by kill -9, so there is no stale lock to clean up. Slices of a job array
(--num-tasks) do not take it: each writes only its own tasks' directories.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

from prep.parts import DONE_NAME, TaskRecord, check_parts, read_record
from prep.plan import Plan, describe_differences
from shards import atomic
from shards.lock import DirLock, LockHeld

WORK_PREFIX = ".prep-work-"
LEGACY_TMP_PREFIX = ".prep-tmp-"  # work directories of prep before plans (named by PID)
LOCK_NAME = ".prep.lock"
PLAN_NAME = "plan.json"


class RunStateError(RuntimeError):
    """OUT holds a run or a lock that this command must not touch; the message says what to do."""


# --------------------------------------------------------------------------- the lock


class OutLock(DirLock):
    """An exclusive lock on OUT for the life of this object's `with` block (`shards.lock`; a
    refusal is a RunStateError)."""

    def __init__(self, out: Path) -> None:
        super().__init__(out / LOCK_NAME, "prep run")

    def __enter__(self) -> OutLock:
        try:
            super().__enter__()
        except LockHeld as e:
            raise RunStateError(str(e)) from None
        return self


# --------------------------------------------------------------------------- work directories


def work_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.glob(f"{WORK_PREFIX}*") if p.is_dir())


def finished_count(work: Path) -> int:
    """Finished tasks, as `WorkDir.finished` counts them: a task killed between its record and
    its rename leaves a record in its ``.<id>.tmp-*`` directory, which is not a finished task."""
    tasks = work / "tasks"
    if not tasks.is_dir():
        return 0
    return sum(1 for p in tasks.iterdir()
               if not p.name.startswith(".") and (p / DONE_NAME).is_file())


def _plan_state(work: Path) -> dict[str, Any]:
    try:
        return json.loads((work / PLAN_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


class WorkDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tasks = root / "tasks"
        self.layout = root / "layout"
        self.staging = root / "staging"

    @classmethod
    def for_plan(cls, out: Path, plan: Plan) -> WorkDir:
        return cls(out / f"{WORK_PREFIX}{plan.fingerprint[:16]}")

    def create(self, plan: Plan) -> None:
        self.tasks.mkdir(parents=True, exist_ok=True)
        state = _plan_state(self.root)
        if not state:
            atomic.write_text(self.root / PLAN_NAME, json.dumps(plan.state(), indent=1) + "\n")
        elif state.get("fingerprint") != plan.fingerprint:
            raise RunStateError(f"{self.root / PLAN_NAME} belongs to another run; remove "
                                f"{self.root} or choose another --out")

    def finished(self) -> dict[str, TaskRecord]:
        """Completion records of the finished tasks, by task id. Under the lock: a task
        directory without a readable record (a removal that was cut short) is removed."""
        out: dict[str, TaskRecord] = {}
        if self.tasks.is_dir():
            for p in sorted(self.tasks.iterdir()):
                if not p.name.startswith("."):
                    rec = read_record(p)
                    if rec is not None and rec.task == p.name:
                        out[rec.task] = rec
                    else:
                        shutil.rmtree(p, ignore_errors=True)
        return out

    def verify(self, records: dict[str, TaskRecord]) -> list[str]:
        """Re-hash every finished task's part files; a damaged task is removed (it will be
        redone). Returns one line per removed task."""
        redo = []
        for task_id, rec in list(records.items()):
            why = check_parts(self.tasks / task_id, rec, rehash=True)
            if why is not None:
                redo.append(f"{task_id}: {why}; redoing it")
                shutil.rmtree(self.tasks / task_id, ignore_errors=True)
                del records[task_id]
        return redo

    def remove_stale_temps(self) -> None:
        """Temporary task directories of dead processes on this host (killed tasks)."""
        if not self.tasks.is_dir():
            return
        host = socket.gethostname()
        for p in self.tasks.glob(f".*{atomic.TMP_MARK}*"):
            owner = p.name.rpartition(atomic.TMP_MARK)[2]
            h, _, pid = owner.rpartition("-")
            if h == host and pid.isdigit() and not atomic.pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)
        for sub in (self.layout, self.staging):
            shutil.rmtree(sub, ignore_errors=True)  # rebuilt by every commit

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def prepare(out: Path, plan: Plan, *, resume: bool, overwrite: bool) -> tuple[WorkDir, list[str]]:
    """The work directory this run uses (under the lock), after the resume rules:

    - the same command's unfinished run: reused with --resume (also with --overwrite, which
      then only replaces the published dataset); refused without it (--overwrite alone
      discards it);
    - another command's unfinished run: refused with the differences (--resume) or with its
      task count (no --resume); --overwrite discards it;
    - nothing: a new work directory.
    Returns the work directory and lines to tell the user.
    """
    notes: list[str] = []
    for legacy in out.glob(f"{LEGACY_TMP_PREFIX}*"):  # prep's old PID-named work dirs
        pid = legacy.name[len(LEGACY_TMP_PREFIX):]
        if not (pid.isdigit() and atomic.pid_alive(int(pid))):
            shutil.rmtree(legacy, ignore_errors=True)
    mine = WorkDir.for_plan(out, plan)
    for other in work_dirs(out):
        if other == mine.root:
            continue
        n = finished_count(other)
        if overwrite or n == 0:
            shutil.rmtree(other, ignore_errors=True)
            if n:
                notes.append(f"discarded the unfinished run in {other} ({n} finished tasks)")
            continue
        diff = describe_differences(_plan_state(other), plan.state())
        what = "; ".join(diff) if diff else "its plan.json is unreadable"
        if resume:
            raise RunStateError(
                f"--resume: the unfinished run in {other} ({n} finished tasks) was started with "
                f"other settings: {what}. Re-run with that run's options to resume it, or pass "
                "--overwrite to discard it")
        raise RunStateError(
            f"{out} holds an unfinished run ({n} finished tasks in {other}; it differs: {what}). "
            "Pass --resume with that run's options to finish it, or --overwrite to discard it")
    if mine.root.exists():
        n = finished_count(mine.root)
        if (overwrite and not resume) or (not resume and n == 0):
            mine.remove()
            if n:
                notes.append(f"--overwrite: discarded the unfinished run in {mine.root} ({n} "
                             "finished tasks)")
        elif not resume:
            total = str(plan.state()["tasks"])  # a stream partition is read in several tasks:
            if any(p.stream for d in plan.domains for p in d.partitions):  # a lower bound
                total += "+"
            raise RunStateError(
                f"{out} holds an unfinished run of this same command ({n} of {total} planned "
                f"tasks finished, in {mine.root}): pass --resume to continue it, or --overwrite "
                "to start over")
    elif resume:
        notes.append(f"--resume: no unfinished run in {out}; starting from the beginning")
    mine.create(plan)
    mine.remove_stale_temps()
    return mine, notes
