"""`shards export`: Megatron and llm.c files read back token for token, refusals, faults."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import shards
from shards import atomic
from shards.__main__ import main
from shards.export import EXPORT_NAME, KILL_AT_ENV
from shards.export_formats import LLMC_MAX_FILE_TOKENS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(clean_dataset: Path) -> Path:
    return clean_dataset  # read only: damage goes into copies


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_llmc(path: Path) -> np.ndarray:
    """llm.c's documented layout: 256 x int32 header (magic, version, count), uint16 tokens."""
    raw = path.read_bytes()
    header = np.frombuffer(raw, dtype="<i4", count=256)
    assert header[0] == 20240520 and header[1] == 1
    assert not header[3:].any()
    ntok = int(header[2])
    assert ntok > 0 and len(raw) == 256 * 4 + 2 * ntok  # what llm.c's loader asserts
    return np.frombuffer(raw, dtype="<u2", offset=1024)


def export(root: Path, out: Path, *args: str) -> int:
    return main(["export", str(root), "--out", str(out), *args])


def check_manifest(out: Path, root: Path) -> dict:
    """export.json names exactly the files written, with their sha256 and sizes."""
    m = json.loads((out / EXPORT_NAME).read_text())
    ds = shards.open(root)
    assert m["source"]["fingerprint"] == ds.fingerprint
    files = [f for s in m["splits"] for f in s["files"]]
    assert sorted(f["path"] for f in files) == sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != EXPORT_NAME)
    for f in files:
        assert sha256(out / f["path"]) == f["sha256"]
        assert (out / f["path"]).stat().st_size == f["bytes"]
    for s in m["splits"]:
        sp = ds.split(s["domain"], s["split"])
        assert (s["docs"], s["tokens"]) == (sp.num_docs, sp.num_tokens)
    return m


