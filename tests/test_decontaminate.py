"""prep.decontaminate: the recipe keys' one-line errors, and the benchmark index that finds a
train document sharing an n-gram with a benchmark text, first benchmark file first."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import zstandard
from shards_fixture import gpt2, make_dataset

import shards
from prep.decontaminate import (
    BenchmarkFile,
    BenchmarkIndex,
    DecontaminateConfig,
    DecontaminationCounts,
    DecontaminationError,
    open_cached,
    parse_decontaminate,
)
from shards.ngrams import BLOCK
from shards.tokenizer import EOT_ID, encode_document

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
    "May. How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?",
    "Too short.",
]
FUNCTIONS = [
    "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n    \"\"\" Check "
    "if in given list of numbers, are any two numbers closer to each other than given threshold.",
]


def encode(text: str) -> np.ndarray:
    return encode_document(gpt2(), text)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "bench" / "gsm8k.jsonl", [{"question": q} for q in QUESTIONS])
    write_jsonl(tmp_path / "bench" / "humaneval.jsonl.zst",
                [{"prompt": f, "text": f} for f in FUNCTIONS] + [{"text": QUESTIONS[1]}])
    return tmp_path


def config(bench: Path, **extra: object) -> DecontaminateConfig:
    raw = {"decontaminate": [{"path": "bench/gsm8k.jsonl", "text_field": "question"},
                             "bench/*.zst"], **extra}
    cfg = parse_decontaminate(raw, base=bench, where="recipe.toml")
    assert cfg is not None
    return cfg


# --------------------------------------------------------------------------- recipe keys


def test_parse_resolves_entries_in_order(bench: Path) -> None:
    cfg = config(bench, decontaminate_ngram=8)
    assert cfg.n == 8
    assert [(f.name, f.text_field) for f in cfg.files] == [
        ("bench/gsm8k.jsonl", "question"), ("bench/humaneval.jsonl.zst", "text")]
    assert all(Path(f.path).is_absolute() for f in cfg.files)
    assert parse_decontaminate({"seed": 1}, base=bench, where="r") is None
    one = parse_decontaminate({"decontaminate": "bench/gsm8k.jsonl", "decontaminate_text_field":
                               "question"}, base=bench, where="r")
    assert one is not None and one.files[0].text_field == "question" and one.n == 13
    twice = parse_decontaminate({"decontaminate": ["bench/*", "bench/gsm8k.jsonl"]}, base=bench,
                                where="r")
    assert twice is not None and [f.name for f in twice.files] == [
        "bench/gsm8k.jsonl", "bench/humaneval.jsonl.zst"]  # sorted glob, no repeat


@pytest.mark.parametrize(("raw", "message"), [
    ({"decontaminate": ["bench/missing.jsonl"]},
     "recipe.toml: decontaminate[0]: 'bench/missing.jsonl' is not a file (resolved against "),
    ({"decontaminate": ["bench/gsm8k.jsonl", "nope/*.jsonl"]},
     "recipe.toml: decontaminate[1]: 'nope/*.jsonl' matches no file"),
    ({"decontaminate": ["bench/gsm8k.jsonl"], "decontaminate_ngram": 0},
     f"recipe.toml: decontaminate_ngram must be an integer from 1 to {BLOCK} (content tokens per "
     "n-gram; default 13), got 0"),
    ({"decontaminate": ["bench/gsm8k.jsonl"], "decontaminate_ngram": -3}, "got -3"),
    ({"decontaminate": ["bench/gsm8k.jsonl"], "decontaminate_ngram": True}, "got True"),
    ({"decontaminate": ["bench/gsm8k.jsonl"], "decontaminate_ngram": "13"}, "got '13'"),
    ({"decontaminate": ["bench/gsm8k.jsonl"], "decontaminate_ngram": 13.0}, "got 13.0"),
    ({"decontaminate": ["bench/gsm8k.jsonl"], "decontaminate_ngram": BLOCK + 1},
     f"got {BLOCK + 1}"),
    ({"decontaminate_ngram": 13}, "recipe.toml: decontaminate_ngram is set but decontaminate is "
     "not"),
    ({"decontaminate": []}, "recipe.toml: decontaminate must be a list of benchmark files"),
    ({"decontaminate": [3]}, "recipe.toml: decontaminate[0]: expected a path or glob string"),
    ({"decontaminate": [{"file": "x"}]}, "recipe.toml: decontaminate[0]: a table needs `path`"),
    ({"decontaminate": [{"path": "bench/gsm8k.jsonl", "text_field": ""}]},
     "decontaminate[0]: text_field must be a non-empty string"),
    ({"decontaminate": ["bench/gsm8k.jsonl"], "decontaminate_text_field": 5},
     "recipe.toml: decontaminate_text_field must be a non-empty string"),
])
def test_bad_keys_are_one_line_errors(bench: Path, raw: dict, message: str) -> None:
    with pytest.raises(DecontaminationError) as e:
        parse_decontaminate(raw, base=bench, where="recipe.toml")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("rows", "message"), [
    ([{"question": "x"}, {"q": "y"}], "decontaminate: bench/bad.jsonl: line 2 has no string field "
     "'question' (it has: q); set text_field for this file"),
    ([{"question": 3}], "line 1 has no string field 'question'"),
    (["just a string"], "line 1 has no string field 'question' (it has: str)"),
])
def test_bad_benchmark_files_are_one_line_errors(tmp_path: Path, rows: list,
                                                 message: str) -> None:
    write_jsonl(tmp_path / "bench" / "bad.jsonl", rows)
    cfg = parse_decontaminate({"decontaminate": ["bench/bad.jsonl"],
                               "decontaminate_text_field": "question"}, base=tmp_path, where="r")
    with pytest.raises(DecontaminationError) as e:
        BenchmarkIndex.build(cfg, encode=encode)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_line_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DecontaminationError, match=r"^decontaminate: b.jsonl: line 2 is not JSON"):
        BenchmarkIndex.build(["b.jsonl"], encode=encode, base=tmp_path)


# --------------------------------------------------------------------------- matching


def doc(*parts: str) -> np.ndarray:
    return encode(" ".join(parts))


def test_a_shared_ngram_names_the_first_file(bench: Path) -> None:
    index = BenchmarkIndex.build(config(bench), encode=encode)
    assert index.files == ["bench/gsm8k.jsonl", "bench/humaneval.jsonl.zst"]
    q0 = gpt2().encode_ordinary(QUESTIONS[0])
    exact = np.r_[encode("Some train text here")[:-1], q0[20:33], encode(" end")]
    assert index.match(exact.astype(np.uint16)) == 0
    assert index.match(np.r_[q0[20:32], [EOT_ID], q0[32:40]].astype(np.uint16)) is None
    assert index.match(np.array(q0[20:32], dtype=np.uint16)) is None  # 12 tokens only
    f0 = gpt2().encode_ordinary(FUNCTIONS[0])
    assert index.match(np.array(f0[5:30], dtype=np.uint16)) == 1
    # in both files: the first in recipe order wins, whatever the document's order
    assert index.match(np.array(f0[5:30] + q0[:20], dtype=np.uint16)) == 0
    q1 = gpt2().encode_ordinary(QUESTIONS[1])  # in both files: owned by the first
    assert index.match(np.array(q1, dtype=np.uint16)) == 0
    assert index.match(encode(QUESTIONS[2] + " " + QUESTIONS[2])) is None  # too short to index
    assert index.stats[0] | {"path": ""} == {
        "file": "bench/gsm8k.jsonl", "path": "", "text_field": "question", "texts": 3,
        "sha256": hashlib.sha256((bench / "bench" / "gsm8k.jsonl").read_bytes()).hexdigest(),
        "texts_shorter_than_n": 1, "ngrams": len(q0) - 12 + len(q1) - 12}


def test_counts_per_file(bench: Path) -> None:
    index = BenchmarkIndex.build(config(bench), encode=encode)
    q0 = gpt2().encode_ordinary(QUESTIONS[0])
    f0 = gpt2().encode_ordinary(FUNCTIONS[0])
    docs = [np.array(q0, dtype=np.uint16), encode("clean text " * 20),
            np.array(f0, dtype=np.uint16), np.array(q0[::-1], dtype=np.uint16)]
    a, b = DecontaminationCounts(index.files), DecontaminationCounts(index.files)
    kept = [d for d in docs[:2] if not a.add(index.match(d))]
    kept += [d for d in docs[2:] if not b.add(index.match(d))]
    assert len(kept) == 2
    a.merge(b)
    assert a.to_dict() == {"docs_checked": 4, "docs_dropped": 2, "dropped_by_file": {
        "bench/gsm8k.jsonl": 1, "bench/humaneval.jsonl.zst": 1}}
    assert DecontaminationCounts.from_dict(a.to_dict()) == a


def test_prep_ids_match_through_the_shards(tmp_path: Path, bench: Path) -> None:
    """A train document written to shards (the ids prep writes) that quotes a benchmark is found
    from its tokens read back through the reader: one hashing for prep and audit."""
    index = BenchmarkIndex.build(config(bench), encode=encode)
    root = make_dataset(tmp_path / "d", {"math": {
        "train": ["A story. " + QUESTIONS[0][30:] + " Then more.", "Nothing to see here at all."],
        "eval": ["x"]}})
    sp = shards.open(root).split("math", "train")
    assert [index.match(sp.document_tokens(k)) for k in range(2)] == [0, None]


def test_index_is_cached_by_content(bench: Path, tmp_path: Path) -> None:
    calls = []

    def counting(text: str) -> np.ndarray:
        calls.append(text)
        return encode(text)

    cache = tmp_path / "work"
    first = BenchmarkIndex.build(config(bench), encode=counting, cache_dir=cache)
    assert first.path is not None and first.path.parent == cache and calls
    calls.clear()
    again = BenchmarkIndex.build(config(bench), encode=counting, cache_dir=cache)
    assert calls == [] and again.path == first.path  # loaded, not rebuilt
    assert isinstance(again.index.hashes, np.memmap)
    assert again.files == first.files and again.stats == first.stats
    q0 = np.array(gpt2().encode_ordinary(QUESTIONS[0]), dtype=np.uint16)
    assert again.match(q0) == first.match(q0) == 0
    assert open_cached(str(first.path)) is open_cached(str(first.path))
    write_jsonl(bench / "bench" / "gsm8k.jsonl", [{"question": QUESTIONS[1]}])
    changed = BenchmarkIndex.build(config(bench), encode=counting, cache_dir=cache)
    assert changed.path != first.path and calls  # new bytes, new index
    other_n = BenchmarkIndex.build(config(bench, decontaminate_ngram=8), encode=counting,
                                   cache_dir=cache)
    assert other_n.path not in (first.path, changed.path) and other_n.n == 8


def test_gzip_files_and_list_fields(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "mc.jsonl.gz", [{"text": [QUESTIONS[0], FUNCTIONS[0]]}])
    index = BenchmarkIndex.build([BenchmarkFile(str(tmp_path / "mc.jsonl.gz"))], encode=encode)
    assert index.stats[0]["texts"] == 2
    assert index.match(np.array(gpt2().encode_ordinary(FUNCTIONS[0]), dtype=np.uint16)) == 0


def test_match_many_equals_match(bench: Path) -> None:
    """The batched form (what a worker should call on a batch of tokenized documents) gives
    each document's own answer: hits never leak into the neighbour."""
    index = BenchmarkIndex.build(config(bench), encode=encode)
    q0 = gpt2().encode_ordinary(QUESTIONS[0])
    f0 = gpt2().encode_ordinary(FUNCTIONS[0])
    docs = [np.array(q0[:7], dtype=np.uint16), np.array(q0[7:20], dtype=np.uint16),  # split
            encode(QUESTIONS[0]), np.zeros(0, dtype=np.uint16), encode("x"),
            np.array(f0 + q0, dtype=np.uint16), np.array(f0[:12], dtype=np.uint16),
            np.array(f0[12:40], dtype=np.uint16)]
    want = [index.match(d) for d in docs]
    assert want == [None, 0, 0, None, None, 0, None, 1]
    assert index.match_many(docs) == want
    assert index.match_many([]) == []


