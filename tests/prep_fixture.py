"""Small local corpora and recipes for prep tests, and `run_prep` (the CLI, quiet)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from prep.__main__ import main as prep_main

WORDS = ("the of and to in is was for on that with as by at from his her an which be this "
         "are were it its has had not but also they one two first new after more time year "
         "city river music school war game team film series album song road station church "
         "court king party state world life during between under over about into where when").split()


def random_doc(rng: random.Random, lo: int = 60, hi: int = 160) -> str:
    n = rng.randint(lo, hi)
    words = [rng.choice(WORDS) for _ in range(n)]
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def write_jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, field: d}) + "\n")
    return path


def write_recipe(path: Path, domains: dict[str, dict], **top) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    for name, table in domains.items():
        lines.append(f"\n[domains.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_prep(*args: str) -> int:
    return prep_main([*args, "--quiet"])


def write_corpus(root: Path, domains: dict[str, int], files: int = 4, docs: int = 150,
                 **domain_keys) -> Path:
    """A recipe over `files` JSONL files of `docs` random documents per domain; with
    `--partition-mb 0.01` each file (~50 KB) is at least one partition."""
    tables = {}
    for name, seed in domains.items():
        paths = []
        for k in range(files):
            rng = random.Random(f"{name}:{seed}:{k}")
            paths.append(write_jsonl(root / f"{name}-{k}.jsonl",
                                     [random_doc(rng) for _ in range(docs)]).name)
        tables[name] = {"source": "json", "data_files": paths, "min_chars": 10, **domain_keys}
    return write_recipe(root / "recipe.toml", tables, seed=3, block_size=16)


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def data_files(out: Path) -> dict[str, bytes]:
    """Every published data file (shards and indexes) by its path relative to OUT."""
    m = manifest(out)
    paths = [p for dom in m["domains"].values() for rec in dom["splits"].values()
             for p in [s["path"] for s in rec["shards"]] + [rec["doc_index"]["path"]]]
    return {p: (out / p).read_bytes() for p in sorted(paths)}


def same_dataset(a: Path, b: Path) -> None:
    """Byte-identical data files and the same manifest `domains` (checksums, counts, order)."""
    assert data_files(a) == data_files(b)
    assert manifest(a)["domains"] == manifest(b)["domains"]
