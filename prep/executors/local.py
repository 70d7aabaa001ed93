"""The local executor: a pool of `--workers` processes on this machine.

Workers die with their coordinator: each asks the kernel for SIGKILL when its parent exits
(Linux `PR_SET_PDEATHSIG`), so a kill -9 of the coordinator leaves no worker running, and they
ignore Ctrl-C (the coordinator handles it and stops them).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import connection
from typing import Any

from prep.executors import Executor, Handle, Job

PR_SET_PDEATHSIG = 1
KILL_WAIT_S = 10.0  # how long close(abort=True) waits for killed workers to exit


def _worker_init(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the coordinator died before the line above took effect
        os._exit(1)


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, workers: int) -> None:
        self.slots = workers
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else "spawn")
        self._pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                         initargs=(os.getpid(),))
        # start the workers now, before the coordinator starts any thread (progress display)
        self._pool.submit(os.getpid).result()

    def submit(self, fn: Callable[[Job], Any], job: Job) -> Handle:
        return self._pool.submit(fn, job)

    def wait(self, handles: list[Future], timeout: float | None = None,
             ) -> list[tuple[Handle, Any, BaseException | None]]:
        done, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        out = []
        for f in done:
            err = f.exception()
            out.append((f, None if err else f.result(), err))
        return out

    def cancel(self, handles: list[Future]) -> None:
        for f in handles:
            f.cancel()

    def worker_pids(self) -> list[int]:
        return sorted(getattr(self._pool, "_processes", {}) or {})

    def close(self, *, abort: bool) -> None:
        if abort:  # running jobs are not waited for: their workers are stopped
            procs = list((getattr(self._pool, "_processes", None) or {}).values())
            for p in procs:
                p.kill()
            self._pool.shutdown(wait=False, cancel_futures=True)
            # ... and gone before this returns: a forked worker holds the coordinator's open
            # files, OUT's lock among them, until it has exited (a run retried at once would
            # be refused by its own lock).
            pending, deadline = [p.sentinel for p in procs], time.monotonic() + KILL_WAIT_S
            while pending and time.monotonic() < deadline:
                ready = connection.wait(pending, timeout=deadline - time.monotonic())
                pending = [s for s in pending if s not in ready]
        else:
            self._pool.shutdown(wait=True)
