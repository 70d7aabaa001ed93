"""The loop reads the device once per --log-every steps: same records, same stops, no syncs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shards_fixture import domain_docs, make_dataset
from train_fixture import poison_from

from train import moe
from train.checkpoint import load_checkpoint
from train.loop import EXIT_NONFINITE, Loop
from train.preempt import EXIT_PREEMPTED, TEST_HOOK_ENV
from train.syncs import SyncCounter

SMALL = ["--preset", "tiny", "--block-size", "16", "--batch-size", "2", "--warmup", "2",
         "--lr", "3e-3", "--eval-batch-size", "8", "--eval-max-blocks", "2"]
MOE = ["--n-experts", "4", "--moe-layers", "1"]
TIMING = ("tokens_per_s", "dt_s", "mfu")  # the interval's means: differ from run to run


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("reads"),
                        domain_docs(np.random.default_rng(0), 20, 4), shard_tokens=256,
                        block_size=16)


def records(out: Path, *kinds: str) -> list[dict]:
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in recs if r["kind"] in kinds]


def train(data: Path, out: Path, *extra: str) -> int:
    return moe.main(["--data", str(data), "--out", str(out), *SMALL, *extra])


def test_records_are_identical_with_log_every_1_and_10(data, tmp_path, capsys):
    common = [*MOE, "--max-steps", "13", "--eval-every", "6", "--grad-accum", "2"]
    assert train(data, tmp_path / "one", *common, "--log-every", "1") == 0
    one_lines = capsys.readouterr().out.count("\nstep ")
    assert train(data, tmp_path / "ten", *common, "--log-every", "10") == 0
    ten_lines = capsys.readouterr().out.count("\nstep ")
    a = records(tmp_path / "one", "train", "eval", "warning")
    b = records(tmp_path / "ten", "train", "eval", "warning")
    assert [r["step"] for r in b if r["kind"] == "train"] == list(range(1, 14))  # every step
    assert a == b  # same keys, same values, same order (evals after their step's record)
    assert a[0]["router_noise"] > 0 and len(records(tmp_path / "one", "eval")) == 3
    full = [json.loads(x) for x in (tmp_path / "ten" / "metrics.jsonl").read_text().splitlines()]
    assert all(set(TIMING) <= set(r) for r in full if r["kind"] == "train")
    # the terminal shows one line per read: steps 6, 10, 12, 13 (evals at 6, 12 and the end)
    assert (one_lines, ten_lines) == (13, 4)
    ma, mb = (load_checkpoint(tmp_path / r / "ckpt.pt")["model"] for r in ("one", "ten"))
    assert all(np.array_equal(ma[k].numpy(), mb[k].numpy()) for k in ma)


def sync_counts(data: Path, out: Path, *extra: str) -> dict[int, int]:
    """Host syncs of each optimizer step's iteration (the step, and what follows it until the
    next one starts: a read, an eval, a checkpoint) in an in-process run."""
    marks: list[tuple[int, int]] = []
    counter = SyncCounter()
    step = Loop.train_step

    def counted(self, preempt):
        marks.append((self.step + 1, counter.total))
        return step(self, preempt)

    Loop.train_step = counted
    try:
        with counter:
            assert train(data, out, *extra) == 0
            marks.append((-1, counter.total))
    finally:
        Loop.train_step = step
    return {s: b - a for (s, a), (_, b) in zip(marks, marks[1:], strict=False)}


@pytest.mark.parametrize("model, per_step", [
    (["--experiment", "dense"], 0),
    ([*MOE, "--moe-impl", "grouped_mm"], 0),
    # the padded-bmm dispatch reads its capacity per MoE layer (CPU, and CUDA before sm90)
    (["--n-experts", "4", "--moe-layers", "1,2", "--moe-impl", "bmm"], 2),
])
def test_host_syncs_per_step(data, tmp_path, model, per_step):
    syncs = sync_counts(data, tmp_path / "run", *model, "--max-steps", "12", "--eval-every", "12",
                        "--log-every", "5")
    reads = {5, 10, 12}
    assert sorted(syncs) == list(range(1, 13))
    assert {s: n for s, n in syncs.items() if s not in reads} == \
        {s: per_step for s in range(1, 13) if s not in reads}
    assert syncs[5] == syncs[10] == per_step + 1  # the read: one .tolist()


def test_sigterm_is_acted_on_at_once_in_one_process(data, tmp_path, monkeypatch):
    common = [*MOE, "--max-steps", "12", "--eval-every", "6", "--log-every", "10"]
    assert train(data, tmp_path / "straight", *common) == 0
    monkeypatch.setenv(TEST_HOOK_ENV, "4")
    out = tmp_path / "split"
    assert train(data, out, *common) == EXIT_PREEMPTED
    assert load_checkpoint(out / "ckpt.pt")["step"] == 4  # not at the next read (step 6)
    monkeypatch.delenv(TEST_HOOK_ENV)
    assert train(data, out, *common, "--resume") == 0
    assert records(tmp_path / "straight", "train", "eval") == records(out, "train", "eval")


def test_nonfinite_loss_found_at_a_later_read_stops_at_its_step(data, tmp_path, monkeypatch):
    poison_from(monkeypatch, 7)  # step 7 (one micro-batch per step); the read is at step 10
    out = tmp_path / "nan"
    args = [*MOE, "--max-steps", "20", "--eval-every", "5", "--log-every", "10"]
    assert train(data, out, *args) == EXIT_NONFINITE
    assert load_checkpoint(out / "ckpt.pt")["step"] == 5  # steps 7-10 ran, none was saved
    assert [r["step"] for r in records(out, "train")] == [1, 2, 3, 4, 5, 6]
    (warning,) = [w for w in records(out, "warning") if "non-finite" in w["message"]]
    assert warning["step"] == 7 and warning["message"].startswith("non-finite loss at step 7")
    assert warning["message"].endswith(f"the last good checkpoint (step 5) in {out / 'ckpt.pt'} "
                                       "is kept")
    (summary,) = records(out, "summary")
    assert (summary["step"], summary["stop_reason"]) == (6, "non-finite loss at step 7")
    assert summary["final_train"]["step"] == 6
    monkeypatch.undo()
    assert train(data, out, *args, "--resume") == 0  # continues from step 5
    assert [r["step"] for r in records(out, "train")] == list(range(1, 21))


def test_nonfinite_loss_before_any_checkpoint_says_so(data, tmp_path, monkeypatch):
    poison_from(monkeypatch, 2)
    out = tmp_path / "nan"
    assert train(data, out, *MOE, "--max-steps", "20", "--eval-every", "10") == EXIT_NONFINITE
    assert not (out / "ckpt.pt").exists()
    (warning,) = [w for w in records(out, "warning") if "non-finite" in w["message"]]
    assert warning["message"].endswith("; stopping; no checkpoint was written")


DAMAGE_ON_RANK_1 = """
import os, sys
from train import moe
from train.data import TrainSampler

