"""`shards.to_hf`: a split as a `datasets.Dataset`, round trip, cache keys, damaged data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from shards_fixture import make_dataset

import shards
from shards.format import FormatError


@pytest.fixture(scope="module")
def root(clean_dataset: Path) -> Path:
    return clean_dataset  # read only: damage goes into copies


def assert_round_trip(hf, sp: shards.Split) -> None:
    assert hf.num_rows == sp.num_docs
    assert list(hf.features) == ["input_ids", "domain", "source"]
    for k, row in enumerate(hf):
        assert row["input_ids"] == sp.document_tokens(k).tolist()  # EOT included
        assert row["domain"] == sp.domain
        assert json.loads(row["source"]) == sp.document(k).source


def test_round_trip_every_document(root: Path, tmp_path: Path) -> None:
    ds = shards.open(root)
    for domain, split in (("code", "train"), ("code", "eval"), ("prose", "train")):
        hf = shards.to_hf(ds, domain, split, cache_dir=tmp_path)
        assert_round_trip(hf, ds.split(domain, split))
        assert str(hf.split) == split
    assert json.loads(shards.to_hf(root, "prose", "train", cache_dir=tmp_path)[3]["source"]) == {
        "title": "Tèxt 3", "id": 3}
    empty = shards.to_hf(ds, "math", "eval", cache_dir=tmp_path)
    assert empty.num_rows == 0 and empty.features == hf.features
    as_numpy = shards.to_hf(ds, "code", "train", cache_dir=tmp_path).with_format("numpy")
    assert np.array_equal(as_numpy[0]["input_ids"], ds.split("code", "train").document_tokens(0))


def test_cache_entries_never_collide(root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a = shards.to_hf(root, "code", "train", cache_dir=cache)
    again = shards.to_hf(root, "code", "train", cache_dir=cache)
    assert again.cache_files == a.cache_files  # the same data reuses its entry
    # another dataset written later in the very same directory gets its own entry
    place = tmp_path / "place"
    make_dataset(place, {"code": {"train": ["first = 1\n"], "eval": []}})
    one = shards.to_hf(place / "data", "code", "train", cache_dir=cache)
    shutil.rmtree(place / "data")
    make_dataset(place, {"code": {"train": ["second = 2\n", "third = 3\n"], "eval": []}})
    two = shards.to_hf(place / "data", "code", "train", cache_dir=cache)
    assert one.cache_files != two.cache_files
    assert_round_trip(two, shards.open(place / "data").split("code", "train"))
    assert len({f["filename"] for h in (a, one, two) for f in h.cache_files}) == 3
    assert all(str(cache) in f["filename"] for f in a.cache_files)  # nothing outside cache_dir


def test_errors(root: Path, tmp_path: Path) -> None:
    with pytest.raises(shards.SplitNotFoundError, match="no domain 'poetry'"):
        shards.to_hf(root, "poetry", "train", cache_dir=tmp_path)
    bad = Path(shutil.copytree(root, tmp_path / "bad"))
    rec = shards.open(bad).split("code", "train").record
    shard = bad / rec.shards[2].path
    data = bytearray(shard.read_bytes())
    data[7] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=rf"^{shard}: sha256 [0-9a-f]+ differs from the "):
        shards.to_hf(bad, "code", "train", cache_dir=tmp_path / "c")
