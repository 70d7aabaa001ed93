"""`shards audit`: planted overlaps and artifacts are found, exactly; clean data reports zero."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from shards_fixture import gpt2, make_dataset

import shards
from shards.__main__ import main
from shards.audit import audit, ngram_hashes
from shards.tokenizer import EOT_ID

# Each " word" is one GPT-2 token, so token counts below are exact.
TRAIN_WORDS = ["cat", "dog", "house", "tree", "river", "stone", "bird", "field", "road", "light"]
EVAL_WORDS = ["red", "blue", "green", "black", "white", "small", "large", "old", "new", "hot"]


def words(rng: np.random.Generator, vocab: list[str], n: int) -> list[str]:
    return [vocab[i] for i in rng.integers(0, len(vocab), n)]


def text(ws: list[str]) -> str:
    return "Start" + "".join(" " + w for w in ws)


def test_words_are_single_tokens() -> None:
    enc = gpt2()
    assert all(len(enc.encode_ordinary(" " + w)) == 1 for w in TRAIN_WORDS + EVAL_WORDS)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(0)
    train = [words(rng, TRAIN_WORDS, 60) for _ in range(20)]
    passage = train[7][10:30]  # 20 tokens of a train document
    ev = [words(rng, EVAL_WORDS, 40) for _ in range(8)]
    ev[3] = ev[3][:15] + passage + ev[3][15:]
    prose_eval = [words(rng, EVAL_WORDS, 40) for _ in range(4)]
    prose_eval[1] = prose_eval[1][:5] + train[2][:13] + prose_eval[1][5:]  # code train 13-gram
    prose_eval[2] = prose_eval[2][:5] + train[4][:12] + prose_eval[2][5:]  # only 12: no match
    prose_train = [words(rng, EVAL_WORDS[:5], 50) for _ in range(6)]
    code_train = [(text(w), {"repo_name": f"repo{min(i, 3)}"}) for i, w in enumerate(train)]
    code_train[5] = (" " + code_train[5][0] + "\u200b", code_train[5][1])  # lead ws, invisible
    code_train[6] = (code_train[6][0] + "\n", code_train[6][1])  # trailing ws
    root = make_dataset(tmp_path_factory.mktemp("a"), {
        "code": {"train": code_train, "eval": [text(w) for w in ev]},
        "prose": {"train": [text(w) for w in prose_train], "eval": [text(w) for w in prose_eval]},
    }, shard_tokens=256, block_size=16)
    return root, [text(w) for w in ev]


def test_ngram_hashes_skip_windows_with_eot() -> None:
    s = np.array([1, 2, 3, 4, EOT_ID, 1, 2, 3, 4, 5, EOT_ID], dtype=np.uint16)
    h, starts = ngram_hashes(s, EOT_ID, n=3)
    assert starts.tolist() == [0, 1, 5, 6, 7]
    assert h[0] == h[2] and h[1] == h[3] and len(set(h.tolist())) == 3
    assert len(ngram_hashes(s[:2], EOT_ID, n=3)[0]) == 0


def test_planted_13gram_overlap_is_found(planted: tuple[Path, list[str]]) -> None:
    root, eval_texts = planted
    r = audit(shards.open(root))
    code = r["domains"]["code"]["contamination"]
    enc = gpt2()
    eval_text_tokens = sum(len(enc.encode_ordinary(t)) for t in eval_texts)
    own = code["own_train"]
    assert code["eval_docs"] == 8
    assert own["docs_with_overlap"] == 1 and own["doc_share"] == 1 / 8
    assert own["tokens_covered"] == 20
    assert own["token_share"] == 20 / eval_text_tokens
    assert own["worst"] == [{"index": 3, "covered": round(20 / 61, 4),
                             "source": {"index": 3}}]
    assert code["all_train"]["tokens_covered"] == 20


def test_overlap_with_another_domains_train(planted: tuple[Path, list[str]]) -> None:
    r = audit(shards.open(planted[0]))
    prose = r["domains"]["prose"]["contamination"]
    assert prose["own_train"]["docs_with_overlap"] == 0  # its own train uses other words
    assert prose["own_train"]["token_share"] == 0.0
    assert prose["all_train"]["docs_with_overlap"] == 1  # the 13-gram, not the 12-gram
    assert prose["all_train"]["tokens_covered"] == 13
    assert prose["all_train"]["worst"][0]["index"] == 1


def test_clean_data_reports_zero(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = make_dataset(tmp_path, {"code": {
        "train": [text(words(rng, TRAIN_WORDS, 50)) for _ in range(10)],
        "eval": [text(words(rng, EVAL_WORDS, 50)) for _ in range(3)]}})
    code = audit(shards.open(root))["domains"]["code"]
    for which in ("own_train", "all_train"):
        assert code["contamination"][which] == {"docs_with_overlap": 0, "doc_share": 0.0,
                                                "tokens_covered": 0, "token_share": 0.0,
                                                "worst": []}
    a = code["artifacts"]
    assert (a["invisible_chars"], a["leading_whitespace"], a["trailing_whitespace"],
            a["carriage_returns"], a["control_chars"]) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert a["invisible_char_counts"] == {}
    assert code["diversity"]["source_key"] is None  # the fixture's provenance names no source


def test_planted_artifacts_are_found(planted: tuple[Path, list[str]]) -> None:
    r = audit(shards.open(planted[0]))
    a = r["domains"]["code"]["artifacts"]
    assert a["docs"] == 20
    assert a["invisible_chars"] == 1 / 20
    assert a["invisible_char_counts"] == {"U+200B ZERO WIDTH SPACE": 1}
    assert a["leading_whitespace"] == 1 / 20
    assert a["trailing_whitespace"] == 1 / 20
    assert a["first_chars"] == [{"char": "S", "share": 19 / 20}, {"char": " ", "share": 1 / 20}]
    assert a["first_tokens"][0] == {"id": gpt2().encode_ordinary("Start")[0], "text": "Start",
                                    "share": 19 / 20}
    assert a["repeated_prefix_share"] == 0.0  # random words: every 20-char prefix differs
    assert r["domains"]["prose"]["artifacts"]["invisible_chars"] == 0.0


def test_repeated_prefixes(tmp_path: Path) -> None:
    header = "# Copyright 2020 ACME Inc.\n"
    root = make_dataset(tmp_path, {"code": {
        "train": [header + f"x = {i}\n" for i in range(6)] + ["y = 1\n" * 5, "short"],
        "eval": ["z = 0\n"]}})
    a = audit(shards.open(root))["domains"]["code"]["artifacts"]
    assert a["repeated_prefixes"] == [{"prefix": "# Copyright 2020 ACM", "docs": 6}]
    assert a["repeated_prefix_share"] == 6 / 8


def test_source_diversity(planted: tuple[Path, list[str]]) -> None:
    d = audit(shards.open(planted[0]))["domains"]["code"]["diversity"]
    assert d["source_key"] == "repo_name"
    assert d["distinct_sources"] == 4
    assert d["top_sources"][0] == {"source": "repo3", "docs": 17}
    assert d["top1_share"] == 17 / 20 and d["top10_share"] == 1.0
    enc = gpt2()
    lengths = [len(enc.encode_ordinary(t)) + 1 for t, _ in planted_code_train(planted[0])]
    assert (d["length_tokens"]["min"], d["length_tokens"]["p50"]) == (62, 62)
    assert d["length_tokens"]["max"] == max(lengths) > 62


def planted_code_train(root: Path) -> list[tuple[str, dict]]:
    sp = shards.open(root).split("code", "train")
    return [(sp.document_text(k), sp.document(k).source) for k in range(sp.num_docs)]


def test_cli_table_and_json(planted: tuple[Path, list[str]],
                            capsys: pytest.CaptureFixture[str]) -> None:
    root = planted[0]
    assert main(["audit", str(root)]) == 0
    out = capsys.readouterr().out
    assert "eval docs sharing a 13-gram with own train  12.50%  0.00%" in out
    assert re.search(r"^docs with invisible characters +5\.00% +0\.00%$", out, re.M)
    assert main(["audit", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(json.dumps(audit(shards.open(root))))
