"""`shards export --format nanogpt`: train.bin and val.bin as nanoGPT's train.py reads them.

nanoGPT's `get_batch` is re-implemented here from its documented behaviour (karpathy/nanoGPT,
train.py): ``data = np.memmap(<dir>/train.bin, dtype=np.uint16, mode="r")``, window starts drawn
uniformly from ``[0, len(data) - block_size)``, ``x = data[i:i+block_size]``,
``y = data[i+1:i+1+block_size]``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from shards_fixture import VOCABS, make_dataset, words_doc

import shards
from shards import export_nanogpt
from shards.__main__ import main
from shards.export import EXPORT_NAME
from shards.tokenizer import EOT_ID

SIZES = {"code": (300, 40), "math": (150, 20), "prose": (900, 120)}  # (train, eval) documents


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    docs = {d: {s: [words_doc(rng, int(rng.integers(20, 80)), VOCABS[d]) for _ in range(n)]
                for s, n in zip(("train", "eval"), SIZES[d], strict=True)} for d in SIZES}
    return make_dataset(tmp_path_factory.mktemp("ng"), docs, shard_tokens=4096, block_size=16)


@pytest.fixture(scope="module")
def source(root: Path) -> dict[tuple[int, ...], tuple[str, str]]:
    """Every document's tokens -> (domain, split): who wrote each document of a file."""
    ds = shards.open(root)
    out = {tuple(sp.document_tokens(k).tolist()): (sp.domain, sp.name)
           for sp in ds.splits() for k in range(sp.num_docs)}
    assert len(out) == sum(sp.num_docs for sp in ds.splits())  # every document is unique
    return out


def export(root: Path, out: Path, *args: str) -> dict:
    assert main(["export", str(root), "--format", "nanogpt", "--out", str(out), *args]) == 0
    return json.loads((out / EXPORT_NAME).read_text())


def file_documents(path: Path) -> list[np.ndarray]:
    """A flat token file cut after each EOT: its documents, in order."""
    data = np.memmap(path, dtype=np.uint16, mode="r")
    ends = np.flatnonzero(data == EOT_ID) + 1
    assert len(data) and ends[-1] == len(data)  # whole documents: the file ends with EOT
    return [np.asarray(x) for x in np.split(data, ends[:-1])]


def domains_of(path: Path, source: dict) -> list[tuple[str, int]]:
    """(domain, tokens) of each document of the file, by looking each one up in the dataset."""
    out = []
    for doc in file_documents(path):
        domain, _ = source[tuple(doc.tolist())]  # KeyError: not a whole source document
        out.append((domain, len(doc)))
    return out


