"""The prep run end to end: determinism, split stability, leakage, dedup, budgets, order."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import zstandard
from prep_fixture import (
    data_files,
    manifest,
    random_doc,
    run_prep,
    write_corpus,
    write_jsonl,
    write_recipe,
)

import prep.order
import prep.plan
import prep.run
import shards
from prep.__main__ import main as prep_main
from shards.format import MANIFEST_NAME, content_hash
from shards.tokenizer import EOT_ID, load_gpt2

PARTITION = ("--partition-mb", "0.15")  # write_corpus's ~95 KB files: one partition each


def doc_index(out: Path, rel: str) -> list[dict]:
    raw = zstandard.ZstdDecompressor().stream_reader(open(out / rel, "rb")).read()
    return [json.loads(line) for line in io.StringIO(raw.decode())]


def split_tokens(out: Path, split_rec: dict) -> np.ndarray:
    parts = [np.memmap(out / s["path"], dtype=np.uint16, mode="r") for s in split_rec["shards"]]
    return np.concatenate(parts) if parts else np.empty(0, np.uint16)


def split_map(out: Path) -> dict[str, str]:
    """content hash -> split, over every domain."""
    res = {}
    for dom in manifest(out)["domains"].values():
        for split, rec in dom["splits"].items():
            for d in doc_index(out, rec["doc_index"]["path"]):
                res[d["sha256"]] = split
    return res


def test_workers_1_and_3_are_byte_identical(tmp_path):
    recipe = write_corpus(tmp_path, {"alpha": 1, "beta": 2}, files=5)
    a, b = tmp_path / "w1", tmp_path / "w3"
    assert run_prep("--recipe", str(recipe), "--out", str(a), "--workers", "1", *PARTITION,
                    "--interleave", "2") == 0
    assert run_prep("--recipe", str(recipe), "--out", str(b), "--workers", "3", *PARTITION,
                    "--interleave", "2") == 0
    fa, fb = data_files(a), data_files(b)
    assert len(fa) == 8 and fa == fb  # 2 domains x 2 splits x (shard + index)
    ma, mb = manifest(a), manifest(b)
    assert ma["domains"] == mb["domains"]  # checksums, counts, order, partitions read
    assert ma["domains"]["alpha"]["order"]["partitions_planned"] == 5
    assert ma["config"]["workers"] == 1 and mb["config"]["workers"] == 3
    assert sorted(p.name for p in a.iterdir()) == [".prep.lock", "data.1", "manifest.json"]


def test_decoded_shards_reproduce_documents_exactly_in_a_shuffled_order(tmp_path):
    rng = random.Random(5)
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
            assert content_hash(text) == d["sha256"] and d["chars"] == len(text)
            assert d["source"]["row"] == docs.index(text)
            seen.append((d["source"]["row"], text))
            pos += d["tokens"]
        assert pos == len(toks) == rec["tokens"]
    assert sorted(t for _, t in seen) == sorted(docs)  # every document exactly once
    train_rows = [r for r, _ in seen[:m["splits"]["train"]["docs"]]]
    assert train_rows != sorted(train_rows)  # the seeded shuffle moved them


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


def test_split_is_stable_across_seed_budget_workers_and_partitioning(tmp_path):
    recipe = str(write_corpus(tmp_path, {"alpha": 1, "beta": 2}, files=4))
    runs = {
        "base": ["--workers", "2"],
        "seed": ["--workers", "2", "--seed", "99"],
        "budget": ["--workers", "2", "--size-mb", "0.15", "--min-eval-docs", "5"],
        "workers": ["--workers", "1", "--seed", "7", *PARTITION, "--interleave", "3"],
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
    shard0 = {n: manifest(tmp_path / n)["domains"]["alpha"]["splits"]["train"]["shards"][0]
              ["sha256"] for n in ("seed", "base")}
    assert shard0["seed"] != shard0["base"]


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
        # every document read is accounted for, exactly once
        assert c["docs_seen"] == (c["docs_bad"] + c["docs_filtered"] + c["docs_deduplicated"]
                                  + c["docs_near_duplicates"]
                                  + c["docs_kept"] + c["docs_over_budget"])


def test_dedup_across_partitions_and_domains_first_in_plan_order_wins(tmp_path):
    rng = random.Random(11)
    shared = [random_doc(rng) for _ in range(120)]
    own = {k: [random_doc(rng) for _ in range(300)] for k in ("a0", "a1", "b0")}
    write_jsonl(tmp_path / "a0.jsonl", own["a0"] + shared)  # partition a0 and a1 share 120
    write_jsonl(tmp_path / "a1.jsonl", shared + own["a1"])
    write_jsonl(tmp_path / "b0.jsonl", shared[:50] + own["b0"])  # domain b repeats 50 of a's
    table = {"source": "json", "min_chars": 1}
    recipe = write_recipe(tmp_path / "r.toml", {
        "a": {**table, "data_files": ["a0.jsonl", "a1.jsonl"]},
        "b": {**table, "data_files": ["b0.jsonl"]}})
    out = tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(out), "--interleave", "1",
                    "--partition-mb", "0.3", "--min-eval-docs", "5") == 0  # a file a partition
    m = manifest(out)
    a, b = m["domains"]["a"], m["domains"]["b"]
    assert a["counts"]["docs_deduplicated"] == 120 and a["counts"]["docs_kept"] == 720
    assert a["counts"]["docs_deduplicated_across_domains"] == 0
    assert b["counts"]["docs_deduplicated"] == b["counts"]["docs_deduplicated_across_domains"] == 50
    assert b["counts"]["docs_kept"] == 300
    # with interleave 1 the plan order is partition by partition: the copy kept is the one in
    # the partition that comes first in the seeded order
    first = a["partitions"][0]
    kept_from = {content_hash(t): None for t in shared}
    for split in ("train", "eval"):
        for d in doc_index(out, a["splits"][split]["doc_index"]["path"]):
            if d["sha256"] in kept_from:
                kept_from[d["sha256"]] = Path(d["source"]["file"]).name
    assert set(kept_from.values()) == {first["key"]}
    assert [p["docs_kept"] for p in a["partitions"]] == [420, 300]


def test_budget_reads_a_bounded_number_of_partitions_and_interleaves_them(tmp_path):
    recipe = write_corpus(tmp_path, {"code": 5}, files=30)
    out = tmp_path / "out"
    # ~95 KB per file: a 0.25 MB budget needs about 3 files; interleave 4 draws from 4
    assert run_prep("--recipe", str(recipe), "--out", str(out), "--size-mb", "0.25",
                    "--interleave", "4", "--workers", "2", "--min-eval-docs", "5",
                    *PARTITION) == 0
    m = manifest(out)
    dom = m["domains"]["code"]
    assert dom["budget_reached"] is True and dom["order"]["partitions_planned"] == 30
    assert dom["order"]["partitions_read"] == 4 == len(dom["partitions"])
    assert all(p["docs_kept"] > 50 for p in dom["partitions"])  # each gave a fair share
    assert m["run"]["tasks_done"] <= 4 + 2  # what the budget needs, plus one per worker
    files = [Path(d["source"]["file"]).name
             for d in doc_index(out, dom["splits"]["train"]["doc_index"]["path"])[:40]]
    assert len(set(files)) == 4  # the first 40 documents already come from all four
    assert {f["path"] for f in dom["source"]["files"]} == {
        str(tmp_path / p["key"]) for p in dom["partitions"]}


def test_size_budget_and_token_budget(tmp_path, jsonl_recipe):
    recipe = str(jsonl_recipe())
    out = tmp_path / "mb"
    assert run_prep("--recipe", recipe, "--out", str(out), "--size-mb", "0.2",
                    "--min-eval-docs", "5") == 0
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


def test_manifest_records_config_source_order_and_tokenizer(tmp_path, jsonl_recipe):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out), "--workers", "1",
                    "--shuffle-buffer", "123", "--shuffle-buffer-mb", "2",
                    "--eval-fraction", "0.1") == 0
    m = manifest(out)
    assert (m["format"], m["format_version"]) == ("moe-shards", 3)
    assert m["tokenizer"]["eot_id"] == 50256 and m["tokenizer"]["vocab_size"] == 50257
    assert m["tokenizer"]["ranks_sha256"].startswith("306cd27f")
    dom = m["domains"]["alpha"]
    assert dom["shuffle_buffer"] == 123 and dom["eval_fraction"] == 0.1
    assert dom["order"]["shuffle_buffer_docs"] == 123
    assert dom["order"]["shuffle_buffer_bytes"] == 2_000_000 and dom["order"]["interleave"] == 8
    assert "seeded permutation of the partitions" in dom["order"]["rule"]
    assert dom["source"]["reader"] == "json"
    path = Path(m["recipe"]["domains"][0]["data_files"][0])
    assert dom["source"]["files"][0]["sha256"] == content_hash(path.read_text())
    assert m["config"]["shuffle_buffer"] == 123
    assert m["run"]["tokens_per_s"] > 0 and m["run"]["seconds"] > 0
    assert set(dom["counts"]) >= {"docs_seen", "docs_kept", "docs_bad", "docs_deduplicated",
                                  "bytes_seen", "bytes_kept", "docs_too_short", "docs_too_long",
                                  "docs_over_budget", "docs_deduplicated_across_domains"}
    assert dom["steps"] == ["read", "length_filter", "shuffle", "hash_split", "minhash",
                            "tokenize"]
    assert dom["commit_hooks"] == ["exact_dedup", "near_dedup"]
    assert m["hooks"]["near_dedup"]["params"]["domains"]["alpha"] == {
        "threshold": 0.8, "mode": "remove", "shingle": "prose"}


def test_refuses_to_overwrite_a_finished_dataset(tmp_path, jsonl_recipe, capsys):
    recipe, out = str(jsonl_recipe()), tmp_path / "out"
    assert run_prep("--recipe", recipe, "--out", str(out)) == 0
    before = data_files(out)
    assert run_prep("--recipe", recipe, "--out", str(out), "--seed", "1") == 1
    assert "holds a finished dataset. Pass --overwrite" in capsys.readouterr().err
    assert data_files(out) == before
    assert run_prep("--recipe", recipe, "--out", str(out), "--seed", "1", "--overwrite") == 0
    after = data_files(out)
    assert after != before and all(p.startswith("data.2/") for p in after)
    assert sorted(p.name for p in out.iterdir()) == [".prep.lock", "data.2", "manifest.json"]


def test_too_few_eval_docs_fails_clearly(tmp_path, jsonl_recipe, capsys):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe(n_docs=200)), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "eval documents, fewer than --min-eval-docs 20" in err and "--size-mb" in err
    assert "nothing was published" in err
    assert not (out / MANIFEST_NAME).exists()


def test_bad_records_are_counted_then_fail_above_threshold(tmp_path, capsys):
    rng = random.Random(1)
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
    assert "1 of 1000 records were bad" in err and "'text'" in err and "d.jsonl" in err
    assert not (out / MANIFEST_NAME).exists()


def test_sample_recipe_readme_command(sample_dataset):
    m = manifest(sample_dataset)
    assert list(m["domains"]) == ["code", "math", "prose"]
    for name, dom in m["domains"].items():
        assert dom["counts"]["bytes_kept"] >= 400_000, name
        assert dom["splits"]["eval"]["docs"] >= 20
        assert dom["order"]["partitions_read"] >= 1
        for rec in dom["splits"].values():
            for s in rec["shards"]:
                assert (sample_dataset / s["path"]).stat().st_size == s["bytes"]
    assert m["domains"]["math"]["source"]["synthetic"] is True
    assert m["domains"]["code"]["counts"]["docs_kept"] > 300


def test_huge_document_is_counted_and_skipped(tmp_path):
    rng = random.Random(2)
    docs = [random_doc(rng) for _ in range(800)]
    docs.insert(400, "x" * 25_000_000)  # one 25 MB line: longer than a read block
    write_jsonl(tmp_path / "d.jsonl", docs)
    recipe = write_recipe(tmp_path / "r.toml", {"prose": {
        "source": "json", "data_files": ["d.jsonl"], "min_chars": 1}})
    out = tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(out), "--workers", "1") == 0
    c = manifest(out)["domains"]["prose"]["counts"]
    assert c["docs_too_long"] == 1 and c["docs_seen"] == 801 and c["docs_filtered"] == 1
    assert c["docs_kept"] == 800 and c["bytes_seen"] > 25_000_000


def test_token_budget_alone_has_no_byte_budget(tmp_path, jsonl_recipe):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out), "--size-tokens",
                    "100000000") == 0
    for dom in manifest(out)["domains"].values():
        assert dom["size_budget_bytes"] is None and dom["token_budget"] == 100_000_000
        assert dom["budget_reached"] is False and dom["counts"]["docs_kept"] == 1000


def test_shuffle_seed_does_not_change_the_synthetic_corpus(tmp_path):
    # near-dup removal keeps each cluster's first member in plan order, which the seed changes
    # (the generator repeats some problems with other punctuation): off here, and below a
    # document kept by both runs is in the same split
    for near in (False, True):
        recipe = write_recipe(tmp_path / "r.toml", {"math": {
            "source": "synthetic-math", "synthetic_docs": 800, "size_mb": 100,
            "near_dedup": near}})
        maps = []
        for seed in ("1", "2"):
            out = tmp_path / f"{seed}-{near}"
            assert run_prep("--recipe", str(recipe), "--out", str(out), "--seed", seed) == 0
            maps.append(split_map(out))
        if near:
            common = maps[0].keys() & maps[1].keys()
            assert len(common) > 700 and all(maps[0][h] == maps[1][h] for h in common)
            continue
        assert maps[0] == maps[1]  # same documents, same splits; only the order differs
        a, b = (manifest(tmp_path / f"{s}-{near}")["domains"]["math"]["splits"]["train"]
                ["shards"][0]["sha256"] for s in ("1", "2"))
        assert a != b


def test_overwrite_removes_domains_the_new_recipe_lacks(tmp_path, jsonl_recipe):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out)) == 0
    assert sorted(p.name for p in (out / "data.1").iterdir()) == [".prep-data", "_hooks", "alpha",
                                                                   "beta"]
    rng = random.Random(4)
    write_jsonl(tmp_path / "g.jsonl", [random_doc(rng) for _ in range(800)])
    recipe = write_recipe(tmp_path / "g.toml", {"gamma": {
        "source": "json", "data_files": ["g.jsonl"], "min_chars": 1}})
    assert run_prep("--recipe", str(recipe), "--out", str(out), "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == [".prep.lock", "data.2", "manifest.json"]
    assert sorted(p.name for p in (out / "data.2").iterdir()) == [".prep-data", "_hooks", "gamma"]


def test_overwrite_of_a_pre_versioning_dataset_removes_its_domain_directories(
        tmp_path, jsonl_recipe):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out)) == 0
    # rewrite it in the layout prep wrote before versioned directories: OUT/<domain>/<split>/
    m = manifest(out)
    for dom in m["domains"].values():
        for rec in dom["splits"].values():
            for f in rec["shards"] + [rec["doc_index"]]:
                new = f["path"].split("/", 1)[1]
                (out / new).parent.mkdir(parents=True, exist_ok=True)
                os.replace(out / f["path"], out / new)
                f["path"] = new
    shutil.rmtree(out / "data.1")  # now empty directories
    (out / MANIFEST_NAME).write_text(json.dumps(m))
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out), "--overwrite",
                    "--seed", "9") == 0
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["data.1", "manifest.json"]  # alpha/ and beta/ removed after the switch


def test_unencodable_text_is_a_bad_record(tmp_path):
    rng = random.Random(6)
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


def test_recipe_values_of_the_wrong_type_and_empty_files_are_one_line_errors(tmp_path, capsys):
    write_jsonl(tmp_path / "d.jsonl", ["some text"] * 3)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    cases = [({"size_mb": "ten"}, "[domains.prose] size_mb must be a number, got 'ten'"),
             ({"min_chars": "5"}, "[domains.prose] min_chars must be an integer, got '5'"),
             ({"data_files": ["empty.jsonl"]}, "empty.jsonl")]
    for i, (keys, message) in enumerate(cases):
        recipe = write_recipe(tmp_path / f"r{i}.toml", {"prose": {
            "source": "json", "data_files": ["d.jsonl"], **keys}})
        assert run_prep("--recipe", str(recipe), "--out", str(tmp_path / f"o{i}")) == 1
        err = capsys.readouterr().err
        assert message in err, err
        assert err.startswith("prep: error: ") and "Traceback" not in err
        assert "StopIteration" not in err and len(err.strip().splitlines()) == 1


def test_a_partition_read_further_on_demand_gives_the_uncapped_output(tmp_path, monkeypatch):
    # each partition repeats its 60 documents 8 times: dedup removes 7 of 8 documents read, so
    # the first caps (2x a partition's share of the budget) run out before the budget is met
    # and the commit asks for both partitions again, read 4x further (level 1). The output
    # must be exactly that of a run whose tasks are never capped.
    rng = random.Random(21)
    for name in ("a", "b"):
        unique = [random_doc(rng) for _ in range(60)]
        write_jsonl(tmp_path / f"{name}.jsonl", unique * 8)
    recipe = write_recipe(tmp_path / "r.toml", {"x": {
        "source": "json", "data_files": ["a.jsonl", "b.jsonl"], "min_chars": 1}})
    args = ("--recipe", str(recipe), "--size-mb", "0.1", "--interleave", "2",
            "--partition-mb", "0.4", "--min-eval-docs", "1", "--eval-fraction", "0.1")
    capped, other = tmp_path / "capped", tmp_path / "other"
    assert run_prep(*args, "--out", str(capped), "--workers", "1") == 0
    c = manifest(capped)["domains"]["x"]
    assert [p["level"] for p in c["partitions"]] == [1, 1]
    assert all(p["exhausted"] for p in c["partitions"]) and c["budget_reached"] is False
    assert c["counts"]["docs_kept"] == 120 and c["counts"]["docs_deduplicated"] == 840
    assert run_prep(*args, "--out", str(other), "--workers", "3") == 0
    assert data_files(other) == data_files(capped)
    uncapped = tmp_path / "uncapped"
    monkeypatch.setattr(prep.plan, "CAP_SLACK", 1e9)
    assert run_prep(*args, "--out", str(uncapped), "--workers", "2") == 0
    assert data_files(uncapped) == data_files(capped)
    u = manifest(uncapped)["domains"]["x"]
    assert [p["level"] for p in u["partitions"]] == [0, 0]
    assert u["splits"] == c["splits"] and u["counts"] == c["counts"]


def test_a_broken_partition_the_budget_never_needs_does_not_fail_the_run(tmp_path, capsys):
    recipe = write_corpus(tmp_path, {"code": 9}, files=8)
    order = prep.order.permutation("3:code:partitions", 8)
    broken = tmp_path / f"code-{order[-1]}.jsonl"  # the partition the plan reads last
    broken.write_text("this is not JSON\n" + broken.read_text())
    common = ("--recipe", str(recipe), "--interleave", "2", "--min-eval-docs", "3", *PARTITION)
    outs = []
    for workers in ("1", "3"):
        out = tmp_path / f"w{workers}"
        assert run_prep(*common, "--size-mb", "0.1", "--out", str(out), "--workers",
                        workers) == 0
        outs.append(out)
    assert data_files(outs[0]) == data_files(outs[1])
    # when the budget does need it, the run fails and names the file and line
    assert run_prep(*common, "--size-mb", "5", "--out", str(tmp_path / "all")) == 1
    err = capsys.readouterr().err
    assert f"{broken}: line 1: malformed JSON" in err and "nothing was published" in err


def test_an_empty_split_is_published_empty(tmp_path, jsonl_recipe):
    out = tmp_path / "out"
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out), "--eval-fraction",
                    "0.000001", "--min-eval-docs", "0") == 0
    for dom in manifest(out)["domains"].values():
        ev = dom["splits"]["eval"]
        assert ev["docs"] == ev["tokens"] == 0 and ev["shards"] == []
        assert doc_index(out, ev["doc_index"]["path"]) == []
    assert shards.open(out).split("alpha", "eval").num_tokens == 0


def test_a_manifest_written_by_another_run_meanwhile_is_not_replaced(tmp_path, jsonl_recipe,
                                                                     monkeypatch, capsys):
    recipe, out = str(jsonl_recipe()), tmp_path / "out"
    real = prep.run.make_plan

    def slow_plan(cfg):  # another run publishes while this one plans (before its lock)
        plan = real(cfg)
        monkeypatch.setattr(prep.run, "make_plan", real)
        assert run_prep("--recipe", recipe, "--out", str(out), "--seed", "111") == 0
        return plan

    monkeypatch.setattr(prep.run, "make_plan", slow_plan)
    assert run_prep("--recipe", recipe, "--out", str(out), "--seed", "222") == 1
    assert "holds a finished dataset. Pass --overwrite" in capsys.readouterr().err
    assert manifest(out)["seed"] == 111


def test_prep_removes_only_version_directories_it_published(tmp_path, jsonl_recipe, capsys):
    out = tmp_path / "out"
    (out / "data.7").mkdir(parents=True)
    (out / "data.7" / "notes.txt").write_text("precious")
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out)) == 0
    assert (out / "data.7" / "notes.txt").read_text() == "precious"
    (out / MANIFEST_NAME).write_text("{ not json")
    assert run_prep("--recipe", str(jsonl_recipe()), "--out", str(out), "--overwrite") == 1
    err = capsys.readouterr().err
    assert "manifest.json exists but cannot be read" in err and "move it away" in err
    assert (out / "data.1").is_dir()  # nothing was removed on account of an unreadable manifest


def test_progress_lines_come_from_the_tasks_counters_when_not_a_terminal(tmp_path, capsys):
    recipe = write_corpus(tmp_path, {"alpha": 1}, files=3)
    assert prep_main(["--recipe", str(recipe), "--out", str(tmp_path / "out"), *PARTITION,
                 "--min-eval-docs", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[prep] encoder: ")  # which one, and what it said (if anything)
    lines = [x for x in lines if not x.startswith("[prep] encoder: ")]
    assert lines[0] == "[prep] alpha: 3 partitions, budget 10 MB"
    m = manifest(tmp_path / "out")["domains"]["alpha"]
    first = next(x for x in lines if x.startswith("[prep] alpha: 1/3 tasks, "))
    assert first.endswith(" tokens/s") and " docs, " in first and " MB, " in first
    assert lines[-1].startswith(f"[prep] wrote {tmp_path / 'out'}/manifest.json (")
    assert f"{m['splits']['train']['docs']:,}" in "\n".join(lines)  # the summary table
