"""The prep run end to end: determinism, split stability, leakage, budgets, faults."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import numpy as np
import zstandard
from prep_fixture import random_doc, run_prep, write_jsonl, write_recipe

import prep.pipeline
from prep.pipeline import TMP_PREFIX
from shards.format import MANIFEST_NAME, content_hash
from shards.tokenizer import EOT_ID, load_gpt2
from shards.writer import SplitWriter


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST_NAME).read_text())


def doc_index(out: Path, rel: str) -> list[dict]:
    raw = zstandard.ZstdDecompressor().stream_reader(open(out / rel, "rb")).read()
    return [json.loads(line) for line in io.StringIO(raw.decode())]


def split_tokens(out: Path, split_rec: dict) -> np.ndarray:
    parts = [np.memmap(out / s["path"], dtype=np.uint16, mode="r") for s in split_rec["shards"]]
    return np.concatenate(parts) if parts else np.empty(0, np.uint16)


def split_map(out: Path) -> dict[str, str]:
    """content hash -> split, over every domain."""
    m = manifest(out)
    res = {}
    for dom in m["domains"].values():
        for split, rec in dom["splits"].items():
            for d in doc_index(out, rec["doc_index"]["path"]):
                res[d["sha256"]] = split
    return res


def all_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME}


def test_workers_1_and_3_are_byte_identical(tmp_path, jsonl_recipe):
    recipe = jsonl_recipe(dup_every=7)
    a, b = tmp_path / "w1", tmp_path / "w3"
    assert run_prep("--recipe", str(recipe), "--out", str(a), "--workers", "1") == 0
    assert run_prep("--recipe", str(recipe), "--out", str(b), "--workers", "3") == 0
    fa, fb = all_files(a), all_files(b)
    assert fa.keys() == fb.keys() and len(fa) == 8  # 2 domains x 2 splits x (shard + index)
    assert fa == fb
    ma, mb = manifest(a), manifest(b)
    assert ma["domains"] == mb["domains"]  # checksums, counts, everything but run/config
    assert ma["config"]["workers"] == 1 and mb["config"]["workers"] == 3


def test_decoded_shards_reproduce_documents_exactly(tmp_path):
    rng = __import__("random").Random(5)
    docs = [random_doc(rng) for _ in range(600)]
    docs[3] = "Unicode: naïve café 日本語 — “quotes” <|endoftext|> stays text.\n\ttabs  "
    write_jsonl(tmp_path / "d.jsonl", docs)
    recipe = write_recipe(tmp_path / "r.toml", {"prose": {
        "source": "json", "data_files": ["d.jsonl"], "min_chars": 1}}, block_size=16)
    out = tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(out), "--workers", "2",
                    "--shard-tokens", "4096") == 0
    enc = load_gpt2()
    m = manifest(out)["domains"]["prose"]
    seen = []
    for _split, rec in m["splits"].items():
        toks = split_tokens(out, rec)
        index = doc_index(out, rec["doc_index"]["path"])
        assert len(index) == rec["docs"]
        pos = 0
        for d in index:
            assert d["shard"] * 4096 + d["offset"] == pos
            piece = toks[pos:pos + d["tokens"]]
            assert piece[-1] == EOT_ID and EOT_ID not in piece[:-1]
            text = enc.decode(piece[:-1].tolist())
            assert content_hash(text) == d["sha256"]
            assert d["source"]["row"] == docs.index(text)
            seen.append(text)
            pos += d["tokens"]
        assert pos == len(toks) == rec["tokens"]
    assert sorted(seen) == sorted(set(docs))


def test_shard_sizes_honour_shard_tokens(tmp_path, jsonl_recipe):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out),
                    "--shard-tokens", "2048", "--workers", "1") == 0
    for dom in manifest(out)["domains"].values():
        shards = dom["splits"]["train"]["shards"]
        assert len(shards) > 3
        assert all(s["tokens"] == 2048 for s in shards[:-1])
        assert 0 < shards[-1]["tokens"] <= 2048
        for s in shards:
            assert os.path.getsize(out / s["path"]) == s["bytes"] == 2 * s["tokens"]
        assert sum(s["tokens"] for s in shards) == dom["splits"]["train"]["tokens"]
        assert dom["splits"]["train"]["blocks"] == dom["splits"]["train"]["tokens"] // 16


def test_shard_tokens_must_be_a_multiple_of_block_size(tmp_path, jsonl_recipe, capsys):
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(tmp_path / "o"),
                    "--shard-tokens", "1000") == 1
    assert "must be a multiple of the block size 16" in capsys.readouterr().err


def test_split_is_stable_across_seed_budget_and_workers(tmp_path, jsonl_recipe):
    recipe = str(jsonl_recipe())
    runs = {
        "base": ["--workers", "2"],
        "seed": ["--workers", "2", "--seed", "99"],
        "budget": ["--workers", "2", "--size-mb", "0.15", "--min-eval-docs", "5"],
        "workers": ["--workers", "1", "--seed", "7"],
    }
    maps = {}
    for name, args in runs.items():
        out = tmp_path / name
        assert run_prep("--recipe", recipe, "--out", str(out), *args) == 0
        maps[name] = split_map(out)
    base = maps["base"]
    for name, m in maps.items():
        common = m.keys() & base.keys()
        assert len(common) > 100
        assert all(m[h] == base[h] for h in common), name
    # the budget run kept fewer documents, the seed changed which ones and their order
    assert len(maps["budget"]) < len(base)
    m_seed = manifest(tmp_path / "seed")["domains"]["alpha"]["splits"]["train"]["shards"]
    m_base = manifest(tmp_path / "base")["domains"]["alpha"]["splits"]["train"]["shards"]
    assert m_seed[0]["sha256"] != m_base[0]["sha256"]


def test_no_eval_hash_in_train_and_duplicates_never_straddle(tmp_path, jsonl_recipe):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe(dup_every=3)), "--out", str(out)) == 0
    m = manifest(out)
    assert m["leakage_passed"] is True
    for _name, dom in m["domains"].items():
        train = {d["sha256"] for d in doc_index(out, dom["splits"]["train"]["doc_index"]["path"])}
        ev = [d["sha256"] for d in doc_index(out, dom["splits"]["eval"]["doc_index"]["path"])]
        assert not train & set(ev)
        assert len(ev) == len(set(ev)) >= 20
        assert dom["leakage"]["eval_hashes_in_train"] == 0
        c = dom["counts"]
        assert c["docs_deduplicated"] == 334  # every 3rd of 1000 documents repeated once
        assert c["docs_kept"] == dom["splits"]["train"]["docs"] + dom["splits"]["eval"]["docs"]


def test_size_budget_and_token_budget(tmp_path, jsonl_recipe):
    recipe = str(jsonl_recipe())
    out = tmp_path / "mb"
    assert run_prep("--recipe", recipe, "--out", str(out), "--size-mb", "0.2") == 0
    for dom in manifest(out)["domains"].values():
        kept = dom["counts"]["bytes_kept"]
        assert dom["budget_reached"] is True
        assert 200_000 <= kept < 200_000 + 2000  # stops at the document that crosses the budget
        assert dom["size_budget_bytes"] == 200_000
    out = tmp_path / "tok"
    assert run_prep("--recipe", recipe, "--out", str(out), "--size-tokens", "30000",
                    "--min-eval-docs", "5") == 0
    for dom in manifest(out)["domains"].values():
        tokens = dom["splits"]["train"]["tokens"] + dom["splits"]["eval"]["tokens"]
        assert 30_000 <= tokens < 30_000 + 400
        assert dom["token_budget"] == 30000 and dom["budget_reached"] is True


def test_manifest_records_config_source_and_tokenizer(tmp_path, jsonl_recipe):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out), "--workers", "1",
                    "--shuffle-buffer", "123", "--eval-fraction", "0.1") == 0
    m = manifest(out)
    assert (m["format"], m["format_version"]) == ("moe-shards", 1)
    assert m["tokenizer"]["eot_id"] == 50256 and m["tokenizer"]["vocab_size"] == 50257
    assert m["tokenizer"]["ranks_sha256"].startswith("306cd27f")
    dom = m["domains"]["alpha"]
    assert dom["shuffle_buffer"] == 123 and dom["eval_fraction"] == 0.1
    assert dom["source"]["reader"] == "json"
    assert dom["source"]["files"][0]["sha256"] == content_hash(
        (Path(m["recipe"]["domains"][0]["data_files"][0])).read_text())
    assert m["config"]["shuffle_buffer"] == 123
    assert m["run"]["tokens_per_s"] > 0 and m["run"]["seconds"] > 0
    assert set(dom["counts"]) >= {"docs_seen", "docs_kept", "docs_bad", "docs_deduplicated",
                                  "bytes_seen", "bytes_kept", "docs_too_short", "docs_too_long"}


def test_refuses_to_overwrite_a_finished_dataset(tmp_path, jsonl_recipe, capsys):
    recipe, out = str(jsonl_recipe()), tmp_path / "out"
    assert run_prep("--recipe", recipe, "--out", str(out)) == 0
    before = all_files(out)
    assert run_prep("--recipe", recipe, "--out", str(out), "--seed", "1") == 1
    assert "holds a finished dataset. Pass --overwrite" in capsys.readouterr().err
    assert all_files(out) == before
    assert run_prep("--recipe", recipe, "--out", str(out), "--seed", "1", "--overwrite") == 0
    assert all_files(out) != before
    assert not list(out.glob(f"{TMP_PREFIX}*"))


def test_too_few_eval_docs_fails_clearly(tmp_path, jsonl_recipe, capsys):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe(n_docs=200)), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "eval documents, fewer than --min-eval-docs 20" in err and "--size-mb" in err
    assert not (out / MANIFEST_NAME).exists()


def test_bad_records_are_counted_then_fail_above_threshold(tmp_path, capsys):
    rng = __import__("random").Random(1)
    lines = [json.dumps({"text": random_doc(rng)}) for _ in range(1000)]
    lines[500] = json.dumps({"body": "no text field here"})  # one bad record in 1000
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    recipe = write_recipe(tmp_path / "r.toml", {"prose": {
        "source": "json", "data_files": ["d.jsonl"], "min_chars": 1}})
    out = tmp_path / "ok"
    assert run_prep("--recipe", str(recipe), "--out", str(out)) == 0
    assert manifest(out)["domains"]["prose"]["counts"]["docs_bad"] == 1
    out = tmp_path / "strict"
    assert run_prep("--recipe", str(recipe), "--out", str(out),
                    "--max-bad-fraction", "0.0005") == 1
    err = capsys.readouterr().err
    assert "1 of 1000 records were bad" in err and "'text'" in err
    assert not (out / MANIFEST_NAME).exists()


def _die(texts):  # a tokenizer worker killed mid-run
    os._exit(9)


def test_killed_worker_fails_with_no_manifest(tmp_path, jsonl_recipe, monkeypatch, capsys):
    monkeypatch.setattr(prep.pipeline, "encode_batch", _die)
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out), "--workers", "2") == 1
    assert "worker process died" in capsys.readouterr().err
    assert not (out / MANIFEST_NAME).exists() and not list(out.glob(f"{TMP_PREFIX}*"))


def test_full_disk_fails_with_no_manifest(tmp_path, jsonl_recipe, monkeypatch, capsys):
    def full(self, tokens, docs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SplitWriter, "add", full)
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out)) == 1
    assert "disk full" in capsys.readouterr().err
    assert not (out / MANIFEST_NAME).exists() and not list(out.glob(f"{TMP_PREFIX}*"))


def test_ctrl_c_exits_130_with_no_manifest(tmp_path, jsonl_recipe, monkeypatch, capsys):
    real = prep.pipeline.ShuffleBuffer.__call__

    def interrupted(self, items):
        for i, x in enumerate(real(self, items)):
            if i == 300:
                raise KeyboardInterrupt
            yield x

    monkeypatch.setattr(prep.pipeline.ShuffleBuffer, "__call__", interrupted)
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out)) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (out / MANIFEST_NAME).exists() and not list(out.glob(f"{TMP_PREFIX}*"))


def test_sample_recipe_readme_command(sample_dataset):
    m = manifest(sample_dataset)
    assert list(m["domains"]) == ["code", "math", "prose"]
    for name, dom in m["domains"].items():
        assert dom["counts"]["bytes_kept"] >= 400_000, name
        assert dom["splits"]["eval"]["docs"] >= 20
        for rec in dom["splits"].values():
            for s in rec["shards"]:
                assert (sample_dataset / s["path"]).stat().st_size == s["bytes"]
    assert m["domains"]["math"]["source"]["synthetic"] is True
    assert m["domains"]["code"]["counts"]["docs_kept"] > 300


def test_huge_document_is_counted_and_skipped(tmp_path):
    rng = __import__("random").Random(2)
    docs = [random_doc(rng) for _ in range(800)]
    docs.insert(400, "x" * 25_000_000)  # one 25 MB line: longer than a JSON read block
    write_jsonl(tmp_path / "d.jsonl", docs)
    recipe = write_recipe(tmp_path / "r.toml", {"prose": {
        "source": "json", "data_files": ["d.jsonl"], "min_chars": 1}})
    out = tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(out), "--workers", "1") == 0
    c = manifest(out)["domains"]["prose"]["counts"]
    assert c["docs_too_long"] == 1 and c["docs_seen"] == 801 and c["docs_filtered"] == 1
    assert c["docs_kept"] == 800 and c["bytes_seen"] > 25_000_000


def test_domains_with_different_eval_fractions_never_leak(tmp_path):
    # the same texts in two domains: a text between the two fractions would be eval in one and
    # train in the other; the later domain drops it (counted) instead of leaking
    rng = __import__("random").Random(3)
    write_jsonl(tmp_path / "d.jsonl", [random_doc(rng) for _ in range(600)])
    table = {"source": "json", "data_files": ["d.jsonl"], "min_chars": 1}
    recipe = write_recipe(tmp_path / "r.toml", {"a": {**table, "eval_fraction": 0.05},
                                                "b": {**table, "eval_fraction": 0.3}})
    out = tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(out)) == 0
    m = manifest(out)
    assert m["leakage_passed"] is True
    conflicts = m["domains"]["b"]["counts"]["docs_split_conflicts"]
    assert 100 < conflicts < 200  # ~25% of 600 lie between 0.05 and 0.3
    assert m["domains"]["a"]["counts"]["docs_split_conflicts"] == 0
    trains = set().union(*({d["sha256"] for d in doc_index(out, dom["splits"]["train"]
                                                             ["doc_index"]["path"])}
                           for dom in m["domains"].values()))
    for dom in m["domains"].values():
        ev = {d["sha256"] for d in doc_index(out, dom["splits"]["eval"]["doc_index"]["path"])}
        assert not ev & trains


def test_token_budget_alone_has_no_byte_budget(tmp_path, jsonl_recipe):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out), "--size-tokens",
                    "100000000") == 0
    for dom in manifest(out)["domains"].values():
        assert dom["size_budget_bytes"] is None and dom["token_budget"] == 100_000_000
        assert dom["budget_reached"] is False and dom["counts"]["docs_kept"] == 1000


def test_shuffle_seed_does_not_change_the_synthetic_corpus(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", {"math": {
        "source": "synthetic-math", "synthetic_docs": 800, "size_mb": 100}})
    maps = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        assert run_prep("--recipe", str(recipe), "--out", str(out), "--seed", seed) == 0
        maps.append(split_map(out))
    assert maps[0] == maps[1]  # same documents, same splits; only the order differs
    a, b = (manifest(tmp_path / s)["domains"]["math"]["splits"]["train"]["shards"][0]["sha256"]
            for s in ("1", "2"))
    assert a != b


def test_overwrite_removes_domains_the_new_recipe_lacks(tmp_path, jsonl_recipe):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out)) == 0
    assert (out / "alpha").is_dir() and (out / "beta").is_dir()
    rng = __import__("random").Random(4)
    write_jsonl(tmp_path / "g.jsonl", [random_doc(rng) for _ in range(800)])
    recipe = write_recipe(tmp_path / "g.toml", {"gamma": {
        "source": "json", "data_files": ["g.jsonl"], "min_chars": 1}})
    assert run_prep("--recipe", str(recipe), "--out", str(out), "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["gamma", "manifest.json"]


def test_unencodable_text_is_a_bad_record(tmp_path):
    import zipfile

    rng = __import__("random").Random(6)
    records = [{"Problem": random_doc(rng, 10, 30), "Rationale": random_doc(rng, 10, 30)}
               for _ in range(900)]
    raw = json.dumps(records).replace('"Problem": "', '"Problem": "\\ud800', 1)  # lone surrogate
    with zipfile.ZipFile(tmp_path / "MathQA.zip", "w") as zf:
        zf.writestr("train.json", raw)
    recipe = write_recipe(tmp_path / "r.toml", {"math": {"source": "mathqa",
                                                         "path": "MathQA.zip"}})
    out = tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(out), "--max-bad-fraction", "0.01") == 0
    c = manifest(out)["domains"]["math"]["counts"]
    assert c["docs_bad"] == 1 and c["docs_kept"] == 899
