"""`python -m shards inspect|sample` and the command line's help and errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shards_fixture import CLEAN_DOCS, match_manifest, non_eot_position, set_token

import shards
from shards.__main__ import main
from shards.sample import sample_documents


@pytest.fixture(scope="module")
def root(clean_dataset: Path) -> Path:
    return clean_dataset  # read only: damage goes into copies


def test_help_explains_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "shards", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for cmd in ("inspect", "verify", "sample", "audit"):
        assert cmd in out
    out = subprocess.run([sys.executable, "-m", "shards", "sample", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--domain", "--split", "-n", "--seed", "--max-chars", "--json"):
        assert flag in out


def test_inspect_table(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(root)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^recipe +fixture$", out, re.M)
    assert re.search(r"^block_size +16$", out, re.M)
    assert re.search(r"^code +train +31 +", out, re.M)
    assert re.search(r"^prose +eval +2 +", out, re.M)
    assert re.search(r"^code/train/shard_00000\.bin +64 +128 +[0-9a-f]{16}$", out, re.M)
    assert "code/train/docs.jsonl.zst" in out


def test_inspect_json(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    ds = shards.open(root)
    assert info["config"]["fingerprint"] == ds.fingerprint
    assert info["config"]["seed"] == 42 and info["config"]["shard_tokens"] == 64
    code = info["domains"]["code"]
    assert code["splits"]["train"]["docs"] == 31
    assert code["eval_share"] == 2 / 33
    code_docs = CLEAN_DOCS["code"]["train"] + CLEAN_DOCS["code"]["eval"]
    size = sum(len(t.encode()) for t, _ in code_docs)
    assert code["counts"] == {"docs_seen": 33, "bytes_seen": size, "docs_kept": 33,
                              "bytes_kept": size}
    assert info["counts"][0] == ["docs_seen", 33, 14, 8]  # counter, then one value per domain
    assert code["shuffle_buffer"] == 1000
    assert [s["path"] for s in code["splits"]["train"]["shards"]] == [
        s.path for s in ds.manifest.domains["code"].splits["train"].shards]


def test_sample_is_reproducible(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sp = shards.open(root).split("code", "train")
    a = [s.doc.index for s in sample_documents(sp, 5, seed=3)]
    assert a == [s.doc.index for s in sample_documents(sp, 5, seed=3)]
    assert a != [s.doc.index for s in sample_documents(sp, 5, seed=4)]
    assert len(set(a)) == 5
    assert sorted(s.doc.index for s in sample_documents(sp, 100, seed=0)) == list(range(31))
    assert main(["sample", str(root), "--domain", "code", "-n", "5", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main(["sample", str(root), "--domain", "code", "-n", "5", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first
    assert first.startswith("5 of 31 documents of code/train, seed 3")
    k = a[0]
    text, source = CLEAN_DOCS["code"]["train"][k]
    assert f"[1/5] document {k}: shard" in first
    assert f"source: {json.dumps(source)}" in first
    assert text in first


def test_sample_json_has_text_and_provenance(root: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(root), "--domain", "prose", "--split", "eval", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert sorted(r["text"] for r in rows) == sorted(CLEAN_DOCS["prose"]["eval"])
    assert all(r["hash_ok"] and r["split"] == "eval" for r in rows)


def sample_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "shards", "sample", str(root), *args],
                       capture_output=True, text=True)
    assert "Traceback" not in r.stdout + r.stderr and r.stderr == "", r.stderr
    return r


@pytest.mark.parametrize("fix_manifest", [False, True])
def test_sample_reports_a_flipped_bit_as_a_problem(root: Path, tmp_path: Path,
                                                   fix_manifest: bool) -> None:
    copy = Path(shutil.copytree(root, tmp_path / "copy"))
    p = copy / "prose/train/shard_00001.bin"
    pos = int(np.flatnonzero(np.fromfile(p, "<u2") == 27149)[0])  # " prose"
    set_token(p, pos, 27149 ^ 0x8000)  # one real bit flip, as 21412 -> 54180: not an id
    if fix_manifest:
        match_manifest(copy)
    r = sample_cli(copy, "--domain", "prose", "-n", "100")
    assert r.returncode == 1
    want = f"PROBLEM: {p}: token id {27149 ^ 0x8000} at token offset {pos} (document "
    lines = [x for x in r.stdout.splitlines() if x.startswith(want)]
    assert len(lines) == 2, r.stdout  # where the document would print, and in the summary
    assert lines[0].endswith("of prose/train) is >= the vocabulary size 50257: the shard is "
                             "damaged; run `python -m shards verify` and re-copy the dataset or "
                             "re-run prep")
    assert r.stdout.rstrip().endswith(f"FAILED: 1 of 12 sampled documents are damaged; run "
                                      f"`python -m shards verify {copy}`")
    r = sample_cli(copy, "--domain", "prose", "-n", "100", "--json")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 1 and len(rows) == 12
    assert [x["problem"][:len(want) - 9] for x in rows if x["problem"]] == [want[9:]]


def test_sample_reports_text_that_is_not_the_index_s(root: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(root, tmp_path / "copy"))
    p = copy / "code/train/shard_00000.bin"
    pos = non_eot_position(p)
    set_token(p, pos, set_token(p, pos, 0) ^ 0x0001)  # a valid id: other text
    r = sample_cli(copy, "--domain", "code", "-n", "100")
    assert r.returncode == 1
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("PROBLEM: ")]
    assert re.fullmatch(r"PROBLEM: code/train document \d+: its tokens decode to text with "
                        r"sha256 [0-9a-f]{16}\.\.\., the index says [0-9a-f]{16}\.\.\.: tokens "
                        r"and index disagree; run `python -m shards verify`", line)


def test_errors_are_clear(root: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(root), "--domain", "poetry"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path)]) == 2
    assert "no manifest here" in capsys.readouterr().err


def test_every_command_on_the_sample_recipe(sample_dataset: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The README's commands on the real `prep` output of the `sample` recipe."""
    assert main(["verify", str(sample_dataset)]) == 0
    assert "OK: every check passed" in capsys.readouterr().out
    assert main(["inspect", str(sample_dataset)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^recipe +sample$", out, re.M)
    for d in ("code", "math", "prose"):
        assert re.search(rf"^{d} +train +[0-9,]+ +", out, re.M)
    assert main(["audit", str(sample_dataset), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["domains"]) == ["code", "math", "prose"]
    assert report["domains"]["code"]["diversity"]["source_key"] == "path"
    assert main(["sample", str(sample_dataset), "--domain", "prose", "-n", "3"]) == 0
    assert "3 of " in capsys.readouterr().out
