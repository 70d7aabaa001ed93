"""`shards audit`'s near-duplicate check (`shards.audit_neardup`): planted near-copies straddling
the split are counted exactly, per eval domain with its own train and any train, with
provenance; the result equals a brute-force check (exact Jaccard of shingle sets) on data away
from the threshold; chunk sizes change nothing; damaged documents are left out; a prep-made
dataset reports 0 with the parameters its manifest recorded."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from prep_fixture import manifest, run_prep, write_jsonl, write_recipe
from shards_fixture import make_dataset

import shards
from shards import audit_neardup
from shards.__main__ import main
from shards.audit import audit
from shards.minhash import jaccard, shingle_set

RNG_VOCAB = np.random.default_rng(1)
VOCAB = ["".join(RNG_VOCAB.choice(list("abcdefghijklmnopqrstuvwxyz"), 6)) for _ in range(3000)]


def doc(rng: np.random.Generator, n: int = 120) -> list[str]:
    return [VOCAB[i] for i in rng.integers(0, len(VOCAB), n)]


def near(words: list[str], rng: np.random.Generator, edits: int = 1) -> list[str]:
    """A near-copy: `edits` words replaced (one in 120: exact Jaccard of 5-word shingles 0.92)."""
    out = list(words)
    for k in rng.choice(np.arange(5, len(out) - 5), edits, replace=False):
        out[k] = "zzzzzz"
    return out


def half(words: list[str], rng: np.random.Generator) -> list[str]:
    """Shares its first half with `words`: exact Jaccard ~0.3, never a near-duplicate."""
    return words[:len(words) // 2] + doc(rng, len(words) - len(words) // 2)


def src(split: str, i: int) -> dict:
    return {"file": f"{split}.jsonl", "line": i}


def planted_docs() -> dict:
    """alpha: 30 train, 10 eval; beta: 12 train, 6 eval. Planted: alpha eval 2 ~ alpha train 4;
    alpha eval 5 ~ alpha train 7 and 9 (a family); beta eval 1 ~ alpha train 11 (across
    domains); beta eval 3 ~ beta train 0; halves (Jaccard ~0.3) elsewhere."""
    rng = np.random.default_rng(7)
    at = [doc(rng) for _ in range(30)]
    bt = [doc(rng) for _ in range(12)]
    ae = [doc(rng) for _ in range(10)]
    be = [doc(rng) for _ in range(6)]
    at[9] = at[7] + ["tail"]  # a near-copy of at[7] (one shingle more)
    ae[2] = near(at[4], rng)
    ae[5] = near(at[7], rng)
    be[1] = near(at[11], rng)
    be[3] = near(bt[0], rng)
    ae[7] = half(at[20], rng)
    be[4] = half(bt[5], rng)
    text = " ".join
    return {"alpha": {"train": [(text(w), src("a-train", i)) for i, w in enumerate(at)],
                      "eval": [(text(w), src("a-eval", i)) for i, w in enumerate(ae)]},
            "beta": {"train": [(text(w), src("b-train", i)) for i, w in enumerate(bt)],
                     "eval": [(text(w), src("b-eval", i)) for i, w in enumerate(be)]}}


def brute_force(docs: dict, threshold: float = 0.8) -> set[tuple[str, int, str, int]]:
    """(eval domain, eval doc, train domain, train doc) with exact Jaccard >= threshold; no
    pair of the data may lie near the threshold (where an estimate may differ)."""
    sets = {(d, s): [shingle_set(t, "prose") for t, _ in docs[d][s]] for d in docs
            for s in ("train", "eval")}
    out = set()
    for ed, td in itertools.product(docs, docs):
        for (k, e), (j, t) in itertools.product(enumerate(sets[ed, "eval"]),
                                                enumerate(sets[td, "train"])):
            x = jaccard(e, t)
            assert not 0.6 <= x < 0.85, (ed, k, td, j, x)
            if x >= threshold:
                out.add((ed, k, td, j))
    return out


def found(report: dict) -> set[tuple[str, int, str, int]]:
    return {(d, x["eval"]["doc"], x["train"]["domain"], x["train"]["doc"])
            for d, rec in report["domains"].items()
            for x in rec["near_duplicates"]["examples"]}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    docs = planted_docs()
    return make_dataset(tmp_path_factory.mktemp("nd"), docs, shard_tokens=256), docs


def test_planted_pairs_straddling_the_split_are_counted_exactly(planted) -> None:
    root, docs = planted
    r = audit(shards.open(root), checks=("near_dups",))
    a, b = (r["domains"][d]["near_duplicates"] for d in ("alpha", "beta"))
    assert (a["pairs"], a["eval_docs_with_pair"], a["pairs_any_train"],
            a["eval_docs_with_pair_any_train"]) == (3, 2, 3, 2)
    assert (b["pairs"], b["eval_docs_with_pair"], b["pairs_any_train"],
            b["eval_docs_with_pair_any_train"]) == (1, 1, 2, 2)
    assert (a["eval_docs"], a["eval_docs_signed"], a["damaged_docs"]) == (10, 10, 0)
    assert (a["threshold"], a["shingle"]) == (0.8, "prose")
    assert found(r) == {("alpha", 2, "alpha", 4), ("alpha", 5, "alpha", 7),
                        ("alpha", 5, "alpha", 9), ("beta", 1, "alpha", 11), ("beta", 3, "beta", 0)}
    ex = {(x["eval"]["doc"], x["train"]["doc"]): x for x in a["examples"]}
    assert ex[2, 4]["eval"]["source"] == {"file": "a-eval.jsonl", "line": 2}
    assert ex[2, 4]["train"]["source"] == {"file": "a-train.jsonl", "line": 4}
    assert 0.8 <= ex[2, 4]["jaccard"] <= 1
    assert r["near_duplicates"]["source"] == "defaults" and "no near-duplicate parameters" in \
        r["near_duplicates"]["note"]
    assert "contamination" not in r["domains"]["alpha"] and r["problems"] == []


@pytest.mark.parametrize(("chunk", "batch"), [(7, 1), (64, 500), (1 << 20, 1 << 18)])
def test_equals_brute_force_for_any_chunk_size(planted, chunk, batch, monkeypatch) -> None:
    root, docs = planted
    monkeypatch.setattr(audit_neardup, "EXAMPLES", 1000)  # every pair
    monkeypatch.setattr(audit_neardup, "BATCH_TOKENS", batch)  # documents signed at a time
    r = audit(shards.open(root), checks=("near_dups",), chunk_tokens=chunk)
    want = brute_force(docs)
    assert found(r) == want and len(want) == 5
    for d in docs:
        nd = r["domains"][d]["near_duplicates"]
        assert nd["pairs"] == sum(e == d == t for e, _, t, _ in want)
        assert nd["pairs_any_train"] == sum(e == d for e, _, _, _ in want)
        assert nd["eval_docs_with_pair_any_train"] == len({k for e, k, _, _ in want if e == d})


def test_cli_table_examples_and_checks_option(planted, capsys) -> None:
    root, _ = planted
    assert main(["audit", str(root), "--checks", "near_dups"]) == 0
    out = capsys.readouterr().out
    assert "near-duplicate pairs across the split: MinHash (5-word shingles, 14x8 bands), " \
        "parameters from the defaults" in out
    assert re.search(r"^pairs with own train +3 +1$", out, re.M)
    assert re.search(r"^eval docs with a near-copy in any train +2 +2$", out, re.M)
    assert 'beta: eval doc 1 {"file": "b-eval.jsonl", "line": 1} ~ alpha train doc 11 ' \
        '{"file": "a-train.jsonl", "line": 11}: Jaccard ~0.' in out
    assert "note: the manifest records no near-duplicate parameters" in out
    assert "contamination" not in out and "diversity" not in out
    assert main(["audit", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["domains"]["alpha"]["near_duplicates"]["pairs"] == 3
    assert report["checks"] == ["contamination", "near_dups", "diversity", "artifacts"]


def test_damaged_documents_are_left_out_not_decoded(tmp_path: Path, capsys) -> None:
    docs = planted_docs()
    root = make_dataset(tmp_path, docs, shard_tokens=256)
    sp = shards.open(root).split("alpha", "eval")
    d2 = sp.document(2)  # the eval side of a planted pair
    toks = np.memmap(root / sp.record.shards[d2.shard].path, dtype=np.uint16, mode="r+")
    toks[d2.offset] = 65535
    toks.flush()
    r = audit(shards.open(root), checks=("near_dups",))
    a = r["domains"]["alpha"]["near_duplicates"]
    assert (a["pairs"], a["eval_docs_with_pair"], a["damaged_docs"]) == (2, 1, 1)
    assert len(r["problems"]) == 1 and "65535" in r["problems"][0]
    assert main(["audit", str(root), "--checks", "near_dups"]) == 1
    assert "PROBLEM: " in capsys.readouterr().out


def test_a_prep_dataset_reports_zero_with_its_manifests_parameters(tmp_path: Path) -> None:
    """prep (near-dup on) leaves no pair across the split; with near_dedup off the same corpus
    has some, and the audit finds exactly the brute-force ones."""
    rng = np.random.default_rng(3)
    bases = [doc(rng, 150) for _ in range(60)]
    texts = [" ".join(w) for w in bases] + [" ".join(near(w, rng)) for w in bases[:40]]
    write_jsonl(tmp_path / "d.jsonl", texts)
    for name, keys in (("on", {"near_dedup_threshold": 0.75}), ("off", {"near_dedup": False})):
        recipe = write_recipe(tmp_path / f"{name}.toml", {"alpha": {
            "source": "json", "data_files": ["d.jsonl"], "min_chars": 10, **keys}})
        out = tmp_path / name
        assert run_prep("--recipe", str(recipe), "--out", str(out), "--eval-fraction", "0.3",
                        "--min-eval-docs", "1") == 0
        r = audit(shards.open(out), checks=("near_dups",))
        nd = r["domains"]["alpha"]["near_duplicates"]
        ds = shards.open(out)
        split = {s: [(ds.split("alpha", s).document_text(k), {}) for k in
                     range(ds.split("alpha", s).num_docs)] for s in ("train", "eval")}
        want = brute_force({"alpha": split})
        if name == "on":
            assert r["near_duplicates"]["source"] == "manifest" and r["near_duplicates"][
                "note"] is None
            assert nd["threshold"] == 0.75 and nd["shingle"] == "prose"
            assert nd["pairs"] == nd["pairs_any_train"] == 0 and not want
            assert manifest(out)["domains"]["alpha"]["counts"]["docs_near_duplicates"] == 40
        else:
            assert r["near_duplicates"]["source"] == "defaults"
            assert nd["pairs"] == len(want) >= 5
            assert nd["eval_docs_with_pair"] == len({k for _, k, _, _ in want})
