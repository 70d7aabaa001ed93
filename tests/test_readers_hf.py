"""The hf reader against a reachable (faked) or unreachable Hub; the offline Hub cache is
tested in test_hf_cache.py."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from readers_fixture import planned, read_all, worker

import prep.readers.hf as hf
from prep.readers import BadRecord, Document, SourceError
from prep.recipe import DomainConfig

# --------------------------------------------------------------------------- Hugging Face Hub


@pytest.fixture
def empty_hf_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Hub cache: HF_HOME is an empty folder."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return tmp_path / "hf-home"


def test_hf_unreachable_fails_fast_without_loading(monkeypatch: pytest.MonkeyPatch,
                                                   empty_hf_home: Path) -> None:
    import datasets

    calls: list[tuple[Any, Any]] = []

    def refuse(address: Any, timeout: Any = None, *a: Any, **kw: Any) -> socket.socket:
        calls.append((address, timeout))
        raise OSError("Network is unreachable")

    def never(*a: Any, **kw: Any) -> None:
        raise AssertionError("load_dataset must not be called when the Hub is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(datasets, "load_dataset", never)
    cfg = DomainConfig(name="code", source="hf", dataset="codeparrot/codeparrot-clean",
                       text_field="content")
    with pytest.raises(SourceError, match=r"\[domains\.code\] dataset 'codeparrot/codeparrot-"
                                          r"clean' needs the Hugging Face Hub.*Network is "
                                          r"unreachable.*`hf download codeparrot/codeparrot-"
                                          r"clean --repo-type dataset`.*HF_HOME.*`--recipe "
                                          r"sample`") as err:
        planned(cfg)
    assert str(empty_hf_home / "hub") in str(err.value) and "\n" not in str(err.value)
    assert calls == [(("huggingface.co", 443), 3.0)]


def test_hf_offline_env_refuses_when_not_cached(monkeypatch: pytest.MonkeyPatch,
                                                empty_hf_home: Path) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("no probe"))
    cfg = DomainConfig(name="prose", source="hf", dataset="Salesforce/wikitext",
                       config="wikitext-103-raw-v1", group="wikitext", revision="v1.1")
    with pytest.raises(SourceError, match=r"'Salesforce/wikitext'.*HF_DATASETS_OFFLINE is set.*"
                                          r"no snapshot of it at revision 'v1\.1'.*`hf download "
                                          r"Salesforce/wikitext --repo-type dataset --revision "
                                          r"v1\.1`"):
        planned(cfg)


HF_ROWS = [{"text": "one", "url": "http://x", "timestamp": "t"},
           {"text": None, "url": "u", "timestamp": "t"},
           {"text": "three", "url": "http://z", "timestamp": None},
           {"text": "four", "url": "http://w", "timestamp": "t"}]


@pytest.mark.parametrize("shards", [1, 2])
def test_hf_rows_and_provenance(monkeypatch: pytest.MonkeyPatch, shards: int) -> None:
    """With a reachable Hub (faked), shards stream with their provenance fields and rows."""
    import datasets

    monkeypatch.setattr(hf, "hub_unreachable_reason", lambda: None)
    monkeypatch.setattr(hf.HFReader, "_resolve_revision", lambda self: "abc123")
    seen: list[tuple[Any, Any]] = []

    def fake_load(*args: Any, **kwargs: Any) -> datasets.IterableDataset:
        seen.append((args, kwargs))
        rows = HF_ROWS if shards == 2 else HF_ROWS[:3]
        return datasets.Dataset.from_list(rows).to_iterable_dataset(num_shards=shards)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = DomainConfig(name="prose", source="hf", dataset="allenai/c4", config="en")
    src = planned(cfg)
    parts = src.partitions()
    assert [p.key for p in parts] == [f"shard-{i:05d}-of-{shards:05d}" for i in range(shards)]
    assert parts[0].spec == {"mode": "hub", "target": "allenai/c4", "revision": "abc123",
                             "shard": 0, "n_shards": shards, "cut": 16_000_000}  # few shards
    monkeypatch.setattr(hf, "hub_unreachable_reason", lambda: pytest.fail("a worker probed"))
    out = read_all(src)
    assert all(args == ("allenai/c4", "en") and kwargs == {
        "split": "train", "streaming": True, "data_dir": None, "revision": "abc123"}
        for args, kwargs in seen)
    assert isinstance(out[0], Document) and out[0].source == {"shard": 0, "row": 0,
                                                              "url": "http://x"}
    assert isinstance(out[1], BadRecord)
    assert out[1].reason == ("dataset 'allenai/c4' shard 0 row 1: no text field 'text' "
                             "(fields present: url, timestamp); set text_field in the recipe")
    third = {"shard": 0, "row": 2} if shards == 1 else {"shard": 1, "row": 0}
    assert isinstance(out[2], Document) and out[2].source == {**third, "url": "http://z"}
    if shards == 2:
        assert out[3].source == {"shard": 1, "row": 1, "url": "http://w"}
    d = src.describe()
    assert d["dataset"] == "allenai/c4" and d["config"] == "en"
    assert d["resolved_revision"] == "abc123" and "revision" not in d
    assert src.notes() == []
    assert worker(src).partition_record(parts[-1]) == {
        "dataset": "allenai/c4", "revision": "abc123", "shard": shards - 1, "n_shards": shards}