fetch = TrainSampler._fetch


def damaged_third(self):
    batch = fetch(self)
    if os.environ["RANK"] == "1" and self.batches == 3:
        batch.damage = "simulated: a damaged window on rank 1"
    return batch


TrainSampler._fetch = damaged_third
sys.exit(moe.main(sys.argv[1:]))
"""


def test_a_damaged_batch_on_one_rank_stops_every_rank_with_its_message(data, tmp_path):
    script = tmp_path / "wrapper.py"
    script.write_text(DAMAGE_ON_RANK_1)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(script), "--data", str(data), "--out", str(out), *SMALL, *MOE,
           "--max-steps", "8", "--eval-every", "4", "--log-every", "2", "--device", "cpu"]
    p = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "exitcode  : 2" in p.stderr, p.stderr[-3000:]
    assert f"error: rank 1 (host {socket.gethostname()}): simulated: a damaged window on rank " \
           "1\n" in p.stderr
    # rank 1's third batch (step 3) held it, read at step 4 before its checkpoint: steps 1-2
    # are recorded, nothing after them, and no checkpoint holds step 3
    assert [r["step"] for r in records(out, "train")] == [1, 2]
    (warning,) = records(out, "warning")
    assert warning["step"] == 3 and warning["message"].startswith("damaged data at step 3: ")
    assert not (out / "ckpt.pt").exists()
