"""Benchmark decontamination through real prep runs (`prep.decontaminate_steps`): a train
document sharing a 13-gram of content tokens with a benchmark text (whitespace-only tokens
skipped: a quote re-flowed with newlines and indentation counts) is dropped and counted per
benchmark file and domain; eval documents are kept (and counted); a document moved to train by
near-dup group mode is judged in its final split; the manifest records the files' sha256, n and text
fields, `shards inspect` shows the counts; the index is built once per run and reused; a resume
after a benchmark file changed is refused, an unchanged one is byte-identical, as is any
--workers; bad keys and files are one-line errors naming the key."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from prep_fixture import manifest, random_doc, run_prep, same_dataset, write_jsonl, write_recipe
from steps_fixture import texts
from test_prep_faults import prep_cli, work_dir

from prep import decontaminate_steps
from prep.recipe import DEFAULT_SPLIT_SALT
from prep.split import assign_split
from shards import minhash
from shards.__main__ import main as shards_main
from shards.tokenizer import reference_encoder

EVAL = 0.3
OPTS = ("--partition-mb", "0.2", "--interleave", "1", "--eval-fraction", str(EVAL),
        "--min-eval-docs", "1", "--workers", "2")
QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
    "May. How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. Betty has only half of the money "
    "she needs. Her parents decided to give her $15 for that purpose.",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he "
    "write a year?",
]
CODE = [
    "def has_close_elements(numbers: List[float], threshold: float) -> bool: Check if in given "
    "list of numbers, are any two numbers closer to each other than given threshold.",
    "def separate_paren_groups(paren_string: str) -> List[str]: Input to this function is a "
    "string containing multiple groups of nested parentheses.",
    QUESTIONS[3],  # also in the first file, which owns it
]
GSM, HUMAN = "bench/gsm8k.jsonl", "bench/code.jsonl"


def split_of(text: str) -> str:
    return assign_split(text.encode(), DEFAULT_SPLIT_SALT, EVAL)


def twelve_tokens(text: str) -> str:
    """12 tokens of a benchmark text, between blank lines: one n-gram short of a hit."""
    enc = reference_encoder().encoding
    return "\n\n" + enc.decode(enc.encode_ordinary(text)[4:16]) + "\n\n"


def write_recipe_with(path: Path, top: str, domains: dict[str, dict]) -> Path:
    write_recipe(path, domains, seed=5, block_size=16)
    path.write_text(top + "\n" + path.read_text())
    return path


TOP = f'decontaminate = [{{path = "{GSM}", text_field = "question"}}, "bench/c*.jsonl"]'


def build(root: Path, top: str = TOP) -> tuple[Path, dict]:
    """alpha: 4 files, beta (near-dup group mode): 2, of ~100 random documents each, with
    planted documents quoting a benchmark text; returns the recipe and the expected counts."""
    rng = random.Random(7)
    files = {f"alpha{k}": [random_doc(rng) for _ in range(100)] for k in range(4)}
    files |= {f"beta{k}": [random_doc(rng) for _ in range(100)] for k in range(2)}
    want = {d: {GSM: 0, HUMAN: 0, "eval": 0} for d in ("alpha", "beta")}
    planted = []
    for i in range(24):
        domain, bench = ("alpha", "beta")[i % 2], (GSM, HUMAN)[i % 3 == 0]
        quote = QUESTIONS[i % 4] if bench == GSM else CODE[(i // 3) % 3]
        owner = GSM if quote in QUESTIONS else HUMAN
        if i % 4 == 1:  # re-flowed: the same content tokens (n-grams skip whitespace tokens)
            quote = quote.replace(" ", "\n    ")
        text = f"{random_doc(rng, 20, 40)} {quote} {random_doc(rng, 20, 40)}"
        files[f"{domain}{i % (4 if domain == 'alpha' else 2)}"].append(text)
        want[domain][owner if split_of(text) == "train" else "eval"] += 1
        planted.append(text)
    misses = [f"{random_doc(rng, 30, 50)}{twelve_tokens(q)}{random_doc(rng, 30, 50)}"
              for q in QUESTIONS]
    files["alpha0"] += misses
    # a near-copy pair across domains: B (train) in alpha, M (eval by its hash, quoting a
    # benchmark) in beta; group mode gives M its cluster's split, train: M is dropped
    while True:
        b = random_doc(rng, 200, 250)
        w = b.split()
        m = " ".join(w[:100] + [CODE[1]] + w[100:])
        if split_of(b) == "train" and split_of(m) == "eval":
            break
    assert minhash.jaccard(minhash.shingle_set(b, "prose"), minhash.shingle_set(m, "prose")) > 0.8
    files["alpha3"].append(b)
    files["beta1"].append(m)
    want["beta"][HUMAN] += 1
    for f, docs in files.items():
        write_jsonl(root / f"{f}.jsonl", docs)
    (root / "bench").mkdir(exist_ok=True)
    write_jsonl(root / GSM, QUESTIONS, field="question")
    write_jsonl(root / HUMAN, CODE)
    table = {"source": "json", "min_chars": 10}
    recipe = write_recipe_with(root / "recipe.toml", top, {
        "alpha": {**table, "data_files": [f"alpha{k}.jsonl" for k in range(4)]},
        "beta": {**table, "data_files": ["beta0.jsonl", "beta1.jsonl"],
                 "near_dedup_mode": "group"}})
    return recipe, {"counts": want, "planted": planted, "misses": misses, "m": m, "b": b}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    return build(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "out"
    assert run_prep("--recipe", str(corpus[0]), "--out", str(out), *OPTS, "--workers", "1") == 0
    return out


def test_a_benchmark_ngram_drops_a_train_document_counted_per_file(corpus, straight, capsys):
    recipe, facts = corpus
    m = manifest(straight)
    for domain, want in facts["counts"].items():
        c = m["domains"][domain]["counts"]
        assert (c[f"docs_decontaminated:{GSM}"], c[f"docs_decontaminated:{HUMAN}"],
                c["docs_benchmark_in_eval"]) == (want[GSM], want[HUMAN], want["eval"])
        assert c["docs_decontaminated"] == want[GSM] + want[HUMAN]
        assert c["docs_kept"] == c["docs_seen"] - c["docs_decontaminated"]  # nothing else
        assert m["domains"][domain]["steps"][-1] == "decontaminate_match"
        assert m["domains"][domain]["commit_hooks"][-1] == "decontaminate"
    assert min(w[k] for w in facts["counts"].values() for k in (GSM, HUMAN, "eval")) >= 1
    kept = {t: s for d in ("alpha", "beta") for s, ts in texts(straight, d).items() for t in ts}
    for text in facts["planted"]:  # train quoters are gone, eval ones kept, in eval
        assert kept.get(text) == (None if split_of(text) == "train" else "eval")
    assert all(kept[t] == split_of(t) for t in facts["misses"])  # 12 tokens: no hit
    # the near copy moved to train by group mode is judged in its final split: dropped
    assert kept.get(facts["b"]) == "train" and facts["m"] not in kept
    assert m["domains"]["beta"]["counts"]["docs_near_dup_moved"] == 1
    # the parameters: n, hash, each file with its sha256 and text field, in recipe order
    p = m["hooks"]["decontaminate"]["params"]
    assert p["ngram"] == 13 and p["hash"] == "poly64-splitmix-content-v2"
    root = recipe.parent
    assert [(f["file"], f["text_field"], f["sha256"], f["texts"]) for f in p["files"]] == [
        (name, field, hashlib.sha256((root / name).read_bytes()).hexdigest(), n)
        for name, field, n in ((GSM, "question", 4), (HUMAN, "text", 3))]
    assert m["recipe"]["decontaminate"] == [{"path": GSM, "text_field": "question"},
                                            "bench/c*.jsonl"]
    assert "decontaminate" not in m["recipe"]["domains"][0]  # a top-level key
    # `shards inspect` shows the keyed counts and the parameters
    assert shards_main(["inspect", str(straight)]) == 0
    shown = capsys.readouterr().out
    assert f"docs_decontaminated:{HUMAN}" in shown and "docs_benchmark_in_eval" in shown
    assert f'"sha256":"{p["files"][0]["sha256"]}"' in shown
    assert shards_main(["verify", str(straight)]) == 0


def test_byte_identical_for_any_workers_slices_ray_and_the_index_is_built_once(corpus, straight, tmp_path,
                                                                    monkeypatch):
    calls = []
    build_index = decontaminate_steps._build
    monkeypatch.setattr(decontaminate_steps, "_build",
                        lambda raw, ctx: calls.append(raw) or build_index(raw, ctx))
    three = tmp_path / "three"
    assert run_prep("--recipe", str(corpus[0]), "--out", str(three), *OPTS, "--workers",
                    "3") == 0
    same_dataset(straight, three)
    assert manifest(straight)["hooks"] == manifest(three)["hooks"]
    assert len(calls) == 1  # two domains, one index
    (index,) = (three / ".prep-cache").iterdir()
    assert index.name == manifest(three)["hooks"]["decontaminate"]["params"]["index"]
    built = (index / "hashes.npy").stat().st_mtime_ns
    again = tmp_path / "again"  # a second run sharing the cache directory reuses it
    assert run_prep("--recipe", str(corpus[0]), "--out", str(again), *OPTS, "--cache-dir",
                    str(three / ".prep-cache")) == 0
    same_dataset(straight, again)
    assert (index / "hashes.npy").stat().st_mtime_ns == built
    assert not (again / ".prep-cache").exists()
    sliced = tmp_path / "sliced"  # job-array slices: each plans (and finds the index) alone
    for i in (1, 0):
        assert run_prep("--recipe", str(corpus[0]), "--out", str(sliced), *OPTS, "--num-tasks",
                        "2", "--task-index", str(i)) == 0
    assert run_prep("--recipe", str(corpus[0]), "--out", str(sliced), *OPTS,
                    "--commit-only") == 0
    same_dataset(straight, sliced)
    pytest.importorskip("ray")
    ray = tmp_path / "ray"
    assert run_prep("--recipe", str(corpus[0]), "--out", str(ray), *OPTS, "--executor",
                    "ray") == 0
    same_dataset(straight, ray)


def test_resume_refused_after_a_benchmark_changed_and_identical_when_unchanged(
        corpus, straight, tmp_path):
    recipe, _ = corpus
    bench = recipe.parent / GSM
    out = tmp_path / "out"
    args = ("--recipe", str(recipe), "--out", str(out), *OPTS)
    assert prep_cli(*args, kill_at="after-task:2").returncode == -9
    assert work_dir(out).is_dir() and not (out / "manifest.json").exists()
    original = bench.read_bytes()
    try:
        bench.write_bytes(original.replace(b"Natalia", b"Natasha"))
        r = prep_cli(*args, "--resume")
        assert r.returncode == 1
        err = r.stderr.strip()
        assert "--resume: the unfinished run" in err and "was started with other settings" in err
        assert f"prepared.decontaminate_match.files.{GSM}.sha256" in err
        assert len(err.splitlines()) == 1, err
    finally:
        bench.write_bytes(original)  # the same bytes (a new mtime): the same run
    r = prep_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    same_dataset(straight, out)
    assert manifest(straight)["hooks"] == manifest(out)["hooks"]


@pytest.mark.parametrize(("top", "message"), [
    ('decontaminate = ["bench/missing.jsonl"]',
     "recipe.toml: decontaminate[0]: 'bench/missing.jsonl' is not a file (resolved against "),
    ('decontaminate = ["bench/gsm8k.jsonl", "nope/*.jsonl"]',
     "recipe.toml: decontaminate[1]: 'nope/*.jsonl' matches no file"),
    ('decontaminate = ["bench/code.jsonl"]\ndecontaminate_ngram = 0',
     "recipe.toml: decontaminate_ngram must be an integer from 1 to 65536"),
    ('decontaminate = ["bench/code.jsonl"]\ndecontaminate_ngram = "13"',
     "recipe.toml: decontaminate_ngram must be an integer, got '13'"),
    ('decontaminate = ["bench/gsm8k.jsonl"]',
     "decontaminate: bench/gsm8k.jsonl: line 1 has no string field 'text' (it has: id, "
     "question); set text_field for this file"),
    ('decontaminate = true', "recipe.toml: decontaminate must be a list of benchmark files"),
    ("decontaminate_ngram = 8", "recipe.toml: decontaminate_ngram is set but decontaminate is "
     "not"),
])
def test_bad_keys_and_files_are_one_line_errors_naming_the_key(tmp_path, capsys, top, message):
    recipe, _ = build(tmp_path, top)
    assert run_prep("--recipe", str(recipe), "--out", str(tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert "[domains." not in err


def test_a_top_level_key_in_a_domain_table_is_refused(tmp_path, capsys):
    recipe, _ = build(tmp_path)
    text = recipe.read_text().replace('[domains.beta]\n', '[domains.beta]\ndecontaminate = '
                                      '["bench/code.jsonl"]\n')
    recipe.write_text(text)
    assert run_prep("--recipe", str(recipe), "--out", str(tmp_path / "out")) == 1
    err = capsys.readouterr().err.strip()
    assert ("[domains.beta] decontaminate: a top-level key (it applies to every domain); write "
            "it above the [domains.*] tables") in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("backend", ["tiktoken", "fastokens", "gigatoken"])
def test_the_index_holds_the_ids_prep_writes_whatever_the_backend(tmp_path, backend):
    """Benchmark texts are tokenized by tiktoken (the reference); prep writes tiktoken's ids
    whatever the backend: a quote with non-ASCII text is found with each."""
    pytest.importorskip(backend)
    (tmp_path / "bench").mkdir()
    quote = "naïve café — “quoted” text with émojis 🙂 and CJK 漢字 mixed in, more than 13 tokens"
    write_jsonl(tmp_path / "bench" / "u.jsonl", [quote, "Ünïcode only"])
    rng = random.Random(3)
    docs = [random_doc(rng) for _ in range(120)]
    docs += [f"{random_doc(rng, 40, 60)}\n{quote}\n{random_doc(rng, 40, 60)}" for _ in range(40)]
    write_jsonl(tmp_path / "d.jsonl", docs)
    recipe = write_recipe_with(tmp_path / "r.toml", 'decontaminate = ["bench/u.jsonl"]', {
        "alpha": {"source": "json", "data_files": ["d.jsonl"], "min_chars": 10}})
    out = tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(out), *OPTS, "--tokenizer-backend",
                    backend) == 0
    m = manifest(out)
    c = m["domains"]["alpha"]["counts"]
    trains = sum(split_of(d) == "train" for d in docs[120:])
    assert c["docs_decontaminated:bench/u.jsonl"] == trains > 0
    assert c["docs_benchmark_in_eval"] == 40 - trains > 0
    (f,) = m["hooks"]["decontaminate"]["params"]["files"]
    assert (f["texts"], f["texts_shorter_than_n"]) == (2, 1)
    assert m["run"]["tokenizer"]["chosen"].startswith(backend)
