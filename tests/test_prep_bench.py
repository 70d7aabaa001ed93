"""prep.bench's plumbing (not its timings): inputs, the ids check, the measured prep child, the
ceilings, the stage split, the modes, and no import cycle in the package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from prep_fixture import run_prep, write_corpus

from prep.bench import ceiling, ids, inputs, peers, stages
from prep.bench.config import BenchConfig
from prep.bench.measure import Bench


def test_code_corpus_documents_are_distinct_and_sizes_are_file_prefixes(tmp_path: Path):
    corpus = inputs.write_code(tmp_path, mb=3, file_mb=1)
    assert len(corpus.files) >= 3 and all(m >= 1 for m in corpus.mb[:-1])
    texts = list(inputs.read_texts(corpus.files))
    assert len(set(texts)) == len(texts)  # every copy made distinct by its first line
    assert texts[0].startswith("# copy 0: ") and sum(len(t.encode()) for t in texts) >= 3e6
    assert corpus.prefix(1.5) == corpus.files[:2] and corpus.prefix(1e9) == corpus.files


def test_code_copies_survive_prep_s_near_duplicate_removal_whole(tmp_path: Path, monkeypatch):
    """Copies of the stdlib renamed per copy: prep's default pipeline (near-duplicate removal
    on) keeps every document, so the bench's ids check and token counts hold."""
    docs = inputs.stdlib_documents()[:40]
    monkeypatch.setattr(inputs, "stdlib_documents", lambda: docs)
    mb = sum(len(t.encode()) for _, t in docs) * 2.5 / 1e6  # three copies, the last partial
    corpus = inputs.write_code(tmp_path / "in", mb=mb, file_mb=mb / 3)
    texts = list(inputs.read_texts(corpus.files))
    assert texts[-1].startswith("# copy 2: ") and "selfZ2" in "".join(texts[-5:])
    recipe = tmp_path / "r.toml"
    recipe.write_text("seed = 1\n[domains.data]\nsource = \"json\"\n"
                      f"data_files = {json.dumps(corpus.files)}\ntext_field = \"text\"\n"
                      "min_chars = 1\nmax_chars = 1000000000\nsize_mb = 1000000\n")
    out = tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(out), "--min-eval-docs", "1") == 0
    counts = json.loads((out / "manifest.json").read_text())["domains"]["data"]["counts"]
    assert counts["docs_kept"] == len(texts) > 2 * len(docs)
    assert counts["docs_near_duplicates"] == 0 and counts["docs_deduplicated"] == 0


def test_near_duplicates_are_left_out_of_the_inputs():
    a, b = [t for _, t in inputs.stdlib_documents() if len(t) > 20000][:2]  # distinct files
    lines = a.splitlines(keepends=True)
    edited = "".join(lines[:100] + lines[102:]) + "# one more line\n"  # Jaccard ~0.98 with a
    assert inputs.drop_near_duplicates([a, b, edited, a]) == [True, True, False, False]


def test_stream_digests_split_on_eot_before_or_after_each_document():
    docs = [np.array([1, 2, 3], np.uint16), np.array([7], np.uint16), np.array([4, 4], np.uint16)]
    eot = np.array([ids.EOT], np.uint16)
    after = np.concatenate([x for d in docs for x in (d, eot)])
    before = np.concatenate([x for d in docs for x in (eot, d)])
    want = [ids.digest(d) for d in docs]
    assert ids.stream_digests(after, eot_first=False) == want
    assert ids.stream_digests(before, eot_first=True) == want
    assert ids.stream_digests(after[:-1], eot_first=False) != want  # last EOT missing


def test_fineweb_shards_are_read_in_the_order_written(tmp_path: Path):
    for i in (0, 1, 2, 10):  # the first is named val, the rest train: not alphabetical order
        np.save(peers._fineweb_name(str(tmp_path), i), np.array([i], np.uint16))
    order = [int(np.load(p)[0]) for p in peers.fineweb_outputs(str(tmp_path))]
    assert order == [0, 1, 2, 10]


