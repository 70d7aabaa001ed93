"""shards.open(verify=...): the check before step 0, its stamp, and manifest value errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import shards
from shards.check import STAMP_NAME, cache_stamp_path
from shards.format import FormatError
from shards.verify import verify

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(clean_copy: Path) -> Path:
    return clean_copy  # its stamp cache is the test's own, never the user's


def declared(root: Path) -> tuple[list[Path], list[Path]]:
    """(shards, document indexes) the manifest declares."""
    m = json.loads((root / "manifest.json").read_text())
    sh, ix = [], []
    for dom in m["domains"].values():
        for rec in dom["splits"].values():
            sh += [root / s["path"] for s in rec["shards"]]
            ix.append(root / rec["doc_index"]["path"])
    return sh, ix


def refusal(root: Path, level: str = "full") -> str:
    with pytest.raises(FormatError) as e:
        shards.open(root, verify=level)
    msg = str(e.value)
    assert "\n" not in msg  # one line
    return msg


def set_token(path: Path, pos: int, value: int) -> None:
    toks = np.fromfile(path, dtype="<u2")
    toks[pos] = value
    toks.tofile(path)


# --------------------------------------------------------------------------- levels


def test_levels_read_what_they_say(root: Path) -> None:
    sh, ix = declared(root)
    size = sum(p.stat().st_size for p in sh)
    ds = shards.open(root)
    v = ds.verification
    assert (v.level, v.files, v.files_read, v.bytes_read) == ("sizes", len(sh) + len(ix), 0, 0)
    assert not (root / STAMP_NAME).exists()
    v = shards.open(root, verify="ids", stamp="off").verification
    assert (v.files, v.files_read, v.files_skipped, v.bytes_read) == (len(sh), len(sh), 0, size)
    v = shards.open(root, verify="full").verification
    assert (v.files, v.files_read, v.files_skipped) == (len(sh) + len(ix),) * 2 + (0,)
    assert v.bytes_read == size + sum(p.stat().st_size for p in ix)
    assert v.problems == [] and v.stamp == str(root / STAMP_NAME)
    assert v.read_seconds > 0 and v.to_dict()["gb_per_s"] == round(v.bytes_read / 1e9 /
                                                                    v.read_seconds, 3)
    assert f"{len(sh) + len(ix)} read ({v.bytes_read / 1e6:,.2f} MB at" in v.summary()
    with pytest.raises(ValueError, match="verify='most': choose one of sizes, ids, full"):
        shards.open(root, verify="most")


# --------------------------------------------------------------------------- damage


def test_flipped_bit_in_a_shard(root: Path) -> None:
    p = root / "code/train/shard_00001.bin"
    data = bytearray(p.read_bytes())
    data[7] ^= 0x01  # the high byte of token 3: still a valid id
    p.write_bytes(bytes(data))
    shards.open(root, verify="ids")  # ids alone cannot see it
    msg = refusal(root)
    assert msg.startswith(f"{p}: sha256 ") and "differs from the manifest's" in msg


def test_wrong_sha256_in_the_manifest(root: Path) -> None:
    shards.open(root, verify="full")  # stamped: the edit below must still be caught
    m = json.loads((root / "manifest.json").read_text())
    m["domains"]["prose"]["splits"]["train"]["shards"][0]["sha256"] = "0" * 64
    (root / "manifest.json").write_text(json.dumps(m))
    msg = refusal(root)
    assert msg.startswith(f"{root / 'prose/train/shard_00000.bin'}: sha256 ")
    assert f"manifest's {'0' * 64}" in msg


def test_flipped_byte_in_a_document_index(root: Path) -> None:
    p = root / "code/eval/docs.jsonl.zst"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    msg = refusal(root)
    assert msg.startswith(f"{p}: sha256 ") and "document index's bytes changed" in msg


@pytest.mark.parametrize("shard, pos, value", [
    ("prose/train/shard_00000.bin", 5, 50257),  # inside the model's padded vocabulary 50304
    ("prose/train/shard_00000.bin", 9, 50303),
    ("code/eval/shard_00000.bin", 3, 50304),  # outside it: an IndexError in the embedding
    ("code/eval/shard_00000.bin", 0, 65535),
])
def test_token_id_out_of_the_vocabulary(root: Path, shard: str, pos: int, value: int) -> None:
    set_token(root / shard, pos, value)
    for level in ("ids", "full"):
        msg = refusal(root, level)
        assert msg.startswith(f"{root / shard}: 1 token id(s) >= vocab size 50257 (first at "
                              f"token offset {pos}: {value})")
    assert "and its sha256 differs" in msg  # full: one line for the file, both findings


def test_several_damaged_files_are_listed(root: Path) -> None:
    set_token(root / "code/eval/shard_00000.bin", 1, 60000)
    set_token(root / "prose/eval/shard_00000.bin", 2, 60001)
    with pytest.raises(shards.DatasetError) as e:
        shards.open(root, verify="ids")
    assert len(e.value.problems) == 2 and str(e.value).startswith("2 problems:")


# --------------------------------------------------------------------------- the stamp


def test_stamp_skips_unchanged_files_and_rereads_a_touched_one(root: Path) -> None:
    sh, ix = declared(root)
    n = len(sh) + len(ix)
    first = shards.open(root, verify="full").verification
    assert first.files_read == n
    again = shards.open(root, verify="full").verification
    assert (again.files_read, again.files_skipped, again.bytes_read) == (0, n, 0)
    assert again.stamp == str(root / STAMP_NAME)
    assert shards.open(root, verify="ids").verification.files_read == 0  # full covers ids
    touched = root / "prose/eval/shard_00000.bin"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    v = shards.open(root, verify="full").verification
    assert (v.files_read, v.files_skipped, v.bytes_read) == (1, n - 1, st.st_size)
    assert shards.open(root, verify="full").verification.files_read == 0  # stamped again
    # a damaged file has a new mtime: re-read and refused, never skipped
    set_token(touched, 0, 50300)
    assert refusal(root).startswith(f"{touched}: 1 token id(s)")


def forge(path: Path, change) -> None:  # noqa: ANN001
    """Change a file's bytes in place with `change(path)`, then give it its old mtime and
    atime back (`os.utime`, as `touch -r`, `cp -p` from a bad copy or a restore tool do)."""
    st = path.stat()
    change(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_ids_changed_with_the_mtime_restored_are_refused(root: Path) -> None:
    shards.open(root, verify="full")  # stamped: every file passed
    damaged = [root / f"code/train/shard_0000{i}.bin" for i in range(3)]
    for k, p in enumerate(damaged):
        forge(p, lambda p, k=k: set_token(p, 2 + k, 50300))
    for level in ("ids", "full"):
        with pytest.raises(shards.DatasetError) as e:
            shards.open(root, verify=level)
        assert sorted(e.value.problems) == sorted(
            f"{p}: 1 token id(s) >= vocab size 50257 (first at token offset {2 + k}: 50300)"
            + (" and its sha256 differs from the manifest's" if level == "full" else "")
            + "; the shard is damaged: re-copy the dataset or re-run prep"
            for k, p in enumerate(damaged))


def test_a_flipped_bit_with_the_mtime_restored_is_refused(root: Path) -> None:
    shards.open(root, verify="full")
    p = root / "prose/train/shard_00000.bin"

    def flip(p: Path) -> None:
        data = bytearray(p.read_bytes())
        data[5] ^= 0x04  # token 2: another valid id
        p.write_bytes(bytes(data))

    forge(p, flip)
    assert shards.open(root, verify="ids").verification.files_read == 1  # re-read, ids fine
    msg = refusal(root)
    assert msg.startswith(f"{p}: sha256 ") and "differs from the manifest's" in msg


def test_a_bad_copy_put_over_a_file_by_cp_p_or_a_rename_is_read(root: Path,
                                                                 tmp_path: Path) -> None:
    shards.open(root, verify="full")
    target = root / "code/eval/shard_00000.bin"
    bad = tmp_path / "bad.bin"
    shutil.copy2(target, bad)  # a copy with the same bytes, size and mtime...
    set_token(bad, 1, 60000)  # ... then damaged, and given the original's mtime again
    shutil.copystat(target, bad)
    shutil.copy2(bad, target)  # cp -p: same inode, bytes and mtime from the bad copy
    assert target.stat().st_mtime_ns == bad.stat().st_mtime_ns
    assert refusal(root).startswith(f"{target}: 1 token id(s)")


def test_replacing_a_file_by_rename_and_chmod_are_seen_and_cost_one_read(root: Path) -> None:
    sh, ix = declared(root)
    shards.open(root, verify="full")
    p = sh[0]
    tmp = p.with_name("replacement")
    shutil.copy2(p, tmp)  # same bytes, size and mtime: a new inode
    os.replace(tmp, p)
    v = shards.open(root, verify="full").verification
    assert (v.files_read, v.problems) == (1, [])
    sh[1].chmod(0o444)  # metadata only: the ctime changes, the file is read again, and passes
    v = shards.open(root, verify="full").verification
    assert (v.files_read, v.problems) == (1, [])
    assert shards.open(root, verify="full").verification.files_read == 0


def test_a_copy_of_a_stamped_dataset_is_read_in_full(root: Path, tmp_path: Path) -> None:
    sh, ix = declared(root)
    shards.open(root, verify="full")
    copy = Path(shutil.copytree(root, tmp_path / "copied"))  # cp -a: mtimes and the stamp too
    assert (copy / STAMP_NAME).is_file()
    assert shards.open(copy, verify="full").verification.files_read == len(sh) + len(ix)


def test_a_stamp_of_version_1_is_not_trusted(root: Path) -> None:
    sh, ix = declared(root)
    shards.open(root, verify="full")
    st = json.loads((root / STAMP_NAME).read_text())
    assert st["version"] == 2 and set(next(iter(st["files"].values()))) == {
        "size", "mtime_ns", "ctime_ns", "inode", "sha256", "level"}
    st["version"] = 1  # mtime and size alone: what a forged mtime fooled
    (root / STAMP_NAME).write_text(json.dumps(st))
    assert shards.open(root, verify="full").verification.files_read == len(sh) + len(ix)


def test_ids_stamp_does_not_stand_for_full(root: Path) -> None:
    sh, ix = declared(root)
    assert shards.open(root, verify="ids").verification.files_read == len(sh)
    v = shards.open(root, verify="full").verification
    assert v.files_read == len(sh) + len(ix)  # hashing was never done: every file read


def test_an_ids_check_keeps_the_full_records_it_did_not_redo(root: Path) -> None:
    sh, ix = declared(root)
    shards.open(root, verify="full")
    st = sh[0].stat()
    os.utime(sh[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert shards.open(root, verify="ids").verification.files_read == 1  # that shard's ids
    v = shards.open(root, verify="full").verification
    assert (v.files_read, v.bytes_read) == (1, st.st_size)  # only its hash is still missing
    stamp = json.loads((root / STAMP_NAME).read_text())["files"]
    assert len(stamp) == len(sh) + len(ix) and {r["level"] for r in stamp.values()} == {"full"}


def test_stamp_follows_the_manifest_not_the_path(root: Path) -> None:
    # two shards of the same size swap places in the manifest: the fingerprint (by position)
    # and the files' size and mtime are unchanged, but each path now holds other bytes
    shards.open(root, verify="full")
    m = json.loads((root / "manifest.json").read_text())
    a, b = m["domains"]["code"]["splits"]["train"]["shards"][:2]
    assert a["bytes"] == b["bytes"]
    a["path"], b["path"] = b["path"], a["path"]
    (root / "manifest.json").write_text(json.dumps(m))
    assert "differs from the manifest's" in str(pytest.raises(
        shards.DatasetError, shards.open, root, verify="full").value)


def _make_read_only(d: Path) -> str:
    """chmod a-w; where that does not stop writes (root), the immutable attribute; returns
    how, or "" when neither stops a write here."""
    d.chmod(0o555)
    if not os.access(d, os.W_OK):
        return "chmod"
    probe = subprocess.run(["chattr", "+i", str(d)], capture_output=True) \
        if shutil.which("chattr") else None
    if probe is not None and probe.returncode == 0:
        try:
            (d / ".probe").write_text("x")
        except OSError:
            return "chattr"
        (d / ".probe").unlink()
        subprocess.run(["chattr", "-i", str(d)], check=True)
    return ""


def test_read_only_dataset_keeps_its_stamp_in_the_user_cache(root: Path, tmp_path: Path) -> None:
    how = _make_read_only(root)
    try:
        # where this machine cannot make a directory read-only, the cache is chosen explicitly
        place = "auto" if how else "cache"
        v = shards.open(root, verify="full", stamp=place).verification
        expected = cache_stamp_path(root)
        assert v.stamp == str(expected) and expected.is_file()
        assert expected.is_relative_to(tmp_path / "cache" / "moe-shards" / "verified")
        assert not (root / STAMP_NAME).exists()
        assert json.loads(expected.read_text())["root"] == str(root.resolve())
        again = shards.open(root, verify="full", stamp=place).verification
        assert again.files_read == 0 and again.files_skipped == v.files_read
    finally:
        if how == "chattr":
            subprocess.run(["chattr", "-i", str(root)], check=True)
        root.chmod(0o755)
    if os.geteuid() != 0:
        assert how == "chmod"


# --------------------------------------------------------------------------- manifest values


def _leaves(node, path=()):
    """(path, value) of every scalar of a manifest, skipping the free-form objects."""
    if isinstance(node, dict):
        for k, v in node.items():
            if path == () and k in ("recipe", "config", "run") or path[-1:] == ("source",) \
                    or k == "source":
                continue
            yield from _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))
    else:
        yield path, node


def _bad_values(path: tuple, value) -> list:
    if isinstance(value, bool):
        return ["yes", 1]
    if isinstance(value, int):
        low = {"block_size": 1, "shard_tokens": 1, "vocab_size": 1}.get(path[-1], 0)
        return ["abc", 1.5, None] + ([] if path == ("seed",) else [low - 1])
    if isinstance(value, float):
        return ["abc", -0.5, 1.5]
    if isinstance(value, str) and path[0] not in ("format",):
        return [5, None]
    return []


def _cases(root: Path) -> list[tuple[tuple, object]]:
    m = json.loads((root / "manifest.json").read_text())
    return [(p, bad) for p, v in _leaves(m) for bad in _bad_values(p, v)]


def _edit(m: dict, path: tuple, value) -> None:
    node = m
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value


def test_every_manifest_value_of_the_wrong_type_or_range_is_one_line(root: Path) -> None:
    original = (root / "manifest.json").read_text()
    cases = _cases(root)
    assert len(cases) > 150  # every scalar field of a two-domain manifest
    for path, bad in cases:
        m = json.loads(original)
        _edit(m, path, bad)
        (root / "manifest.json").write_text(json.dumps(m))
        dotted = ".".join(str(k) for k in path[:-1] if isinstance(k, str))
        with pytest.raises(FormatError) as e:
            shards.open(root)
        msg = str(e.value)
        assert "\n" not in msg and f"{root / 'manifest.json'}: " in msg, (path, bad, msg)
        if path[-1] not in ("format_version",):
            assert "field " in msg and dotted in msg, (path, bad, msg)
        found = verify(root).problems
        assert found == [msg], (path, bad)
    (root / "manifest.json").write_text(original)


@pytest.mark.parametrize("path, value, expected", [
    (("block_size",), 0, "field block_size is 0 (int); expected an integer >= 1"),
    (("domains", "code", "splits", "train", "tokens"), "abc",
     "field domains.code.splits.train.tokens is 'abc' (str); expected an integer >= 0"),
    (("shard_tokens",), 24, "shard_tokens=24 is not a multiple of block_size=16"),
    (("tokenizer", "eot_id"), 50257, "tokenizer.eot_id=50257 must be < tokenizer.vocab_size"),
    (("tokenizer", "vocab_size"), 70000, "does not fit the uint16 token format"),
])
def test_manifest_value_errors_from_the_cli(root: Path, path, value, expected) -> None:
    m = json.loads((root / "manifest.json").read_text())
    _edit(m, path, value)
    (root / "manifest.json").write_text(json.dumps(m))
    for cmd in ("verify", "inspect"):
        r = subprocess.run([sys.executable, "-m", "shards", cmd, str(root)], capture_output=True,
                           text=True, cwd=REPO)
        out = r.stdout + r.stderr
        assert r.returncode in (1, 2) and "Traceback" not in out, out
        assert expected in out
        lines = [x for x in out.splitlines() if expected in x]
        assert len(lines) == 1
