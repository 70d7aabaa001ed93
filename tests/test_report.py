"""The specialization report: measures on hand-computed toys, token types, the format test's
verdict on routers built to key on format or on content, and the CLI end to end."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from shards_fixture import domain_docs, make_dataset

from shards.tokenizer import load_gpt2
from train import moe, report
from train.report import specialization as sp
from train.report.format_test import (
    TRANSFORMS,
    FormatTransform,
    decide,
    encode_pair,
    run_format_test,
    transforms_for,
)
from train.report.token_types import bpe_token_types, char_types, type_names


@pytest.fixture(scope="module")
def enc():
    return load_gpt2()


# --------------------------------------------------------------------------- measures


def test_fractions_mi_entropy_on_a_toy_assignment():
    domain = np.array([0, 0, 0, 1, 1, 1])
    topk = np.array([[0], [0], [1], [1], [1], [1]])
    counts = sp.assignment_counts(domain, topk, 2, 2)
    assert counts.tolist() == [[2, 1], [0, 3]]
    np.testing.assert_allclose(sp.routing_fractions(counts), [[2 / 3, 1 / 3], [0, 1]])
    e, share = sp.top_expert_share(counts)
    assert e.tolist() == [0, 1]
    np.testing.assert_allclose(share, [2 / 3, 1.0])
    # I = 1/3 log2 2 + 1/6 log2 1/2 + 1/2 log2 3/2
    assert sp.mutual_information(counts) == pytest.approx(1 / 6 + 0.5 * math.log2(1.5))
    assert sp.mutual_information([[5, 0, 0], [0, 5, 0], [0, 0, 5]]) == pytest.approx(math.log2(3))
    assert sp.mutual_information([[2, 2], [3, 3]]) == pytest.approx(0.0, abs=1e-12)
    assert sp.mutual_information(np.zeros((2, 2))) == 0.0
    probs = np.array([[0.5, 0.5, 0, 0], [1, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(sp.entropy_bits(probs), [1.0, 0.0, 2.0])
    assert sp.router_entropy(probs) == pytest.approx(1.0)


def test_topk_shares_load_coactivation_saturation_vocab():
    domain = np.array([0, 0, 1])
    topk = np.array([[0, 1], [0, 2], [1, 2]])
    ck = sp.assignment_counts(domain, topk, 2, 3, top1=False)
    assert ck.tolist() == [[2, 1, 1], [0, 1, 1]]
    # rows sum to k = 2 when divided by the domain's token count
    np.testing.assert_allclose(sp.routing_fractions(ck, np.array([2, 1])),
                               [[1.0, 0.5, 0.5], [0, 1, 1]])
    np.testing.assert_allclose(sp.expert_load(topk, 3), [2 / 6, 2 / 6, 2 / 6])
    assert sp.max_load_violation(np.array([[0], [0], [0], [1]]), 2) == pytest.approx(1.5)
    co = sp.coactivation(topk, 3)
    np.testing.assert_allclose(co, [[1, 0.5, 0.5], [0.5, 1, 0.5], [0.5, 0.5, 1]])
    assert sp.saturation(np.array([[0, 1], [2, 3]]), np.array([[1, 0], [2, 0]])) == 0.75
    assert sp.saturation(np.array([[3], [1]]), np.array([[3], [2]])) == 0.5
    with pytest.raises(ValueError, match="shapes differ"):
        sp.saturation(np.zeros((2, 1)), np.zeros((3, 1)))
    tok = np.array([5, 5, 5, 5, 7, 7, 7, 7, 9])
    ex = np.array([[0], [0], [0], [1], [1], [1], [1], [1], [0]])
    v = sp.vocab_specialization(tok, ex, 2, min_count=2)
    assert v["token_ids"] == 2 and v["occurrences"] == 8  # id 9 seen once: left out
    assert v["score"] == pytest.approx((3 + 4) / 8)
    assert v["per_expert"] == [pytest.approx(0.75), pytest.approx(1.0)]
    assert v["baseline"] == 0.5
    assert sp.tv_distance([1, 0, 0], [0, 1, 0]) == 1.0
    assert sp.tv_distance([2, 2], [1, 3]) == pytest.approx(0.25)
    mi = sp.mi_from_fractions({"a": [1.0, 0.0], "b": [0.0, 1.0]}, {"a": 3, "b": 3})
    assert mi == pytest.approx(1.0)


# --------------------------------------------------------------------------- token types


def test_token_types_of_a_code_snippet(enc):
    src = 'def f(x):\n    # add one\n    return x + 1.5\ns = "hi there"\nif True: pass\n'
    ids = enc.encode_ordinary(src)
    text, types = bpe_token_types(enc, ids)
    assert text == src
    got = [(enc.decode([i]), t) for i, t in zip(ids, type_names(types), strict=True)
           if enc.decode([i]).strip()]
    assert got == [
        ("def", "keyword"), (" f", "name"), ("(", "operator"), ("x", "name"),
        ("):", "operator"), (" #", "comment"), (" add", "comment"), (" one", "comment"),
        (" return", "keyword"), (" x", "name"), (" +", "operator"), (" 1", "number"),
        (".", "number"), ("5", "number"), ("s", "name"), (" =", "operator"),
        (' "', "string"), ("hi", "string"), (" there", "string"), ('"', "string"),
        ("if", "keyword"), (" True", "keyword"), (":", "operator"), (" pass", "keyword"),
    ]
    ws = [t for i, t in zip(ids, type_names(types), strict=True) if not enc.decode([i]).strip()]
    assert ws and set(ws) == {"whitespace"}


def test_token_types_of_broken_code_keep_the_readable_part():
    types = type_names(char_types('x = 1\ny = "unterminated\n'))
    assert types[0] == "name" and types[4] == "number"
    assert types[6] == "name"  # 'y' read before the error
    assert "other" in types  # the unterminated string could not be classified


# --------------------------------------------------------------------------- format test

E = 4


class FakeRouterModel(torch.nn.Module):
    """The GPT routing interface (``moe_layer_ids``, ``forward(..., return_routing=True)``) with
    a hand-written top-1 router. ``key_ids`` given: once one of those tokens has occurred, every
    later token goes to expert E-1 (a router keyed on a format prefix); otherwise (and with no
    keys) a token goes to expert ``id % (E - 1)`` (a router keyed on content)."""

    def __init__(self, key_ids: set[int] | None = None) -> None:
        super().__init__()
        self.key_ids = sorted(key_ids or ())
        self.moe_layer_ids = [2]

    def forward(self, idx, targets=None, *, return_routing=False):
        experts = idx % (E - 1)
        if self.key_ids:
            hit = torch.isin(idx, torch.tensor(self.key_ids)).long().cummax(dim=1).values
            experts = torch.where(hit.bool(), torch.full_like(idx, E - 1), experts)
        return SimpleNamespace(routing=[experts.unsqueeze(-1)], router_probs=None)


DOCS = {
    "code": ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i * 2)\n",
             "import os\nx = os.path.join('a', 'b')\n"],
    "math": ["a train travels 60 km in 2 hours . find its speed .\n\nspeed = 60 / 2 = 30 km / h",
             "compute 7 * 8 .\n\n7 * 8 = 56 . answer : 56"],
    "prose": ["The river flows through the old town and past the mill.",
              "Music and film were the city's main exports during the war years."],
}


def _prefix_keys(enc) -> set[int]:
    return {enc.encode_ordinary(w)[0] for w in ("what", "```", "Problem", '"')}


def test_format_test_verdict_format_for_a_prefix_keyed_router(enc):
    res = run_format_test(FakeRouterModel(_prefix_keys(enc)), enc, DOCS, n_experts=E,
                          block_size=64)
    assert [(s["domain"], s["transform"]) for s in res.shifts] == [
        ("code", "code-as-math"), ("code", "code-fence"), ("math", "problem-solution"),
        ("prose", "leading-quote")]
    assert all(s["mean_tv"] == 1.0 for s in res.shifts)  # all content moved to expert E-1
    assert res.mean_format_shift == 1.0
    assert 0 < res.mean_domain_distance < 1.0
    assert res.verdict == "format"
    assert res.verdict_line.startswith("verdict: FORMAT drives routing")
    assert "0.5 x domain distance" in res.verdict_line


def test_format_test_verdict_content_for_a_content_keyed_router(enc):
    res = run_format_test(FakeRouterModel(), enc, DOCS, n_experts=E, block_size=64)
    assert res.mean_format_shift == 0.0
    assert all(p["changed_share"] == 0.0 for s in res.shifts for p in s["layers"])
    assert res.mean_domain_distance > 0.05
    assert res.verdict == "content"
    assert res.verdict_line.startswith("verdict: CONTENT drives routing")
    # the same content tokens were counted in both variants
    assert sum(s["content_tokens"] for s in res.shifts) > 50


def test_format_rule_and_pair_encoding(enc):
    assert decide(0.2, 0.4, 0.5) == ("format", 0.5)
    assert decide(0.19, 0.4, 0.5) == ("content", pytest.approx(0.475))
    assert decide(0.0, 0.0, 0.5) == ("content", None)
    base, var = [("hello world again", True)], [("Problem: ", False), ("hello world again", True)]
    ib, mb, iv, mv = encode_pair(enc, base, var, max_len=4)
    assert len(iv) <= 4 and ib[mb].tolist() == iv[mv].tolist()
    assert ib[mb].tolist() == enc.encode_ordinary("hello world again")[:len(ib[mb])]
    assert not mv[:len(enc.encode_ordinary("Problem: "))].any()
    bad = FormatTransform("bad", "x", "changes content", lambda t: ([(t, True)], [(t + "!", True)]))
    with pytest.raises(ValueError, match="changed the content"):
        run_format_test(FakeRouterModel(), enc, {"x": ["abc"]}, n_experts=E, block_size=16,
                        transforms=[bad])
    assert [t.name for _, t in transforms_for(["prose", "wiki"])] == ["leading-quote"] * 2
    quote = next(t for t in TRANSFORMS if t.name == "leading-quote")
    assert quote.apply('"Hi" he said') == ([('"', False), ('Hi" he said', True)],
                                           [('Hi" he said', True)])


# --------------------------------------------------------------------------- the CLI

SMALL = ["--preset", "tiny", "--block-size", "16", "--batch-size", "2", "--warmup", "2",
         "--lr", "3e-3", "--moe-layers", "1,3", "--eval-batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("report")
    docs = domain_docs(np.random.default_rng(0), 20, 4)
    data = make_dataset(tmp, docs, shard_tokens=256, block_size=16)
    top2, dense = tmp / "top2", tmp / "dense"
    common = ["--data", str(data), "--max-steps", "4", "--eval-every", "2", *SMALL]
    assert moe.main(["--out", str(top2), "--experiment", "moe-top2", "--stop-after", "2",
                     *common]) == 0
    shutil.copy(top2 / "ckpt.pt", top2 / "ckpt_000002.pt")
    assert moe.main(["--out", str(top2), "--experiment", "moe-top2", "--resume", *common]) == 0
    assert moe.main(["--out", str(dense), "--experiment", "dense",
                     *[a for a in common if a not in ("--moe-layers", "1,3")]]) == 0
    return data, top2, dense


def test_cli_writes_the_whole_report(runs, tmp_path, capsys):
    data, top2, dense = runs
    out = tmp_path / "rep"
    rc = report.main([str(top2), "--compare", str(dense), "--max-tokens", "64", "--out",
                      str(out), "--dpi", "40"])
    assert rc == 0, capsys.readouterr().err
    assert "verdict:" in capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    assert rep["layers"] == [1, 3] and rep["n_experts"] == 8 and rep["top_k"] == 2
    assert rep["domains"] == ["code", "math", "prose"]
    assert rep["eval_tokens"] == {"code": 64, "math": 64, "prose": 64}
    for rec in rep["specialization"]:
        np.testing.assert_allclose(np.sum(rec["fractions_top1"], axis=1), 1.0)
        np.testing.assert_allclose(np.sum(rec["fractions_topk"], axis=1), 2.0)
        assert 0 <= rec["mi_bits"] <= rec["mi_max_bits"] == pytest.approx(math.log2(3))
        assert rec["coactivation"] is not None and rec["max_load_violation"] >= 1.0
    assert len(rep["causal"]) == 2 * 3  # layers x domains
    c = rep["causal"][0]
    assert set(c["top2_experts"]).isdisjoint(c["random2_experts"])
    assert [s["step"] for s in rep["saturation"]] == [2]
    assert all(0 <= x["overlap"] <= 1 for x in rep["saturation"][0]["layers"])
    assert rep["token_types"]["tokens"] > 0
    ft = rep["format_test"]
    counted = [x["mean_tv"] for x in ft["shifts"] if x["content_tokens"]]
    assert counted and ft["mean_format_shift"] == pytest.approx(np.mean(counted))
    assert ft["mean_domain_distance"] == pytest.approx(
        np.mean([np.mean(v) for v in ft["domain_distance"].values()]))
    assert ft["mean_domain_distance"] > 0  # trained routers: domains do not route alike
    verdict = ("format" if ft["mean_format_shift"] >= 0.5 * ft["mean_domain_distance"]
               else "content")
    assert ft["verdict"] == verdict and ft["verdict_line"].startswith(
        f"verdict: {verdict.upper()} drives routing")
    assert rep["data_check"]["level"] == "full" and rep["data_check"]["problems"] == []
    assert set(rep["curves"]["runs"]) == {"moe-top2", "dense"}
    assert rep["curves"]["step_matched"] and rep["curves"]["common_step"] == 4
    md = (out / "report.md").read_text()
    for name in rep["figures"]["fractions"] + rep["figures"]["curves"]:
        assert (out / name).is_file() and f"]({name})" in md
    assert "fractions_top2_layer3.png" in rep["figures"]["fractions"]
    assert "## Format-artifact test" in md and "Router saturation" in md


def test_cli_dense_run_and_errors(runs, tmp_path, capsys):
    data, top2, dense = runs
    assert report.main([str(dense), "--max-tokens", "32", "--out", str(tmp_path / "d"),
                        "--no-plots"]) == 0
    md = (tmp_path / "d" / "report.md").read_text()
    assert "dense model (no MoE layers)" in md and "## Routing fractions" not in md
    # the report checks the data like the loop: a damaged shard is refused, --skip-verify not
    damaged = Path(shutil.copytree(data, tmp_path / "damaged"))
    shard = damaged / "math/eval/shard_00000.bin"
    toks = np.fromfile(shard, dtype="<u2")
    orig = int(toks[3])
    toks[3] = 50300
    toks.tofile(shard)
    capsys.readouterr()
    assert report.main([str(dense), "--data", str(damaged), "--max-tokens", "32", "--out",
                        str(tmp_path / "x"), "--no-plots"]) == 2
    assert f"error: {shard}: 1 token id(s) >= vocab size 50257 (first at token offset 3: " \
           "50300)" in capsys.readouterr().err
    toks[3] = 1 if orig != 1 else 2
    toks.tofile(shard)  # a wrong sha256 only a hash sees: --skip-verify does not hash
    assert report.main([str(dense), "--data", str(damaged), "--max-tokens", "32", "--out",
                        str(tmp_path / "y"), "--no-plots", "--skip-verify"]) == 0
    assert json.loads((tmp_path / "y" / "report.json").read_text())["data_check"]["level"] == \
        "sizes"
    assert report.main([str(tmp_path / "nowhere")]) == 2
    assert "no metrics here" in capsys.readouterr().err
    assert report.main([str(top2), "--max-tokens", "0"]) == 2
    assert "--max-tokens must be >= 1" in capsys.readouterr().err
    assert report.main([str(top2), "--max-tokens", "16", "--no-plots", "--no-causal",
                        "--out", str(tmp_path / "e"), "--early-ckpt",
                        str(dense / "ckpt.pt")]) == 2
    err = capsys.readouterr().err
    assert "model config differs" in err and "n_experts" in err


def test_missing_matplotlib_is_a_clear_error(monkeypatch):
    import sys

    from train.report import plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(plots.PlotError, match=r"moe-shards\[report\].*--no-plots"):
        plots.pyplot()
