"""The measured processes of `python -m prep.bench`, each fresh: ``python -m
prep.bench.children KIND RESULT.json ARGS...`` writes its measurements to RESULT.json.

- ``prep``: ``python -m prep ARGS`` run in this process (``prep.__main__.main``, as ``python -m
  prep`` does), measured from inside: the coordinator's own CPU time (``RUSAGE_SELF`` at exit,
  after publishing, less the sampling thread's) and peak RSS (``VmHWM``); the workers' CPU and
  the largest worker's peak (``RUSAGE_CHILDREN``: the local pool's workers are its children,
  reaped at shutdown); each worker's peak RSS (``VmHWM`` of each worker PID, polled every
  100 ms, checked against ``RUSAGE_CHILDREN``); the commit's dedup state (``KeySet.nbytes`` and
  keys at the end, and the peak, over every KeySet call, of what all live sets hold plus the
  call's temporaries, traced with tracemalloc); the executor's start-up and shutdown times.
- ``ceiling``, ``concurrent``: one tiktoken process (and the reference ids), N encoder
  processes at once (`prep.bench.ceiling`);
- ``stages``: a worker's CPU stage by stage (`prep.bench.stages`);
- ``fineweb``, ``nanogpt``: the peers (`prep.bench.peers`).
- ``ray-head``: a local Ray instance kept until stdin closes, for runs that join one.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prep.bench.procfs import peak_rss_mb, status

POLL_S = 0.1


# --------------------------------------------------------------------------- prep


class _Sampler(threading.Thread):
    """Polls VmHWM/RssAnon of the coordinator and of the executor's worker PIDs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.executor: Any = None
        self.hwm: dict[int, int] = {}  # pid -> VmHWM kB (last read: it only grows)
        self.anon: dict[int, int] = {}  # pid -> max RssAnon kB seen
        self.stop = threading.Event()
        self.cpu_s = 0.0  # this thread's own CPU time (not the coordinator's)

    def run(self) -> None:
        while not self.stop.wait(POLL_S):
            self.sample()
        self.cpu_s = time.thread_time()

    def sample(self) -> None:
        """One reading of the coordinator and of every worker PID (also at the executor's
        close, so that no worker's last moments are missed)."""
        pids = [os.getpid()]
        try:
            pids += list(self.executor.worker_pids()) if self.executor else []
        except RuntimeError:  # the pool's dict changed while read: next time
            pass
        for pid in pids:
            st = status(pid)
            if st:
                self.hwm[pid] = max(self.hwm.get(pid, 0), st.get("VmHWM", 0))
                self.anon[pid] = max(self.anon.get(pid, 0), st.get("RssAnon", 0))


def prep(argv: list[str]) -> tuple[int, dict[str, Any]]:
    """Run ``python -m prep argv`` here, measured (see the module docstring)."""
    os.environ.setdefault("USE_TORCH", "0")  # as prep/__main__.py does before its imports
    import prep.run as run_mod
    from prep.__main__ import main

    info: dict[str, Any] = {}
    sampler = _Sampler()
    make = run_mod.make_executor

    def make_executor(*args: Any) -> Any:
        t = time.perf_counter()
        ex = make(*args)
        info["executor_start_s"] = time.perf_counter() - t
        sampler.executor = ex
        close = ex.close

        def timed_close(*, abort: bool) -> None:
            sampler.sample()
            t = time.perf_counter()
            close(abort=abort)
            info["executor_close_s"] = time.perf_counter() - t

        ex.close = timed_close
        return ex

    import weakref

    import prep.dedup as dedup_mod

    live: weakref.WeakSet[Any] = weakref.WeakSet()
    info["dedup_peak_bytes"] = 0

    class MeasuredKeySet(dedup_mod.KeySet):  # type: ignore[misc, valid-type]
        """The commit's key sets, their memory measured around every call that allocates:
        held (KeySet.nbytes of every live set) + the call's traced peak (temporaries)."""

        def __init__(self) -> None:
            super().__init__()
            live.add(self)

        def _traced(self, fn: Any, *args: Any) -> Any:
            held = sum(k.nbytes for k in live)
            tracemalloc.start()
            try:
                return fn(*args)
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                info["dedup_peak_bytes"] = max(info["dedup_peak_bytes"], held + peak)

        def contains(self, hi: Any, lo: Any) -> Any:
            return self._traced(super().contains, hi, lo)

        def add(self, hi: Any, lo: Any) -> None:
            self._traced(super().add, hi, lo)

        def all_unique(self) -> bool:
            info["dedup_bytes"] = self.nbytes
            info["dedup_keys"] = len(self)
            return self._traced(super().all_unique)

    dedup_mod.KeySet = MeasuredKeySet
    run_mod.make_executor = make_executor
    sampler.start()
    t0 = time.perf_counter()
    rc = main(argv)
    info["main_s"] = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    me = os.getpid()
    self_ru = resource.getrusage(resource.RUSAGE_SELF)
    kids_ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    info.update(
        coordinator_cpu_s=self_ru.ru_utime + self_ru.ru_stime - sampler.cpu_s,
        sampler_cpu_s=sampler.cpu_s,
        coordinator_peak_rss_mb=peak_rss_mb(),
        workers_cpu_s=kids_ru.ru_utime + kids_ru.ru_stime,
        workers_max_peak_rss_mb=kids_ru.ru_maxrss / 1024,
        worker_peak_rss_mb={str(p): kb / 1024 for p, kb in sampler.hwm.items() if p != me},
        worker_peak_anon_mb={str(p): kb / 1024 for p, kb in sampler.anon.items() if p != me},
        coordinator_peak_anon_mb=sampler.anon.get(me, 0) / 1024)
    return rc, info


# --------------------------------------------------------------------------- a Ray instance


def ray_head(result: str, cpus: int) -> None:
    """Start a local Ray instance, write its address to `result`, keep it until stdin closes."""
    import ray

    t = time.perf_counter()
    ctx = ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                   configure_logging=False)
    Path(result).write_text(json.dumps({"address": ctx.address_info["gcs_address"],
                                        "start_s": time.perf_counter() - t}))
    sys.stdin.read()
    ray.shutdown()


# --------------------------------------------------------------------------- entry


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    kind, result, rest = args[0], args[1], args[2:]
    if kind == "ray-head":
        ray_head(result, int(rest[0]))
        return 0
    if kind == "prep":
        rc, info = prep(rest)
    else:
        from prep.bench import ceiling, peers, stages

        spec = json.loads(rest[0])
        fn = {"ceiling": ceiling.reference, "concurrent": ceiling.concurrent,
              "stages": stages.split, "fineweb": peers.fineweb, "nanogpt": peers.nanogpt}[kind]
        rc, info = 0, fn(**spec)
    Path(result).write_text(json.dumps(info))
    return rc


def run_child(kind: str, result: Path, args: Iterable[str], env: dict[str, str] | None = None
              ) -> tuple[int, float, dict[str, Any] | None]:
    """Run one measured child; (exit status, wall seconds including start-up, its result)."""
    import subprocess

    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "prep.bench.children", kind, str(result), *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0 and proc.returncode != -9 and kind != "prep":
        raise RuntimeError(f"{kind} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    data = json.loads(result.read_text()) if result.exists() else None
    if data is not None:
        data["stderr"] = proc.stderr[-2000:]
    return proc.returncode, wall, data


if __name__ == "__main__":
    sys.exit(main())
