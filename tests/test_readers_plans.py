"""Every reader's plan: partitions are JSON (they travel in the plan and to workers) and a
worker reading them alone gives the coordinator's documents."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from readers_fixture import (
    RECORDS,
    jsonl,
    local_cfg,
    make_mathqa_zip,
    mathqa_cfg,
    planned,
    read_all,
    worker,
)

from prep.recipe import DomainConfig

# --------------------------------------------------------------------------- plans are JSON


def test_every_reader_plans_json_partitions_that_workers_read(tmp_path: Path) -> None:
    from prep.readers import Partition

    big = tmp_path / "big.jsonl"
    big.write_bytes(jsonl([{"content": f"doc {i}", "url": f"u{i}"} for i in range(50)]))
    pf = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS * 20), pf, row_group_size=7)
    cfgs = [local_cfg("json", [str(big)]), local_cfg("parquet", [str(pf)]),
            DomainConfig(name="math", source="synthetic-math", synthetic_docs=1200),
            DomainConfig(name="prose", source="pydoc"), mathqa_cfg(make_mathqa_zip(
                tmp_path / "MathQA.zip"))]
    for cfg in cfgs:
        src = planned(cfg, partition_bytes=300)
        parts = src.partitions()
        assert len({p.key for p in parts}) == len(parts)
        assert [p.index for p in parts] == list(range(len(parts)))
        shipped = [Partition.from_dict(json.loads(json.dumps(p.to_dict()))) for p in parts]
        assert shipped == parts
        direct = read_all(src)
        assert [d for q in shipped for d in worker(src).read(q)] == direct and direct
        json.dumps(src.describe())
        json.dumps([worker(src).partition_record(q) for q in shipped])


def test_recipe_validation_imports_no_reader_and_no_circle() -> None:
    """prep.recipe knows the source names from the leaf registry: importing it loads nothing
    of prep.readers, so readers may import the recipe's types without an import circle."""
    import ast
    import subprocess
    import sys

    import prep.recipe

    tree = ast.parse(Path(prep.recipe.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("prep.readers")}
    code = ("import sys, prep.recipe; "
            "print(sorted(m for m in sys.modules if m.startswith('prep.readers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
