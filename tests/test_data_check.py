"""The training loop never trains on damaged data: each damage is refused before step 0."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shards_fixture import TINY_RUN, domain_docs, make_dataset

import shards
from shards.check import STAMP_NAME
from train import moe, start
from train.data import DataError, TrainSampler

SMALL = TINY_RUN


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("dc"), domain_docs(np.random.default_rng(0), 12, 4),
                        shard_tokens=256, block_size=16)


@pytest.fixture
def data(clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return Path(shutil.copytree(clean, tmp_path / "data"))


def train(data: Path, out: Path, *extra: str) -> int:
    return moe.main(["--data", str(data), "--out", str(out), *SMALL, "--max-steps", "2",
                     "--eval-every", "2", *extra])


def records(out: Path, kind: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def set_tokens(path: Path, pos, value: int) -> None:
    toks = np.fromfile(path, dtype="<u2")
    toks[pos] = value
    toks.tofile(path)


def flip_bit(path: Path, byte: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[byte] ^= mask
    path.write_bytes(bytes(data))


def wrong_manifest_sha(root: Path) -> Path:
    m = json.loads((root / "manifest.json").read_text())
    m["domains"]["math"]["splits"]["train"]["shards"][0]["sha256"] = "f" * 64
    (root / "manifest.json").write_text(json.dumps(m))
    return root / "math/train/shard_00000.bin"


DAMAGES = {
    # one flipped bit in a shard (the high byte of a token: the id stays in the vocabulary)
    "flipped-bit": (lambda r: flip_bit(r / "code/train/shard_00000.bin", 11) or
                    r / "code/train/shard_00000.bin", "sha256 "),
    "manifest-sha256": (wrong_manifest_sha, f"differs from the manifest's {'f' * 64}"),
    "doc-index-byte": (lambda r: flip_bit(r / "prose/eval/docs.jsonl.zst", 20, 0xFF) or
                       r / "prose/eval/docs.jsonl.zst", "document index's bytes changed"),
    # inside the model's padded vocabulary (50304): trained on silently before this check
    "id-50300-train": (lambda r: set_tokens(r / "prose/train/shard_00000.bin", 7, 50300) or
                       r / "prose/train/shard_00000.bin",
                       "token id(s) >= vocab size 50257 (first at token offset 7: 50300)"),
    # outside it, in an eval shard: a raw IndexError at the first eval before this check
    "id-50304-eval": (lambda r: set_tokens(r / "math/eval/shard_00000.bin", 5, 50304) or
                      r / "math/eval/shard_00000.bin",
                      "token id(s) >= vocab size 50257 (first at token offset 5: 50304)"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_each_damaged_dataset_is_refused_before_step_0(data, tmp_path, capsys, damage):
    make, expected = DAMAGES[damage]
    path = make(data)
    out = tmp_path / "run"
    assert train(data, out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    assert err.startswith(f"error: --data {data}: refused before step 0: {path}: "), err
    assert expected in err
    assert not out.exists()  # nothing was written: no step ran


def test_skip_verify_skips_the_hashing(data, tmp_path, capsys):
    flip_bit(data / "code/train/shard_00000.bin", 11)  # only a hash can see this one
    out = tmp_path / "run"
    assert train(data, out, "--skip-verify") == 0  # trained: the bytes were never hashed
    (check,) = records(out, "data_check")
    assert check["level"] == "sizes" and check["files_read"] == 0 and check["bytes_read"] == 0
    assert "data check: sizes only" in capsys.readouterr().out
    assert not (data / STAMP_NAME).exists()
    assert train(data, tmp_path / "run2") == 2  # the default check refuses it


def test_skip_verify_still_never_gives_an_index_error(data, tmp_path, capsys):
    set_tokens(data / "math/eval/shard_00000.bin", 5, 50304)
    assert train(data, tmp_path / "run", "--skip-verify") == 2  # at the first eval
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "IndexError" not in err
    assert err.startswith(f"error: {data / 'math/eval/shard_00000.bin'}: token id 50304 at "
                          "token offset 5 is >= the vocabulary size 50257")
    assert records(tmp_path / "run", "train")  # it did train before the eval


@pytest.mark.parametrize("bad_id", [50300, 65535])
def test_ids_damaged_after_the_full_check_never_train(data, tmp_path, capsys, monkeypatch,
                                                      bad_id):
    # The files change after the check before step 0 passed (a restore, a bad copy with
    # mtimes kept): every batch's ids are still checked, in every mode, before it trains.
    # 50300 is inside the model's padded vocabulary (it would train silently), 65535 outside
    # (an IndexError in the embedding).
    real_open = start.open_data
    shards_ = sorted((data / "math/train").glob("shard_*.bin"))

    def open_then_damage(cfg, d):
        ds = real_open(cfg, d)
        assert ds.verification.level == "full"
        for shard in shards_:
            set_tokens(shard, slice(None), bad_id)
        return ds

    monkeypatch.setattr(start, "open_data", open_then_damage)
    out = tmp_path / "run"
    assert train(data, out, "--domain-weights", "code=0,math=1,prose=0") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "IndexError" not in err, err
    assert any(err.startswith(f"error: {p}: token id {bad_id} at token offset ")
               for p in shards_), err
    assert "is >= the vocabulary size 50257 of the dataset's tokenizer: the shard is damaged " \
           "(changed since the data was checked, or never checked: --skip-verify); nothing was " \
           "trained on this batch" in err
    assert not records(out, "train") and not (out / "ckpt.pt").exists()


def test_sampler_checks_ids_when_the_open_did_not(data):
    set_tokens(data / "code/train/shard_00000.bin", slice(None), 50260)
    with pytest.raises(DataError, match=r"code/train/shard_00000.bin: token id 50260 at token "
                                        r"offset \d+ is >= the vocabulary size 50257"):
        s = TrainSampler(shards.open(data), block_size=16, batch_size=8, seed=0,
                         weights={"code": 1.0, "math": 0.0, "prose": 0.0})
        s.next_batch()


def test_the_stamp_skips_unchanged_files_between_runs(data, tmp_path, capsys):
    n = sum(len(list(p.glob("*"))) for p in data.glob("*/*"))  # shards and indexes
    assert train(data, tmp_path / "a") == 0
    first = records(tmp_path / "a", "data_check")[0]
    assert first["level"] == "full" and first["files"] == first["files_read"] == n
    assert first["stamp"] == str(data / STAMP_NAME) and first["gb_per_s"] > 0
    assert train(data, tmp_path / "b") == 0
    second = records(tmp_path / "b", "data_check")[0]
    assert (second["files_read"], second["files_skipped"], second["bytes_read"]) == (0, n, 0)
    touched = data / "prose/eval/shard_00000.bin"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert train(data, tmp_path / "c") == 0
    third = records(tmp_path / "c", "data_check")[0]
    assert (third["files_read"], third["files_skipped"]) == (1, n - 1)
    assert third["bytes_read"] == st.st_size
    assert f"1 read ({st.st_size / 1e6:,.2f} MB" in capsys.readouterr().out


WRAPPER = """
import os, sys
import shards
from shards.format import FormatError
from train import moe

real_open = shards.open


def fail_on_rank_1(path, *a, **k):
    if os.environ["RANK"] == "1":
        raise FormatError(f"{path}/manifest.json: simulated: this node cannot read it")
    return real_open(path, *a, **k)


shards.open = fail_on_rank_1
sys.exit(moe.main(sys.argv[1:]))
"""


def test_a_rank_that_cannot_open_the_data_stops_every_rank(clean, tmp_path):
    # rank 0 checks the data (fine); rank 1's own sizes-only open fails: every rank must stop
    # with rank 1's message, rank 0 must not wait for it in a collective
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(script), "--data", str(clean), "--out", str(out), *SMALL, "--max-steps", "2",
           "--device", "cpu"]
    p = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert f"error: --data {clean}: refused before step 0: rank 1 (host {socket.gethostname()})" \
           f": cannot open it: {clean}/manifest.json: simulated: this node cannot read it" \
        in p.stderr, p.stderr[-3000:]
    assert "exitcode  : 2" in p.stderr  # rank 0's own exit, not a kill after a timeout
    assert "/train/" not in p.stderr and not out.exists()  # no worker traceback (torchrun
    # prints its own report of the failed workers)
