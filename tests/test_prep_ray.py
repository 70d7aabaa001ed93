"""The Ray executor's local instance dies with its run: kill -9 and SIGTERM of the coordinator.

A real local Ray instance (2 CPUs). A task's worker stops itself (SIGSTOP at the task's start,
the PREP_KILL_AT hook), so the coordinator is waiting on it; the test then collects, by PID,
every process of the instance (the members of its session: GCS, raylet, agents, workers), kills
or terminates the coordinator and polls, with a deadline, until none of them runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prep.executors.ray_instance import session_pids
from prep.workdir import WORK_PREFIX

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
CORPUS_FILES = 3
OPTS = ("--partition-mb", "0.15", "--interleave", "2", "--eval-fraction", "0.1")  # 6 tasks
STUCK = "alpha.000001.L0"  # the task whose worker stops itself
DEADLINE_S = 120.0  # for the instance to start and the task to stop (a loaded machine)
GONE_S = 20.0  # for every process of the instance to be gone (Ray's own cleanup takes ~60 s)


def state(pid: int) -> str | None:
    """The process's state letter (R, S, T, Z, ...), None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def running(pids: list[int]) -> list[int]:
    """Those of `pids` still running (a zombie has exited: only its entry waits for a parent)."""
    return [p for p in pids if state(p) not in (None, "Z", "X")]


def start_stuck_run(corpus: Path, out: Path) -> tuple[subprocess.Popen, int, list[int]]:
    """Start a Ray run whose task STUCK stops; wait until it does; return the coordinator, the
    instance's leader and the PIDs of every process of the instance."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREP_KILL_AT": f"task-start:{STUCK}:STOP"}
    coord = subprocess.Popen(
        [sys.executable, "-m", "prep", "--recipe", str(corpus), "--out", str(out), "--executor",
         "ray", "--workers", "2", *OPTS, "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert coord.poll() is None, coord.communicate()
        workers = list(out.glob(f"{WORK_PREFIX}*/workers.json"))
        if workers:
            (leader,) = json.loads(workers[0].read_text())["workers"]
            pids = session_pids(leader)
            if any(state(p) == "T" for p in pids):  # the stuck task's worker has stopped
                return coord, leader, [leader, *pids]
        time.sleep(0.1)
    coord.kill()
    raise AssertionError(f"the task did not stop within {DEADLINE_S} s: {coord.communicate()}")


def wait_gone(pids: list[int], leader: int) -> list[int]:
    """Poll until none of `pids`, nor any process of the leader's session, runs; what is left."""
    deadline = time.monotonic() + GONE_S
    while (left := running(pids) + session_pids(leader)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_kill_9_of_the_coordinator_leaves_no_ray_process(corpus: Path, tmp_path: Path) -> None:
    coord, leader, pids = start_stuck_run(corpus, tmp_path / "out")
    names = {p: Path(f"/proc/{p}/comm").read_text().strip() for p in pids if state(p)}
    assert {"gcs_server", "raylet"} <= set(names.values()), names
    assert sum(n.startswith("ray::") for n in names.values()) >= 3, names  # agents, workers
    coord.kill()
    coord.communicate()
    assert wait_gone(pids, leader) == []


@pytest.mark.parametrize("sig, status, what", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                               (signal.SIGINT, 130, "interrupted")])
def test_sigterm_and_ctrl_c_end_a_ray_run_as_a_local_one(corpus: Path, tmp_path: Path, sig: int,
                                                        status: int, what: str) -> None:
    out = tmp_path / "out"
    coord, leader, pids = start_stuck_run(corpus, out)
    coord.send_signal(sig)
    try:
        _, err = coord.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        coord.kill()
        raise
    assert coord.returncode == status, err
    (work,) = out.glob(f"{WORK_PREFIX}*")
    assert err.splitlines() == [f"prep: {what}; nothing was published; finished tasks are kept "
                                f"in {work}: re-run the same command with --resume to continue"]
    assert running(pids) == [] and session_pids(leader) == []  # gone before it exited
