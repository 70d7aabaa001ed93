"""Where tasks run: the same task functions, in a local process pool or on a Ray cluster.

An executor runs picklable jobs (`prep.task.TaskJob`, `prep.assemble.ShardJob`/`IndexJob`)
through a module-level function and hands back results as they finish. The coordinator keeps
at most `slots` jobs in flight. Job arrays (--num-tasks/--task-index) use the local executor for
their slice; see `prep.run`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Job = Any
Handle = Any


class ExecutorError(RuntimeError):
    """A worker or the cluster failed; the message says what happened and that work is kept."""


class Executor:
    name = "?"
    slots = 1  # jobs to keep in flight

    def submit(self, fn: Callable[[Job], Any], job: Job) -> Handle:
        raise NotImplementedError

    def wait(self, handles: list[Handle], timeout: float | None = None,
             ) -> list[tuple[Handle, Any, BaseException | None]]:
        """Block until at least one of `handles` finished, or `timeout` seconds passed (then
        possibly none); (handle, result, error) of each finished one."""
        raise NotImplementedError

    def cancel(self, handles: list[Handle]) -> None:
        """Drop jobs no longer needed: those not started never run; running ones may finish."""

    def check_shared(self, probe: str) -> None:
        """Fail unless every worker sees the file `probe` (the work directory is shared)."""

    def worker_pids(self) -> list[int]:
        return []

    def close(self, *, abort: bool) -> None:
        """Stop the workers; with `abort`, without waiting for running jobs."""


def make_executor(kind: str, workers: int, ray_address: str | None) -> Executor:
    if kind == "ray":
        from prep.executors.ray import RayExecutor

        return RayExecutor(workers, ray_address)
    from prep.executors.local import LocalExecutor

    return LocalExecutor(workers)
