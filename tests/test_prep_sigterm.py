"""SIGTERM at every moment of `python -m prep`: before the run, during it, and while exiting.

The process sends itself SIGTERM at a named point (`prep.faults`): ``start`` is before the
imports (the first ~0.2 s), ``exit`` after the summary; ``publish-manifest`` is mid-run, right
after the switch. Each exits 143 with one ``prep:`` line that says what happened, never -15.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prep_fixture import manifest

import shards
from shards.format import MANIFEST_NAME

ROOT = Path(__file__).resolve().parents[1]
CORPUS_FILES = 2
OPTS = ("--workers", "1", "--partition-mb", "0.15", "--min-eval-docs", "1")


def prep_cli(*args: str, kill_at: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREP_KILL_AT": kill_at}
    return subprocess.run([sys.executable, "-m", "prep", *args, "--quiet"], env=env,
                          capture_output=True, text=True, timeout=300)


def test_sigterm_before_the_run_starts(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS, kill_at="start::TERM")
    assert r.returncode == 143
    assert r.stderr == "prep: terminated (SIGTERM) while starting; nothing was done\n"
    assert not out.exists()


def test_sigterm_while_exiting_after_the_publish(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS, kill_at="exit::TERM")
    assert r.returncode == 143
    assert r.stderr == ("prep: terminated (SIGTERM) while exiting; the new dataset was "
                        f"published ({out / MANIFEST_NAME})\n")
    assert manifest(out)["seed"] == 3 and shards.open(out, verify="full", stamp="off")


def test_sigterm_in_the_run_still_stops_it(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS,
                 kill_at="publish-manifest::TERM")
    assert r.returncode == 143
    assert r.stderr == ("prep: terminated (SIGTERM); the new dataset was published "
                        f"({out / MANIFEST_NAME})\n")
