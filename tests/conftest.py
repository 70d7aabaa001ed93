"""Shared fixtures: small recipes on local files, and datasets written by the real `prep`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

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


@pytest.fixture
def jsonl_recipe(tmp_path: Path):
    """A two-domain recipe over local JSONL files of ~1000 random documents each."""

    def make(n_docs: int = 1000, dup_every: int = 0, **domain_keys) -> Path:
        domains = {}
        for _k, name in enumerate(("alpha", "beta")):
            rng = random.Random(f"{name}:{n_docs}")
            docs = [random_doc(rng) for _ in range(n_docs)]
            if dup_every:
                docs += [docs[i] for i in range(0, n_docs, dup_every)]
            write_jsonl(tmp_path / f"{name}.jsonl", docs)
            domains[name] = {"source": "json", "data_files": [f"{name}.jsonl"],
                             "text_field": "text", "min_chars": 10, **domain_keys}
        return write_recipe(tmp_path / "recipe.toml", domains, seed=3, block_size=16)

    return make


def run_prep(*args: str) -> int:
    return prep_main([*args, "--quiet"])


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory) -> Path:
    """The README's main job: the built-in `sample` recipe, written once per test session."""
    out = tmp_path_factory.mktemp("sample") / "shards_out"
    assert run_prep("--recipe", "sample", "--workers", "2", "--out", str(out)) == 0
    return out