def test_the_measured_prep_child_reports_each_process(tmp_path: Path):
    recipe = write_corpus(tmp_path, {"alpha": 1}, files=4)
    result, out = tmp_path / "result.json", tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "prep.bench.children", "prep", str(result),
                           "--recipe", str(recipe), "--out", str(out), "--workers", "2",
                           "--partition-mb", "0.01", "--min-eval-docs", "1", "--quiet"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(result.read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    kept = manifest["domains"]["alpha"]["counts"]["docs_kept"]
    assert info["dedup_keys"] == kept and info["dedup_bytes"] == 16 * kept
    assert info["dedup_peak_bytes"] >= info["dedup_bytes"]
    assert 0 < info["coordinator_cpu_s"] and 0 < info["workers_cpu_s"]
    assert info["coordinator_peak_rss_mb"] > 10 and info["workers_max_peak_rss_mb"] > 10
    assert len(info["worker_peak_rss_mb"]) == 2  # each of the pool's workers, by PID
    # RUSAGE_CHILDREN's maximum bounds them (it also covers helpers: `uname -p`, which
    # platform.platform() runs for the manifest, starts from the coordinator's RSS)
    assert max(info["worker_peak_rss_mb"].values()) <= info["workers_max_peak_rss_mb"] + 1


def test_the_one_file_shape_holds_the_same_documents_in_order(tmp_path: Path):
    corpus = inputs.write_code(tmp_path, mb=2, file_mb=0.5)
    one = inputs.one_file(corpus.files, tmp_path / "one.jsonl.zst")
    assert list(inputs.read_texts([one])) == list(inputs.read_texts(corpus.files))


def test_a_concurrent_ceiling_encodes_every_share_once(tmp_path: Path):
    corpus = inputs.write_code(tmp_path, mb=0.6, file_mb=0.3)
    res = ceiling.concurrent(corpus.files, 2, "tiktoken", max_mb=0.0)
    texts = list(inputs.read_texts(corpus.files))
    from shards.tokenizer import reference_encoder

    enc = reference_encoder()
    assert res["tokens"] == sum(len(enc.encode_document(t)) for t in texts)
    assert res["bytes"] == sum(len(t.encode()) for t in texts)
    assert res["procs"] == 2 and len(res["per_process_tokens_per_s"]) == 2
    assert res["encoder"].startswith("tiktoken ") and res["tokens_per_s"] > 0
    shares = [ceiling.share(corpus.files, k, 2) for k in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(texts) and texts[0] == shares[0][0]


def test_the_stage_split_names_every_stage(tmp_path: Path):
    corpus = inputs.write_code(tmp_path, mb=0.3, file_mb=0.3)
    res = stages.split(corpus.files, "tiktoken", repeat=1)
    assert list(res["stage_cpu_s"]) == ["disk", "decompress", "parse", "read", "length_filter",
                                        "shuffle", "hash_split", "minhash", "tokenize", "write"]
    assert res["encoder"].startswith("tiktoken ") and 0.29 < res["mb"] < 0.4
    assert all(v >= 0 for v in res["stage_cpu_s"].values())
    assert "tokenize" in stages.format_split(res)


def test_the_modes_set_only_what_was_left_at_its_default():
    quick = BenchConfig(quick=True).resolved()
    assert (quick.code_mb, quick.peers, quick.quiet_wait) == ("20,40,60", "small", 5.0)
    assert {"mixed", "nanogpt", "ray"} <= quick.skipped
    mine = BenchConfig(quick=True, code_mb="6,8,12", skip="peers").resolved()
    assert mine.code_mb == "6,8,12" and {"peers", "mixed"} <= mine.skipped
    many = BenchConfig(many_cores=True).resolved()
    assert many.quiet_budget == 60.0 and many.code_mb == BenchConfig().code_mb


def test_waiting_for_a_quiet_machine_stops_when_its_budget_is_spent(tmp_path, monkeypatch):
    b = Bench(BenchConfig(quiet_wait=100.0, quiet_budget=0.0), tmp_path, None)
    monkeypatch.setattr("time.sleep", lambda s: (_ for _ in ()).throw(AssertionError("waited")))
    b._wait_quiet()  # no budget left: no waiting at all


def test_prep_bench_has_no_import_cycle():
    import ast

    root = Path(__file__).resolve().parents[1] / "prep" / "bench"
    graph = {}
    for f in root.glob("*.py"):
        mod = f"prep.bench.{f.stem}" if f.stem != "__init__" else "prep.bench"
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):  # lazy and TYPE_CHECKING imports too
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
                deps |= {n for n in names if n.startswith("prep.bench.")}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("prep.bench.")}
        graph[mod] = {d for d in deps if d != mod}

    def reach(start, node, seen):
        for d in graph.get(node, ()):
            if d == start:
                return True
            if d not in seen:
                seen.add(d)
                if reach(start, d, seen):
                    return True
        return False

    assert [m for m in graph if reach(m, m, set())] == []
