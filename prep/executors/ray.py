"""The Ray executor: each task is a Ray task, on a local instance or a cluster.

`--ray-address` unset starts a local Ray instance of `--workers` CPUs (stopped at the end);
`auto` joins the cluster this machine belongs to; `host:port` joins that one. Tasks write their
part files into the run's work directory, which must therefore be on storage every node sees
(NFS, Lustre, a mounted bucket): a probe task checks that before any work, and the coordinator
checks each finished task's files (`prep.run`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prep.executors import Executor, ExecutorError, Handle, Job


def _probe(path: str) -> tuple[bool, str]:
    import socket

    return os.path.isfile(path), socket.gethostname()


def _call(fn: Callable[[Job], Any], job: Job) -> Any:
    return fn(job)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, workers: int, address: str | None) -> None:
        try:
            import ray
        except ImportError as e:
            raise ExecutorError("--executor ray needs Ray: pip install -e '.[ray]'") from e
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
            try:
                if address is None:  # "local": a new instance, even if RAY_ADDRESS is set or
                    ray.init(address="local", num_cpus=workers, **kw)  # `ray start` ran here
                else:
                    ray.init(address=address, **kw)
            except Exception as e:  # ConnectionError, RuntimeError, ...: one line, no trace
                raise ExecutorError(f"cannot start or join Ray (--ray-address "
                                    f"{address or '(local)'}): {e}") from e
        cpus = int(ray.cluster_resources().get("CPU", workers))
        self.slots = max(1, cpus if address is not None else min(workers, cpus))
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_call)
        self._pending: set[Any] = set()

    def submit(self, fn: Callable[[Job], Any], job: Job) -> Handle:
        ref = self._remote.remote(fn, job)
        self._pending.add(ref)
        return ref

    def wait(self, handles: list[Handle], timeout: float | None = None,
             ) -> list[tuple[Handle, Any, BaseException | None]]:
        ray = self._ray
        ready, _ = ray.wait(list(handles), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            self._pending.discard(ref)
            try:
                out.append((ref, ray.get(ref), None))
            except ray.exceptions.RayTaskError as e:  # the task raised: hand back its error
                cause = getattr(e, "cause", None)
                out.append((ref, None, cause if isinstance(cause, BaseException) else
                            ExecutorError(f"a Ray task failed: {str(e).splitlines()[0]}")))
            except ray.exceptions.RayError as e:  # a worker or node died
                out.append((ref, None, ExecutorError(f"a Ray worker failed: {e}")))
        return out

    def cancel(self, handles: list[Handle]) -> None:
        for ref in handles:
            self._pending.discard(ref)
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: S110 (already finished)
                pass

    def check_shared(self, probe: str) -> None:
        """One probe task per alive node (pinned there), each looking for `probe`."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe_task = self._ray.remote(num_cpus=0)(_probe)
        nodes = [n["NodeID"] for n in self._ray.nodes() if n.get("Alive")]
        refs = [probe_task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node, soft=False)).remote(probe) for node in nodes]
        for seen, host in self._ray.get(refs):
            if not seen:
                raise ExecutorError(
                    f"a Ray task on host {host} cannot see {probe}: the run's work directory "
                    "(inside --out) must be on storage that every node of the cluster sees "
                    "(NFS, Lustre, a mounted bucket); choose such an --out")

    def close(self, *, abort: bool) -> None:
        if abort:
            self.cancel(list(self._pending))
        self._pending.clear()
        if self._started:
            self._ray.shutdown()
