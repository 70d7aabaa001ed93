"""A local Ray instance that dies with its coordinator: ``python -m prep.executors.ray_instance``.

The Ray executor without ``--ray-address`` starts this process in a session of its own
(``setsid``); it starts a local Ray instance (``ray.init(address="local")``: GCS, raylet, the
dashboard and runtime-env agents, then the workers), writes one JSON line on stdout (the GCS
address for the coordinator to join, or the error), and watches its coordinator: stdin is a pipe
whose other end only the coordinator holds, so it reads end-of-file when the coordinator closes
it (the run is over) or dies, even by ``kill -9``; it also polls that its parent is still the
coordinator. Then it kills, with SIGKILL, every process of its session: every process of the
instance, since Ray's processes keep the session they were started in (the workers make process
groups of their own, never sessions), including those whose parent, the raylet, died first and
the orphans Ray leaves behind. It waits, polling with a deadline, until none is left, and exits.
Ray's own shutdown waits for each process in turn and prints a C++ stack dump for each SIGTERM;
this is immediate and quiet, and the tasks' outputs need none of it (the coordinator keeps only
what finished tasks recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time
from pathlib import Path

WATCH_EVERY_S = 1.0  # how often the parent is polled besides the pipe
KILL_DEADLINE_S = 30.0  # how long the sweep may take before it gives up (and says so)


def session_pids(sid: int, *, exclude: int | None = None) -> list[int]:
    """The live (not zombie) processes of session `sid` on this machine, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp sid
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            out.append(int(entry.name))
    return out


def kill_session(deadline_s: float = KILL_DEADLINE_S) -> list[int]:
    """SIGKILL every other process of this process's session, reaping its own children, until
    none is left or `deadline_s` has passed; returns the PIDs still alive (none, normally)."""
    me, sid = os.getpid(), os.getsid(0)
    deadline = time.monotonic() + deadline_s
    while True:
        alive = session_pids(sid, exclude=me)
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:  # reap this process's children (no zombies)
                pass
        except ChildProcessError:
            pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


def _watch(parent: int) -> None:
    """Return when stdin reads end-of-file or this process's parent is no longer `parent`."""
    stdin = sys.stdin.fileno()
    while os.getppid() == parent:
        ready, _, _ = select.select([stdin], [], [], WATCH_EVERY_S)
        if ready and not os.read(stdin, 4096):
            return


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m prep.executors.ray_instance",
                                description="A local Ray instance that dies with its parent.")
    p.add_argument("--num-cpus", type=int, required=True)
    p.add_argument("--parent", type=int, required=True, help="the coordinator's PID")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SIGTERM: the sweep, then exit
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    info: dict = {}
    left: list[int] = []
    try:
        try:
            import ray

            ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # ray.init set its own
            info = {"address": ray.get_runtime_context().gcs_address, "pid": os.getpid(),
                    "session_dir": ray._private.worker._global_node.get_session_dir_path()}
        except Exception as e:  # ImportError, RuntimeError, ConnectionError: one line back
            info = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"}
        print(json.dumps(info), flush=True)
        if "error" not in info:
            _watch(args.parent)
    finally:
        left = kill_session()
        if left:
            print(json.dumps({"left": left}), flush=True)
    return 0 if not left and "error" not in info else 1


if __name__ == "__main__":
    try:
        code = main()
    except SystemExit as e:  # SIGTERM (after the sweep) or a bad command line
        code = e.code if isinstance(e.code, int) else 1
    sys.stdout.flush()
    os._exit(code)  # not Ray's exit hooks: they would wait for the instance killed above
