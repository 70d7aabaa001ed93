"""`shards.scan`: a split read once in bounded memory, every byte checked on the way."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zstandard
from shards_fixture import make_dataset

import shards
from shards.format import FormatError
from shards.scan import document_batches, documents, token_chunks

DOCS = {"train": [(f"item {i} " * (1 + i % 9), {"n": i}) for i in range(50)],
        "eval": ["a", "b"]}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("stream"), {"text": DOCS}, shard_tokens=64,
                        block_size=16)


def test_token_chunks_reuse_one_buffer(root: Path) -> None:
    sp = shards.open(root).split("text", "train")
    got, bases = [], set()
    for c in token_chunks(sp, chunk_bytes=40):
        assert 0 < len(c.tokens) <= 20
        assert np.array_equal(c.tokens, sp.shards[c.shard][c.offset:c.offset + len(c.tokens)])
        got.append(c.tokens.copy())
        bases.add(c.tokens.__array_interface__["data"][0])  # address of the first token
    assert np.array_equal(np.concatenate(got), sp.stream())
    assert len(bases) == 1  # every chunk lies in the same buffer: memory does not grow


def test_document_batches_are_the_index(root: Path) -> None:
    sp = shards.open(root).split("text", "train")
    batches = list(document_batches(sp, batch=7))
    assert [len(b) for b in batches] == [7] * 7 + [1]
    assert [d for b in batches for d in b] == sp.documents()


@pytest.mark.parametrize("chunk_bytes", [2, 10, 64, 1 << 20])
def test_documents_with_their_tokens(root: Path, chunk_bytes: int) -> None:
    sp = shards.open(root).split("text", "train")
    got = list(documents(sp, batch=4, chunk_bytes=chunk_bytes))
    assert [d for d, _ in got] == sp.documents()
    for d, ids in got:  # documents span chunks and shards: each is whole and kept intact
        assert np.array_equal(ids, sp.document_tokens(d.index))


def rewrite_index(root: Path, edit, *, fix_hash: bool = True) -> Path:
    """Rewrite text/train's document index through `edit(rows)`; the manifest follows its size
    and, with `fix_hash`, its sha256 (so that only the edit itself can be caught)."""
    rec = shards.open(root).split("text", "train").record
    path = root / rec.doc_index.path
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes())).read()
    rows = edit([json.loads(x) for x in raw.splitlines()])
    lines = "".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows)
    path.write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    m = json.loads((root / "manifest.json").read_text())
    di = m["domains"]["text"]["splits"]["train"]["doc_index"]
    di["bytes"] = path.stat().st_size
    if fix_hash:
        di["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (root / "manifest.json").write_text(json.dumps(m))
    return path


def test_an_index_that_does_not_tile_the_stream_is_refused(root: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(root, tmp_path / "c"))

    def shift(rows: list[dict]) -> list[dict]:
        rows[3]["offset"] += 1
        return rows

    path = rewrite_index(copy, shift)
    sp = shards.open(copy).split("text", "train")
    with pytest.raises(FormatError, match=rf"^{path}: line 4: document starts at token \d+ "
                                          r"with \d+ tokens, but the previous documents end"):
        for _ in document_batches(sp):
            pass


def test_a_malformed_line_is_named(root: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(root, tmp_path / "c"))
    path = rewrite_index(copy, lambda rows: rows[:10] + ["{not json\n"] + rows[10:])
    sp = shards.open(copy).split("text", "train")
    with pytest.raises(FormatError, match=rf"^{path}: line 11: not a document record"):
        for _ in document_batches(sp, batch=4):
            pass


def test_a_changed_index_fails_its_sha256_at_the_end(root: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(root, tmp_path / "c"))

    def relabel(rows: list[dict]) -> list[dict]:
        rows[0]["source"] = {"n": "changed"}
        return rows

    path = rewrite_index(copy, relabel, fix_hash=False)
    sp = shards.open(copy).split("text", "train")
    with pytest.raises(FormatError, match=rf"^{path}: sha256 [0-9a-f]+ differs from the "):
        for _ in document_batches(sp):
            pass
