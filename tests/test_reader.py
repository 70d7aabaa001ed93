"""shards.open: reading back what was written, zero-copy blocks, and refusing bad datasets."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard
from shards_fixture import gpt2, make_dataset, set_token

import shards
from shards.format import FormatError, content_hash
from shards.tokenizer import EOT_ID, encode_document

CODE_TRAIN = [(f"def f{i}(x):\n    return x * {i}\n" * (1 + i % 4), {"repo_name": f"r{i % 3}",
                                                               "path": f"f{i}.py"})
              for i in range(40)]
CODE_EVAL = [("print('hello')\n", {"repo_name": "e", "path": "e.py"})]
PROSE = {"train": ["The cat sat on the mat. " * 5, "Émile a écrit ça — naïvement.",
                   "A" * 300], "eval": ["Rain today."]}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_dataset(tmp_path, {"code": {"train": CODE_TRAIN, "eval": CODE_EVAL},
                                   "prose": PROSE}, shard_tokens=64, block_size=16)


def assert_reads_back(root: Path, written: dict[str, dict[str, list]]) -> None:
    """Every document comes back with its text, provenance, hash and place, in order."""
    ds = shards.open(root)
    for domain, splits in written.items():
        for name, docs in splits.items():
            sp = ds.split(domain, name)
            assert sp.num_docs == len(docs) == len(sp.documents())
            pos = 0
            for k, doc in enumerate(docs):
                text, source = doc if isinstance(doc, tuple) else (doc, None)
                info = sp.document(k)
                assert ds.decode(sp.document_tokens(k)) == text
                assert sp.document_tokens(k)[-1] == EOT_ID
                assert info.sha256 == content_hash(text) and info.chars == len(text)
                assert info.index == k
                if source is not None:
                    assert info.source == source
                assert sp.shard_starts[info.shard] + info.offset == pos
                pos += info.tokens
            assert pos == sp.num_tokens


def test_reads_back_exactly_the_documents_written(root: Path) -> None:
    # The lead's conftest will run the real `prep` on tiny inputs; the same assertion applies:
    # assert_reads_back(prep_root, documents_prep_wrote).
    assert_reads_back(root, {"code": {"train": CODE_TRAIN, "eval": CODE_EVAL}, "prose": PROSE})


def test_dataset_attributes(root: Path) -> None:
    ds = shards.open(root / "manifest.json")  # the manifest path works as well as the directory
    assert ds.root == root
    assert ds.domains == ["code", "prose"]
    assert (ds.block_size, ds.vocab_size, ds.eot_id) == (16, 50257, 50256)
    assert ds.fingerprint == ds.manifest.fingerprint()
    assert ds.manifest.domains["code"].splits["train"].docs == 40
    sp = ds["code", "train"]
    assert sp is ds.split("code", "train")
    assert (sp.domain, sp.name, sp.block_size) == ("code", "train", 16)
    expected = np.concatenate([encode_document(gpt2(), t) for t, _ in CODE_TRAIN])
    assert sp.num_tokens == len(expected)
    assert sp.num_blocks == len(expected) // 16
    assert len(sp.shards) == -(-len(expected) // 64)
    assert sp.shard_starts.dtype == np.int64
    assert sp.shard_starts.tolist() == [min(64 * i, len(expected))
                                        for i in range(len(sp.shards) + 1)]
    assert all(isinstance(m, np.memmap) and m.dtype == np.uint16 and not m.flags.writeable
               for m in sp.shards)
    np.testing.assert_array_equal(sp.tokens(0, sp.num_tokens), expected)
    np.testing.assert_array_equal(sp.tokens(60, 70), expected[60:70])  # across shards: a copy
    for i in range(sp.num_blocks):
        np.testing.assert_array_equal(sp.block(i), expected[16 * i:16 * (i + 1)])


def test_blocks_are_views_into_the_memmap(root: Path) -> None:
    sp = shards.open(root).split("code", "train")
    for i in range(sp.num_blocks):
        b = sp.block(i)
        assert b.shape == (16,)
        assert np.shares_memory(b, sp.shards[i * 16 // 64])
    assert np.shares_memory(sp.tokens(65, 70), sp.shards[1])
    with pytest.raises(IndexError, match="out of range"):
        sp.block(sp.num_blocks)


def test_missing_domain_or_split_is_a_clear_key_error(root: Path) -> None:
    ds = shards.open(root)
    with pytest.raises(KeyError, match="no domain 'math'; the dataset has code, prose"):
        ds.split("math", "train")
    with pytest.raises(KeyError, match="domain 'code' has no split 'test' \\(it has: train, eval"):
        ds["code", "test"]


def test_decode_strips_eot(root: Path) -> None:
    toks = encode_document(gpt2(), "hi there")
    assert shards.decode(toks) == "hi there"
    assert shards.decode(np.concatenate([toks, toks])) == "hi therehi there"


@pytest.mark.parametrize("value", [50257, 50300, 65535])
def test_an_id_outside_the_vocabulary_is_never_decoded(root: Path, value: int) -> None:
    with pytest.raises(FormatError, match=rf"^token id {value} at position 1 is not in the GPT-2 "
                                          r"vocabulary \(ids 0\.\.50256\): it cannot be "):
        shards.decode(np.array([31, value, EOT_ID], dtype=np.uint16))
    sp = shards.open(root).split("code", "train")
    start = int(sp.doc_starts[3])
    s = int(np.searchsorted(sp.shard_starts, start + 2, side="right")) - 1
    path = root / sp.record.shards[s].path
    set_token(path, start + 2 - int(sp.shard_starts[s]), value)
    sp = shards.open(root).split("code", "train")
    with pytest.raises(FormatError) as e:
        sp.document_text(3)
    assert str(e.value) == (
        f"{path}: token id {value} at token offset {start + 2 - int(sp.shard_starts[s])} "
        "(document 3 of code/train) is >= the vocabulary size 50257: the shard is damaged; run "
        "`python -m shards verify` and re-copy the dataset or re-run prep")
    assert sp.document_text(2)  # the other documents still read


# --------------------------------------------------------------------------- bad datasets


def edit_manifest(root: Path, fn) -> None:
    path = root / "manifest.json"
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


def shard0(m: dict) -> dict:
    return m["domains"]["code"]["splits"]["train"]["shards"][0]


def refused(root: Path, *phrases: str) -> str:
    with pytest.raises(FormatError) as e:
        shards.open(root)
    msg = str(e.value)
    for p in phrases:
        assert p in msg, msg
    return msg


def test_absolute_path_refused(root: Path) -> None:
    edit_manifest(root, lambda m: shard0(m).update(path=str(root / "code/train/shard_00000.bin")))
    refused(root, "domains.code.splits.train.shards[0].path", "is absolute",
            "must be relative")


def test_dotdot_path_refused(root: Path) -> None:
    edit_manifest(root, lambda m: shard0(m).update(path="code/../code/train/shard_00000.bin"))
    refused(root, "shards[0].path", "contains '..'")


def test_symlink_out_of_root_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.bin"
    target = root / "code/train/shard_00000.bin"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    os.symlink(outside, target)
    refused(root, "shards[0].path", "outside the dataset directory", "symlink")


def test_symlinked_parent_out_of_root_refused(root: Path, tmp_path: Path) -> None:
    os.rename(root / "prose", tmp_path / "prose-out")
    os.symlink(tmp_path / "prose-out", root / "prose")
    refused(root, "domains.prose.splits.train.shards[0].path", "outside the dataset directory")


def test_symlink_inside_root_is_fine(root: Path) -> None:
    target = root / "code/train/shard_00000.bin"
    os.rename(target, root / "code/train/real.bin")
    os.symlink("real.bin", target)
    assert shards.open(root).split("code", "train").num_docs == 40


def test_missing_shard_refused(root: Path) -> None:
    (root / "code/train/shard_00001.bin").unlink()
    refused(root, "code/train/shard_00001.bin", "shard file missing", "re-run")


def test_truncated_shard_refused(root: Path) -> None:
    p = root / "code/train/shard_00000.bin"
    p.write_bytes(p.read_bytes()[:100])
    refused(root, str(p), "size 100 bytes but the manifest declares 128 bytes", "truncated")


def test_odd_sized_shard_refused(root: Path) -> None:
    p = root / "code/train/shard_00000.bin"
    p.write_bytes(p.read_bytes()[:-1])
    refused(root, str(p), "size 127 bytes is not a multiple of 2")


def test_declared_bytes_disagree_with_tokens(root: Path) -> None:
    edit_manifest(root, lambda m: shard0(m).update(bytes=130))
    refused(root, "declares 64 tokens but 130 bytes", "manifest is inconsistent")


def test_split_tokens_disagree_with_shards(root: Path) -> None:
    edit_manifest(root, lambda m: m["domains"]["prose"]["splits"]["eval"].update(tokens=999))
    refused(root, "domains.prose.splits.eval: tokens=999")


def test_missing_doc_index_refused(root: Path) -> None:
    (root / "prose/eval/docs.jsonl.zst").unlink()
    refused(root, "prose/eval/docs.jsonl.zst", "document index file missing")


def test_every_problem_is_listed(root: Path) -> None:
    (root / "code/train/shard_00001.bin").unlink()
    (root / "prose/eval/shard_00000.bin").unlink()
    msg = refused(root, "2 problems", "code/train/shard_00001.bin", "prose/eval/shard_00000.bin")
    assert msg.count("file missing") == 2


def test_unknown_format_version_refused(root: Path) -> None:
    edit_manifest(root, lambda m: m.update(format_version=99))
    refused(root, "manifest.json", "unknown format_version 99")


def test_bad_manifest_json_and_missing_manifest(root: Path, tmp_path: Path) -> None:
    (root / "manifest.json").write_text("{not json")
    refused(root, "manifest.json", "not valid JSON")
    refused(tmp_path / "nothing-here", "no manifest here")


def test_corrupt_doc_index_names_the_file(root: Path) -> None:
    p = root / "prose/train/docs.jsonl.zst"
    data = p.read_bytes()
    p.write_bytes(b"x" * len(data))  # same size: passes open(), fails when read
    sp = shards.open(root).split("prose", "train")
    with pytest.raises(FormatError, match="docs.jsonl.zst: document index is not valid zst"):
        sp.documents()


# --------------------------------------------------------------------------- written by prep


def test_reads_back_exactly_the_documents_prep_wrote(tmp_path: Path) -> None:
    from prep_fixture import random_doc, run_prep, write_jsonl, write_recipe

    rng = __import__("random").Random(11)
    docs = [random_doc(rng) for _ in range(400)]
    docs[5] = "Unicode: naïve café 日本語 <|endoftext|> stays text.\n\ttabs  "
    write_jsonl(tmp_path / "d.jsonl", docs)
    recipe = write_recipe(tmp_path / "r.toml", {"prose": {
        "source": "json", "data_files": ["d.jsonl"], "min_chars": 1}}, block_size=16)
    out = tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(out), "--workers", "1",
                    "--shard-tokens", "2048", "--eval-fraction", "0.1") == 0
    ds = shards.open(out)
    seen = []
    for name in ("train", "eval"):
        sp = ds.split("prose", name)
        assert len(sp.shards) > 1 or name == "eval"
        written = []
        for k in range(sp.num_docs):
            text = ds.decode(sp.document_tokens(k))
            row = sp.document(k).source["row"]
            assert text == docs[row]
            written.append((text, sp.document(k).source))
        assert_reads_back(out, {"prose": {name: written}})
        seen += [t for t, _ in written]
    assert sorted(seen) == sorted(set(docs))
    for sp in ds.splits():
        for i in range(sp.num_blocks):
            assert np.shares_memory(sp.block(i), sp.shards[i * 16 // 2048])


def test_bad_doc_index_line_is_named(root: Path) -> None:
    p = root / "prose/eval/docs.jsonl.zst"
    data = zstandard.ZstdCompressor().compress(b'{"shard": 0, "offset": 0}\n')
    p.write_bytes(data)
    edit_manifest(root, lambda m: m["domains"]["prose"]["splits"]["eval"]["doc_index"].update(
        bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(FormatError, match=r"docs.jsonl.zst: line 1: not a document record"):
        shards.open(root).split("prose", "eval").documents()


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["domains"]["code"]["splits"].pop("eval"), "must hold exactly train and eval"),
    (lambda m: m.__setitem__("domains", [1]), "field domains is [1] (list); expected a JSON "
                                              "object"),
    (lambda m: m.__setitem__("domains", {}), "'domains' must be a non-empty object"),
    (lambda m: m["domains"]["code"]["splits"]["train"].__setitem__("shards", 5),
     "field domains.code.splits.train.shards is 5 (int); expected a JSON list"),
    (lambda m: m["domains"]["code"].pop("counts"), "record domains.code lacks field(s) counts"),
])
def test_structurally_malformed_manifest_is_refused(tmp_path, edit, message):
    root = make_dataset(tmp_path, {"code": {"train": ["def f():\n    return 1\n"],
                                            "eval": ["x = 2\n"]}})
    m = json.loads((root / "manifest.json").read_text())
    edit(m)
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FormatError, match=re.escape(message)):
        shards.open(root)
    r = subprocess.run([sys.executable, "-m", "shards", "verify", str(root)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and message in r.stdout + r.stderr
