"""The parquet reader: rows, provenance, plan-time checks of the footer."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from readers_fixture import RECORDS, docs_of, local_cfg, planned

from prep.readers import SourceError


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
