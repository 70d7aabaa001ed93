"""`shards verify`: every byte re-checked; each kind of damage is reported, never a crash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard
from shards_fixture import (
    CLEAN_DOCS,
    make_dataset,
    match_manifest,
    non_eot_position,
    set_token,
)

from shards.__main__ import main
from shards.format import content_hash
from shards.verify import verify

CODE, PROSE = CLEAN_DOCS["code"], CLEAN_DOCS["prose"]


@pytest.fixture
def root(clean_copy: Path) -> Path:
    return clean_copy


def problems_of(root: Path) -> list[str]:
    report = verify(root)
    return report.problems


def test_clean_dataset_passes(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = verify(root)
    assert report.problems == []
    on_disk = [p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"]
    assert report.files == len(on_disk) == 31  # 25 shards and 6 document indexes
    assert report.documents_checked == sum(len(docs) for splits in CLEAN_DOCS.values()
                                           for docs in splits.values()) == 55
    assert report.bytes_hashed == sum(p.stat().st_size for p in on_disk)
    assert main(["verify", str(root)]) == 0
    out = capsys.readouterr().out
    assert "OK: every check passed" in out and "MB/s" in out


@pytest.mark.parametrize("shard", ["code/train/shard_00000.bin", "code/train/shard_00002.bin",
                                   "prose/eval/shard_00000.bin"])
def test_every_flipped_byte_is_caught(root: Path, shard: str) -> None:
    p = root / shard
    data = bytearray(p.read_bytes())
    for pos in range(len(data)):
        data[pos] ^= 0x01
        p.write_bytes(bytes(data))
        found = problems_of(root)
        assert any(f"{p}: sha256" in x and "differs from the manifest" in x for x in found), pos
        data[pos] ^= 0x01
    p.write_bytes(bytes(data))
    assert problems_of(root) == []


def test_token_ids_above_vocab_are_reported(root: Path) -> None:
    p = root / "prose/train/shard_00000.bin"
    toks = np.fromfile(p, dtype="<u2")
    toks[3] = 60000
    toks.tofile(p)
    found = problems_of(root)
    assert any(x.startswith(f"{p}: 1 token id(s) >= vocab size 50257 (first at token offset 3: "
                            "60000)") for x in found)


def test_truncated_shard_is_a_problem_not_a_crash(root: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    p = root / "code/train/shard_00001.bin"
    p.write_bytes(p.read_bytes()[:10])
    assert main(["verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"PROBLEM: {p}: size 10 bytes but the manifest declares 128 bytes" in out
    assert "FAILED: 1 problem(s)" in out


def verify_cli(root: Path) -> tuple[int, list[str]]:
    """`python -m shards verify` in its own process: (exit status, its PROBLEM lines); no
    traceback, nothing on stderr."""
    r = subprocess.run([sys.executable, "-m", "shards", "verify", str(root)],
                       capture_output=True, text=True)
    assert "Traceback" not in r.stdout + r.stderr and r.stderr == "", r.stderr
    return r.returncode, [x[len("PROBLEM: "):] for x in r.stdout.splitlines()
                          if x.startswith("PROBLEM: ")]


@pytest.mark.parametrize("value", [50300, 65535])
def test_an_id_out_of_the_vocabulary_with_a_matching_sha256_is_a_problem(root: Path,
                                                                        value: int) -> None:
    p = root / "code/train/shard_00001.bin"
    pos = non_eot_position(p)
    set_token(p, pos, value)
    match_manifest(root)  # the sha256 agrees: only the token check can see it
    status, found = verify_cli(root)
    assert status == 1
    assert f"{p}: 1 token id(s) >= vocab size 50257 (first at token offset {pos}: {value}); " \
           "the shard is damaged: re-copy the dataset or re-run prep" in found
    doc = [x for x in found if x.startswith("code/train: document ")]
    assert len(doc) == 1 and doc[0].endswith(
        f"holds token id {value} at token offset {pos} of code/train/shard_00001.bin, >= vocab "
        "size 50257: not decoded")


def test_two_shards_swapped_with_their_manifest_entries_are_problems(root: Path) -> None:
    m = json.loads((root / "manifest.json").read_text())
    a = m["domains"]["code"]["splits"]["eval"]["shards"][0]
    b = m["domains"]["prose"]["splits"]["eval"]["shards"][0]
    assert a["tokens"] != b["tokens"]
    da, db = (root / a["path"]).read_bytes(), (root / b["path"]).read_bytes()
    (root / a["path"]).write_bytes(db)
    (root / b["path"]).write_bytes(da)
    for k in ("tokens", "bytes", "sha256"):  # each file's record follows it
        a[k], b[k] = b[k], a[k]
    (root / "manifest.json").write_text(json.dumps(m))
    status, found = verify_cli(root)
    assert status == 1
    ta, tb = b["tokens"], a["tokens"]  # each split's tokens, as the manifest still declares
    assert found == [
        f"{root / 'manifest.json'}: domains.code.splits.eval: tokens={ta} but its shards declare "
        f"{tb} tokens in all; the manifest is inconsistent: re-run prep",
        f"{root / 'manifest.json'}: domains.prose.splits.eval: tokens={tb} but its shards "
        f"declare {ta} tokens in all; the manifest is inconsistent: re-run prep"]


def test_two_shards_of_a_split_swapped_with_their_entries_are_problems(root: Path) -> None:
    m = json.loads((root / "manifest.json").read_text())
    shards = m["domains"]["code"]["splits"]["train"]["shards"]
    assert shards[0]["tokens"] != shards[-1]["tokens"]  # a full shard and the short last one
    shards[0], shards[-1] = shards[-1], shards[0]  # the entries, paths and all, change places
    (root / "manifest.json").write_text(json.dumps(m))
    status, found = verify_cli(root)
    assert status == 1 and found
    assert f"manifest: {shards[0]['path']} holds {shards[0]['tokens']} tokens; every shard but " \
           "the last must hold shard_tokens=64" in found


def test_missing_manifest_and_unknown_version(root: Path) -> None:
    m = json.loads((root / "manifest.json").read_text())
    m["format_version"] = 7
    (root / "manifest.json").write_text(json.dumps(m))
    assert any("unknown format_version 7" in x for x in problems_of(root))
    (root / "manifest.json").unlink()
    assert any("no manifest here" in x for x in problems_of(root))


def test_doc_index_hash_checked(root: Path) -> None:
    p = root / "prose/eval/docs.jsonl.zst"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    assert any(f"{p}: sha256" in x and "document index's bytes changed" in x
               for x in problems_of(root))


def rewrite_index(root: Path, rel: str, fn) -> None:
    """Rewrite a document index and fix up its size and sha256 in the manifest."""
    p = root / rel
    lines = [json.loads(x) for x in zstandard.ZstdDecompressor().decompress(
        p.read_bytes(), max_output_size=1 << 24).splitlines()]
    fn(lines)
    data = zstandard.ZstdCompressor().compress(
        "".join(json.dumps(x) + "\n" for x in lines).encode())
    p.write_bytes(data)
    m = json.loads((root / "manifest.json").read_text())
    dom, split = rel.split("/")[:2]
    di = m["domains"][dom]["splits"][split]["doc_index"]
    di["bytes"], di["sha256"] = len(data), __import__("hashlib").sha256(data).hexdigest()
    (root / "manifest.json").write_text(json.dumps(m))


def test_planted_eval_document_in_train_is_caught(tmp_path: Path) -> None:
    leak = "Rain today."
    root = make_dataset(tmp_path, {"code": CODE, "prose": {"train": PROSE["train"] + [leak],
                                                           "eval": [leak]}},
                        shard_tokens=64, block_size=16)
    found = problems_of(root)
    assert len(found) == 1
    assert "prose/eval document 0" in found[0]
    assert (f"has the content hash of prose/train document {len(PROSE['train'])}: eval leaks "
            "into train") in found[0]


def test_eval_document_leaking_into_another_domains_train(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, {"code": {"train": CODE["train"] + ["Rain today."],
                                            "eval": CODE["eval"]}, "prose": PROSE},
                        shard_tokens=64, block_size=16)
    found = problems_of(root)
    assert any("prose/eval document 0" in x and f"code/train document {len(CODE['train'])}" in x
               for x in found)


def test_index_that_disagrees_with_tokens(root: Path) -> None:
    def bad_hash(lines: list[dict]) -> None:
        lines[2]["sha256"] = content_hash("something else")

    rewrite_index(root, "prose/train/docs.jsonl.zst", bad_hash)
    found = problems_of(root)
    assert len(found) == 1 and "prose/train: document 2" in found[0]
    assert "tokens and index disagree" in found[0]


def test_index_not_contiguous(root: Path) -> None:
    def shift(lines: list[dict]) -> None:
        lines[4]["offset"] += 1

    rewrite_index(root, "prose/train/docs.jsonl.zst", shift)
    assert any("document 4 starts at token" in x and "not contiguous" in x
               for x in problems_of(root))


def test_missing_document_in_index(root: Path) -> None:
    rewrite_index(root, "prose/train/docs.jsonl.zst", lambda lines: lines.pop())
    found = problems_of(root)
    assert any("holds 11 documents, the manifest declares 12" in x for x in found)
    assert any("the documents hold" in x and "tokens, the stream" in x for x in found)


def test_json_output(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (root / "code/eval/shard_00000.bin").unlink()
    assert main(["verify", str(root), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and len(report["problems"]) == 1
    assert "code/eval/shard_00000.bin: shard file missing" in report["problems"][0]
