"""train/moe.py: the training loop on CPU, in-process and under torchrun (gloo DDP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from shards_fixture import domain_docs, make_dataset
from train_fixture import poison_from

import shards
from shards.format import Manifest
from train import moe, report
from train.checkpoint import load_checkpoint
from train.config import EXPERIMENTS, TrainConfig, TrainError, build_parser, parse_args
from train.eval_data import EvalSet
from train.evaluation import Evaluation, evaluate
from train.loop import EXIT_NONFINITE
from train.mfu import peak_flops
from train.model import GPT, GPTConfig
from train.schedule import lr_at, router_noise_at

REPO = Path(__file__).resolve().parents[1]
# a very small model on a 16-token context; MoE in layer 1 with 4 experts
SMALL = ["--preset", "tiny", "--block-size", "16", "--batch-size", "2", "--warmup", "2",
         "--lr", "3e-3", "--n-experts", "4", "--moe-layers", "1", "--eval-batch-size", "8"]


def _docs(seed: int) -> dict:
    return domain_docs(np.random.default_rng(seed), 30, 4)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("loop"), _docs(0), shard_tokens=256,
                        block_size=16)


@pytest.fixture(scope="module")
def other_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("loop2"), _docs(1), shard_tokens=256,
                        block_size=16)


def records(out: Path, kind: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def train(data: Path, out: Path, *extra: str) -> int:
    return moe.main(["--data", str(data), "--out", str(out), *SMALL, *extra])


def test_resume_gives_the_same_run(data, tmp_path):
    # stop after step 2 of 8: router noise (annealed over steps 0-2) is still on at step 2,
    # so the RNG states as well as the model, optimizer and sampler must survive the restart
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["--max-steps", "8", "--eval-every", "8", "--grad-accum", "2"]
    assert train(data, straight, *common) == 0
    assert train(data, split, *common, "--stop-after", "1") == 0
    assert load_checkpoint(split / "ckpt.pt")["step"] == 1
    assert records(split, "summary")[-1]["stop_reason"] == "stop-after 1"
    assert train(data, split, *common, "--resume") == 0
    a, b = records(straight, "train"), records(split, "train")
    assert b[1]["router_noise"] > 0
    assert [r["step"] for r in b] == list(range(1, 9))  # records past the checkpoint dropped
    for ra, rb in zip(a, b, strict=True):
        assert ra["lm_loss"] == pytest.approx(rb["lm_loss"], abs=1e-6)
        assert ra["lb_loss"] == pytest.approx(rb["lb_loss"], abs=1e-6)
    ea, eb = records(straight, "eval")[-1], records(split, "eval")[-1]
    assert ea["step"] == eb["step"] == 8
    assert ea["loss_macro"] == pytest.approx(eb["loss_macro"], abs=1e-6)
    assert len(records(split, "summary")) == 1


def test_keep_ckpt_every_keeps_step_copies(data, tmp_path):
    out = tmp_path / "run"
    assert train(data, out, "--max-steps", "4", "--eval-every", "1", "--keep-ckpt-every", "2") == 0
    kept = sorted(p.name for p in out.glob("ckpt_*.pt"))
    assert kept == ["ckpt_000002.pt", "ckpt_000004.pt"]
    assert load_checkpoint(out / "ckpt_000002.pt")["step"] == 2
    assert load_checkpoint(out / "ckpt_000004.pt")["step"] == 4
    assert train(data, out, "--max-steps", "1", "--overwrite") == 0
    assert not list(out.glob("ckpt_*.pt"))  # the old run's copies go with --overwrite


def test_eval_and_train_records(data, tmp_path):
    out = tmp_path / "run"
    assert train(data, out, "--max-steps", "2", "--eval-every", "2") == 0
    tr = records(out, "train")
    assert [r["step"] for r in tr] == [1, 2]
    assert tr[0]["lr"] == pytest.approx(1.5e-3) and tr[0]["router_noise"] == pytest.approx(0.1)
    assert tr[0]["mfu"] is None  # CPU: no MFU
    ev = records(out, "eval")[-1]
    assert set(ev["loss"]) == {"code", "math", "prose"}
    assert ev["loss_macro"] == pytest.approx(sum(ev["loss"].values()) / 3)
    blocks = [sum((n - 1) // 16 for n in (s.tokens for s in _shard_records(data, d)))
              for d in ("code", "math", "prose")]
    assert list(ev["blocks"].values()) == blocks  # every eval block scored
    (layer,) = ev["layers"]
    assert layer["layer"] == 1
    for fr in layer["fractions"].values():
        assert len(fr) == 4 and sum(fr) == pytest.approx(1.0)
    assert sum(layer["load"]) == pytest.approx(1.0)
    assert layer["imbalance"] == pytest.approx(max(layer["load"]) / 0.25)
    assert 0 < layer["entropy"] <= np.log(4) + 1e-6
    ck = load_checkpoint(out / "ckpt.pt")
    assert ck["step"] == 2 and ck["model_config"]["n_experts"] == 4
    assert ck["sampler"]["world_size"] == 1 and ck["sampler"]["ranks"][0]["batches"] == 2


def _shard_records(data: Path, domain: str):
    return Manifest.load(data / "manifest.json").domains[domain].splits["eval"].shards


def test_refuses_existing_checkpoint_and_mismatches(data, other_data, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--max-steps", "2", "--eval-every", "1"]
    assert train(data, out, *common, "--stop-after", "1") == 0
    capsys.readouterr()
    assert train(data, out, *common) == 2
    assert "holds an earlier run (metrics.jsonl, ckpt.pt); pass --resume" in \
        capsys.readouterr().err
    assert train(other_data, out, *common, "--resume") == 2
    err = capsys.readouterr().err
    assert f"trained with other options (data: '{data} (fingerprint " in err
    assert f"'{other_data} (fingerprint " in err and "--allow-change data," in err
    other_model = ["--data", str(data), "--out", str(out), *SMALL[:-2], "--n-experts", "2",
                   "--moe-layers", "1", *common, "--resume"]
    assert moe.main(other_model) == 2
    err = capsys.readouterr().err
    assert "trained with other options (n_experts: 4 in the checkpoint, 2 now)" in err
    assert moe.main([*other_model, "--allow-change", "n_experts"]) == 2  # shapes cannot change
    err = capsys.readouterr().err
    assert "different model config (n_experts: 4 in the checkpoint, 2 now)" in err
    assert train(data, out, *common, "--overwrite") == 0


def test_dense_has_no_router(data, tmp_path):
    out = tmp_path / "dense"
    args = [a for a in SMALL if a not in ("--n-experts", "4", "--moe-layers", "1")]
    assert moe.main(["--data", str(data), "--out", str(out), *args, "--experiment", "dense",
                     "--max-steps", "2", "--eval-every", "2"]) == 0
    ck = load_checkpoint(out / "ckpt.pt")
    assert ck["model_config"]["n_experts"] == 0
    assert not [k for k in ck["model"] if "router" in k or "expert" in k]
    assert records(out, "eval")[-1]["layers"] == []
    assert all(r["lb_loss"] == 0 and r["z_loss"] == 0 for r in records(out, "train"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    poison_from(monkeypatch, 4)  # the 4th optimizer step (1 micro-batch per step)
    out = tmp_path / "nan"
    assert train(data, out, "--max-steps", "6", "--eval-every", "2",
                 "--eval-max-blocks", "2") == EXIT_NONFINITE
    assert load_checkpoint(out / "ckpt.pt")["step"] == 2
    summary = records(out, "summary")[-1]
    assert summary["stop_reason"] == "non-finite loss at step 4"
    assert summary["exit_code"] == EXIT_NONFINITE
    assert "non-finite loss at step 4" in records(out, "warning")[-1]["message"]


def test_stop_on_collapse_reason_in_summary(data, tmp_path, monkeypatch):
    real = Evaluation.record

    def collapsed(self):
        res = real(self)
        for lay in res["layers"]:
            lay.update(collapsed=True, top_expert=2, top_share=0.9)
        return res

    monkeypatch.setattr(Evaluation, "record", collapsed)
    out = tmp_path / "collapse"
    assert train(data, out, "--max-steps", "10", "--eval-every", "1", "--eval-max-blocks", "2",
                 "--stop-on-collapse") == 0
    summary = records(out, "summary")[-1]
    assert summary["step"] == 3
    assert summary["stop_reason"].startswith("collapse:") and "layer 1 expert 2 90%" in \
        summary["stop_reason"]
    assert len(records(out, "warning")) == 3
    # the streak is part of the checkpoint: 2 collapsed evals, stop, resume, 1 more ends it
    out = tmp_path / "collapse-resumed"
    common = ["--max-steps", "10", "--eval-every", "1", "--eval-max-blocks", "2",
              "--stop-on-collapse"]
    assert train(data, out, *common, "--stop-after", "2") == 0
    assert train(data, out, *common, "--resume") == 0
    summary = records(out, "summary")[-1]
    assert summary["step"] == 3 and summary["stop_reason"].startswith("collapse:")
    assert summary["collapse_warnings"] == 3


def test_experiments_differ_only_where_they_should(tmp_path):
    base = ["--data", "d", "--out", "o"]
    cfgs = {e: parse_args([*base, "--experiment", e]) for e in EXPERIMENTS}
    assert cfgs["dense"].overrides() == {"n_experts": 0, "top_k": 1, "lb_coef": 0.01}
    a, b = cfgs["moe-top1"].overrides(), cfgs["moe-top1-nolb"].overrides()
    assert {k for k in a if a[k] != b[k]} == {"lb_coef"} and b["lb_coef"] == 0.0
    assert cfgs["moe-top2"].overrides()["top_k"] == 2
    with pytest.raises(TrainError, match="sets --top-k 1; drop --top-k 2"):
        parse_args([*base, "--experiment", "moe-top1", "--top-k", "2"])


def test_help_explains_every_flag():
    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        assert action.help, action.option_strings
    for flag in ("--data", "--out", "--preset", "--max-steps", "--batch-size", "--grad-accum",
                 "--lr", "--warmup", "--eval-every", "--seed", "--resume", "--compile",
                 "--device", "--n-experts", "--top-k", "--moe-layers", "--lb-coef", "--z-coef",
                 "--router-noise", "--init-from", "--domain-weights", "--block-size",
                 "--stop-on-collapse", "--eval-max-blocks", "--experiment", "--overwrite",
                 "--skip-verify", "--allow-change"):
        assert flag in text
    assert "more than 60% of a MoE layer" in text.replace("\n", " ").replace("  ", " ")


def test_cli_is_derived_from_the_config_dataclasses():
    # every field is a flag whose default is the dataclass's own (written once)
    assert parse_args(["--data", "d", "--out", "o"]) == TrainConfig(data="d", out="o")
    flags = {a.dest for a in build_parser()._actions} - {"help"}
    assert flags == {f.name for f in fields(TrainConfig)}
    cfg = parse_args(["--data", "d", "--out", "o", "--moe-layers", "2,3", "--resume",
                      "--allow-change", "lr", "seed"])
    assert cfg.moe_layers == [2, 3] and cfg.allow_change == ["lr", "seed"]
    assert report.parse_args(["run"]) == report.ReportConfig(run_dir="run")
    assert report.parse_args(["run", "--early-ckpt", "a", "--early-ckpt", "b", "--compare",
                              "x", "y"]).early_ckpt == ["a", "b"]
    assert {a.dest for a in report.build_parser()._actions} - {"help"} == \
        {f.name for f in fields(report.ReportConfig)}


def test_schedule_and_peaks():
    cfg = parse_args(["--data", "d", "--out", "o", "--max-steps", "100", "--warmup", "10",
                          "--lr", "1e-3"])
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx(0.55e-3)
    assert lr_at(100, cfg) == pytest.approx(1e-4)
    assert router_noise_at(0, cfg, 0.1) == pytest.approx(0.1)
    assert router_noise_at(10, cfg, 0.1) == pytest.approx(0.06)
    assert router_noise_at(25, cfg, 0.1) == 0.0
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("Tesla T4") is None


def test_ddp_two_processes_gloo(data, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(REPO / "train" / "moe.py"), "--data", str(data), "--out", str(out),
           *SMALL, "--max-steps", "3", "--eval-every", "3", "--device", "cpu"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert [r["step"] for r in records(out, "train")] == [1, 2, 3]  # rank 0 alone writes
    summary = records(out, "summary")[-1]
    assert summary["world_size"] == 2 and summary["stop_reason"] == "max-steps"
    ck = load_checkpoint(out / "ckpt.pt")
    ranks = ck["sampler"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["batches"] == 3 for r in ranks)
    assert ranks[0]["state"] != ranks[1]["state"]
    # the DDP eval (blocks dealt to 2 ranks, sums all-reduced) equals a 1-process eval
    cfg = GPTConfig(**{k: tuple(v) if k == "moe_layers" and v is not None else v
                       for k, v in ck["model_config"].items()})
    model = GPT(cfg)
    model.load_state_dict(ck["model"])
    ev = EvalSet(shards.open(data), block_size=16, batch_size=8)
    res = evaluate(model, ev, ctx=torch.autocast("cpu", enabled=False)).record()
    ddp_eval = records(out, "eval")[-1]
    assert res["loss_macro"] == pytest.approx(ddp_eval["loss_macro"], abs=1e-5)
    assert res["layers"][0]["load"] == pytest.approx(ddp_eval["layers"][0]["load"], abs=1e-9)