def get_batch(data_dir: Path, split: str, block_size: int, batch_size: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nanoGPT's get_batch (see the module docstring); also returns the window starts."""
    data = np.memmap(data_dir / ("train.bin" if split == "train" else "val.bin"),
                     dtype=np.uint16, mode="r")
    ix = rng.integers(0, len(data) - block_size, size=batch_size)
    x = np.stack([data[i:i + block_size].astype(np.int64) for i in ix])
    y = np.stack([data[i + 1:i + 1 + block_size].astype(np.int64) for i in ix])
    return x, y, ix


def test_equal_token_shares_within_1_percent_over_the_file(root: Path, tmp_path: Path,
                                                           source: dict) -> None:
    m = export(root, tmp_path / "ng")
    for name, split in (("train.bin", "train"), ("val.bin", "eval")):
        docs = domains_of(tmp_path / "ng" / name, source)
        total = sum(n for _, n in docs)
        shares = {d: sum(n for x, n in docs if x == d) / total for d in SIZES}
        if split == "train":
            assert all(abs(s - 1 / 3) <= 0.01 / 3 for s in shares.values()), shares
        for d, rec in m["nanogpt"]["domains"][name].items():
            assert rec["share"] == pytest.approx(shares[d]) and rec["weight"] == 1 / 3
        # repeat (the default): every document is in the file, prose once, the others repeated
        ds = shards.open(root)
        for d in SIZES:
            sp = ds.split(d, split)
            written = sum(1 for x, _ in docs if x == d)
            assert written >= sp.num_docs and m["nanogpt"]["domains"][name][d]["docs"] == written
        assert m["nanogpt"]["domains"][name]["prose"]["passes"] == 1.0
        assert m["nanogpt"]["domains"][name]["math"]["passes"] > 5


def test_every_prefix_of_the_file_keeps_the_shares(root: Path, tmp_path: Path,
                                                   source: dict) -> None:
    """The documented bound: at each document, a domain is over its share by at most one
    document and under it by at most one per other domain; weights 2:1:1 and 0 too."""
    for weights, want in (("", {d: 1 / 3 for d in SIZES}),
                          ("code=2,math=1,prose=1", {"code": .5, "math": .25, "prose": .25}),
                          ("code=0,math=1,prose=3", {"math": .25, "prose": .75})):
        out = tmp_path / f"w{len(want)}{weights[:6]}"
        m = export(root, out, *(["--domain-weights", weights] if weights else []))
        docs = domains_of(out / "train.bin", source)
        longest = max(n for _, n in docs)
        written = dict.fromkeys(SIZES, 0)
        total = 0
        for d, n in docs:
            assert d in want  # weight 0: left out
            written[d] += n
            total += n
            for x, w in want.items():
                assert -(len(want) - 1) * longest <= written[x] - w * total <= longest
        assert sorted(m["nanogpt"]["domains"]["train.bin"]) == sorted(want)


def test_get_batch_windows_decode_to_whole_documents_of_the_right_domains(
        root: Path, tmp_path: Path, source: dict) -> None:
    export(root, tmp_path / "ng")
    ds = shards.open(root)
    texts = {(sp.domain, sp.name): {sp.document_text(k) for k in range(sp.num_docs)}
             for sp in ds.splits()}
    rng = np.random.default_rng(0)
    for split, path in (("train", "train.bin"), ("eval", "val.bin")):
        docs = file_documents(tmp_path / "ng" / path)
        starts = np.cumsum([0] + [len(d) for d in docs])
        owner = [source[tuple(d.tolist())] for d in docs]
        x, y, ix = get_batch(tmp_path / "ng", split, block_size=128, batch_size=64, rng=rng)
        assert x.shape == y.shape == (64, 128) and np.array_equal(x[:, 1:], y[:, :-1])
        seen = 0
        for row, i in zip(x, ix, strict=True):
            assert row.max() < ds.vocab_size  # every id embeds in nanoGPT's 50304 rows
            eots = np.flatnonzero(row == EOT_ID)
            for a, b in zip(eots[:-1], eots[1:], strict=True):  # the whole documents inside
                k = int(np.searchsorted(starts, i + a + 1, side="right")) - 1
                assert starts[k] == i + a + 1 and starts[k + 1] == i + b + 1  # one whole doc
                domain, sname = owner[k]
                assert sname == split
                text = shards.decode(row[a + 1:b + 1])
                assert text in texts[domain, split]  # ... that domain's, decoded
                assert all(text not in texts[o, split] for o in SIZES if o != domain)
                seen += 1
        assert seen > 20


def test_export_json_lists_sources_files_weights_and_seed(root: Path, tmp_path: Path) -> None:
    m = export(root, tmp_path / "ng", "--domain-weights", "code=1,math=1,prose=2", "--seed", "5")
    ds = shards.open(root)
    assert m["target"] == "nanogpt" and m["source"]["fingerprint"] == ds.fingerprint
    ng = m["nanogpt"]
    assert ng["weights"] == {"code": .25, "math": .25, "prose": .5} and ng["seed"] == 5
    assert ng["when_exhausted"] == "repeat" and "PCG64" in ng["order"]
    want = [(sp.domain, sp.name, f.path, f.sha256) for name in ("train", "eval")
            for sp in ds.splits() if sp.name == name
            for f in [*sp.record.shards, sp.record.doc_index]]
    assert sorted((s["domain"], s["split"], s["path"], s["sha256"]) for s in ng["sources"]) \
        == sorted(want)
    for s in ng["sources"]:
        assert hashlib.sha256((root / s["path"]).read_bytes()).hexdigest() == s["sha256"]
    files = {f["path"]: f for s in m["splits"] for f in s["files"]}
    assert sorted(files) == ["train.bin", "val.bin"]
    for name, f in files.items():
        data = (tmp_path / "ng" / name).read_bytes()
        assert (f["bytes"], f["sha256"], f["tokens"]) == (
            len(data), hashlib.sha256(data).hexdigest(), len(data) // 2)
    assert sorted(p.name for p in (tmp_path / "ng").iterdir()) == [
        "export.json", "train.bin", "val.bin"]


def test_stop_ends_at_the_first_domain_that_runs_out(root: Path, tmp_path: Path,
                                                     source: dict) -> None:
    m = export(root, tmp_path / "ng", "--when-exhausted", "stop")
    docs = file_documents(tmp_path / "ng" / "train.bin")
    assert len({tuple(d.tolist()) for d in docs}) == len(docs)  # no document twice
    mix = m["nanogpt"]["domains"]["train.bin"]
    assert mix["math"]["docs"] == 150 and mix["math"]["passes"] == 1.0  # the first to run out
    assert mix["prose"]["docs"] < 900 and mix["code"]["docs"] < 300
    assert docs[-1].tolist() in [list(k) for k, v in source.items() if v == ("math", "train")]


def test_the_same_seed_gives_the_same_bytes_another_seed_another_order(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    export(root, tmp_path / "a")
    monkeypatch.setattr(export_nanogpt, "READ_BYTES", 6)  # chunks and writes cut everywhere
    monkeypatch.setattr(export_nanogpt, "WRITE_BYTES", 10)
    export(root, tmp_path / "b")
    export(root, tmp_path / "c", "--seed", "1")
    for name in ("train.bin", "val.bin"):
        a, b, c = ((tmp_path / x / name).read_bytes() for x in "abc")
        assert a == b and a != c
        every = {tuple(d.tolist()) for d in file_documents(tmp_path / "a" / name)}
        assert every == {tuple(d.tolist()) for d in file_documents(tmp_path / "c" / name)}


@pytest.mark.parametrize("args, message", [
    (["--domain-weights", "code=1,math=1"], "--domain-weights lacks prose: give every exported "
                                            "domain a weight (0 leaves it out)"),
    (["--domain-weights", "code=1,math=nan,prose=1"], "the weight of 'math' must be a finite "
                                                      "number >= 0, got 'nan'"),
    (["--domain-weights", "code=0,math=0,prose=0"], "every weight is 0"),
    (["--domain-weights", "poetry=1"], "'poetry' is not an exported domain"),
    (["--domain", "code", "--domain-weights", "code=1,math=1"], "'math' is not an exported"),
])
def test_bad_weights_are_one_line_errors(root: Path, tmp_path: Path, args: list[str],
                                         message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(root), "--format", "nanogpt", "--out", str(tmp_path / "o"),
                 *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --domain-weights") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_weights_belong_to_nanogpt_and_empty_splits_are_named(tmp_path: Path,
                                                             root: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(root), "--format", "llmc", "--out", str(tmp_path / "o"),
                 "--domain-weights", "code=1,math=1,prose=1"]) == 2
    assert "only --format nanogpt mixes domains" in capsys.readouterr().err
    no_eval = make_dataset(tmp_path, {"code": {"train": ["def f(): pass"]},
                                      "math": {"train": ["1 + 1 = 2"], "eval": ["2 + 2 = 4"]}})
    assert main(["export", str(no_eval), "--format", "nanogpt", "--out",
                 str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (
        "error: code/eval: no documents, so val.bin cannot hold a share of them: give code "
        "weight 0 in --domain-weights, or leave them out with --domain\n")
    assert main(["export", str(no_eval), "--format", "nanogpt", "--out", str(tmp_path / "o"),
                 "--split", "train"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["export.json", "train.bin"]