def test_megatron_read_back_by_megatron_core(root: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():  # "Transformer Engine and Apex are not installed"
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    out = tmp_path / "meg"
    assert export(root, out, "--format", "megatron") == 0
    m = check_manifest(out, root)
    ds = shards.open(root)
    seen = 0
    for s in m["splits"]:
        sp = ds.split(s["domain"], s["split"])
        if not sp.num_tokens:  # math/eval: nothing to read, listed without files
            assert s["files"] == [] and s["megatron_prefix"] is None
            continue
        seen += 1
        idx = IndexedDataset(str(out / s["megatron_prefix"]))
        assert idx.index.dtype == np.uint16
        assert len(idx) == sp.num_docs
        assert idx.document_indices.tolist() == list(range(sp.num_docs + 1))
        assert idx.sequence_lengths.tolist() == [d.tokens for d in sp.documents()]
        for k in range(sp.num_docs):
            assert np.array_equal(idx[k], sp.document_tokens(k)), (s["domain"], k)
        assert np.array_equal(np.concatenate(idx[0:len(idx)]), sp.stream())
    assert seen == 5
    assert max(d.tokens for d in ds.split("code", "train").documents()) > 3 * 64


def test_llmc_read_back_from_the_documented_layout(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "llmc"
    assert export(root, out, "--format", "llmc", "--shard-tokens", "300") == 0
    m = check_manifest(out, root)
    ds = shards.open(root)
    assert m["shard_tokens"] == 300
    names = {(s["domain"], s["split"]): [f["path"] for f in s["files"]] for s in m["splits"]}
    sp = ds.split("code", "train")
    n = -(-sp.num_tokens // 300)
    assert names["code", "train"] == [f"code/code_train_{i:06d}.bin" for i in range(n)]
    assert names["code", "eval"] == ["code/code_val_000000.bin"]
    assert names["math", "eval"] == []
    for (d, s), paths in names.items():
        split = ds.split(d, s)
        parts = [read_llmc(out / p) for p in paths]
        if not paths:
            continue
        assert np.array_equal(np.concatenate(parts), split.stream())  # token for token
        sizes = [len(x) for x in parts]
        assert max(sizes) <= 300 and max(sizes) - min(sizes) <= 1  # no short tail file
        assert sum(int((x == ds.eot_id).sum()) for x in parts) == split.num_docs
        assert parts[-1][-1] == ds.eot_id
    # llm.c's globs pick the train files of every domain and nothing else
    train = sorted(out.glob("*/*_train_??????.bin"))
    assert [str(p.relative_to(out)) for p in train] == sorted(
        names["code", "train"] + names["math", "train"] + names["prose", "train"])


def test_llmc_files_stay_under_the_2_gib_that_llm_c_can_seek(root: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    # dataloader.h: fseekCheck(f, (int) current_offset, SEEK_SET); every offset lies in the file
    assert 1024 + 2 * LLMC_MAX_FILE_TOKENS <= 2**31 - 1 < 1024 + 2 * (LLMC_MAX_FILE_TOKENS + 1)
    assert LLMC_MAX_FILE_TOKENS == 1_073_741_311
    for n in (LLMC_MAX_FILE_TOKENS + 1, 2**31 - 1):
        assert export(root, tmp_path / "o", "--format", "llmc", "--shard-tokens", str(n)) == 2
        assert capsys.readouterr().err == (
            f"error: --shard-tokens {n}: must be between 1 and 1073741311: llm.c's dataloader.h "
            "seeks with an int offset, so a file must stay under 2 GiB (2147483647 bytes with "
            "its 1024-byte header)\n")
    assert not (tmp_path / "o").exists()
    assert export(root, tmp_path / "o", "--format", "llmc", "--shard-tokens",
                  str(LLMC_MAX_FILE_TOKENS)) == 0
    assert export(root, tmp_path / "m", "--format", "megatron", "--shard-tokens",
                  str(2**31)) == 0  # llmc only: Megatron's files have no such limit


def test_export_is_deterministic(root: Path, tmp_path: Path) -> None:
    for fmt in ("megatron", "llmc"):
        assert export(root, tmp_path / f"{fmt}1", "--format", fmt) == 0
        assert export(root, tmp_path / f"{fmt}2", "--format", fmt) == 0
        a = sorted(p.relative_to(tmp_path / f"{fmt}1") for p in (tmp_path / f"{fmt}1").rglob("*"))
        b = sorted(p.relative_to(tmp_path / f"{fmt}2") for p in (tmp_path / f"{fmt}2").rglob("*"))
        assert a == b
        for rel in a:
            p = tmp_path / f"{fmt}1" / rel
            if p.is_file():
                assert p.read_bytes() == (tmp_path / f"{fmt}2" / rel).read_bytes(), rel


def test_selection_of_domains_and_splits(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "sel"
    assert export(root, out, "--format", "llmc", "--domain", "prose", "--split", "train") == 0
    m = json.loads((out / EXPORT_NAME).read_text())
    assert [(s["domain"], s["split"]) for s in m["splits"]] == [("prose", "train")]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.bin")) == [
        "prose/prose_train_000000.bin"]


def test_overwrite_is_refused_without_the_flag(root: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert export(root, out, "--format", "llmc", "--shard-tokens", "100") == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert export(root, out, "--format", "megatron") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds an earlier export; pass --overwrite" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # --overwrite replaces the export: no llm.c file of the old one is left behind
    assert export(root, out, "--format", "megatron", "--overwrite") == 0
    assert not list(out.rglob("*_000000.bin"))
    assert json.loads((out / EXPORT_NAME).read_text())["target"] == "megatron"
    check_manifest(out, root)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing left beside it


def test_a_directory_that_is_not_an_export_is_never_replaced(
        root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert export(root, out, "--format", "llmc", "--overwrite") == 2
    assert "holds no export.json" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(root, empty, "--format", "llmc") == 0  # an empty directory is fine
    assert (empty / EXPORT_NAME).is_file()


def test_help_explains_every_flag() -> None:
    out = subprocess.run([sys.executable, "-m", "shards", "export", "--help"], capture_output=True,
                         text=True, check=True, cwd=REPO).stdout
    for flag in ("--format {megatron,llmc,nanogpt}", "--out OUT", "--overwrite",
                 "--domain DOMAIN", "--split {train,eval}", "--shard-tokens SHARD_TOKENS",
                 "--domain-weights code=1,math=1,prose=1", "--seed SEED",
                 "--when-exhausted {repeat,stop}", "dataset directory"):
        assert flag in out, flag
    assert "default: 100000000" in out
    assert "export" in subprocess.run([sys.executable, "-m", "shards", "--help"], text=True,
                                      capture_output=True, check=True, cwd=REPO).stdout


def test_bad_input_gives_one_line_errors(root: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    o = str(tmp_path / "o")
    cases = [
        ([str(tmp_path / "nothing"), "--format", "llmc", "--out", o], "no manifest here"),
        ([str(root), "--format", "llmc", "--out", o, "--domain", "poetry"], "no domain 'poetry'"),
        ([str(root), "--format", "llmc", "--out", o, "--shard-tokens", "0"],
         "--shard-tokens 0: must be"),
        ([str(root), "--format", "llmc", "--out", str(root.parent)], "holds the dataset"),
    ]
    for args, message in cases:
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o").exists()
    r = subprocess.run([sys.executable, "-m", "shards", "export", str(root), "--format", "bin",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "invalid choice: 'bin'" in r.stderr
    assert "Traceback" not in r.stderr


def damaged_copy(root: Path, tmp_path: Path, token: int | None) -> tuple[Path, Path]:
    """A copy of the dataset with code/train's second shard changed at token 5."""
    bad = Path(shutil.copytree(root, tmp_path / "bad"))
    rec = shards.open(bad).split("code", "train").record
    path = bad / rec.shards[1].path
    data = np.fromfile(path, dtype="<u2")
    data[5] = token if token is not None else data[5] ^ 1
    data.tofile(path)
    if token is not None:  # the manifest agrees with the bytes: only the id check can catch it
        m = json.loads((bad / "manifest.json").read_text())
        m["domains"]["code"]["splits"]["train"]["shards"][1]["sha256"] = sha256(path)
        (bad / "manifest.json").write_text(json.dumps(m))
    return bad, path


@pytest.mark.parametrize("fmt", ["megatron", "llmc"])
@pytest.mark.parametrize("token", [None, 50300])
def test_damaged_source_is_refused_and_nothing_published(
        root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str,
        token: int | None) -> None:
    bad, path = damaged_copy(root, tmp_path, token)
    out = tmp_path / "out"
    assert export(bad, out, "--format", fmt) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ")
    if token is None:
        assert "differs from the manifest's" in err
    else:
        assert "token 5 has id 50300, not below the vocabulary size 50257" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad"]  # no temporary directory left


def test_megatron_boundaries_are_checked_against_the_manifest(
        root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An EOT inside a document (the manifest rehashed to agree) would split it in two."""
    bad, _ = damaged_copy(root, tmp_path, 50256)
    assert export(bad, tmp_path / "out", "--format", "megatron") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "code/train holds more EOT tokens than its 31 documents" in err
    assert not (tmp_path / "out").exists()


def test_a_full_disk_publishes_nothing(root: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    assert export(root, out, "--format", "llmc") == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real_open = open
    written = [0]

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            written[0] += len(memoryview(b).cast("B"))
            if written[0] > 3000:
                raise OSError(28, "No space left on device")
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(atomic, "open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)
    capsys.readouterr()
    assert export(root, out, "--format", "megatron", "--overwrite") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert "nothing was published" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("point", ["file", "manifest"])
def test_kill_9_leaves_the_previous_export(root: Path, tmp_path: Path, point: str) -> None:
    out = tmp_path / "out"
    assert export(root, out, "--format", "llmc") == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    cmd = [sys.executable, "-m", "shards", "export", str(root), "--format", "megatron",
           "--out", str(out), "--overwrite"]
    env = {**os.environ, KILL_AT_ENV: point, "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == -9, r.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    stale = [p.name for p in tmp_path.iterdir() if p.name != "out"]
    assert len(stale) == 1 and stale[0].startswith(".out.tmp-")
    # the next export removes the dead one's directory and publishes
    env.pop(KILL_AT_ENV)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "left by a killed export" in r.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    check_manifest(out, root)
