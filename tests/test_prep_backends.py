"""prep with each encoder backend: byte-identical output, resume across backends, the sampled
check failing a task, the flag and the recipe key (the backends themselves: test_encoders.py)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from prep_fixture import data_files, manifest, random_doc, run_prep, same_dataset, write_recipe
from test_encoders import WrongOn, installed
from test_prep_faults import prep_cli, work_dir

import shards.tokenizer as tok
from prep.config import config_from_args
from prep.plan import make_plan
from prep.recipe import RecipeError, parse_recipe
from shards import codepoints, conformance
from shards.encoders import Backend
from shards.format import MANIFEST_NAME

CORPUS_FILES = 4
OPTS = ("--workers", "2", "--partition-mb", "0.15", "--interleave", "2", "--min-eval-docs", "1")
CHECK = ("--tokenizer-check-every", "8")
FAST = ("gigatoken", "fastokens")


@pytest.fixture(scope="module")
def unicode_recipe(tmp_path_factory):
    """The conformance corpus's texts as documents (the multi-MB line too), documents holding
    the code points the fast backends class unlike tiktoken, and plain ones, in three files."""
    root = tmp_path_factory.mktemp("unicode")
    texts = [t for _, t in conformance.load_corpus().texts()]
    rng = random.Random(7)
    texts += [f"{random_doc(rng)} \u180e{i} \U000323b0's {i}\u088f" for i in range(40)]
    texts += [random_doc(rng) for _ in range(300)]
    rng.shuffle(texts)
    files = []
    for k in range(3):
        path = root / f"u{k}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for t in texts[k::3]:
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        files.append(path.name)
    return write_recipe(root / "recipe.toml", {"uni": {
        "source": "json", "data_files": files, "min_chars": 1, "max_chars": 10**8}},
        seed=5, block_size=16)


@pytest.fixture(scope="module")
def tiktoken_runs(corpus, unicode_recipe, tmp_path_factory):
    """Each corpus prepared with the reference encoder."""
    out = {}
    for name, recipe in (("corpus", corpus), ("unicode", unicode_recipe)):
        out[name] = tmp_path_factory.mktemp(f"tiktoken-{name}") / "out"
        assert run_prep("--recipe", str(recipe), "--out", str(out[name]), *OPTS,
                        "--tokenizer-backend", "tiktoken") == 0
    return out


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("which", ["corpus", "unicode"])
def test_a_fast_backend_writes_byte_identical_output(corpus, unicode_recipe, tiktoken_runs,
                                                     tmp_path, backend, which):
    installed(backend)
    recipe = corpus if which == "corpus" else unicode_recipe
    out = tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(out), *OPTS, *CHECK,
                    "--tokenizer-backend", backend) == 0
    same_dataset(out, tiktoken_runs[which])
    rec = manifest(out)["run"]["tokenizer"]
    (label, tasks), = rec["tasks_by_encoder"].items()
    assert label.startswith(f"{backend} ") and rec["chosen"] == label
    assert tasks == sum(len(d["partitions"]) for d in manifest(out)["domains"].values())
    assert rec["requested"] == backend and rec["check_every"] == 8 and rec["docs_checked"] > 0
    if which == "unicode":  # the 40 documents holding a divergent code point, and the corpus's
        assert rec["docs_by_tiktoken"] >= (40 if backend == "gigatoken" else 43)
    ref = manifest(tiktoken_runs[which])["run"]["tokenizer"]
    assert ref["tasks_by_encoder"] == {tok.reference_encoder().label: tasks}
    assert ref["docs_checked"] == 0  # tiktoken's ids are the reference: nothing to re-encode


def test_a_resumed_run_that_switches_backend_equals_a_straight_one(corpus, tiktoken_runs,
                                                                   tmp_path):
    installed("gigatoken")
    out = tmp_path / "out"
    r = prep_cli("--recipe", str(corpus), "--out", str(out), *OPTS, "--tokenizer-backend",
                 "tiktoken", kill_at="after-task:3")
    assert r.returncode == -9, r.stderr
    assert len([p for p in (work_dir(out) / "tasks").iterdir() if not p.name.startswith(".")]
               ) >= 3
    assert run_prep("--recipe", str(corpus), "--out", str(out), *OPTS, "--resume",
                    "--tokenizer-backend", "gigatoken") == 0
    same_dataset(out, tiktoken_runs["corpus"])
    m = manifest(out)
    assert m["run"]["tasks_reused"] >= 3
    labels = sorted(k.split()[0] for k in m["run"]["tokenizer"]["tasks_by_encoder"])
    assert labels == ["gigatoken", "tiktoken"]  # each task's ids by one, the same bytes
    assert m["config"]["tokenizer_backend"] == "gigatoken"


@pytest.fixture
def fake_gigatoken(monkeypatch):
    """`gigatoken` is a fake that is wrong on documents holding "zebra-marker" (never in the
    conformance corpus, so it passes the check a worker runs when it loads it)."""
    fake = Backend("gigatoken", "json", "gigatoken>=0.10",
                   lambda ranks, eot, pat: WrongOn("zebra-marker"))
    tok._chosen.cache_clear()
    monkeypatch.setattr(tok, "FAST_BACKENDS", {"gigatoken": fake})
    monkeypatch.setenv(codepoints.CACHE_ENV, "off")  # no verdict kept: each fake is checked
    monkeypatch.setattr(codepoints, "_memo", {})
    monkeypatch.setattr(codepoints, "divergent", lambda enc, ref, digests: [])
    yield
    monkeypatch.undo()
    tok._chosen.cache_clear()


def test_a_wrong_id_on_a_sampled_document_fails_the_task_naming_it(tmp_path, fake_gigatoken,
                                                                    capsys):
    rng = random.Random(3)
    docs = [random_doc(rng) for _ in range(200)]
    docs[137] = "this one holds the zebra-marker, " + docs[137]
    with open(tmp_path / "d.jsonl", "w") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs)
    recipe = write_recipe(tmp_path / "r.toml", {"prose": {
        "source": "json", "data_files": ["d.jsonl"], "min_chars": 1}}, block_size=16)
    out = tmp_path / "out"
    args = ("--recipe", str(recipe), "--out", str(out), "--workers", "2", "--min-eval-docs", "1",
            "--tokenizer-backend", "gigatoken")
    assert run_prep(*args, "--tokenizer-check-every", "1") == 1
    err = capsys.readouterr().err
    assert f"the fake 1.0 encoder wrote ids that differ from tiktoken's for the document at " \
           f"file {tmp_path / 'd.jsonl'}, row 137 (sha256 " in err
    assert "nothing of it was written" in err and "Traceback" not in err
    assert not (out / MANIFEST_NAME).exists()
    # without the check the same run writes the wrong id: what the check is there to stop
    assert run_prep(*args, "--tokenizer-check-every", "0") == 0
    ref = tmp_path / "ref"
    assert run_prep(*args[:3], str(ref), *args[4:8], "--tokenizer-backend", "tiktoken") == 0
    a, b = data_files(out), data_files(ref)
    assert a.keys() == b.keys() and a != b


def test_an_explicit_backend_that_is_missing_is_a_one_line_error(tmp_path, monkeypatch,
                                                                 capsys, jsonl_recipe):
    tok._chosen.cache_clear()
    monkeypatch.setitem(__import__("sys").modules, "fastokens", None)
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out),
                    "--tokenizer-backend", "fastokens") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("prep: error: --tokenizer-backend fastokens: the fastokens package is "
                          "not installed") and "pip install 'fastokens>=0.3.5'" in err
    assert "\n" not in err and not out.exists()
    tok._chosen.cache_clear()


def test_the_recipe_key_the_flag_and_the_fingerprint(tmp_path, jsonl_recipe):
    installed("gigatoken")
    base = jsonl_recipe()
    recipe = tmp_path / "keyed.toml"
    recipe.write_text('tokenizer_backend = "tiktoken"\n' + base.read_text())
    plans = [make_plan(config_from_args(["--recipe", str(recipe), *extra]))
             for extra in ([], ["--tokenizer-backend", "gigatoken"],
                           ["--tokenizer-check-every", "0"])]
    assert [p.backend.name for p in plans] == ["tiktoken", "gigatoken", "tiktoken"]
    assert len({p.fingerprint for p in plans}) == 1  # the output never depends on it
    assert plans[1].domains[0].settings.tokenizer_backend == "gigatoken"
    assert plans[0].domains[0].settings.tokenizer_check_every == 256
    with pytest.raises(RecipeError, match="tokenizer_backend must be one of auto, tiktoken, "
                                          "gigatoken, fastokens, got 'fast'"):
        parse_recipe({"tokenizer_backend": "fast",
                      "domains": {"a": {"source": "json", "data_files": ["a.jsonl"]}}},
                     name="r", path=None)


def test_the_encoder_record_counts_only_committed_tasks(tmp_path, jsonl_recipe):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out), "--size-mb", "0.05",
                    "--partition-mb", "0.02", "--workers", "2", "--min-eval-docs", "1") == 0
    m = manifest(out)
    n = sum(len(d["partitions"]) for d in m["domains"].values())
    assert sum(m["run"]["tokenizer"]["tasks_by_encoder"].values()) == n
    assert np.isfinite(m["run"]["tokens_per_s"])
