"""The Ray executor: each task is a Ray task, on a local instance or a cluster.

`--ray-address` unset starts a local Ray instance of `--workers` CPUs that dies with this run:
it is started by a process of its own (`prep.executors.ray_instance`, in a new session) that
watches the coordinator and, when the run ends or the coordinator dies (even by ``kill -9``),
kills every process of the instance at once, by its session; `close` waits until they are all
gone. `auto` joins the cluster this machine belongs to; `host:port` joins that one (a cluster
this run did not start is never stopped; Ray itself ends this run's tasks there when the
coordinator's connection drops).

Signals stay the coordinator's: `ray.init` replaces the SIGTERM handler with its own (exit 15,
no message); the handler in place before is put back, so SIGTERM ends a Ray run as it ends a
local one (exit 143 and a ``prep:`` line saying what was kept). An exception raised by a signal
handler inside Ray's compiled calls comes out as a SystemError, so Ctrl-C and SIGTERM are held
during each call (`_signals_deferred`; `ray.wait` returns every WAIT_POLL_S) and handled as soon
as it returns. Ray's processes never get the terminal's Ctrl-C (they are in another session),
nor print to this run's stderr.

Tasks write their part files into the run's work directory, which must therefore be on storage
every node sees (NFS, Lustre, a mounted bucket): a probe task checks that before any work, and
the coordinator checks each finished task's files (`prep.run`).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from prep.executors import Executor, ExecutorError, Handle, Job

START_TIMEOUT_S = 180.0  # how long a local instance may take to start (a loaded machine)
STOP_TIMEOUT_S = 60.0  # how long close() waits for the instance's processes to be gone
WAIT_POLL_S = 0.5  # ray.wait is called with this timeout, so that signals are handled


def _probe(path: str) -> tuple[bool, str]:
    import socket

    return os.path.isfile(path), socket.gethostname()


def _call(fn: Callable[[Job], Any], job: Job) -> Any:
    return fn(job)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM that arrive during the block are handled, by the handlers in place
    before it, when it ends (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda n, _f: got.append(n)) for s in held}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if got:
            h = old[got[0]]
            if callable(h):
                h(got[0], None)
            elif h == signal.SIG_DFL:
                os.kill(os.getpid(), got[0])


def _token_auth() -> None:
    """Token authentication for this process, as ``ray.init(address="local")`` enables it in
    the process that starts an instance (unless RAY_AUTH_MODE says otherwise): the instance
    found or wrote the token (~/.ray/auth_token); Ray's cached configuration is re-read, as
    Ray's own `_enable_token_auth` does."""
    if "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"
        from ray._raylet import Config

        Config.initialize("")


class LocalInstance:
    """The process that runs a local Ray instance for this run and stops it (see the module
    docstring); `address` is its GCS address, `pid` the session's leader."""

    def __init__(self, num_cpus: int) -> None:
        self._log: IO[bytes] = tempfile.TemporaryFile()  # its stderr, read only on a failure
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prep.executors.ray_instance", "--num-cpus", str(num_cpus),
             "--parent", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            start_new_session=True)
        self.pid = self.proc.pid
        try:
            info = self._read_info()
        except BaseException:  # an error, Ctrl-C or SIGTERM while starting: stop it too
            self.stop()
            raise
        if "address" not in info:
            self.stop()
            why = info.get("error") or self._tail()
            raise ExecutorError(f"cannot start a local Ray instance: {why}")
        self.address: str = info["address"]
        self.session_dir: str = info.get("session_dir", "")

    def _read_info(self) -> dict[str, Any]:
        """The instance's JSON line ({} when it exits or times out without one)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline, buf = time.monotonic() + START_TIMEOUT_S, b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], min(1.0, deadline - time.monotonic()))
            if not ready:
                continue
            block = os.read(fd, 65536)
            if not block:
                return {}
            buf += block
            for line in buf.split(b"\n")[:-1]:
                try:
                    info = json.loads(line)
                except ValueError:
                    continue  # anything Ray printed on stdout
                if isinstance(info, dict) and ("address" in info or "error" in info):
                    return info
        return {"error": f"no answer in {START_TIMEOUT_S:.0f} s"}

    def _tail(self) -> str:
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"it exited with status {self.proc.poll()}"

    def stop(self) -> None:
        """Close the pipe (the instance then kills its processes) and wait until it has exited;
        SIGKILL for its session if it does not within STOP_TIMEOUT_S."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, workers: int, address: str | None) -> None:
        try:
            import ray
        except ImportError as e:
            raise ExecutorError("--executor ray needs Ray: pip install -e '.[ray]'") from e
        self._ray = ray
        self._instance: LocalInstance | None = None
        self._started = not ray.is_initialized()
        if self._started:
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
            main = threading.current_thread() is threading.main_thread()
            handler = signal.getsignal(signal.SIGTERM) if main else None
            try:
                if address is None:  # a new local instance, even if RAY_ADDRESS is set or
                    self._instance = LocalInstance(workers)  # `ray start` ran here
                    _token_auth()
                with _signals_deferred():
                    ray.init(address=self._instance.address if self._instance else address,
                             **kw)
            except ExecutorError:
                raise
            except Exception as e:  # ConnectionError, RuntimeError, ...: one line, no trace
                if self._instance is not None:
                    self._instance.stop()
                raise ExecutorError(f"cannot start or join Ray (--ray-address "
                                    f"{address or '(local)'}): {e}") from e
            except BaseException:
                if self._instance is not None:
                    self._instance.stop()
                raise
            finally:
                if main and handler is not None:
                    signal.signal(signal.SIGTERM, handler)
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
        ready: list[Any] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ready:  # in steps, so that the main thread handles Ctrl-C and SIGTERM
            step = WAIT_POLL_S if deadline is None else max(
                0.0, min(WAIT_POLL_S, deadline - time.monotonic()))
            with _signals_deferred():
                ready, _ = ray.wait(list(handles), num_returns=1, timeout=step)
            if deadline is not None and time.monotonic() >= deadline:
                break
        out = []
        for ref in ready:
            self._pending.discard(ref)
            try:
                with _signals_deferred():
                    value = ray.get(ref)
                out.append((ref, value, None))
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
        with _signals_deferred():
            found = self._ray.get(refs)
        for seen, host in found:
            if not seen:
                raise ExecutorError(
                    f"a Ray task on host {host} cannot see {probe}: the run's work directory "
                    "(inside --out) must be on storage that every node of the cluster sees "
                    "(NFS, Lustre, a mounted bucket); choose such an --out")

    def worker_pids(self) -> list[int]:
        """The local instance's process (its session holds every process of the instance)."""
        return [self._instance.pid] if self._instance is not None else []

    def close(self, *, abort: bool) -> None:
        if abort and self._instance is None:  # a cluster: end this run's tasks there
            self.cancel(list(self._pending))
        self._pending.clear()
        try:
            if self._started:
                with _signals_deferred():
                    self._ray.shutdown()
        finally:
            if self._instance is not None:  # every process of the instance, gone on return
                self._instance.stop()
