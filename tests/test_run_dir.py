"""The run directory is protected: no mixed runs, no stale temporary files, no silent option
changes on resume, no damaged checkpoint resumed, and a SIGTERM leaves a resumable run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from shards_fixture import TINY_RUN, domain_docs, make_dataset

import shards
from train import moe, report
from train.checkpoint import KILL_HOOK_ENV, load_checkpoint
from train.config import RUN_KEYS, TrainConfig
from train.lock import LOCK_NAME
from train.preempt import EXIT_PREEMPTED, TEST_HOOK_ENV
from train.schedule import lr_at

REPO = Path(__file__).resolve().parents[1]
SMALL = TINY_RUN


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("rd"), domain_docs(np.random.default_rng(0), 12, 4),
                        shard_tokens=256, block_size=16)


def args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--out", str(out), *SMALL, *extra]


def train(data: Path, out: Path, *extra: str) -> int:
    return moe.main(args(data, out, *extra))


def records(out: Path, kind: str | None = None) -> list[dict]:
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if kind is None or r["kind"] == kind]


def subprocess_train(data: Path, out: Path, *extra: str,
                     env: dict[str, str]) -> tuple[int, str, str, int]:
    """train/moe.py in a process of its own: (exit status, stdout, stderr, pid)."""
    p = subprocess.Popen([sys.executable, str(REPO / "train" / "moe.py"),
                          *args(data, out, *extra)], env={**os.environ, **env},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = p.communicate(timeout=300)
    return p.returncode, stdout, stderr, p.pid


# --------------------------------------------------------------------------- fresh runs


FRESH_REFUSALS = {
    "ckpt.pt": "holds an earlier run (ckpt.pt); pass --resume to continue it or --overwrite",
    # no checkpoint: nothing to resume, so never "pass --resume"
    "metrics.jsonl": "holds an earlier run that wrote no checkpoint (metrics.jsonl): there is "
                     "nothing to resume; pass --overwrite to delete it",
    "ckpt_000004.pt": "holds an earlier run (ckpt_000004.pt) without ckpt.pt: pass --overwrite "
                      "to delete it and start over, copy one of ckpt_000004.pt to ckpt.pt and "
                      "pass --resume to continue from it",
}


@pytest.mark.parametrize("leftover", list(FRESH_REFUSALS))
def test_fresh_run_into_a_used_directory_is_refused(data, tmp_path, capsys, leftover):
    out = tmp_path / "run"
    out.mkdir()
    (out / leftover).write_text("an earlier run\n")
    assert train(data, out, "--max-steps", "2") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out} {FRESH_REFUSALS[leftover]}") and err.count("\n") == 1
    assert (out / leftover).read_text() == "an earlier run\n"  # untouched
    assert sorted(p.name for p in out.iterdir()) == [leftover]  # no lock taken, nothing added


def test_overwrite_starts_over_without_duplicate_records(data, tmp_path):
    out = tmp_path / "run"
    assert train(data, out, "--max-steps", "3", "--eval-every", "3",
                 "--keep-ckpt-every", "3") == 0
    assert train(data, out, "--max-steps", "2", "--eval-every", "2", "--overwrite") == 0
    assert [r["step"] for r in records(out, "train")] == [1, 2]
    assert len(records(out, "summary")) == 1 and len(records(out, "data_check")) == 1
    assert not list(out.glob("ckpt_*.pt"))


def test_resume_needs_a_checkpoint(data, tmp_path, capsys):
    assert train(data, tmp_path / "none", "--resume") == 2
    assert "ckpt.pt does not exist; nothing to resume" in capsys.readouterr().err


# --------------------------------------------------------------------------- killed runs


def test_stale_temporary_checkpoint_of_a_killed_run_is_removed(data, tmp_path):
    out = tmp_path / "run"
    common = ["--max-steps", "4", "--eval-every", "2"]
    rc, _, err, pid = subprocess_train(data, out, *common, env={KILL_HOOK_ENV: "4"})
    assert rc == -9, err[-2000:]  # SIGKILLed while writing step 4's checkpoint
    (stale,) = out.glob(".ckpt.pt.tmp-*")
    assert stale.name == f".ckpt.pt.tmp-{pid}" and stale.stat().st_size > 0
    assert load_checkpoint(out / "ckpt.pt")["step"] == 2  # the last complete one is intact
    alive = out / f".ckpt.pt.tmp-{os.getppid()}"  # a writer that still runs: left alone
    alive.write_bytes(b"")
    assert train(data, out, *common, "--resume") == 0
    assert not stale.exists() and alive.exists()
    (warning,) = [w for w in records(out, "warning") if "temporary" in w["message"]]
    assert warning["message"] == (f"removed 1 temporary file(s) a killed run left in {out}: "
                                  f"{stale.name}")
    assert [r["step"] for r in records(out, "train")] == [1, 2, 3, 4]  # 3-4 of the killed run
    # were dropped with the resume, then done again


def test_killed_in_its_first_checkpoint_write_the_advice_leads_one_way(data, tmp_path,
                                                                        capsys):
    out = tmp_path / "run"
    common = ["--max-steps", "4", "--eval-every", "2"]
    rc, _, err, pid = subprocess_train(data, out, *common, env={KILL_HOOK_ENV: "2"})
    assert rc == -9, err[-2000:]  # SIGKILLed while writing the first checkpoint (step 2)
    stale = out / f".ckpt.pt.tmp-{pid}"
    assert stale.stat().st_size > 0 and not (out / "ckpt.pt").exists()
    # a plain start: nothing to resume, so it points to --overwrite (never to --resume), and
    # the killed writer's temporary file goes at once
    assert train(data, out, *common) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {out} holds an earlier run that wrote no checkpoint (metrics.jsonl): "
                   "there is nothing to resume; pass --overwrite to delete it and start over, or "
                   "choose another --out (removed 1 temporary file(s) a killed run left: "
                   f"{stale.name})\n")
    assert not stale.exists()
    # --resume points to --overwrite too (it used to say: drop --resume)
    assert train(data, out, *common, "--resume") == 2
    assert capsys.readouterr().err == (
        f"error: --resume: {out / 'ckpt.pt'} does not exist: the earlier run in {out} stopped "
        "before it wrote one (metrics.jsonl), so there is nothing to resume; start over with "
        "--overwrite instead of --resume, or choose another --out\n")
    assert train(data, out, *common, "--overwrite") == 0  # the advice, followed, works
    assert [r["step"] for r in records(out, "train")] == [1, 2, 3, 4]


def _lock_holder(out: Path, proc: subprocess.Popen, timeout: float = 240.0) -> dict:
    """Wait until `proc` holds OUT's lock (it writes its PID into the file once it does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            holder = json.loads((out / LOCK_NAME).read_text())
            if holder["pid"] == proc.pid:
                return holder
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{proc.pid} never took the lock on {out}")


