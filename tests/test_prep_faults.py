"""prep under faults: kill -9 and SIGTERM at each stage, resume, locks, publish, full disk.

Kills are real: the coordinator runs as a subprocess and sends itself the signal at a named
point (`prep.faults`, the PREP_KILL_AT test hook); workers are checked dead by PID.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prep_fixture import data_files, manifest, run_prep, same_dataset

import shards
from prep.workdir import WORK_PREFIX, OutLock
from shards import atomic
from shards.format import MANIFEST_NAME

ROOT = Path(__file__).resolve().parents[1]
CORPUS_FILES = 4
OPTS = ("--workers", "2", "--partition-mb", "0.15", "--interleave", "2")  # 8 tasks of ~95 KB


def prep_cli(*args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PREP_KILL_AT", None)
    if kill_at:
        env["PREP_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "prep", *args, "--quiet"], env=env,
                          capture_output=True, text=True, timeout=300)


def work_dir(out: Path) -> Path:
    (w,) = out.glob(f"{WORK_PREFIX}*")
    return w


def gone(pid: int, timeout: float = 10.0) -> bool:
    """True once `pid` no longer runs: no such process, or a zombie whose threads have all
    exited (a zombie thread-group leader can outlive its last threads by a moment). Polls up to
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            threads = len(os.listdir(f"/proc/{pid}/task"))
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X") and threads <= 1:
            return True
        time.sleep(0.05)
    return False


def finished_tasks(work: Path) -> list[str]:
    return sorted(p.name for p in (work / "tasks").iterdir()
                  if not p.name.startswith(".") and (p / "done.json").is_file())


@pytest.mark.parametrize("after", [1, 4, 7])  # one, half, all but one of the 8 tasks
def test_kill_9_of_the_coordinator_then_resume_is_byte_identical(corpus, straight, tmp_path,
                                                                 after):
    out = tmp_path / "out"
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS, kill_at=f"after-task:{after}")
    assert r.returncode == -9, r.stderr
    assert not (out / MANIFEST_NAME).exists()
    work = work_dir(out)
    pids = json.loads((work / "workers.json").read_text())["workers"]
    assert len(pids) == 2 and all(gone(p) for p in pids)  # no worker outlives its coordinator
    finished = finished_tasks(work)
    assert len(finished) >= after
    # a task killed between its record and its rename: a record in a temp dir, not finished
    shutil.copytree(work / "tasks" / finished[0], work / "tasks" / f".{finished[0]}.tmp-h-1")
    # without --resume the leftover run is reported, not silently deleted or reused
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS)
    assert r.returncode == 1
    assert f"({len(finished)} of 8 planned tasks finished, in {work}): pass --resume" in r.stderr
    assert finished_tasks(work) == finished  # nothing redone, nothing removed
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS, "--resume")
    assert r.returncode == 0, r.stderr
    same_dataset(out, straight)
    assert manifest(out)["run"]["tasks_reused"] == len(finished)
    assert not list(out.glob(f"{WORK_PREFIX}*"))  # removed once published


def test_sigterm_is_handled_like_ctrl_c_and_resumes(corpus, straight, tmp_path):
    out = tmp_path / "out"
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS, kill_at="after-task:3:TERM")
    assert r.returncode == 143
    work = work_dir(out)
    assert r.stderr.strip() == (f"prep: terminated (SIGTERM); nothing was published; finished "
                                f"tasks are kept in {work}: re-run the same command with "
                                "--resume to continue")
    pids = json.loads((work / "workers.json").read_text())["workers"]
    assert all(gone(p) for p in pids)
    assert prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS,
                    "--resume").returncode == 0
    same_dataset(out, straight)


def test_killed_worker_fails_the_run_and_resume_finishes_it(corpus, straight, tmp_path):
    out = tmp_path / "out"
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS,
                 kill_at="task-before-done:beta.000002.L0")
    assert r.returncode == 1
    assert "a worker process died (killed, or out of memory) while running task" in r.stderr
    assert "kept in" in r.stderr and "--resume" in r.stderr and "Traceback" not in r.stderr
    work = work_dir(out)
    assert list((work / "tasks").glob(".beta.000002.L0.tmp-*"))  # the dead task's leftovers
    assert prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS,
                    "--resume").returncode == 0
    same_dataset(out, straight)


def test_damaged_part_file_is_redone_on_resume(corpus, straight, tmp_path):
    out = tmp_path / "out"
    assert prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS,
                    kill_at="after-task:5").returncode == -9
    task = work_dir(out) / "tasks" / finished_tasks(work_dir(out))[0]
    tokens = task / "tokens.bin"
    raw = bytearray(tokens.read_bytes())
    raw[10] ^= 1
    tokens.write_bytes(bytes(raw))
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS, "--resume")
    assert r.returncode == 0, r.stderr
    same_dataset(out, straight)


def test_resume_with_other_settings_is_refused_naming_the_difference(corpus, tmp_path):
    out = tmp_path / "out"
    assert prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS,
                    kill_at="after-task:2").returncode == -9
    cases = [(("--seed", "4"), "seed: 3 -> 4"),
             (("--shard-tokens", "1024"), "shard_tokens: 134217728 -> 1024"),
             (("--size-mb", "5"), "domains.alpha.size_mb: 10.0 -> 5.0")]
    for extra, difference in cases:
        r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS, *extra, "--resume")
        assert r.returncode == 1
        assert "--resume: the unfinished run in" in r.stderr and difference in r.stderr, r.stderr
    other = corpus.with_name("other.toml")
    other.write_text(corpus.read_text().replace("min_chars = 10", "min_chars = 11", 1))
    r = prep_cli("--recipe", str(other), "--out", str(out), *OPTS, "--resume")
    assert r.returncode == 1 and "domains.alpha.min_chars: 10 -> 11" in r.stderr, r.stderr
    assert len(list(out.glob(f"{WORK_PREFIX}*"))) == 1  # nothing was discarded


