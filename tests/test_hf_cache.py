"""The `hf` reader offline: datasets read from a Hub cache that the test builds in HF_HOME.

The cache has huggingface_hub's layout, as `hf download ID --repo-type dataset` leaves it:
``hub/datasets--ORG--NAME/refs/main`` holds the commit hash, ``snapshots/<hash>/...`` links
to the files in ``blobs/``. Nothing here touches the network: the probe is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prep_fixture import random_doc, write_recipe
from readers_fixture import planned, read_all, worker

import prep.readers.hf as hf
import shards
from prep.__main__ import main
from prep.readers import BadRecord, Document, SourceError
from prep.readers.wikitext import group_articles
from prep.recipe import DomainConfig

COMMIT = "3f5e1c0b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f"


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


def jsonl_bytes(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def make_hub_cache(hf_home: Path, repo_id: str, files: dict[str, bytes],
                   commit: str = COMMIT) -> Path:
    """A dataset repository in huggingface_hub's cache layout; returns the snapshot folder."""
    repo = hf_home / "hub" / ("datasets--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    snapshot = repo / "snapshots" / commit
    for rel, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snapshot


@pytest.fixture
def hf_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """HF_HOME in a temporary folder, offline, and any network probe is a test failure."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("probed"))
    return tmp_path / "hf-home"


def code_rows(shard: int) -> list[dict[str, Any]]:
    return [{"content": f"def f{shard}_{r}():\n    return {r}\n", "url": f"https://x/{shard}/{r}",
             "stars": r} for r in range(3)]


def no_worker_probe(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """From now on, a probe fails the test; returns the list of load_dataset targets."""
    import datasets

    monkeypatch.setattr(hf, "hub_unreachable_reason", lambda: pytest.fail("a worker probed"))
    targets: list[tuple[Any, ...]] = []
    real = datasets.load_dataset

    def spy(*args: Any, **kwargs: Any) -> Any:
        targets.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    return targets


def test_offline_jsonl_dataset_with_several_shards(hf_home: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = make_hub_cache(hf_home, "org/code", {
        "README.md": b"# code\n",
        **{f"data/part-{i}.jsonl": jsonl_bytes(code_rows(i)) for i in range(3)}})
    cfg = DomainConfig(name="code", source="hf", dataset="org/code", text_field="content")
    src = planned(cfg)
    assert src.notes() == [f"dataset 'org/code': read from the local Hub cache (offline): "
                           f"snapshot {COMMIT} (HF_HUB_OFFLINE is set; {snapshot})"]
    d = src.describe()
    assert d["resolved_revision"] == COMMIT and d["snapshot"] == str(snapshot)
    assert d["revision_source"] == "local Hub cache (offline: HF_HUB_OFFLINE is set)"
    parts = src.partitions()
    assert [p.spec for p in parts] == [{"mode": "cache", "target": str(snapshot),
                                        "revision": COMMIT, "shard": i, "n_shards": 3,
                                        "cut": 16_000_000} for i in range(3)]
    assert parts[1].identity == f"hf:org/code@{COMMIT}::train:#1/3"
    targets = no_worker_probe(monkeypatch)
    out = read_all(src)
    assert [(d.text, d.source) for d in out] == [
        (row["content"], {"shard": i, "row": r, "url": row["url"]})
        for i in range(3) for r, row in enumerate(code_rows(i))]
    assert targets and all(t[0] == str(snapshot) for t in targets)  # never the Hub id
    assert worker(src).partition_record(parts[2]) == {
        "dataset": "org/code", "revision": COMMIT, "shard": 2, "n_shards": 3,
        "snapshot": str(snapshot)}


CONFIGS_README = b"""---
configs:
- config_name: en
  data_files:
  - split: train
    path: en/*.parquet
- config_name: fr
  data_files:
  - split: train
    path: fr/*.parquet
---
# two configurations
"""


def test_offline_parquet_configs(hf_home: Path) -> None:
    make_hub_cache(hf_home, "org/multi", {
        "README.md": CONFIGS_README,
        "en/train-0.parquet": parquet_bytes([{"text": "hello", "id": 1}, {"text": None, "id": 2}]),
        "en/train-1.parquet": parquet_bytes([{"text": "world", "id": 3}]),
        "fr/train.parquet": parquet_bytes([{"text": "bonjour"}, {"text": "monde"}])})
    en = planned(DomainConfig(name="prose", source="hf", dataset="org/multi", config="en"))
    assert len(en.partitions()) == 2
    out = read_all(en)
    assert out[0] == Document("hello", {"shard": 0, "row": 0, "id": 1})
    assert out[1] == BadRecord("dataset 'org/multi' shard 0 row 1: no text field 'text' "
                               "(fields present: id); set text_field in the recipe")
    assert out[2] == Document("world", {"shard": 1, "row": 0, "id": 3})
    fr = planned(DomainConfig(name="prose", source="hf", dataset="org/multi", config="fr"))
    assert [d.text for d in read_all(fr)] == ["bonjour", "monde"]
    assert fr.describe()["config"] == "fr"


def test_unreachable_hub_falls_back_to_the_cache(hf_home: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def refuse(*a: Any, **k: Any) -> socket.socket:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    make_hub_cache(hf_home, "org/code", {"data/a.jsonl": jsonl_bytes(code_rows(0))})
    src = planned(DomainConfig(name="code", source="hf", dataset="org/code", text_field="content",
                               revision=COMMIT))
    [note] = src.notes()
    assert f"read from the local Hub cache (offline): snapshot {COMMIT} (cannot connect to " \
           "huggingface.co:443 (Network is unreachable)" in note
    assert src.describe()["revision"] == COMMIT
    assert [d.text for d in read_all(src)] == [r["content"] for r in code_rows(0)]


def test_missing_revision_or_dataset_says_how_to_fill_the_cache(hf_home: Path) -> None:
    make_hub_cache(hf_home, "org/code", {"data/a.jsonl": jsonl_bytes(code_rows(0))})
    with pytest.raises(SourceError, match=r"\[domains\.code\] dataset 'org/code' needs the "
                                          r"Hugging Face Hub, which is unreachable: HF_HUB_OFFLINE "
                                          r"is set; and the local Hub cache \(.*hf-home/hub\) "
                                          r"holds no snapshot of it at revision 'v2'\. Fill the "
                                          r"cache on a machine with internet \(`hf download "
                                          r"org/code --repo-type dataset --revision v2`, with "
                                          r"HF_HOME pointing at a cache this machine reads\)"):
        planned(DomainConfig(name="code", source="hf", dataset="org/code", revision="v2"))
    with pytest.raises(SourceError, match=r"dataset 'org/other' .*`hf download org/other "
                                          r"--repo-type dataset`"):
        planned(DomainConfig(name="code", source="hf", dataset="org/other"))


def wiki_rows() -> list[str]:
    rows = [" preamble \n", ""]
    for a in range(5):
        rows += [f" = Article {a} = \n", ""] + [f" line {a}.{k} \n" for k in range(a + 1)]
    return rows


def test_offline_wikitext_grouped_across_shards(hf_home: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    rows = wiki_rows()
    cuts = [0, 5, 10, 14, 22, len(rows)]  # shard 2 (rows 10-13) holds no heading at all
    shards = [rows[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    assert not any("= Article" in r for r in shards[2])
    snapshot = make_hub_cache(hf_home, "org/wikitext", {
        "README.md": b"---\nconfigs:\n- config_name: raw\n  data_files:\n  - split: train\n"
                     b"    path: raw/train-*.parquet\n---\n",
        **{f"raw/train-{i}.parquet": parquet_bytes([{"text": r} for r in shard])
           for i, shard in enumerate(shards)}})
    cfg = DomainConfig(name="prose", source="hf", dataset="org/wikitext", config="raw",
                       group="wikitext")
    src = planned(cfg)
    assert len(src.partitions()) == 5 and src.notes()[0].endswith(f"{snapshot})")
    assert src.describe()["group"] == "wikitext"
    no_worker_probe(monkeypatch)
    per_part = [list(worker(src).read(p)) for p in src.partitions()]
    assert per_part[2] == []
    got = [d for part in per_part for d in part]
    sequential = list(group_articles(Document(r, {}) for r in rows))
    assert [d.text for d in got] == [d.text for d in sequential]
    assert [d.source["title"] for d in got] == [f"Article {a}" for a in range(5)]
    assert got[0].text == "= Article 0 = \n\n line 0.0"
    assert got[1].source == {"shard": 1, "row": 0, "title": "Article 1"}
    assert got[2].source == {"shard": 1, "row": 4, "title": "Article 2"}  # ends in shard 3


def test_prep_end_to_end_offline_from_the_hub_cache(hf_home: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """`python -m prep` with `source = "hf"` on a compute node without internet: both domains
    come from the Hub cache (one grouped WikiText-style), with the commit hash in the manifest."""
    rng = random.Random(7)
    make_hub_cache(hf_home, "org/code", {f"data/part-{i}.jsonl": jsonl_bytes(
        [{"content": random_doc(rng), "url": f"u{i}/{r}"} for r in range(200)]) for i in range(3)})
    lines: list[str] = []
    for a in range(300):
        lines += [f" = Article {a} = ", ""] + [f" {random_doc(rng, 20, 40)} " for _ in range(3)]
    make_hub_cache(hf_home, "org/wiki", {
        "README.md": b"---\nconfigs:\n- config_name: raw\n  data_files:\n  - split: train\n"
                     b"    path: raw/train-*.parquet\n---\n",
        **{f"raw/train-{i}.parquet": parquet_bytes([{"text": x} for x in half])
           for i, half in enumerate((lines[:len(lines) // 2 + 1], lines[len(lines) // 2 + 1:]))}},
        commit="a" * 40)  # the cut falls inside an article
    recipe = write_recipe(tmp_path / "r.toml", {
        "code": {"source": "hf", "dataset": "org/code", "text_field": "content"},
        "prose": {"source": "hf", "dataset": "org/wiki", "config": "raw", "group": "wikitext",
                  "min_chars": 1}}, block_size=16)
    out = tmp_path / "out"
    assert main(["--recipe", str(recipe), "--out", str(out), "--workers", "2",
                 "--eval-fraction", "0.1", "--min-eval-docs", "5"]) == 0
    said = capsys.readouterr().out
    assert f"code: dataset 'org/code': read from the local Hub cache (offline): snapshot {COMMIT}" \
        in said
    m = json.loads((out / "manifest.json").read_text())
    code, prose = m["domains"]["code"], m["domains"]["prose"]
    assert code["source"]["resolved_revision"] == COMMIT
    assert prose["source"]["resolved_revision"] == "a" * 40
    assert code["counts"]["docs_kept"] == 600 and len(code["partitions"]) == 3
    assert prose["counts"]["docs_kept"] == 300  # every article once, whole, across the 2 shards
    ds = shards.open(out)
    titles = sorted(int(d.source["title"].split()[1]) for s in ("train", "eval")
                    for d in ds.split("prose", s).documents())
    assert titles == list(range(300))


def test_a_hub_dataset_with_one_shard_is_cut_for_every_worker(hf_home: Path,
                                                              tmp_path: Path) -> None:
    """One Parquet shard in the Hub cache: the coordinator streams it once and cuts its rows
    into pieces; any --workers gives the same bytes, and every row is read once."""
    rng = random.Random(11)
    rows = [{"content": random_doc(rng, 20, 200), "url": f"u/{r}"} for r in range(1500)]
    rows[700]["content"] = None  # a bad row, counted in its piece
    make_hub_cache(hf_home, "org/one", {"data/train.parquet": parquet_bytes(rows)})
    recipe = write_recipe(tmp_path / "r.toml", {"code": {
        "source": "hf", "dataset": "org/one", "text_field": "content", "min_chars": 1,
        "size_mb": 100}}, block_size=16)
    outs = []
    for workers in ("1", "2"):
        outs.append(tmp_path / f"out{workers}")
        assert main(["--recipe", str(recipe), "--out", str(outs[-1]), "--workers", workers,
                     "--partition-mb", "0.05", "--quiet"]) == 0
    m = [json.loads((o / "manifest.json").read_text()) for o in outs]
    assert m[0]["domains"] == m[1]["domains"]
    code = m[0]["domains"]["code"]
    parts = code["partitions"]
    n = len(parts)
    assert n >= 5 and [p["key"] for p in parts] == [f"shard-00000-of-00001#{i}"
                                                    for i in range(n)]
    assert [p["provenance"]["last"] for p in parts] == [False] * (n - 1) + [True]
    assert parts[0]["provenance"]["text_start"] == 0
    assert all(a["provenance"]["text_end"] == b["provenance"]["text_start"]
               for a, b in zip(parts, parts[1:], strict=False))
    assert code["counts"]["docs_seen"] == 1500 and code["counts"]["docs_bad"] == 1
    assert code["counts"]["docs_kept"] == 1499
    ds = shards.open(outs[0])
    urls = sorted(d.source["url"] for s in ("train", "eval") for d in ds.split("code", s).documents())
    assert urls == sorted(f"u/{r}" for r in range(1500) if r != 700)
    for o in outs:
        assert (o / "data.1").is_dir()
