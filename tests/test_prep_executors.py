"""The same run under every executor: local pool, Ray (a real local instance), job-array slices."""

from __future__ import annotations

from pathlib import Path

import pytest
from prep_fixture import manifest, run_prep, same_dataset, write_corpus

import prep.run
from prep.executors.local import LocalExecutor
from prep.task import TaskJob
from prep.workdir import WORK_PREFIX

CORPUS_FILES = 3
OPTS = ("--partition-mb", "0.15", "--interleave", "2", "--eval-fraction", "0.1")  # 6 tasks


def test_ray_executor_gives_the_local_executors_bytes(corpus, straight, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    # Without --ray-address a local instance is started, even where RAY_ADDRESS (or `ray start`
    # on this machine) names another cluster: ray.init() alone would join that one.
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    out = tmp_path / "out"
    assert run_prep("--recipe", str(corpus), "--out", str(out), "--executor", "ray",
                    "--workers", "2", *OPTS) == 0
    same_dataset(out, straight)
    assert manifest(out)["run"]["executor"] == "ray"


def test_array_slices_in_any_order_then_commit_equal_one_run(corpus, straight, tmp_path,
                                                             capsys):
    out = tmp_path / "out"
    common = ("--recipe", str(corpus), "--out", str(out), "--workers", "1", *OPTS)
    assert run_prep(*common, "--num-tasks", "3", "--task-index", "2") == 0
    assert run_prep(*common, "--commit-only") == 1  # slices 0 and 1 have not run
    err = capsys.readouterr().err
    assert ("--commit-only: 4 planned tasks are not done (slices not finished: 0, 1): "
            "alpha.000000.L0, alpha.000001.L0, beta.000001.L0, beta.000002.L0; run the slices "
            "that hold them") in err
    assert run_prep(*common, "--num-tasks", "3", "--task-index", "0") == 0
    assert run_prep(*common, "--num-tasks", "3", "--task-index", "1") == 0
    assert run_prep(*common, "--num-tasks", "3", "--task-index", "1") == 0  # a re-run: no-op
    assert run_prep(*common, "--commit-only") == 0
    same_dataset(out, straight)
    assert manifest(out)["run"]["tasks_reused"] == 6
    assert not list(out.glob(f"{WORK_PREFIX}*"))


def test_commit_only_without_slices_says_so(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(corpus), "--out", str(out), *OPTS, "--commit-only") == 1
    assert "--commit-only: no work directory for this command" in capsys.readouterr().err


class _ElsewhereExecutor(LocalExecutor):
    """Runs each task so that it writes into another directory, as a node whose storage the
    coordinator does not see would."""

    def __init__(self, elsewhere: Path) -> None:
        super().__init__(1)
        self.elsewhere = elsewhere

    def submit(self, fn, job):  # noqa: ANN001
        if isinstance(job, TaskJob):
            self.elsewhere.mkdir(parents=True, exist_ok=True)
            job = TaskJob(job.spec, job.settings, str(self.elsewhere))
        return super().submit(fn, job)


def test_task_files_not_visible_to_the_coordinator_fail_clearly(corpus, tmp_path,
                                                                 monkeypatch, capsys):
    monkeypatch.setattr(prep.run, "make_executor",
                        lambda *a: _ElsewhereExecutor(tmp_path / "node-local"))
    out = tmp_path / "out"
    assert run_prep("--recipe", str(corpus), "--out", str(out), *OPTS) == 1
    err = capsys.readouterr().err
    assert "finished on host" in err and "but its files are not visible here" in err
    assert "must be on storage every node sees" in err
    assert list((tmp_path / "node-local").glob("*/done.json"))


def test_budgeted_slices_skip_what_the_budget_does_not_need(tmp_path, capsys):
    recipe = write_corpus(tmp_path, {"code": 9}, files=12)
    common = ("--recipe", str(recipe), "--out", str(tmp_path / "out"), "--workers", "1",
              "--size-mb", "0.15", "--interleave", "2", "--min-eval-docs", "3", *OPTS[:2])
    assert run_prep(*common, "--num-tasks", "2", "--task-index", "0") == 0
    assert run_prep(*common, "--num-tasks", "2", "--task-index", "1") == 0
    (work,) = (tmp_path / "out").glob(f"{WORK_PREFIX}*")
    ran = len(list((work / "tasks").glob("code.*")))
    assert ran <= 4  # of 12: the budget needs two ~95 KB files
    assert run_prep(*common, "--commit-only") == 0
    single = tmp_path / "single"
    assert run_prep(*common[:3], str(single), *common[4:]) == 0
    same_dataset(tmp_path / "out", single)


def test_forked_workers_inherit_the_coordinators_tokenizer(corpus, straight, tmp_path,
                                                          monkeypatch):
    """The plan loads tiktoken in the coordinator; the local pool's workers, forked after,
    never load it again (each load is ~0.1 s of a worker's start), and the bytes are the same."""
    import os

    import shards.tokenizer as tok

    loads = tmp_path / "loads"
    real = tok.load_gpt2

    def counted(path):
        with open(loads, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(path)

    tok.reference_encoder.cache_clear()
    tok._chosen.cache_clear()
    monkeypatch.setattr(tok, "load_gpt2", counted)
    out = tmp_path / "out"
    assert run_prep("--recipe", str(corpus), "--out", str(out), "--workers", "2", *OPTS) == 0
    tok.reference_encoder.cache_clear()
    tok._chosen.cache_clear()
    assert loads.read_text().split() == [str(os.getpid())]  # once, here; no worker loaded it
    same_dataset(out, straight)


def test_shards_written_in_pieces_equal_whole_shards(corpus, tmp_path, monkeypatch):
    """A shard is written by several jobs at once, each a token range that may start inside a
    document, then hashed: the bytes equal those of shards written by one job each."""
    from prep import assemble

    opts = ("--workers", "2", "--shard-tokens", "4096", *OPTS)
    whole = tmp_path / "whole"
    assert run_prep("--recipe", str(corpus), "--out", str(whole), *opts) == 0
    planned: list[assemble.SplitJobs] = []
    real = assemble.jobs_for_split

    def recorded(*args):
        jobs = real(*args)
        planned.append(jobs)
        return jobs

    monkeypatch.setattr(assemble, "PIECE_MIN_TOKENS", 300)
    monkeypatch.setattr(assemble, "jobs_for_split", recorded)
    pieces = tmp_path / "pieces"
    assert run_prep("--recipe", str(corpus), "--out", str(pieces), *opts) == 0
    same_dataset(pieces, whole)
    shards = [p for sj in planned for p in sj.pieces]
    assert len(shards) > len(planned)  # several shards per split somewhere
    assert max(len(p) for p in shards) == assemble.PIECES_MAX
    assert any(j.first_offset > 0 for p in shards for j in p[1:])  # a piece starts mid-document
