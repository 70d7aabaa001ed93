"""The coordinator: plan -> tasks (executor) -> commit -> assemble (executor) -> publish.

The coordinator reads no record and touches no token: workers run the tasks (`prep.task`) and
write the final files (`prep.assemble`); the coordinator schedules them, commits their metadata
(`prep.commit`) and publishes (`prep.publish`). Tasks run ahead of the commit, several domains
at once, but only while a domain may still need them: once the finished tasks of a domain hold
its budget, no new task of that domain starts, so a budget reads what it needs plus at most the
tasks already in flight.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import resource
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prep import assemble, faults, order
from prep.commit import CommitError, Committer, DomainResult
from prep.config import PrepConfig
from prep.executors import Executor, ExecutorError, make_executor
from prep.parts import TaskRecord, check_parts
from prep.plan import DomainPlan, Plan, PlanError, make_plan
from prep.progress import Reporter
from prep.publish import next_version, publish, remove_orphans, version_dir
from prep.split import RULE as SPLIT_RULE
from prep.task import TaskError, TaskJob, TaskSpec, run_task
from prep.workdir import OutLock, RunStateError, WorkDir, prepare
from shards import atomic
from shards.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    DocIndexRecord,
    DomainRecord,
    LeakageRecord,
    Manifest,
    ShardRecord,
    SplitRecord,
)


class PrepError(RuntimeError):
    """A run that cannot finish; the message says why, what was kept and what to do."""


class Interrupted(BaseException):
    """SIGTERM, handled like Ctrl-C (raised in the main thread by the CLI's handler)."""


@dataclass
class Outcome:
    """What a run did, for a message that never claims more (kept up to date as it goes)."""

    published: str | None = None  # the manifest path, once the new dataset is published
    work: str | None = None  # the work directory holding finished tasks


def run(cfg: PrepConfig, reporter: Reporter, outcome: Outcome | None = None) -> Manifest | None:
    """A whole run, a slice (--num-tasks: returns None) or a commit (--commit-only)."""
    outcome = outcome if outcome is not None else Outcome()
    t0 = time.perf_counter()
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise PrepError(f"--out {out} exists and is not a directory")
    slice_run = cfg.num_tasks is not None
    if not slice_run and (out / MANIFEST_NAME).exists() and not cfg.overwrite:
        raise PrepError(f"{out / MANIFEST_NAME} exists: {out} holds a finished dataset. Pass "
                        "--overwrite to replace it, or choose another --out")
    try:
        plan = make_plan(cfg)
    except PlanError as e:
        raise PrepError(str(e)) from e
    for d in plan.domains:
        for note in d.notes:
            reporter.note(f"{d.name}: {note}")
    if slice_run:
        _run_slice(cfg, plan, out, reporter, outcome)
        return None
    with OutLock(out):
        remove_orphans(out)
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


def _run_locked(cfg: PrepConfig, plan: Plan, out: Path, work: WorkDir,
                done: dict[str, TaskRecord], reporter: Reporter, t0: float,
                outcome: Outcome) -> Manifest:
    executor = make_executor(cfg.executor, cfg.workers, cfg.ray_address)
    reused = len(done)
    ok = False
    try:
        probe = work.root / "shared-probe"
        probe.write_text("prep\n")
        executor.check_shared(str(probe))
        reporter.start(plan, done)
        committer = Committer(plan, work.layout, cfg.min_eval_docs, cfg.max_bad_fraction)
        _run_tasks(cfg, plan, work, done, committer, executor, reporter)
        faults.maybe_kill("commit")
        if not committer.all_unique():
            raise PrepError("leakage check failed: a document's content hash was kept twice "
                            "(so an eval text may be in train); this is a bug in prep, please "
                            "report it")
        version = next_version(out)
        splits = _assemble(plan, work, committer.results, executor, reporter, version_dir(version))
        manifest = _manifest(cfg, plan, committer.results, splits, done, reused, t0)
        publish(work.staging, out, manifest, version)
        outcome.published = str(out / MANIFEST_NAME)
        ok = True
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise PrepError(f"disk full while writing under {out}: nothing was published ("
                            f"{_still_there(out)}); finished tasks are kept in {work.root}: free "
                            "space, then re-run with --resume") from e
        raise
    except (TaskError, CommitError, ExecutorError) as e:
        raise PrepError(f"{e}\n(nothing was published; finished tasks are kept in {work.root} "
                        "for --resume)") from e
    finally:
        executor.close(abort=not ok)
    work.remove()
    return manifest


def _still_there(out: Path) -> str:
    return ("the previous dataset is intact" if (out / MANIFEST_NAME).exists()
            else "no dataset there")


# --------------------------------------------------------------------------- tasks


def _run_tasks(cfg: PrepConfig, plan: Plan, work: WorkDir, done: dict[str, TaskRecord],
               committer: Committer, executor: Executor, reporter: Reporter) -> None:
    by_name = {d.name: d for d in plan.domains}
    in_flight: dict[Any, TaskSpec] = {}
    finished_here = 0
    pids_written = False
    while True:
        committer.advance(done, work.tasks)
        if committer.finished:
            return
        running = {s.id for s in in_flight.values()}
        for spec in _candidates(plan, committer, done, running, cfg.commit_only):
            if len(in_flight) >= executor.slots:
                break
            job = TaskJob(spec, by_name[spec.domain].settings, str(work.tasks))
            in_flight[executor.submit(run_task, job)] = spec
            running.add(spec.id)
            if not pids_written:  # who works for this run: for the person debugging it
                pids_written = _write_pids(work, executor)
        if not in_flight:
            missing = [s.id for s in plan.initial_tasks() if s.id not in done]
            raise PrepError(f"--commit-only: {len(missing)} planned tasks are not done: "
                            f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}; "
                            "run the slices that hold them (same options), then commit again")
        for handle, record, err in executor.wait(list(in_flight)):
            spec = in_flight.pop(handle)
            if err is not None:
                raise _task_failure(spec, err) from err
            why = check_parts(work.tasks / spec.id, record, rehash=False)
            if why is not None:
                raise PrepError(f"task {spec.id} finished on host {record.host} but its files "
                                f"are not visible here ({why}): the work directory {work.root} "
                                "must be on storage every node sees")
            done[spec.id] = record
            finished_here += 1
            reporter.task_done(spec.domain, record)
            faults.maybe_kill("after-task", finished_here)


