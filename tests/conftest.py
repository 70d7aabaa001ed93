"""Shared fixtures: small recipes on local files, and datasets written by the real `prep`.

Every test process runs torch on one thread: the machine has two cores, and torch's default
pool per process oversubscribes them (the report tests ran 6x slower). Set here, before any
test module imports torch (which reads OMP_NUM_THREADS once, at import), so it holds for every
file run alone and for the subprocesses tests start.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import random  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from prep_fixture import (  # noqa: E402
    random_doc,
    run_prep,
    write_corpus,
    write_jsonl,
    write_recipe,
)
from shards_fixture import make_clean_dataset  # noqa: E402

from shards.check import STAMP_NAME  # noqa: E402


@pytest.fixture(scope="session")
def clean_dataset(tmp_path_factory) -> Path:
    """The clean dataset (shards_fixture.CLEAN_DOCS), written once per session: read it, never
    change it (damage `clean_copy`)."""
    return make_clean_dataset(tmp_path_factory.mktemp("clean"))


@pytest.fixture
def clean_copy(clean_dataset: Path, tmp_path: Path, monkeypatch) -> Path:
    """A fresh copy of the clean dataset to damage, without any stamp; the stamp cache of
    `shards.open` is this test's own (never the user's)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return Path(shutil.copytree(clean_dataset, tmp_path / "copy",
                                ignore=shutil.ignore_patterns(STAMP_NAME)))


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


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory) -> Path:
    """The README's main job: the built-in `sample` recipe, written once per test session."""
    out = tmp_path_factory.mktemp("sample") / "shards_out"
    assert run_prep("--recipe", "sample", "--workers", "2", "--out", str(out)) == 0
    return out


@pytest.fixture(scope="module")
def corpus(request, tmp_path_factory) -> Path:
    """Two domains of `CORPUS_FILES` (the test module's) JSONL files, written once per module."""
    return write_corpus(tmp_path_factory.mktemp("corpus"), {"alpha": 1, "beta": 2},
                        files=request.module.CORPUS_FILES)


@pytest.fixture(scope="module")
def straight(request, corpus, tmp_path_factory) -> Path:
    """One uninterrupted run over `corpus` with the module's `OPTS`: what every executor,
    kill and resume must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("straight") / "out"
    assert run_prep("--recipe", str(corpus), "--out", str(out), *request.module.OPTS) == 0
    return out