@pytest.mark.parametrize("mode", ["--overwrite", "--resume"])
def test_two_runs_into_one_out_the_second_is_refused_naming_the_first(data, tmp_path, mode):
    out = tmp_path / "run"
    common = ["--max-steps", "4", "--eval-every", "2"]
    assert train(data, out, *common, "--stop-after", "2") == 0
    first = subprocess.Popen([sys.executable, str(REPO / "train" / "moe.py"),
                              *args(data, out, *common, mode)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        holder = _lock_holder(out, first)
        os.kill(first.pid, signal.SIGSTOP)  # hold it there, lock taken, while the second starts
        try:
            rc, _, err, _ = subprocess_train(data, out, *common, mode, env={})
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert rc == 2, err[-2000:]
        assert err.startswith(f"error: another training run is writing to {out} (PID "
                              f"{first.pid} on host {holder['host']}, started "), err
        assert err.endswith("); wait for it to finish, or choose another --out\n")
        assert first.wait(timeout=300) == 0, first.communicate()
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    # the second touched nothing: every step once, one summary
    assert [r["step"] for r in records(out, "train")] == [1, 2, 3, 4]
    assert len(records(out, "summary")) == 1
    assert load_checkpoint(out / "ckpt.pt")["step"] == 4


# --------------------------------------------------------------------------- resume options


def test_resume_with_changed_options_is_refused_with_the_list(data, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--max-steps", "4", "--eval-every", "2"]
    assert train(data, out, *common, "--stop-after", "2") == 0
    capsys.readouterr()
    assert train(data, out, *common, "--resume", "--lr", "5", "--seed", "99") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "was trained with other options (lr: 0.003 in the checkpoint, 5.0 now; seed: 1337 " \
           "in the checkpoint, 99 now)" in err and "--allow-change lr seed" in err
    assert train(data, out, *common, "--resume", "--lr", "5", "--seed", "99",
                 "--allow-change", "lr") == 2
    assert "--allow-change seed," in capsys.readouterr().err  # seed still refused
    assert [r["step"] for r in records(out, "train")] == [1, 2]  # nothing ran
    assert train(data, out, *common, "--resume", "--lr", "1e-3", "--seed", "99",
                 "--weight-decay", "0.2", "--allow-change", "lr", "seed", "weight_decay") == 0
    (change,) = records(out, "resume")
    assert change == {"kind": "resume", "step": 2, "changes": {
        "lr": [0.003, 0.001], "weight_decay": [0.1, 0.2], "seed": [1337, 99]}}
    groups = load_checkpoint(out / "ckpt.pt")["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.2, 0.0]  # not the checkpoint's 0.1
    step3 = records(out, "train")[2]
    assert step3["step"] == 3
    assert step3["lr"] == pytest.approx(lr_at(2, moe.parse_args(args(data, out, *common,
                                                                           "--lr", "1e-3"))))
    assert load_checkpoint(out / "ckpt.pt")["train_config"]["lr"] == 1e-3


def test_allow_change_names_only_options_that_alter_the_run(data, tmp_path, capsys):
    assert train(data, tmp_path / "r", "--resume", "--allow-change", "out") == 2
    err = capsys.readouterr().err
    assert "--allow-change out: not an option that alters the run" in err
    # what may differ on resume without --allow-change (README lists the same)
    assert {f.name for f in fields(TrainConfig)} - set(RUN_KEYS) == {
        "data", "out", "stop_after", "keep_ckpt_every", "eval_batch_size", "resume",
        "allow_change", "overwrite", "skip_verify", "compile", "device", "init_from", "log_every",
        "moe_impl"}
    assert train(data, tmp_path / "r", "--allow-change", "lr") == 2
    assert "--allow-change applies to --resume only" in capsys.readouterr().err


def test_resume_on_other_data_only_with_allow_change_data(data, tmp_path, capsys):
    other = make_dataset(tmp_path / "other", domain_docs(np.random.default_rng(5), 12, 4),
                         shard_tokens=256, block_size=16)
    out = tmp_path / "run"
    common = ["--max-steps", "4", "--eval-every", "2"]
    assert train(data, out, *common, "--stop-after", "2") == 0
    assert moe.main(args(other, out, *common, "--resume")) == 2
    assert "--allow-change data," in capsys.readouterr().err
    assert moe.main(args(other, out, *common, "--resume", "--allow-change", "data")) == 0
    (change,) = records(out, "resume")
    old, new = change["changes"]["data"]
    assert old.startswith(f"{data} (fingerprint ") and new.startswith(f"{other} (fingerprint ")
    assert load_checkpoint(out / "ckpt.pt")["data_fingerprint"] == shards.open(other).fingerprint
    assert [r["step"] for r in records(out, "train")] == [1, 2, 3, 4]


# --------------------------------------------------------------------------- checksums


def test_a_flipped_byte_in_a_checkpoint_is_refused(data, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--max-steps", "4", "--eval-every", "2"]
    assert train(data, out, *common, "--stop-after", "2") == 0
    ckpt = out / "ckpt.pt"
    good = ckpt.read_bytes()
    for pos in (len(good) // 3, len(good) // 2, len(good) - 10):  # tensors, pickle, trailer
        bad = bytearray(good)
        bad[pos] ^= 0x01
        ckpt.write_bytes(bytes(bad))
        capsys.readouterr()
        assert train(data, out, *common, "--resume") == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {ckpt}: refused: its sha256 ") and err.count("\n") == 1
        assert "recorded when it was written: the file is damaged" in err
        assert report.main([str(out), "--no-plots", "--max-tokens", "16",
                            "--out", str(tmp_path / "rep")]) == 2
        assert f"{ckpt}: refused: its sha256 " in capsys.readouterr().err
    ckpt.write_bytes(good[:-30])  # truncated: the trailer is gone
    assert train(data, out, *common, "--resume") == 2
    assert "it has no checksum trailer: the file is truncated" in capsys.readouterr().err
    ckpt.write_bytes(good)
    assert train(data, out, *common, "--resume") == 0


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_mid_run_then_resume_gives_the_same_losses(data, tmp_path):
    common = ["--max-steps", "8", "--eval-every", "4", "--grad-accum", "2"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train(data, straight, *common) == 0
    # a real SIGTERM during step 4 (after its first forward pass): the step completes, a
    # checkpoint is written at once (step 4's eval is left to the resumed run), exit 143
    rc, stdout, stderr, _ = subprocess_train(data, split, *common, env={TEST_HOOK_ENV: "4"})
    assert rc == EXIT_PREEMPTED, stderr[-2000:]
    assert "SIGTERM received: checkpoint of step 4 written to" in stdout
    assert "Traceback" not in stderr
    ck = load_checkpoint(split / "ckpt.pt")
    assert ck["step"] == 4 and ck["loop"]["eval_pending"] == 1
    (summary,) = records(split, "summary")
    assert summary["stop_reason"] == "SIGTERM: stopped after step 4"
    assert summary["exit_code"] == EXIT_PREEMPTED
    assert records(split, "train")[-1]["step"] == 4 and not records(split, "eval")
    assert train(data, split, *common, "--resume") == 0
    a, b = records(straight, "train"), records(split, "train")
    assert [r["step"] for r in b] == list(range(1, 9))
    for key in ("lm_loss", "lb_loss", "z_loss", "grad_norm", "lr", "router_noise"):
        assert [r[key] for r in a] == [r[key] for r in b], key  # bit-identical on CPU
    assert [(r["step"], r["loss"]) for r in records(straight, "eval")] == \
        [(r["step"], r["loss"]) for r in records(split, "eval")] != []
    ma, mb = (load_checkpoint(p / "ckpt.pt")["model"] for p in (straight, split))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_sigterm_on_one_ddp_rank_stops_every_rank_at_the_same_step(data, tmp_path):
    # the flag travels with the next read of the step numbers: --log-every 3, SIGTERM on rank 1
    # during step 2, every rank stops after step 3
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(REPO / "train" / "moe.py"), *args(data, out, "--max-steps", "6",
                                                       "--eval-every", "6", "--device", "cpu",
                                                       "--log-every", "3")]
    p = subprocess.run(cmd, env={**os.environ, TEST_HOOK_ENV: "2:1"}, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode != 0, p.stdout[-2000:]  # torchrun reports the workers' exit 143
    assert "SIGTERM received: checkpoint of step 3" in p.stdout, p.stdout[-2000:] + p.stderr
    ck = load_checkpoint(out / "ckpt.pt")
    assert ck["step"] == 3
    assert [r["batches"] for r in ck["sampler"]["ranks"]] == [3, 3]  # both ranks stopped at 3
    assert [r["step"] for r in records(out, "train")] == [1, 2, 3]
    assert records(out, "summary")[0]["stop_reason"] == "SIGTERM: stopped after step 3"
