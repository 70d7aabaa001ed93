"""python -m train.bench --gpu's plumbing, run on CPU (--cpu-smoke): the GPU run must work once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train import bench_loop

REPO = Path(__file__).resolve().parents[1]


def test_cpu_smoke_runs_the_loop_the_bare_step_and_a_baseline_tree(tmp_path):
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, "-m", "train.bench", "--cpu-smoke", "--steps", "21",
                        "--experiments", "moe-top2", "--baseline-tree", str(REPO),
                        "--json", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    lines = p.stdout.splitlines()
    head = next(i for i, x in enumerate(lines) if x.startswith("== training loop vs bare step"))
    assert "preset tiny, B=2, T=32, eager, --log-every 10, 21 steps" in lines[head]
    assert lines[head + 1].split() == ["run", "ms/step", "tokens/s", "MFU", "%", "loop/bare",
                                       "vs", "dense", "vs", "before", "syncs/step"]
    rows = [x.split() for x in lines[head + 2:head + 5]]
    assert [r[:3] for r in rows] == [["moe-top2", "(after)", "loop"],
                                     ["moe-top2", "(after)", "bare"],
                                     ["moe-top2", "(before)", "loop"]]
    assert all(float(r[3]) > 0 for r in rows)
    res = json.loads(out.read_text())
    assert res["settings"]["preset"] == "tiny" and res["env"]["torch"] == torch.__version__
    after, before = res["runs"]
    assert (after["tree"], after["exit"], before["tree"], before["exit"]) == \
        ("after", 0, "before", 0)
    assert after["loop"]["steps"] == before["loop"]["steps"] == 21
    assert after["child"]["exit_code"] == 0 and after["child"]["log_every"] == 10
    bare = after["child"]["bare"]
    assert bare["steps"] == 20 and bare["ms_per_step"] > 0
    prof = after["child"]["profile"]
    assert prof["sorted_by"] == "cpu_ms" and len(prof["top"]) == 30
    assert any(r["op"] == "aten::bmm" for r in prof["top"])  # the experts' padded matmuls
    assert len(prof["ops"]) == prof["n_ops"] > 30  # every op by name, not only the top 30
    assert prof["ops"][:30] == prof["top"]
    # the MoE layer alone, eager, with ranges around its parts and the backward per node
    moe = after["child"]["moe_profile"]
    assert (moe["shape"], moe["top_k"], moe["impl"]) == ([2, 32, 128], 2, "auto")
    assert set(moe["phases"]) == {"moe.forward", "moe.backward", "moe.router", "moe.experts"}
    assert all(moe["phases"][p]["count"] == 1 for p in moe["phases"])
    assert moe["phases"]["moe.forward"]["cpu_ms"] > moe["phases"]["moe.experts"]["cpu_ms"] > 0
    ops = {r["op"] for r in moe["ops"]}
    assert "autograd::engine::evaluate_function: _GatherRowsBackward" in ops
    assert "aten::argsort" not in ops and "aten::topk" not in ops
    # the "after" loop read the device every 10 steps: one dt_s per interval
    dts = after["loop"]["dt_s"]
    assert dts[:10] == [dts[0]] * 10 and dts[10:20] == [dts[10]] * 10 and len(set(dts)) <= 3
    assert len(set(before["loop"]["dt_s"])) > 3  # the same loop timed step by step


def test_a_failed_run_is_a_row_saying_so():
    s = bench_loop.CPU_SMOKE
    ok = {"name": "dense", "experiment": "dense", "tree": "after", "exit": 0,
          "loop": {"ms_per_step": 20.0, "tokens_per_s": 3200.0, "mfu": None},
          "child": {"bare": {"ms_per_step": 19.0, "tokens_per_s": 3368.4, "mfu": None},
                    "syncs_per_step": {str(k): int(k % 10 == 0) for k in range(1, 31)}}}
    failed = {"name": "moe-top2", "experiment": "moe-top2", "tree": "after",
              "exit": "timed out after 200 s"}
    rows = bench_loop.table_rows([ok, failed], s)
    assert rows[0] == ["dense loop", "20.0", "3,200", "-", "1.053", "1.000", "-",
                       "0 (1 at a read)"]
    assert rows[1][:2] == ["dense bare", "19.0"]
    assert rows[2][:2] == ["moe-top2 loop", "failed: timed out after 200 s"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_mode_without_a_gpu_says_so(capsys):
    assert bench_loop.main(["--gpu"]) == 2
    assert capsys.readouterr().err == ("error: --gpu: no CUDA device here; use --cpu-smoke to "
                                       "try the benchmark on CPU\n")
