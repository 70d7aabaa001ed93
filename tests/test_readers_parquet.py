"""The parquet reader: rows, provenance, plan-time checks of the footer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from readers_fixture import RECORDS, docs_of, local_cfg, planned, worker

from prep.readers import BadRecord, Document, SourceError


def test_parquet(tmp_path: Path) -> None:
    f = tmp_path / "part-0.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), f)
    out = docs_of(local_cfg("parquet", [str(f)]))
    assert [d.text for d in out] == [r["content"] for r in RECORDS]
    assert out[1].source == {"file": str(f), "row": 1, "repo_name": "a/c", "path": "x.py"}


def test_corrupt_parquet_names_the_file_at_plan_time(tmp_path: Path) -> None:
    f = tmp_path / "broken.parquet"
    f.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(SourceError, match=r"broken\.parquet: not a readable Parquet file "
                                          r".*; re-download or re-export it"):
        planned(local_cfg("parquet", [str(f)]))


def test_parquet_partitions_count_the_text_and_cut_a_large_row_group(tmp_path: Path) -> None:
    import random

    from prep.readers import pieces

    rng = random.Random(3)
    texts = [" ".join(rng.choice(("alpha", "beta", "gamma", "delta")) for _ in range(
        rng.randint(10, 80))) for _ in range(600)]
    texts[250] = None
    f = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"content": texts}), f, row_group_size=100, compression="zstd")
    text = sum(len(t) for t in texts if t)
    assert f.stat().st_size < text / 2  # compressed on disk: its size understates the text
    src = planned(local_cfg("parquet", [str(f)]), partition_bytes=text // 5)
    parts = src.partitions()
    assert [p.key for p in parts] == [f"groups.parquet#rg{k}" for k in range(6)]
    assert not any(p.stream for p in parts)  # runs of whole row groups: no cutting needed
    one = tmp_path / "one.parquet"
    pq.write_table(pa.table({"content": texts}), one, compression="zstd")  # one row group
    src = planned(local_cfg("parquet", [str(one)]), partition_bytes=text // 8)
    [stream] = src.partitions()
    assert stream.stream and stream.spec["row_groups"] == [0, 1]
    cut = list(src.cut(stream))
    assert len(cut) >= 8 and cut[-1].last
    got = [d for p in cut for d in worker(src).read(pieces.piece_of(stream, p.index))]
    assert got == list(worker(src).read(stream))  # the same rows, in order, as one read
    assert got[1] == Document(texts[1], {"file": str(one), "row": 1})
    assert got[250] == BadRecord(f"{one} row 250: no text field 'content' (fields present: "
                                 "none); set text_field in the recipe")
    last = worker(src).partition_record(pieces.piece_of(stream, len(cut) - 1))
    assert last["last"] and last["files"][0]["sha256"] == hashlib.sha256(
        one.read_bytes()).hexdigest()
