"""One compressed file uses every worker: it is cut into pieces (prep.readers.pieces, read by
the coordinator's cutter, prep.cutter), and the output is the same for any --workers, a kill
and --resume at any stage, and job-array slices."""

from __future__ import annotations

import hashlib
import json
import random
import socket
from pathlib import Path

import pytest
import zstandard
from prep_fixture import manifest, random_doc, run_prep, same_dataset, write_recipe
from test_prep_faults import finished_tasks, gone, prep_cli, work_dir

from prep.cutter import CUTS_DIR
from prep.workdir import WORK_PREFIX

OPTS = ("--partition-mb", "0.04", "--min-eval-docs", "5")  # ~25 pieces of ~40 KB
UNBUDGETED = ("--size-mb", "1000")


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> tuple[Path, bytes]:
    """A recipe over one .jsonl.zst of ~1 MB of text (estimated 4x its size: one stream)."""
    root = tmp_path_factory.mktemp("stream")
    rng = random.Random(7)
    raw = "".join(json.dumps({"text": random_doc(rng, 20, 300), "id": i}) + "\n"
                  for i in range(1200)).encode()
    (root / "code.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(raw))
    recipe = write_recipe(root / "recipe.toml", {"code": {
        "source": "json", "data_files": ["code.jsonl.zst"], "min_chars": 1}}, seed=3,
        block_size=16)
    return recipe, raw


@pytest.fixture(scope="module")
def straight(stream, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "out"
    assert run_prep("--recipe", str(stream[0]), "--out", str(out), "--workers", "1", *OPTS,
                    *UNBUDGETED) == 0
    return out


def pieces_of(out: Path) -> list[dict]:
    return manifest(out)["domains"]["code"]["partitions"]


def test_one_compressed_file_is_cut_into_pieces_whatever_the_workers(stream, straight,
                                                                     tmp_path):
    recipe, raw = stream
    parts = pieces_of(straight)
    n = len(parts)
    assert n >= 20
    assert [p["key"] for p in parts] == [f"code.jsonl.zst#{i}" for i in range(n)]
    assert [p["task"] for p in parts] == [f"code.000000.p{i:05d}.L0" for i in range(n)]
    files = [p["provenance"]["files"][0] for p in parts]
    assert files[0]["text_start"] == 0 and files[-1]["text_end"] == len(raw)
    assert all(a["text_end"] == b["text_start"] for a, b in zip(files, files[1:], strict=False))
    assert all(f["text_sha256"] == hashlib.sha256(raw[f["text_start"]:f["text_end"]]).hexdigest()
               for f in files)
    assert [p["provenance"]["last"] for p in parts] == [False] * (n - 1) + [True]
    zst = recipe.parent / "code.jsonl.zst"
    assert files[-1]["sha256"] == hashlib.sha256(zst.read_bytes()).hexdigest()
    order = manifest(straight)["domains"]["code"]["order"]
    assert order["partitions_planned"] == order["partitions_read"] == 1
    assert order["tasks_read"] == n
    out = tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(out), "--workers", "3", *OPTS,
                    *UNBUDGETED) == 0
    same_dataset(out, straight)
    assert not list(out.glob(f"{WORK_PREFIX}*"))


def test_every_worker_gets_work_and_a_kill_at_the_commit_resumes(stream, straight, tmp_path):
    recipe, _ = stream
    out = tmp_path / "out"
    common = ("--recipe", str(recipe), "--out", str(out), "--workers", "3", *OPTS, *UNBUDGETED)
    r = prep_cli(*common, kill_at="commit")  # every task done, nothing assembled
    assert r.returncode == -9, r.stderr
    work = work_dir(out)
    workers = json.loads((work / "workers.json").read_text())["workers"]
    records = [json.loads((work / "tasks" / t / "done.json").read_text())
               for t in finished_tasks(work)]
    per_worker = {pid: sum(rec["pid"] == pid for rec in records) for pid in workers}
    assert len(records) >= 20 and sum(per_worker.values()) == len(records)
    assert all(per_worker.values()), per_worker  # each of the 3 workers ran pieces
    assert {rec["host"] for rec in records} == {socket.gethostname()}
    assert all(gone(p) for p in workers)
    r = prep_cli(*common, "--resume")
    assert r.returncode == 0, r.stderr
    same_dataset(out, straight)
    assert manifest(out)["run"]["tasks_reused"] == len(records)


@pytest.mark.parametrize("kill_at", ["cut:3", "after-task:4", "task-start:code.000000.p00005.L0"])
def test_kill_9_while_cutting_or_working_then_resume_is_byte_identical(stream, straight,
                                                                       tmp_path, kill_at):
    recipe, _ = stream
    out = tmp_path / "out"
    common = ("--recipe", str(recipe), "--out", str(out), "--workers", "2", *OPTS, *UNBUDGETED)
    r = prep_cli(*common, kill_at=kill_at)
    assert r.returncode == (-9 if not kill_at.startswith("task-start") else 1), r.stderr
    work = work_dir(out)
    finished = finished_tasks(work)
    if kill_at.startswith("cut"):  # the coordinator died with spills on disk
        (left,) = (work / CUTS_DIR).iterdir()
        assert len(list(left.iterdir())) >= 3
    if finished:  # without --resume: reported (a lower bound of the tasks), not reused
        r = prep_cli(*common)
        assert r.returncode == 1
        assert f"({len(finished)} of 1+ planned tasks finished, in {work}): pass --resume" \
            in r.stderr
    r = prep_cli(*common, "--resume")
    assert r.returncode == 0, r.stderr
    same_dataset(out, straight)
    assert manifest(out)["run"]["tasks_reused"] == len(finished)
    assert not list(out.glob(f"{WORK_PREFIX}*"))


def test_slices_share_the_pieces_of_one_file(stream, straight, tmp_path):
    recipe, _ = stream
    out = tmp_path / "out"
    common = ("--recipe", str(recipe), "--out", str(out), "--workers", "1", *OPTS, *UNBUDGETED)
    for i in (2, 0, 1):
        assert run_prep(*common, "--num-tasks", "3", "--task-index", str(i)) == 0
    work = work_dir(out)
    ran = {i: json.loads((work / "slices" / f"{i}-of-3.json").read_text())["ran"]
           for i in range(3)}
    n = len(pieces_of(straight))
    assert sorted(t for r in ran.values() for t in r) == sorted(
        f"code.000000.p{j:05d}.L0" for j in range(n))  # every piece once, by its slice
    assert all(t.startswith(f"code.000000.p{j:05d}") for i, r in ran.items() for t in r
               for j in [int(t.split(".p")[1][:5])] if j % 3 == i)
    assert not list((work / CUTS_DIR).iterdir())  # each slice removed its spills
    assert run_prep(*common, "--commit-only") == 0
    same_dataset(out, straight)
    assert manifest(out)["run"]["tasks_reused"] == n


def test_a_budget_reads_the_stream_no_further_than_it_needs(stream, tmp_path):
    recipe, raw = stream
    out = tmp_path / "out"
    common = ("--recipe", str(recipe), "--out", str(out), "--workers", "2", *OPTS,
              "--size-mb", "0.05", "--min-eval-docs", "1")
    r = prep_cli(*common, kill_at="commit")
    assert r.returncode == -9, r.stderr
    work = work_dir(out)
    ran = [int(t.split(".p")[1][:5]) for t in finished_tasks(work)]
    (spills,) = (work / CUTS_DIR).iterdir()
    spilled = [int(p.name.split(".p")[1]) for p in spills.iterdir()]
    read = max(ran + spilled) + 1  # pieces decompressed at most: those and the one being read
    assert read <= 8 < len(raw) // 40_000  # the cutter stopped early: a budget and its lead
    r = prep_cli(*common, "--resume")
    assert r.returncode == 0, r.stderr
    once = tmp_path / "once"
    assert run_prep(*common[:3], str(once), *common[4:]) == 0
    same_dataset(out, once)
    parts = pieces_of(once)
    assert [p["key"] for p in parts] == [f"code.jsonl.zst#{i}" for i in range(len(parts))]
    assert manifest(once)["domains"]["code"]["budget_reached"]


def test_parquet_row_groups_and_one_large_row_group_are_cut(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(9)
    texts = [random_doc(rng, 20, 300) for _ in range(1500)]
    pq.write_table(pa.table({"text": texts[:700]}), tmp_path / "a.parquet", row_group_size=100,
                   compression="zstd")  # several row groups
    pq.write_table(pa.table({"text": texts[700:]}), tmp_path / "b.parquet",
                   compression="zstd")  # one large row group
    recipe = write_recipe(tmp_path / "r.toml", {"code": {
        "source": "parquet", "data_files": ["*.parquet"], "min_chars": 1}}, seed=3,
        block_size=16)
    outs = []
    for workers in ("1", "3"):
        outs.append(tmp_path / f"out{workers}")
        assert run_prep("--recipe", str(recipe), "--out", str(outs[-1]), "--workers", workers,
                        *OPTS, "--partition-mb", "0.1", *UNBUDGETED) == 0
    same_dataset(outs[1], outs[0])
    keys = sorted(p["key"] for p in pieces_of(outs[0]))
    assert [k for k in keys if k.startswith("a.")] == [f"a.parquet#rg{k}" for k in range(7)]
    big = [k for k in keys if k.startswith("b.")]
    assert len(big) >= 5 and big == sorted(f"b.parquet#rg0#{i}" for i in range(len(big)))
    assert manifest(outs[0])["domains"]["code"]["counts"]["docs_kept"] == 1500


def test_the_commit_reads_each_piece_once_not_once_per_piece(stream, straight, tmp_path,
                                                             monkeypatch):
    """A stream of n pieces makes the commit wait n times; it resumes its merge each time
    (prep.order.MergeState) and reads each task's metadata once, never all pieces again."""
    import prep.commit

    loads: list[str] = []
    real = prep.commit.TaskParts

    def counted(task_dir):
        loads.append(Path(task_dir).name)
        return real(task_dir)

    monkeypatch.setattr(prep.commit, "TaskParts", counted)
    out = tmp_path / "out"
    assert run_prep("--recipe", str(stream[0]), "--out", str(out), "--workers", "2", *OPTS,
                    *UNBUDGETED) == 0
    same_dataset(out, straight)
    n = len(pieces_of(straight))
    assert sorted(loads) == sorted(f"code.000000.p{i:05d}.L0" for i in range(n))


def test_ray_runs_the_pieces_the_coordinator_cuts(stream, straight, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")  # a new local instance regardless
    out = tmp_path / "out"
    assert run_prep("--recipe", str(stream[0]), "--out", str(out), "--executor", "ray",
                    "--workers", "2", *OPTS, *UNBUDGETED) == 0
    same_dataset(out, straight)


def test_a_stream_damaged_near_its_end_fails_the_run_in_one_line(stream, tmp_path, capsys):
    recipe, raw = stream
    data = zstandard.ZstdCompressor(level=3).compress(raw)
    (tmp_path / "code.jsonl.zst").write_bytes(data[:-40])  # the last block cut short
    bad = write_recipe(tmp_path / "r.toml", {"code": {
        "source": "json", "data_files": ["code.jsonl.zst"], "min_chars": 1}}, seed=3,
        block_size=16)
    out = tmp_path / "out"
    assert run_prep("--recipe", str(bad), "--out", str(out), "--workers", "2", *OPTS,
                    *UNBUDGETED) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"prep: error: [domains.code] {tmp_path / 'code.jsonl.zst'}: "
                          "zstandard data is truncated (the last frame never ends)")
    assert "Traceback" not in err and "finished tasks are kept" in err
    assert len(list((work_dir(out) / "tasks").iterdir())) >= 10  # the pieces before it ran
    budget = tmp_path / "budget"  # a budget that never reads that far never sees it
    assert run_prep("--recipe", str(bad), "--out", str(budget), "--workers", "2", *OPTS,
                    "--size-mb", "0.05", "--min-eval-docs", "1") == 0