def test_a_second_run_into_the_same_out_is_refused_by_the_lock(corpus, tmp_path):
    out = tmp_path / "out"
    with OutLock(out):  # a first run holding OUT (this process)
        r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS)
    assert r.returncode == 1
    assert (f"another prep run is writing to {out} (PID {os.getpid()} on host "
            f"{os.uname().nodename}, started ") in r.stderr
    assert not (out / MANIFEST_NAME).exists() and not list(out.glob(f"{WORK_PREFIX}*"))


@pytest.mark.parametrize("point,new", [("commit", False), ("publish-moved", False),
                                       ("publish-manifest", True)])
def test_overwrite_killed_at_each_step_of_the_publish_leaves_one_complete_dataset(
        corpus, straight, tmp_path, point, new):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(corpus), "--out", str(out), *OPTS) == 0
    old = data_files(out)
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS, "--seed", "5",
                 "--overwrite", kill_at=point)
    assert r.returncode == -9
    assert shards.open(out) is not None  # a complete dataset is published at every instant
    assert subprocess.run([sys.executable, "-m", "shards", "verify", str(out)],
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
                          ).returncode == 0
    assert (data_files(out) != old) is new
    assert (manifest(out)["seed"] == 5) is new
    # the next run cleans what the killed publish left and publishes again
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS, "--seed", "5",
                 "--overwrite")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert len(names) == 2 and names[1] == MANIFEST_NAME and names[0].startswith("data.")
    assert manifest(out)["seed"] == 5


def test_full_disk_at_the_manifest_write_keeps_the_old_dataset(corpus, tmp_path, monkeypatch,
                                                               capsys):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(corpus), "--out", str(out), *OPTS) == 0
    old = data_files(out)
    real = atomic.write_text

    def full(path, text):
        if Path(path).name == MANIFEST_NAME:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(atomic, "write_text", full)
    assert run_prep("--recipe", str(corpus), "--out", str(out), *OPTS, "--seed", "5",
                    "--overwrite") == 1
    err = capsys.readouterr().err
    assert "disk full" in err and "nothing was published (the previous dataset is intact)" in err
    assert data_files(out) == old and manifest(out)["seed"] == 3
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "data.1", MANIFEST_NAME]
    with open(out / ".prep.lock") as f:  # the failed run's killed workers (forked with the
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # lock open) are gone: the lock is free
        fcntl.flock(f, fcntl.LOCK_UN)
    monkeypatch.setattr(atomic, "write_text", real)
    assert run_prep("--recipe", str(corpus), "--out", str(out), *OPTS, "--seed", "5",
                    "--overwrite", "--resume") == 0
    assert manifest(out)["seed"] == 5


def test_ctrl_c_exits_130_and_keeps_the_work(corpus, tmp_path):
    out = tmp_path / "out"
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS, kill_at="after-task:2:INT")
    assert r.returncode == 130
    assert "prep: interrupted; nothing was published; finished tasks are kept in" in r.stderr
    assert not (out / MANIFEST_NAME).exists() and len(list(out.glob(f"{WORK_PREFIX}*"))) == 1


def test_sigterm_right_after_the_switch_says_the_dataset_was_published(corpus, tmp_path):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(corpus), "--out", str(out), *OPTS) == 0
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS, "--seed", "11",
                 "--overwrite", kill_at="publish-manifest::TERM")
    assert r.returncode == 143
    assert r.stderr.strip() == ("prep: terminated (SIGTERM); the new dataset was published "
                                f"({out / MANIFEST_NAME})")
    assert manifest(out)["seed"] == 11 and shards.open(out) is not None


def test_an_interrupt_during_the_switch_is_decided_by_what_is_on_disk(corpus, tmp_path,
                                                                     monkeypatch, capsys):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(corpus), "--out", str(out), *OPTS) == 0
    real = atomic.write_text

    def switched_then_interrupted(path, text):
        real(path, text)
        if Path(path).name == MANIFEST_NAME:
            raise KeyboardInterrupt  # e.g. arriving right after the rename

    monkeypatch.setattr(atomic, "write_text", switched_then_interrupted)
    assert run_prep("--recipe", str(corpus), "--out", str(out), *OPTS, "--seed", "12",
                    "--overwrite") == 130
    assert f"the new dataset was published ({out / MANIFEST_NAME})" in capsys.readouterr().err
    assert manifest(out)["seed"] == 12
    assert subprocess.run([sys.executable, "-m", "shards", "verify", str(out)],
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
                          ).returncode == 0


def test_a_task_directory_left_without_its_record_is_redone(corpus, straight, tmp_path):
    out = tmp_path / "out"
    assert prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS,
                    kill_at="after-task:4").returncode == -9
    task = work_dir(out) / "tasks" / finished_tasks(work_dir(out))[0]
    (task / "done.json").unlink()  # as a removal cut short would leave it
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS, "--resume")
    assert r.returncode == 0, r.stderr
    same_dataset(out, straight)
