"""prep.bench's plumbing (not its timings): inputs, the ids check, the measured prep child."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from prep_fixture import write_corpus

from prep.bench import children, inputs, peers


def test_code_corpus_documents_are_distinct_and_sizes_are_file_prefixes(tmp_path: Path):
    corpus = inputs.write_code(tmp_path, mb=3, file_mb=1)
    assert len(corpus.files) >= 3 and all(m >= 1 for m in corpus.mb[:-1])
    texts = list(inputs.read_texts(corpus.files))
    assert len(set(texts)) == len(texts)  # every copy made distinct by its first line
    assert texts[0].startswith("# copy 0: ") and sum(len(t.encode()) for t in texts) >= 3e6
    assert corpus.prefix(1.5) == corpus.files[:2] and corpus.prefix(1e9) == corpus.files


def test_stream_digests_split_on_eot_before_or_after_each_document():
    docs = [np.array([1, 2, 3], np.uint16), np.array([7], np.uint16), np.array([4, 4], np.uint16)]
    eot = np.array([children.EOT], np.uint16)
    after = np.concatenate([x for d in docs for x in (d, eot)])
    before = np.concatenate([x for d in docs for x in (eot, d)])
    want = [children.digest(d) for d in docs]
    assert children.stream_digests(after, eot_first=False) == want
    assert children.stream_digests(before, eot_first=True) == want
    assert children.stream_digests(after[:-1], eot_first=False) != want  # last EOT missing


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
