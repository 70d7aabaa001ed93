"""The json reader: JSON Lines (plain and compressed), globs, bad lines and fields as bad
records naming file and line, truncated streams."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import zstandard
from readers_fixture import RECORDS, docs_of, jsonl, local_cfg, planned, read_all, worker

from prep.readers import BadRecord, SourceError
from prep.readers import files as rfiles

# --------------------------------------------------------------------------- local files

COMPRESS = {".gz": gzip.compress, ".zst": zstandard.ZstdCompressor().compress,
            ".bz2": __import__("bz2").compress, ".xz": __import__("lzma").compress}


def test_json_plain_and_compressed_give_the_same_documents(tmp_path: Path) -> None:
    raw = jsonl(RECORDS)
    names = ["a.jsonl"]
    (tmp_path / "a.jsonl").write_bytes(raw)
    for suffix, compress in COMPRESS.items():
        names.append(f"b.jsonl{suffix}")
        (tmp_path / names[-1]).write_bytes(compress(raw))
    expected = [(r["content"], {"repo_name": r["repo_name"], "path": r["path"]}) for r in RECORDS]
    for name in names:
        f = str(tmp_path / name)
        out = docs_of(local_cfg("json", [f]))
        assert [(d.text, {k: v for k, v in d.source.items() if k not in ("file", "row")})
                for d in out] == expected
        assert [d.source["file"] for d in out] == [f] * 3
        assert [d.source["row"] for d in out] == [0, 1, 2]


def test_globs_are_sorted_and_described(tmp_path: Path) -> None:
    for name, recs in (("b.jsonl", RECORDS[1:]), ("a.jsonl", RECORDS[:1])):
        (tmp_path / name).write_bytes(jsonl(recs))
    src = planned(local_cfg("json", [str(tmp_path / "*.jsonl")]))
    assert [d.text for d in read_all(src)] == [r["content"] for r in RECORDS]
    d = src.describe()
    assert d["reader"] == "json"
    a, b = str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")
    assert d["files"] == [{"path": a, "bytes": (tmp_path / "a.jsonl").stat().st_size},
                          {"path": b, "bytes": (tmp_path / "b.jsonl").stat().st_size}]
    assert d["files_count"] == 2 and "sha256" not in json.dumps(d["files"])
    [p] = src.partitions()  # two small files, one partition
    assert p.key == "a.jsonl..b.jsonl"
    w = worker(src)
    list(w.read(p))
    assert w.partition_record(p) == {"files": [rfiles.file_record(a), rfiles.file_record(b)]}
    assert src.describe() == d


def test_pattern_matching_nothing(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nothing*.jsonl")
    with pytest.raises(SourceError, match=r"\[domains\.code\] data_files pattern .*nothing\*\.jsonl"
                                          r".* matches no file"):
        planned(local_cfg("json", [pattern]))


def test_malformed_json_line_is_a_bad_record_naming_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_bytes(jsonl(RECORDS[:2]) + b'{"content": "x", oops}\n' + jsonl(RECORDS[2:]))
    out = docs_of(local_cfg("json", [str(f)]))
    assert [type(x).__name__ for x in out] == ["Document", "Document", "BadRecord", "Document"]
    assert out[2].reason == (f"{f}: line 3: malformed JSON (Expecting property name enclosed "
                             "in double quotes at column 18); fix or remove that line")
    assert out[3].source["row"] == 3
    first = tmp_path / "first.jsonl"
    first.write_bytes(b"this is not json\n" + jsonl(RECORDS))
    with pytest.raises(SourceError, match=r"first\.jsonl: line 1: malformed JSON .*"
                                          r"the file's first record: is it JSON Lines"):
        docs_of(local_cfg("json", [str(first)]))


def test_missing_text_field_in_first_record_is_fatal(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(jsonl([{"id": 1, "body": "x"}, {"id": 2, "body": "y"}]))
    with pytest.raises(SourceError, match=r"a\.jsonl row 0: no text field 'content' \(fields "
                                          r"present: id, body\); set text_field"):
        docs_of(local_cfg("json", [str(f)]))


def test_missing_or_non_string_field_later_is_a_bad_record(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(jsonl([RECORDS[0], {"id": 2, "body": "y"}, {"content": 5, "id": 3}, RECORDS[1]]))
    out = docs_of(local_cfg("json", [str(f)]))
    assert [type(x).__name__ for x in out] == ["Document", "BadRecord", "BadRecord", "Document"]
    assert f"{f} row 1: no text field 'content' (fields present: id, body)" in out[1].reason
    assert "text field 'content' holds a int, not a string" in out[2].reason


def test_non_utf8_bytes_name_the_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "latin.jsonl"
    f.write_bytes(jsonl(RECORDS[:1]) + b'{"content": "caf\xe9"}\n')
    out = docs_of(local_cfg("json", [str(f)]))
    assert isinstance(out[1], BadRecord)
    assert out[1].reason == (f"{f}: line 2: bytes are not UTF-8 (invalid continuation byte: "
                             "byte 0xe9 at column 17); re-encode the file as UTF-8")


@pytest.mark.parametrize("cut", ["half", "tail", "frame"])
def test_truncated_zst_names_the_file(tmp_path: Path, cut: str) -> None:
    raw = jsonl([{"content": f"document {i} " * 20} for i in range(3000)])
    z = zstandard.ZstdCompressor().compress(raw)
    f = tmp_path / "cut.jsonl.zst"
    # "frame": a second frame cut after its header; a streaming reader alone reads the first
    # frame's rows and stops without an error, so only the end-of-file check sees it.
    f.write_bytes({"half": z[: len(z) // 2], "tail": z[:-6], "frame": z + z[:8]}[cut])
    with pytest.raises(SourceError, match=r"cut\.jsonl\.zst: zstandard data is truncated"):
        docs_of(local_cfg("json", [str(f)]))


def test_json_nested_too_deep_is_a_bad_record_naming_file_and_line(tmp_path: Path) -> None:
    deep = b'{"content": "x", "meta": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    f = tmp_path / "deep.jsonl"
    f.write_bytes(jsonl(RECORDS[:2]) + deep + jsonl(RECORDS[2:]))
    out = docs_of(local_cfg("json", [str(f)]))
    assert [type(x).__name__ for x in out] == ["Document", "Document", "BadRecord", "Document"]
    assert out[2].reason == (f"{f}: line 3: JSON nested deeper than Python's parser allows "
                             f"({len(deep) - 1} bytes); flatten or remove that line")
    at = len(jsonl(RECORDS[:2]))  # in a later byte range, the line is named by its offset
    later = planned(local_cfg("json", [str(f)]), partition_bytes=at)
    assert len(later.partitions()) > 2
    bad = [x for x in read_all(later) if isinstance(x, BadRecord)]
    assert [x.reason.split(": JSON")[0] for x in bad] == [f"{f}: line at byte {at}"]
    arr = tmp_path / "deep.json"
    arr.write_bytes(b'[{"content": "x"}, ' + deep.rstrip() + b"]")
    with pytest.raises(SourceError, match=r"deep\.json: an element of the JSON array is nested "
                                          r"deeper than Python's JSON parser allows; flatten"):
        docs_of(local_cfg("json", [str(arr)]))


def test_a_run_counts_a_deeply_nested_record_instead_of_failing(tmp_path: Path) -> None:
    from prep_fixture import manifest, random_doc, run_prep, write_recipe

    rng = __import__("random").Random(0)
    docs = [{"content": random_doc(rng)} for _ in range(400)]
    f = tmp_path / "code.jsonl"
    f.write_bytes(jsonl(docs[:7]) + b'{"content": ' + b"[" * 50_000 + b"]" * 50_000 + b"}\n"
                  + jsonl(docs[7:]))
    recipe = write_recipe(tmp_path / "r.toml", {"code": {
        "source": "json", "data_files": [str(f)], "text_field": "content", "min_chars": 1}})
    out = tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(out), "--workers", "1",
                    "--max-bad-fraction", "0.01", "--min-eval-docs", "1") == 0
    c = manifest(out)["domains"]["code"]["counts"]
    assert c["docs_bad"] == 1 and c["docs_seen"] == 401