def _write_pids(work: WorkDir, executor: Executor) -> bool:
    atomic.write_text(work.root / "workers.json", json.dumps(
        {"coordinator": os.getpid(), "host": socket.gethostname(), "executor": executor.name,
         "workers": executor.worker_pids()}) + "\n")
    return True


def _candidates(plan: Plan, committer: Committer, done: dict[str, TaskRecord],
                running: set[str], commit_only: bool) -> Iterator[TaskSpec]:
    """Tasks worth starting now, most needed first: those the commit waits for, then, domain by
    domain in turn, the next partitions of each domain whose finished tasks do not yet hold its
    budget (none in --commit-only, where slices ran the plan's tasks)."""
    for spec in committer.waiting_for():
        if spec.id not in done and spec.id not in running:
            if commit_only and spec.level == 0:
                continue
            yield spec
    if commit_only:
        return
    queues = {d.name: iter(_level0(d, done, running)) for d in plan.domains
              if d.name not in committer.results or d is committer.domain}
    while queues:
        for name in list(queues):
            d = next(x for x in plan.domains if x.name == name)
            spec = next(queues[name], None) if _may_need_more(d, done) else None
            if spec is None:
                del queues[name]
            else:
                yield spec


def _level0(d: DomainPlan, done: dict[str, TaskRecord], running: set[str]) -> Iterator[TaskSpec]:
    for p in d.order:
        spec = d.task(p)
        if spec.id not in done and spec.id not in running:
            yield spec


def _may_need_more(d: DomainPlan, done: dict[str, TaskRecord]) -> bool:
    have_b = have_t = 0
    for rec in done.values():
        if rec.domain == d.name:
            have_b += rec.counts.bytes
            have_t += rec.counts.tokens
    if d.budget_bytes is not None and have_b >= d.budget_bytes:
        return False
    return not (d.cfg.size_tokens is not None and have_t >= d.cfg.size_tokens)


def _task_failure(spec: TaskSpec, err: BaseException) -> BaseException:
    if isinstance(err, TaskError | PrepError):
        return err
    from concurrent.futures.process import BrokenProcessPool

    from prep.readers import SourceError

    if isinstance(err, SourceError):
        return err
    if isinstance(err, BrokenProcessPool):
        return ExecutorError("a worker process died (killed, or out of memory) while running "
                             f"task {spec.id}")
    if isinstance(err, OSError):
        return err
    return ExecutorError(f"task {spec.id} failed: {type(err).__name__}: {err}")


def _run_slice(cfg: PrepConfig, plan: Plan, out: Path, reporter: Reporter,
               outcome: Outcome) -> None:
    assert cfg.num_tasks is not None and cfg.task_index is not None
    work = WorkDir.for_plan(out, plan)
    work.create(plan)
    outcome.work = str(work.root)
    done = work.finished()
    for line in work.verify(done):
        reporter.note(line)
    mine = [s for s in plan.initial_tasks()[cfg.task_index::cfg.num_tasks] if s.id not in done]
    executor = make_executor("local", cfg.workers, None)
    by_name = {d.name: d for d in plan.domains}
    ok = False
    try:
        pending = {executor.submit(run_task, TaskJob(s, by_name[s.domain].settings,
                                                     str(work.tasks))): s for s in mine}
        while pending:
            for handle, record, err in executor.wait(list(pending)):
                spec = pending.pop(handle)
                if err is not None:
                    raise _task_failure(spec, err) from err
                reporter.task_done(spec.domain, record)
        ok = True
    finally:
        executor.close(abort=not ok)
    total = len(plan.initial_tasks()[cfg.task_index::cfg.num_tasks])
    reporter.note(f"slice {cfg.task_index} of {cfg.num_tasks}: {len(mine)} tasks run, "
                  f"{total - len(mine)} already done, in {work.root}; when every slice is done, "
                  "finish with the same options and --commit-only")