STACK = '''class Stack:
    """A last-in, first-out stack of items."""

    def __init__(self):
        self.items = []

    def peek(self):
        return self.items[-1]
'''
POINT = '''class Point:
    def norm(self):
        return self.x * self.x + self.y * self.y
'''


def test_reindented_code_is_found_and_shared_indentation_is_not(tmp_path: Path) -> None:
    """n-grams of content tokens: a benchmark function re-indented (4 -> 2 spaces) inside a
    train file is found; a different method sharing only `(self):`, the newline, 8 spaces of
    indentation and `return self.` (14 tokens: a 13-gram of all tokens) is not."""
    write_jsonl(tmp_path / "code.jsonl", [{"text": STACK}])
    index = BenchmarkIndex.build([BenchmarkFile(str(tmp_path / "code.jsonl"))], encode=encode)
    two = "\n".join(line[(len(line) - len(line.lstrip(" "))) // 2:] for line in STACK.split("\n"))
    assert two != STACK and "\n  def peek" in two
    docs = [encode(f"import sys\n\n\n{two}\n\nprint(Stack())\n"), encode(POINT),
            encode(STACK.replace("\n    ", "\n        ") + "\n")]
    assert [index.match(d) for d in docs] == [0, None, 0]
    assert index.match_many(docs) == [0, None, 0]
    q = "(self):\n        return self."
    assert q in STACK and q in POINT and len(gpt2().encode_ordinary(q)) == 14


def test_the_bench_measures_spurious_hits_by_both_definitions() -> None:
    """`python -m prep.bench.decontaminate`'s spurious-hit figure: at n = 13 the method sharing
    only indentation and `return self.` hits on all tokens, not on content tokens; the
    re-indented copy hits on both."""
    from prep.bench.decontaminate import spurious
    two = STACK.replace("\n    ", "\n  ")
    got = spurious([encode(STACK)], [encode(POINT), encode(two), encode("clean text " * 20)])
    assert got["all_tokens"][13] == round(2 / 3, 4)
    assert got["content_tokens"][13] == round(1 / 3, 4)
    assert got["content_tokens"][30] == round(1 / 3, 4) and got["all_tokens"][50] == 0.0
