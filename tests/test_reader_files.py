"""Local input files: byte-range lines, decompression, packing into partitions, checksums,
identity checks, empty files; the json/text/parquet readers partition by partition."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from readers_fixture import docs_of, jsonl, planned, read_all, worker

from prep.readers import BadRecord, Document, SourceError
from prep.readers import files as rfiles
from prep.recipe import DomainConfig

COMPRESS = {".gz": gzip.compress, ".zst": zstandard.ZstdCompressor().compress,
            ".bz2": bz2.compress, ".xz": lzma.compress}


def cfg(source: str, files: list[str | Path], text_field: str = "text") -> DomainConfig:
    return DomainConfig(name="d", source=source, data_files=[str(f) for f in files],
                        text_field=text_field)


def lines_by_definition(data: bytes) -> list[tuple[int, bytes]]:
    out, at = [], 0
    for line in data.split(b"\n"):
        out.append((at, line))
        at += len(line) + 1
    if data.endswith(b"\n"):
        out.pop()
    return out


# --------------------------------------------------------------------------- files helpers


@pytest.mark.parametrize("data", [b"a\nbb\n\nccc\n", b"a\nbb\n\nccc", b"\n\n", b"x", b"ab\r\ncd\r\n",
                                  b"one long line without newline at all"])
def test_every_line_belongs_to_exactly_one_byte_range(tmp_path: Path, data: bytes) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(data)
    expected = lines_by_definition(data)
    assert list(rfiles.iter_lines(str(f))) == expected
    for limit in range(1, len(data) + 1):
        got = []
        for start, end in rfiles.byte_ranges(len(data), limit):
            h = hashlib.sha256()
            part = []
            for at, lines in rfiles.open_lines(str(f), start, end, h):
                for line in lines:
                    part.append((at, line))
                    at += len(line) + 1
            assert all(start <= at < end for at, _ in part)  # owned: first byte inside
            assert h.hexdigest() == hashlib.sha256(data[start:end]).hexdigest()
            got += part
        assert got == expected, limit


def test_byte_range_boundaries(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"aaa\nbbb\nccc\n")  # lines start at 0, 4, 8
    def owned(start: int, end: int) -> list[tuple[int, bytes]]:
        return list(rfiles.iter_lines(str(f), start, end))
    assert owned(0, 4) == [(0, b"aaa")]  # byte 3 is aaa's "\n": bbb starts at 4, outside
    assert owned(4, 8) == [(4, b"bbb")]  # starts right after a "\n": bbb is owned
    assert owned(3, 5) == [(4, b"bbb")]  # starts on a "\n": the next line is owned
    assert owned(1, 4) == []  # inside aaa: no line begins in [1, 4)
    assert owned(5, 12) == [(8, b"ccc")]  # skips the rest of bbb
    assert owned(0, 1) == [(0, b"aaa")]  # reads past `end` to finish its last line


def test_iter_decompressed_reads_concatenated_streams(tmp_path: Path) -> None:
    parts = [b"first part\n" * 50, b"second part\n" * 70]
    for suffix, compress in COMPRESS.items():
        f = tmp_path / f"two{suffix}"
        f.write_bytes(compress(parts[0]) + compress(parts[1]))
        h = hashlib.sha256()
        assert b"".join(rfiles.iter_decompressed(str(f), h)) == parts[0] + parts[1]
        assert h.hexdigest() == hashlib.sha256(f.read_bytes()).hexdigest()
        assert rfiles.compression(str(f)) is not None
    assert rfiles.compression("a.jsonl") is None and rfiles.compression("A.JSONL.ZSTD") == "zstandard"


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_truncated_or_corrupt_compressed_files(tmp_path: Path, suffix: str) -> None:
    data = COMPRESS[suffix](jsonl([{"text": f"row {i} " * 30} for i in range(500)]))
    name = {".gz": "gzip", ".zst": "zstandard", ".bz2": "bzip2", ".xz": "xz"}[suffix]
    f = tmp_path / f"cut.jsonl{suffix}"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=rf"cut\.jsonl\{suffix}: {name} data is truncated "
                                          r"\(the last (frame|stream) never ends\); the file was "
                                          r"cut short, re-download or re-compress it$"):
        docs_of(cfg("json", [f]))
    f.write_bytes(data[:20] + bytes(b ^ 0xFF for b in data[20:60]) + data[60:])
    with pytest.raises(SourceError, match=rf"cut\.jsonl\{suffix}: {name} data is (corrupt|truncated)"):
        docs_of(cfg("json", [f]))


def test_empty_files_are_one_line_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match=r"^\[domains\.d\] .*empty\.jsonl: the file is empty "
                                          r"\(0 bytes\); remove it from data_files"):
        planned(cfg("json", [empty]))
    for suffix, compress in COMPRESS.items():
        f = tmp_path / f"nothing.jsonl{suffix}"
        f.write_bytes(compress(b""))
        for source in ("json", "text"):
            with pytest.raises(SourceError, match=rf"nothing\.jsonl\{suffix}: the file "
                                                  r"decompresses to nothing; remove it"):
                docs_of(cfg(source, [f]))
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n  \n")
    with pytest.raises(SourceError, match=r"blank\.jsonl: the file holds only blank lines"):
        docs_of(cfg("json", [blank]))


# --------------------------------------------------------------------------- partitions


def test_packing_splitting_and_keys(tmp_path: Path) -> None:
    sub = tmp_path / "data"
    sub.mkdir()
    small = [sub / f"s{i}.jsonl" for i in range(5)]
    for f in small:
        f.write_bytes(jsonl([{"text": "x" * 20}]))
    size = small[0].stat().st_size
    big = sub / "t-big.jsonl"
    big.write_bytes(jsonl([{"text": f"line {i}"} for i in range(40)]))
    comp = sub / "u.jsonl.zst"
    noise = [os.urandom(60).hex() for _ in range(5)]  # incompressible: larger than the limit
    comp.write_bytes(zstandard.ZstdCompressor().compress(jsonl([{"text": t} for t in noise])))
    limit = 2 * size + 1
    assert comp.stat().st_size > limit
    src = planned(cfg("json", [sub / "*"]), partition_bytes=limit)
    parts = src.partitions()
    n_ranges = -(-big.stat().st_size // limit)
    assert [p.key for p in parts] == (
        ["s0.jsonl..s1.jsonl", "s2.jsonl..s3.jsonl", "s4.jsonl"]
        + [f"t-big.jsonl@{s}+{e - s}" for s, e in rfiles.byte_ranges(big.stat().st_size, limit)]
        + ["u.jsonl.zst"])
    assert len(parts) == 4 + n_ranges and [p.index for p in parts] == list(range(len(parts)))
    assert parts[3].spec["start"] == 0 and parts[3].spec["end"] == limit
    assert parts[-1].spec == {"files": [{"path": str(comp), "size": comp.stat().st_size,
                                         "mtime_ns": comp.stat().st_mtime_ns}],
                              "cut": limit}  # a stream partition: cut into pieces as read
    assert parts[-1].stream and not parts[3].stream
    again = planned(cfg("json", [sub / "*"]), partition_bytes=limit).partitions()
    assert [p.to_dict() for p in again] == [p.to_dict() for p in parts]  # stable plan
    out = read_all(src)
    assert [d.text for d in out] == ["x" * 20] * 5 + [f"line {i}" for i in range(40)] + noise


def test_compressed_files_pack_by_their_estimated_text(tmp_path: Path) -> None:
    """A .zst file counts as COMPRESSION_RATIO times its size on disk: files that two at a time
    would fit the limit on disk get a partition each (their text would not fit)."""
    files = []
    for i in range(3):
        f = tmp_path / f"c{i}.jsonl.zst"
        f.write_bytes(zstandard.ZstdCompressor().compress(jsonl([{"text": os.urandom(40).hex()}])))
        files.append(f)
    on_disk = max(f.stat().st_size for f in files)
    limit = 2 * on_disk + 1  # two fit on disk, one's estimated text (4x) does not
    parts = planned(cfg("json", [tmp_path / "*.zst"]), partition_bytes=limit).partitions()
    assert [p.key for p in parts] == ["c0.jsonl.zst", "c1.jsonl.zst", "c2.jsonl.zst"]
    packed = planned(cfg("json", [tmp_path / "*.zst"]),
                     partition_bytes=rfiles.COMPRESSION_RATIO * 2 * on_disk).partitions()
    assert [p.key for p in packed] == ["c0.jsonl.zst..c1.jsonl.zst", "c2.jsonl.zst"]


def test_keys_are_unique_paths_below_the_common_folder(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for d in ("x", "y/z"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "f.jsonl").write_bytes(jsonl([{"text": d}]))
    monkeypatch.chdir(tmp_path)  # a relative path and an absolute one
    src = planned(cfg("json", ["x/f.jsonl", tmp_path / "y/z/f.jsonl"]), partition_bytes=10)
    assert [p.key for p in src.partitions()] == [
        "x/f.jsonl@0+10", "x/f.jsonl@10+4", "y/z/f.jsonl@0+10", "y/z/f.jsonl@10+6"]
    assert [d.text for d in read_all(src)] == ["x", "y/z"]


def test_byte_range_provenance_and_records(tmp_path: Path) -> None:
    f = tmp_path / "big.jsonl"
    recs = [{"text": f"document number {i}", "id": i} for i in range(30)]
    data = jsonl(recs)
    f.write_bytes(data)
    src = planned(cfg("json", [f]), partition_bytes=100)
    parts = src.partitions()
    assert len(parts) > 5
    per_part = [list(worker(src).read(p)) for p in parts]
    flat = [d for part in per_part for d in part]
    assert [d.text for d in flat] == [r["text"] for r in recs]
    starts = [at for at, _ in lines_by_definition(data)]
    for d, i in zip(flat, range(30), strict=True):
        if d.source.get("row") is not None:
            assert d.source == {"file": str(f), "row": i, "id": i}
        else:
            assert d.source == {"file": str(f), "byte": starts[i], "id": i}
    assert {"row"} <= set(per_part[0][0].source) and "byte" in per_part[1][0].source
    for p in parts:
        w = worker(src)
        list(w.read(p))
        s, e = p.spec["start"], p.spec["end"]
        expected = {"files": [{"path": str(f), "start": s, "end": e,
                               "sha256": hashlib.sha256(data[s:e]).hexdigest()}]}
        assert w.partition_record(p) == expected  # hashed while reading
        assert worker(src).partition_record(p) == expected  # hashed on demand


def test_bad_lines_in_a_later_range_are_bad_records(tmp_path: Path) -> None:
    f = tmp_path / "big.jsonl"
    good = jsonl([{"text": f"record {i:03d}"} for i in range(20)])
    bad_at = len(good)
    f.write_bytes(good + b"{oops\n" + b'{"text": 5}\n' + b"caf\xe9\n" + jsonl([{"text": "end"}]))
    out = docs_of(cfg("json", [f]), partition_bytes=64)
    bad = [d.reason for d in out if isinstance(d, BadRecord)]
    assert bad == [
        f"{f}: line at byte {bad_at}: malformed JSON (Expecting property name enclosed in double "
        "quotes at column 2); fix or remove that line",
        f"{f} byte {bad_at + 6}: text field 'text' holds a int, not a string; set text_field in "
        "the recipe to a string field",
        f"{f}: line at byte {bad_at + 18}: bytes are not UTF-8 (unexpected end of data: byte "
        "0xe9 at column 4); re-encode the file as UTF-8"]
    assert out[-1].text == "end"


def test_json_array_files_are_never_split(tmp_path: Path) -> None:
    f = tmp_path / "array.json"
    recs = [{"text": f"element {i}", "url": f"u{i}"} for i in range(40)]
    f.write_text(" \n" + json.dumps(recs, indent=1))
    src = planned(cfg("json", [f]), partition_bytes=64)
    [p] = src.partitions()
    assert p.key == "array.json" and "start" not in p.spec
    out = read_all(src)
    assert [(d.text, d.source) for d in out] == [
        (r["text"], {"file": str(f), "row": i, "url": r["url"]}) for i, r in enumerate(recs)]
    f.write_text(json.dumps(recs)[:-30])
    with pytest.raises(SourceError, match=r"array\.json: element 39 is malformed JSON"):
        docs_of(cfg("json", [f]))


def test_utf8_bom_and_blank_lines(tmp_path: Path) -> None:
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + jsonl([{"text": "a"}]) + b"\n  \r\n" + jsonl([{"text": "b"}]))
    assert [(d.text, d.source) for d in docs_of(cfg("json", [f]))] == [
        ("a", {"file": str(f), "row": 0}), ("b", {"file": str(f), "row": 3})]  # row = line
    a = tmp_path / "bom.json"
    a.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"text": "c"}]).encode())
    assert [d.text for d in docs_of(cfg("json", [a]))] == ["c"]


def test_a_file_changed_after_planning_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(jsonl([{"text": "one"}]))
    src = planned(cfg("json", [f]))
    [p] = src.partitions()
    f.write_bytes(jsonl([{"text": "one"}, {"text": "two"}]))
    os.utime(f, ns=(p.spec["files"][0]["mtime_ns"] + 10**9,) * 2)
    with pytest.raises(SourceError, match=r"a\.jsonl: changed since the run was planned \(was 16 "
                                          r"bytes.*now 32 bytes.*\); plan the run again"):
        list(worker(src).read(p))


def test_describe_and_plan_never_read_file_contents(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "a.jsonl.gz"
    f.write_bytes(gzip.compress(jsonl([{"text": "x" * 100}] * 100)))
    monkeypatch.setattr(rfiles, "hash_range", lambda *a, **k: pytest.fail("hashed"))
    monkeypatch.setattr(rfiles, "iter_decompressed", lambda *a, **k: pytest.fail("read"))
    src = planned(cfg("json", [f]), partition_bytes=64)
    assert src.describe()["files"] == [{"path": str(f), "bytes": f.stat().st_size}]
    assert [p.key for p in src.partitions()] == ["a.jsonl.gz"]


# --------------------------------------------------------------------------- text and parquet


def test_text_rows_provenance_and_crlf(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_bytes(b"first\r\nsecond\n\nfourth \x0c with a form feed\nlast")
    out = docs_of(cfg("text", [f]))
    assert [(d.text, d.source) for d in out] == [
        ("first", {"file": str(f), "row": 0}), ("second", {"file": str(f), "row": 1}),
        ("", {"file": str(f), "row": 2}), ("fourth \x0c with a form feed", {"file": str(f), "row": 3}),
        ("last", {"file": str(f), "row": 4})]
    ranged = docs_of(cfg("text", [f]), partition_bytes=9)
    assert [d.text for d in ranged] == [d.text for d in out]
    assert [d.source for d in ranged[:3]] == [  # [0, 9) holds the file's start: rows
        {"file": str(f), "row": 0}, {"file": str(f), "row": 1}, {"file": str(f), "byte": 14}]
    with pytest.raises(SourceError, match=r"source 'text' gives each line as the field 'text', "
                                          r"not 'content'; remove text_field"):
        planned(cfg("text", [f], text_field="content"))


def test_parquet_row_group_partitions(tmp_path: Path) -> None:
    f = tmp_path / "p.parquet"
    texts = [f"text {i} " * 20 if i % 9 else None for i in range(1, 121)]
    pq.write_table(pa.table({"text": texts, "url": [f"u{i}" for i in range(120)]}), f,
                   row_group_size=10)
    src = planned(cfg("parquet", [f]), partition_bytes=1000)
    parts = src.partitions()
    assert len(parts) > 3 and parts[0].key.startswith("p.parquet#rg0")
    assert parts[0].spec["start"] == 0 and parts[-1].spec["end"] == f.stat().st_size
    assert all(a.spec["end"] == b.spec["start"] for a, b in zip(parts, parts[1:], strict=False))
    out = read_all(src)
    assert len(out) == 120
    for i, d in enumerate(out):
        if texts[i] is None:
            assert d == BadRecord(f"{f} row {i}: no text field 'text' (fields present: url); "
                                  "set text_field in the recipe")
        else:
            assert d == Document(texts[i], {"file": str(f), "row": i, "url": f"u{i}"})
    data = f.read_bytes()
    records = []
    for p in parts:
        w = worker(src)
        list(w.read(p))
        records += w.partition_record(p)["files"]
    assert [r["sha256"] for r in records] == [
        hashlib.sha256(data[r["start"]:r["end"]]).hexdigest() for r in records]


def test_parquet_plan_time_checks(tmp_path: Path) -> None:
    f = tmp_path / "p.parquet"
    pq.write_table(pa.table({"content": ["a"], "n": [1]}), f)
    with pytest.raises(SourceError, match=r"p\.parquet: no column 'text' \(columns: content, n\); "
                                          r"set text_field in the recipe"):
        planned(cfg("parquet", [f]))
    with pytest.raises(SourceError, match=r"p\.parquet: column 'n' holds int64, not strings"):
        planned(cfg("parquet", [f], text_field="n"))
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), f)
    with pytest.raises(SourceError, match=r"p\.parquet: the file has no rows; remove it"):
        planned(cfg("parquet", [f]))
    pq.write_table(pa.table({"text": [None, "b"]}), f)
    with pytest.raises(SourceError, match=r"p\.parquet row 0: no text field 'text' .*the first "
                                          r"record"):
        docs_of(cfg("parquet", [f]))
