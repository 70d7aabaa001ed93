"""The coordinator: plan -> tasks (executor) -> commit -> assemble (executor) -> publish.

The coordinator reads no record and touches no token: workers run the tasks (`prep.task`) and
write the final files (`prep.assemble`); the coordinator schedules them (`prep.schedule`),
commits their metadata (`prep.commit`) and publishes (`prep.publish`). Job-array slices and the
commit that finishes them are `prep.executors.array`.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prep import assemble, faults
from prep.commit import CommitError, Committer
from prep.config import PrepConfig
from prep.cutter import Cutter
from prep.executors import Executor, ExecutorError, array, make_executor
from prep.manifest import build_manifest, encoder_record, hook_records, split_records
from prep.parts import TaskRecord, check_parts
from prep.plan import Plan, PlanError, make_plan
from prep.progress import Reporter
from prep.publish import next_version, publish, remove_old, remove_orphans, version_dir
from prep.readers import SourceError
from prep.schedule import Scheduler
from prep.task import TaskError, TaskJob, TaskSpec, run_task
from prep.workdir import OutLock, RunStateError, WorkDir, prepare
from shards import atomic
from shards.format import MANIFEST_NAME, Manifest

SYNC_EVERY_S = 2.0  # a slice reads other slices' new records at most this often


class PrepError(RuntimeError):
    """A run that cannot finish; the message says why, what was kept and what to do."""


class Interrupted(BaseException):
    """SIGTERM, handled like Ctrl-C (raised in the main thread by the CLI's handler)."""


@dataclass
class Outcome:
    """What a run did, for a message that never claims more (kept up to date as it goes)."""

    published: str | None = None  # the manifest path, once the new dataset is the published one
    work: str | None = None  # the work directory holding finished tasks
    slice_run: bool = False


def run(cfg: PrepConfig, reporter: Reporter, outcome: Outcome | None = None) -> Manifest | None:
    """A whole run, a slice (--num-tasks: returns None) or a commit (--commit-only)."""
    outcome = outcome if outcome is not None else Outcome()
    t0 = time.perf_counter()
    out = Path(cfg.out).resolve()
    if out.exists() and not out.is_dir():
        raise PrepError(f"--out {out} exists and is not a directory")
    outcome.slice_run = cfg.num_tasks is not None
    if not outcome.slice_run:
        _refuse_finished(out, cfg)  # early, to save planning; again under the lock
    try:
        plan = make_plan(cfg)
    except PlanError as e:
        raise PrepError(str(e)) from e
    for d in plan.domains:
        for note in d.notes:
            reporter.note(f"{d.name}: {note}")
    if plan.backend is not None:
        reporter.note(f"encoder: {plan.backend.describe()}")
        for note in plan.backend.notes:
            reporter.note(f"encoder: {note}")
    if outcome.slice_run:
        _run_slice(cfg, plan, out, reporter, outcome)
        return None
    with OutLock(out):
        _refuse_finished(out, cfg)
        for name in remove_orphans(out):
            reporter.note(f"removed {out / name}, left by a publish that was killed")
        if cfg.commit_only and not WorkDir.for_plan(out, plan).root.exists():
            raise PrepError(f"--commit-only: no work directory for this command in {out}; run "
                            "the slices (--num-tasks/--task-index) first, with the same options")
        work, notes = prepare(out, plan, resume=cfg.resume or cfg.commit_only,
                              overwrite=cfg.overwrite and not cfg.commit_only)
        outcome.work = str(work.root)
        for note in notes:
            reporter.note(note)
        done = work.finished()
        for line in work.verify(done):
            reporter.note(line)
        if done:
            reporter.note(f"reusing {len(done)} finished tasks of {work.root}")
        return _run_locked(cfg, plan, out, work, done, reporter, t0, outcome)


def _refuse_finished(out: Path, cfg: PrepConfig) -> None:
    if (out / MANIFEST_NAME).exists() and not cfg.overwrite:
        raise PrepError(f"{out / MANIFEST_NAME} exists: {out} holds a finished dataset. Pass "
                        "--overwrite to replace it, or choose another --out")


def _run_locked(cfg: PrepConfig, plan: Plan, out: Path, work: WorkDir,
                done: dict[str, TaskRecord], reporter: Reporter, t0: float,
                outcome: Outcome) -> Manifest:
    executor = make_executor(cfg.executor, cfg.workers, cfg.ray_address)
    reused = len(done)
    cutter = None
    try:
        cutter = _cutter(plan, work, executor.slots, done)
        probe = work.root / "shared-probe"
        probe.write_text("prep\n")
        executor.check_shared(str(probe))
        _write_pids(work, executor)
        reporter.start(plan, done)
        committer = Committer(plan, work.layout, cfg.min_eval_docs, cfg.max_bad_fraction)
        slices = array.Slices.read(work) if cfg.commit_only else None
        _run_tasks(plan, work, done, committer, executor, reporter, slices, cutter)
        faults.maybe_kill("commit")
        problem = committer.final_check()  # exact dedup's: the leakage check
        if problem is not None:
            raise PrepError(problem)
        version = next_version(out)
        jobs = _assemble_jobs(plan, work, committer)
        reporter.assembling(sum(len(p) + 1 for sj in jobs.values() for p in sj.pieces)
                            + len(jobs))
        written = assemble.run(executor, jobs)
        hooks = hook_records(committer.write_hooks(work.staging), work.staging,
                             version_dir(version))
        assemble.fsync_tree(work.staging)
        splits = split_records(written, committer.results, work.staging, version_dir(version),
                               plan.block_size)
        manifest = build_manifest(cfg, plan, committer.results, splits,
                                  {"tasks_done": len(done), "tasks_reused": reused,
                                   "tokenizer": encoder_record(plan, committer.results, done)},
                                  t0, hooks)
        old = publish(work.staging, out, manifest, version,
                      on_switch=lambda: setattr(outcome, "published", str(out / MANIFEST_NAME)))
    except OSError as e:
        if e.errno == errno.ENOSPC and not outcome.published:
            raise PrepError(f"disk full while writing under {out}: nothing was published ("
                            f"{_still_there(out)}); finished tasks are kept in {work.root}: free "
                            "space, then re-run the same command with --resume") from e
        raise
    except CommitError as e:
        raise PrepError(f"{e}\n(nothing was published; the finished tasks in {work.root} are "
                        "kept: --resume reuses them when only --min-eval-docs or "
                        "--max-bad-fraction changes; for other changes add --overwrite)") from e
    except (TaskError, ExecutorError, SourceError) as e:
        raise PrepError(f"{e}\n(nothing was published; finished tasks are kept in {work.root} "
                        "for --resume)") from e
    finally:
        executor.close(abort=True)  # what still runs was started ahead of need and is not needed
        if cutter is not None:
            cutter.close()
    remove_old(out, old)  # after the switch: the old version's files, then the work directory
    work.remove()
    return manifest


def _still_there(out: Path) -> str:
    return ("the previous dataset is intact" if (out / MANIFEST_NAME).exists()
            else "no dataset there")


def _write_pids(work: WorkDir, executor: Executor) -> None:
    """Who works for this run, for the person (or test) watching it."""
    atomic.write_text(work.root / "workers.json", json.dumps(
        {"coordinator": os.getpid(), "host": socket.gethostname(), "executor": executor.name,
         "workers": executor.worker_pids()}) + "\n")


# --------------------------------------------------------------------------- tasks


def _cutter(plan: Plan, work: WorkDir, slots: int, done: dict[str, TaskRecord],
            owns: Any = None) -> Cutter | None:
    """The reader of this run's stream partitions (`prep.cutter`), if it has any."""
    if any(p.stream for d in plan.domains for p in d.partitions):
        return Cutter(plan, work.root, slots, done, owns)
    return None


def _run_tasks(plan: Plan, work: WorkDir, done: dict[str, TaskRecord], committer: Committer,
               executor: Executor, reporter: Reporter, slices: array.Slices | None,
               cutter: Cutter | None = None) -> None:
    """Run tasks until the commit is finished. `slices` (--commit-only): planned tasks are
    the slices' work; only what finished slices skipped, and continuations, run here."""
    by_name = {d.name: d for d in plan.domains}
    sched = Scheduler(plan, done, cutter)
    in_flight: dict[Any, TaskSpec] = {}
    finished_here = 0
    while True:
        committer.advance(done, work.tasks)
        if committer.finished:
            executor.cancel(list(in_flight))  # started ahead of need, and not needed
            return
        needed, error = sched.needed(committer)
        if error is not None:
            raise error
        if slices is not None:
            unrun = [s for s in needed if slices.owner(plan, s) not in (None, *slices.finished)]
            if unrun:
                raise PrepError(array.missing_message(plan, done, slices))
        ahead = sched.ahead(committer) if slices is None else iter(())
        queue = iter(needed)
        while len(in_flight) < executor.slots:
            spec = next(queue, None) or next(ahead, None)
            if spec is None:
                break
            job = TaskJob(spec, by_name[spec.domain].settings, str(work.tasks))
            in_flight[executor.submit(run_task, job)] = spec
            sched.started(spec)
        if not in_flight:
            if cutter is not None and cutter.busy():  # a piece it needs is being cut
                cutter.wait()
                continue
            raise PrepError(f"internal: the commit waits for {committer.waiting_for()} but no "
                            "task can run; this is a bug in prep, please report it")
        free = len(in_flight) < executor.slots
        for handle, record, err in executor.wait(list(in_flight),
                                                 cutter.poll_s(free) if cutter else None):
            spec = in_flight.pop(handle)
            if err is not None:
                sched.failed_task(spec, _task_failure(spec, err))
                continue
            why = check_parts(work.tasks / spec.id, record, rehash=False)
            if why is not None:
                raise PrepError(f"task {spec.id} finished on host {record.host} but its files "
                                f"are not visible here ({why}): the work directory {work.root} "
                                "must be on storage every node sees")
            sched.finished(spec, record)
            finished_here += 1
            reporter.task_done(spec.domain, record)
            faults.maybe_kill("after-task", finished_here)


def _task_failure(spec: TaskSpec, err: BaseException) -> BaseException:
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(err, TaskError | PrepError | SourceError | OSError | ExecutorError):
        return err
    if isinstance(err, BrokenProcessPool):
        return ExecutorError("a worker process died (killed, or out of memory) while running "
                             f"task {spec.id}")
    return ExecutorError(f"task {spec.id} failed: {type(err).__name__}: {err}")


def _assemble_jobs(plan: Plan, work: WorkDir, committer: Committer
                   ) -> dict[tuple[str, str], assemble.SplitJobs]:
    """Every (domain, split)'s shard pieces, shard hashes and index job."""
    jobs: dict[tuple[str, str], assemble.SplitJobs] = {}
    for name, res in committer.results.items():
        tasks_file = assemble.write_tasks_file(work.layout / f"{name}.tasks.json", res.tasks)
        for split, lay in res.layouts.items():
            d = work.staging / name / split
            d.mkdir(parents=True, exist_ok=True)
            jobs[name, split] = assemble.jobs_for_split(str(lay.path), tasks_file, str(work.tasks),
                                                        d, lay.shard_starts, lay.tokens,
                                                        plan.shard_tokens)
    return jobs


def _run_slice(cfg: PrepConfig, plan: Plan, out: Path, reporter: Reporter,
               outcome: Outcome) -> None:
    assert cfg.num_tasks is not None and cfg.task_index is not None
    work = WorkDir.for_plan(out, plan)
    work.create(plan)
    outcome.work = str(work.root)
    index, count = cfg.task_index, cfg.num_tasks
    mine = array.slice_tasks(plan, index, count)
    seen: dict[str, TaskRecord] = {}
    array.new_records(work, seen)
    own = array.own_work_only(plan, seen, index, count)  # checked (and maybe redone) here
    kept = set(own)
    for line in work.verify(own):
        reporter.note(line)
    for task_id in kept - set(own):
        del seen[task_id]
    sched = Scheduler(plan, seen)
    executor = make_executor("local", cfg.workers, None)
    at = array.positions(plan)  # a stream's pieces: this slice's own (prep.cutter)
    cutter = _cutter(plan, work, executor.slots, seen,
                     lambda s: array.owner(at, s, count) == index)
    by_name = {d.name: d for d in plan.domains}
    todo = deque(s for s in mine if s.id not in seen and s.partition.piece is None)
    ran: list[str] = []
    skipped: list[str] = []
    pending: dict[Any, TaskSpec] = {}
    synced = time.monotonic()
    ok = False
    try:
        while todo or pending or (cutter is not None and cutter.owned_left()):
            while len(pending) < executor.slots:
                spec = todo.popleft() if todo else cutter.next_owned(seen) if cutter else None
                if spec is None:
                    break
                if time.monotonic() - synced > SYNC_EVERY_S:  # other slices' finished tasks
                    sched.count(array.new_records(work, seen))
                    synced = time.monotonic()
                if not sched.may_need_more(by_name[spec.domain]):
                    skipped.append(spec.id)  # finished tasks hold its domain's budget
                    if cutter is not None:
                        cutter.stop(by_name[spec.domain])
                    continue
                job = TaskJob(spec, by_name[spec.domain].settings, str(work.tasks))
                pending[executor.submit(run_task, job)] = spec
            if not pending:
                if cutter is not None and cutter.owned_left():
                    cutter.wait()  # pieces of this slice are being cut
                    continue
                break
            free = len(pending) < executor.slots
            for handle, record, err in executor.wait(list(pending),
                                                     cutter.poll_s(free) if cutter else None):
                spec = pending.pop(handle)
                if err is not None:
                    raise _task_failure(spec, err) from err
                seen[spec.id] = record
                sched.count([record])
                if cutter is not None:
                    cutter.finished(spec, record)
                ran.append(spec.id)
                reporter.task_done(spec.domain, record)
        ok = True
    finally:
        executor.close(abort=not ok)
        if cutter is not None:
            cutter.close()
    array.mark_slice(work, cfg.task_index, cfg.num_tasks, ran, skipped)
    reporter.note(f"slice {cfg.task_index} of {cfg.num_tasks}: {len(ran)} tasks run, "
                  f"{len(own)} already done, {len(skipped)} skipped "
                  f"(their domain's budget is held), in {work.root}; when every slice is done, "
                  "finish with the same options and --commit-only")


__all__ = ["Interrupted", "Outcome", "PrepError", "RunStateError", "run"]