# --------------------------------------------------------------------------- assemble, manifest


def _assemble(plan: Plan, work: WorkDir, results: dict[str, DomainResult], executor: Executor,
              reporter: Reporter, vdir: str) -> dict[str, dict[str, SplitRecord]]:
    jobs: dict[tuple[str, str], assemble.SplitJobs] = {}
    for name, res in results.items():
        tasks_file = assemble.write_tasks_file(work.layout / f"{name}.tasks.json", res.tasks)
        for split, lay in res.layouts.items():
            d = work.staging / name / split
            d.mkdir(parents=True, exist_ok=True)
            jobs[name, split] = assemble.split_jobs(str(lay.path), tasks_file, str(work.tasks),
                                                    d, lay.shard_starts, lay.tokens,
                                                    plan.shard_tokens)
    reporter.assembling(sum(len(p) + 1 for sj in jobs.values() for p in sj.pieces)
                        + len(jobs))
    written = assemble.run(executor, jobs)
    splits: dict[str, dict[str, SplitRecord]] = {}
    for (name, split), files in written.items():
        lay = results[name].layouts[split]

        def rel(out: str) -> str:
            return f"{vdir}/{Path(out).relative_to(work.staging).as_posix()}"

        splits.setdefault(name, {})[split] = SplitRecord(
            docs=lay.docs, tokens=lay.tokens, blocks=lay.tokens // plan.block_size,
            bytes_text=lay.bytes_text,
            shards=[ShardRecord(path=rel(f.out), tokens=f.tokens, bytes=f.bytes,
                                sha256=f.sha256) for f in files.shards],
            doc_index=DocIndexRecord(path=rel(files.index.out), docs=files.index.docs,
                                     bytes=files.index.bytes, sha256=files.index.sha256))
    return splits


def _manifest(cfg: PrepConfig, plan: Plan, results: dict[str, DomainResult],
              splits: dict[str, dict[str, SplitRecord]], done: dict[str, TaskRecord],
              reused: int, t0: float) -> Manifest:
    records = {}
    for d in plan.domains:
        res = results[d.name]
        source = dict(d.source)
        files = [f for p in res.partitions for f in (p["provenance"] or {}).get("files", [])]
        if files:
            source["files"] = files
        records[d.name] = DomainRecord(
            name=d.name, source=source, format_rules=d.format_rules,
            shuffle_buffer=d.cfg.shuffle_buffer, size_budget_bytes=d.budget_bytes,
            token_budget=d.cfg.size_tokens, budget_reached=res.budget_reached,
            min_chars=d.cfg.min_chars, max_chars=d.cfg.max_chars,
            eval_fraction=d.cfg.eval_fraction, counts=res.counts,
            leakage=LeakageRecord(eval_hashes_in_train=0, cross_domain_duplicates=0,
                                  passed=True),
            splits=splits[d.name],
            order={"rule": order.describe(d.cfg.interleave, d.cfg.shuffle_buffer,
                                          int(d.cfg.shuffle_buffer_mb * 1e6)),
                   "seed": plan.seed, "interleave": d.cfg.interleave,
                   "shuffle_buffer_docs": d.cfg.shuffle_buffer,
                   "shuffle_buffer_bytes": int(d.cfg.shuffle_buffer_mb * 1e6),
                   "partitions_planned": len(d.partitions),
                   "partitions_read": len(res.partitions),
                   "split_rule": SPLIT_RULE},
            partitions=res.partitions)
    elapsed = time.perf_counter() - t0
    tokens = sum(s.tokens for r in splits.values() for s in r.values())
    kept = sum(r.counts.bytes_kept for r in results.values())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return Manifest(
        format=FORMAT_NAME, format_version=FORMAT_VERSION,
        recipe={**plan.recipe.to_dict(), "domains": [asdict(d.cfg) for d in plan.domains],
                "seed": plan.seed, "block_size": plan.block_size},
        config=asdict(cfg), seed=plan.seed, split_salt=plan.recipe.split_salt,
        block_size=plan.block_size, shard_tokens=plan.shard_tokens, tokenizer=plan.tokenizer,
        domains=records, leakage_passed=True,
        run={"seconds": round(elapsed, 3), "tokens": tokens,
             "tokens_per_s": round(tokens / elapsed, 1), "mb_per_s": round(kept / 1e6 / elapsed, 3),
             "executor": cfg.executor, "workers": cfg.workers, "tasks_done": len(done),
             "tasks_reused": reused, "coordinator_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
             "coordinator_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
             "plan_fingerprint": plan.fingerprint, "python": platform.python_version(),
             "platform": platform.platform()})


__all__ = ["Interrupted", "Outcome", "PrepError", "RunStateError", "run"]
