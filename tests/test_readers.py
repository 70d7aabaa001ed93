"""prep's readers through the partitioned API: exact documents, provenance, error messages.

The tests of the old `prep.sources` readers, ported (same documents, messages and checks),
plus partitioning: every source read partition by partition, each by a worker's own reader.
File-level tests (byte ranges, decompression, packing, checksums) are in test_reader_files.py,
the offline Hub cache in test_hf_cache.py.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import re
import socket
import threading
import zipfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from readers_fixture import docs_of, jsonl, planned, read_all, worker

import prep.readers.hf as hf
from prep.readers import BadRecord, Document, SourceError
from prep.readers import files as rfiles
from prep.readers.jsonl import iter_json_array
from prep.readers.math_templates import TEMPLATES
from prep.readers.mathqa import strip_enclosing_quotes
from prep.readers.pydoc import chunk_paragraphs
from prep.readers.wikitext import article_title, group_articles
from prep.recipe import DomainConfig

# --------------------------------------------------------------------------- MathQA

MATHQA_RECORDS = [
    {"Problem": " a train 150 m long is running at 54 km / hr . in what time will it pass a pole ? ",
     "Rationale": "\"speed = 54 * 5 / 18 = 15 m / sec . time = 150 / 15 = 10 sec answer : b\"",
     "options": "a ) 5 sec , b ) 10 sec , c ) 15 sec , d ) 20 sec , e ) 25 sec", "correct": "b",
     "annotated_formula": "divide(150, multiply(54, const_0_2778))",
     "linear_formula": "multiply(n1,const_0_2778)|divide(n0,#0)|", "category": "physics"},
    {"Problem": "what is 20 % of 50 ?", "Rationale": " \"\"quoted twice\"\" ",
     "options": "a ) 10 , b ) 5", "correct": "a", "annotated_formula": "",
     "linear_formula": "", "category": "gain"},
    {"Problem": "find x .", "Rationale": "explanation : x = 3 . answer : c",
     "options": "", "correct": "c", "annotated_formula": "", "linear_formula": "",
     "category": "general"},
    {"Problem": "no rationale here", "options": "", "correct": "a", "category": "other"},
    {"Problem": "lonely quote", "Rationale": "\"only a leading quote", "options": "",
     "correct": "a", "annotated_formula": "", "linear_formula": "", "category": "other"},
]
MATHQA_EXPECTED = [
    "a train 150 m long is running at 54 km / hr . in what time will it pass a pole ?\n\n"
    "speed = 54 * 5 / 18 = 15 m / sec . time = 150 / 15 = 10 sec answer : b",
    "what is 20 % of 50 ?\n\n\"quoted twice\"",
    "find x .\n\nexplanation : x = 3 . answer : c",
    None,
    "lonely quote\n\n\"only a leading quote",
]


def make_mathqa_zip(path: Path, records: list[dict[str, Any]] = MATHQA_RECORDS,
                    members: tuple[str, ...] = ("train.json", "dev.json", "test.json",
                                                "challenge_test.json")) -> Path:
    """A ZIP in MathQA's layout: JSON arrays of objects at the top level."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for m in members:
            zf.writestr(m, json.dumps(records if m == "train.json" else records[:1]))
    return path


def mathqa_cfg(path: Path | str) -> DomainConfig:
    return DomainConfig(name="math", source="mathqa", path=str(path))


def test_mathqa_documents_exact(tmp_path: Path) -> None:
    out = docs_of(mathqa_cfg(make_mathqa_zip(tmp_path / "MathQA.zip")))
    assert len(out) == 5
    for item, expected, i in zip(out, MATHQA_EXPECTED, range(5), strict=True):
        if expected is None:
            assert isinstance(item, BadRecord)
            assert "train.json record 3" in item.reason and "Rationale" in item.reason
            assert "fields present: Problem, options, correct, category" in item.reason
        else:
            assert isinstance(item, Document)
            assert item.text == expected
            assert item.source == {"file": "train.json", "index": i}


def test_mathqa_rules_describe_and_record(tmp_path: Path) -> None:
    z = make_mathqa_zip(tmp_path / "MathQA.zip")
    src = planned(mathqa_cfg(z))
    rules = " ".join(src.format_rules())
    assert "blank line" in rules and "ONE enclosing pair" in rules and "no prefixes" in rules
    d = src.describe()
    assert d["reader"] == "mathqa" and d["synthetic"] is False
    assert d["files"] == [{"path": str(z), "bytes": z.stat().st_size}]
    assert d["member"] == "train.json"
    [p] = src.partitions()
    assert p.key == "train.json" and p.spec["zip"]["path"] == str(z)
    assert worker(src).partition_record(p) == {"files": [rfiles.file_record(str(z))],
                                               "member": "train.json"}


def test_strip_enclosing_quotes_only_one_pair() -> None:
    assert strip_enclosing_quotes(' "abc" ') == "abc"
    assert strip_enclosing_quotes('""abc""') == '"abc"'
    assert strip_enclosing_quotes('"abc') == '"abc'
    assert strip_enclosing_quotes('abc "d"') == 'abc "d"'
    assert strip_enclosing_quotes('"') == '"'


def test_mathqa_incremental_parser_across_tiny_chunks(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setattr(rfiles, "CHUNK", 7)  # every element straddles many refills
    out = docs_of(mathqa_cfg(make_mathqa_zip(tmp_path / "MathQA.zip")))
    texts = [d.text if isinstance(d, Document) else None for d in out]
    assert texts == MATHQA_EXPECTED
    text = '[ 1 , 22, {"a": [1, 2]}, "x" ]'
    for size in (1, 2, 3, len(text)):
        chunks = [text[i:i + size] for i in range(0, len(text), size)]
        assert list(iter_json_array(chunks, "s")) == [1, 22, {"a": [1, 2]}, "x"]
    with pytest.raises(ValueError, match="truncated"):
        list(iter_json_array(io.StringIO('[{"a": 1}, {"b": '), "t.json"))


def test_mathqa_corrupt_zip(tmp_path: Path) -> None:
    bad = tmp_path / "MathQA.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip file")
    with pytest.raises(SourceError, match=r"\[domains\.math\].*MathQA\.zip: not a readable ZIP"):
        planned(mathqa_cfg(bad))


def test_mathqa_zip_without_train_json_lists_members(tmp_path: Path) -> None:
    z = make_mathqa_zip(tmp_path / "other.zip", members=("dev.json", "test.json"))
    with pytest.raises(SourceError, match=r"other\.zip: ZIP has no train\.json \(members: "
                                          r"dev\.json, test\.json\)"):
        planned(mathqa_cfg(z))


def test_mathqa_truncated_member_is_an_error(tmp_path: Path) -> None:
    z = tmp_path / "MathQA.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("train.json", json.dumps(MATHQA_RECORDS)[:300])
    with pytest.raises(SourceError, match=r"MathQA\.zip:train\.json.*truncated"):
        docs_of(mathqa_cfg(z))


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_mathqa_unreachable_url_fails_fast(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/MathQA.zip"
    with pytest.raises(SourceError, match=r"cannot download http://127\.0\.0\.1:\d+/MathQA\.zip"
                                          r".*`--recipe sample`"):
        planned(mathqa_cfg(url), cache_dir=str(tmp_path / "cache"))
    assert not any((tmp_path / "cache").iterdir())  # no partial download left behind


def test_mathqa_download_into_cache_dir(tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    make_mathqa_zip(served / "MathQA.zip")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *a: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/MathQA.zip"
        src = planned(mathqa_cfg(url), cache_dir=str(tmp_path / "cache"))
    finally:
        server.shutdown()
        server.server_close()
    cached = tmp_path / "cache" / "MathQA.zip"
    [p] = src.partitions()
    assert p.spec["zip"]["path"] == str(cached)  # workers read the downloaded copy
    texts = [d.text for d in read_all(src) if isinstance(d, Document)]  # server is down now
    assert texts == [t for t in MATHQA_EXPECTED if t is not None]
    assert cached.read_bytes() == (served / "MathQA.zip").read_bytes()
    d = src.describe()
    assert d["url"] == url and d["files"][0]["path"] == "MathQA.zip"
    rec = worker(src).partition_record(p)
    assert rec["files"] == [{**rfiles.file_record(str(served / "MathQA.zip")),
                             "path": "MathQA.zip"}]


# --------------------------------------------------------------------------- local files

RECORDS = [
    {"content": "def f():\n    return 1\n", "repo_name": "a/b", "path": "f.py", "size": 3},
    {"content": "x = 'é'\n", "repo_name": "a/c", "path": "x.py", "size": 4},
    {"content": "print('hi')\n", "repo_name": "a/b", "path": "p.py", "size": 5},
]
COMPRESS = {".gz": gzip.compress, ".zst": zstandard.ZstdCompressor().compress,
            ".bz2": __import__("bz2").compress, ".xz": __import__("lzma").compress}


def local_cfg(source: str, files: list[str], text_field: str = "content",
              group: str | None = None) -> DomainConfig:
    return DomainConfig(name="code", source=source, data_files=files, text_field=text_field,
                        group=group)


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


def test_parquet(tmp_path: Path) -> None:
    f = tmp_path / "part-0.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), f)
    out = docs_of(local_cfg("parquet", [str(f)]))
    assert [d.text for d in out] == [r["content"] for r in RECORDS]
    assert out[1].source == {"file": str(f), "row": 1, "repo_name": "a/c", "path": "x.py"}


def test_corrupt_parquet_names_the_file_at_plan_time(tmp_path: Path) -> None:
    f = tmp_path / "broken.parquet"
    f.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(SourceError, match=r"broken\.parquet: not a readable Parquet file "
                                          r".*; re-download or re-export it"):
        planned(local_cfg("parquet", [str(f)]))


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
    t = tmp_path / "latin.txt"
    t.write_bytes(b"fine\ncaf\xe9\n")
    out = docs_of(local_cfg("text", [str(t)], text_field="text"))
    assert out[0].text == "fine" and isinstance(out[1], BadRecord)
    assert out[1].reason.startswith(f"{t}: line 2: bytes are not UTF-8")
    t.write_bytes(b"caf\xe9\nfine\n")
    with pytest.raises(SourceError, match=r"latin\.txt: line 1: bytes are not UTF-8.*first record"):
        docs_of(local_cfg("text", [str(t)], text_field="text"))


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


# --------------------------------------------------------------------------- WikiText

WIKI_LINES = [
    " preamble line before any heading ",
    "",
    " = Alpha = ",
    "",
    " Alpha is the first letter . ",
    "",
    " = = History = = ",
    "",
    " It was used by the Greeks . ",
    "",
    " = = = Later use = = = ",
    " Still used . ",
    "",
    " = Beta = ",
    "",
    " Beta follows alpha . ",
    "",
]
WIKI_EXPECTED = [
    ("= Alpha = \n\n Alpha is the first letter . \n\n = = History = = \n\n It was used by the "
     "Greeks . \n\n = = = Later use = = = \n Still used .", "Alpha", 2),
    ("= Beta = \n\n Beta follows alpha .", "Beta", 13),
]


def test_wikitext_title_detection() -> None:
    assert article_title(" = Alpha = ") == "Alpha"
    assert article_title(" = E = mc2 = ") == "E = mc2"
    assert article_title(" = = History = = ") is None
    assert article_title(" Alpha = beta ") is None


def test_wikitext_articles_same_from_text_and_json(tmp_path: Path) -> None:
    txt = tmp_path / "wiki.txt"
    txt.write_text("\n".join(WIKI_LINES) + "\n", encoding="utf-8")
    js = tmp_path / "wiki.jsonl"  # HF rows keep their "\n"; blank rows are ""
    js.write_bytes(jsonl([{"text": line + "\n" if line else ""} for line in WIKI_LINES]))
    results = []
    for source, f in (("text", txt), ("json", js)):
        out = docs_of(DomainConfig(name="prose", source=source, data_files=[str(f)],
                                   group="wikitext"))
        assert all(isinstance(d, Document) for d in out)
        assert [(d.text, d.source["title"], d.source["row"]) for d in out] == WIKI_EXPECTED
        assert out[0].source["file"] == str(f)
        results.append([d.text for d in out])
    assert results[0] == results[1]


def test_wikitext_describe_and_rules(tmp_path: Path) -> None:
    txt = tmp_path / "wiki.txt"
    txt.write_text("\n".join(WIKI_LINES), encoding="utf-8")
    src = planned(DomainConfig(name="prose", source="text", data_files=[str(txt)],
                               group="wikitext"))
    assert src.describe()["group"] == "wikitext"
    assert any("level-1 heading" in r for r in src.format_rules())


def wiki_corpus(n_articles: int) -> list[str]:
    lines = [" stray preamble ", ""]
    for a in range(n_articles):
        lines += [f" = Article {a} = ", ""]
        for s in range(a % 4):  # some articles are a heading and nothing else
            lines += [f" = = Part {s} = = ", f" Text {a}.{s} with some words . ", ""]
    return lines


@pytest.mark.parametrize("source", ["text", "json"])
def test_wikitext_articles_exact_across_partitions(tmp_path: Path, source: str) -> None:
    lines = wiki_corpus(12)
    f = tmp_path / f"wiki.{'txt' if source == 'text' else 'jsonl'}"
    if source == "text":
        f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        f.write_bytes(jsonl([{"text": line} for line in lines]))
    cfg = DomainConfig(name="prose", source=source, data_files=[str(f)], group="wikitext")
    whole = planned(cfg)
    assert len(whole.partitions()) == 1
    sequential = read_all(whole)
    assert [d.source["title"] for d in sequential] == [f"Article {a}" for a in range(12)]
    assert sequential == list(group_articles(whole.inner.read(whole.partitions()[0])))
    for size in (7, 23, 40, 97):  # ranges cut articles; some hold no heading at all
        src = planned(cfg, partition_bytes=size)
        parts = src.partitions()
        assert len(parts) > 3
        per_part = [list(worker(src).read(p)) for p in parts]
        if size == 7:
            assert [] in per_part  # a partition holding no heading gives no article
        got = [d for part in per_part for d in part]
        assert [(d.text, d.source["title"]) for d in got] == \
               [(d.text, d.source["title"]) for d in sequential]


# --------------------------------------------------------------------------- Hugging Face Hub


@pytest.fixture
def empty_hf_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Hub cache: HF_HOME is an empty folder."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return tmp_path / "hf-home"


def test_hf_unreachable_fails_fast_without_loading(monkeypatch: pytest.MonkeyPatch,
                                                   empty_hf_home: Path) -> None:
    import datasets

    calls: list[tuple[Any, Any]] = []

    def refuse(address: Any, timeout: Any = None, *a: Any, **kw: Any) -> socket.socket:
        calls.append((address, timeout))
        raise OSError("Network is unreachable")

    def never(*a: Any, **kw: Any) -> None:
        raise AssertionError("load_dataset must not be called when the Hub is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(datasets, "load_dataset", never)
    cfg = DomainConfig(name="code", source="hf", dataset="codeparrot/codeparrot-clean",
                       text_field="content")
    with pytest.raises(SourceError, match=r"\[domains\.code\] dataset 'codeparrot/codeparrot-"
                                          r"clean' needs the Hugging Face Hub.*Network is "
                                          r"unreachable.*`hf download codeparrot/codeparrot-"
                                          r"clean --repo-type dataset`.*HF_HOME.*`--recipe "
                                          r"sample`") as err:
        planned(cfg)
    assert str(empty_hf_home / "hub") in str(err.value) and "\n" not in str(err.value)
    assert calls == [(("huggingface.co", 443), 3.0)]


def test_hf_offline_env_refuses_when_not_cached(monkeypatch: pytest.MonkeyPatch,
                                                empty_hf_home: Path) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("no probe"))
    cfg = DomainConfig(name="prose", source="hf", dataset="Salesforce/wikitext",
                       config="wikitext-103-raw-v1", group="wikitext", revision="v1.1")
    with pytest.raises(SourceError, match=r"'Salesforce/wikitext'.*HF_DATASETS_OFFLINE is set.*"
                                          r"no snapshot of it at revision 'v1\.1'.*`hf download "
                                          r"Salesforce/wikitext --repo-type dataset --revision "
                                          r"v1\.1`"):
        planned(cfg)


HF_ROWS = [{"text": "one", "url": "http://x", "timestamp": "t"},
           {"text": None, "url": "u", "timestamp": "t"},
           {"text": "three", "url": "http://z", "timestamp": None},
           {"text": "four", "url": "http://w", "timestamp": "t"}]


@pytest.mark.parametrize("shards", [1, 2])
def test_hf_rows_and_provenance(monkeypatch: pytest.MonkeyPatch, shards: int) -> None:
    """With a reachable Hub (faked), shards stream with their provenance fields and rows."""
    import datasets

    monkeypatch.setattr(hf, "hub_unreachable_reason", lambda: None)
    monkeypatch.setattr(hf.HFReader, "_resolve_revision", lambda self: "abc123")
    seen: list[tuple[Any, Any]] = []

    def fake_load(*args: Any, **kwargs: Any) -> datasets.IterableDataset:
        seen.append((args, kwargs))
        rows = HF_ROWS if shards == 2 else HF_ROWS[:3]
        return datasets.Dataset.from_list(rows).to_iterable_dataset(num_shards=shards)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = DomainConfig(name="prose", source="hf", dataset="allenai/c4", config="en")
    src = planned(cfg)
    parts = src.partitions()
    assert [p.key for p in parts] == [f"shard-{i:05d}-of-{shards:05d}" for i in range(shards)]
    assert parts[0].spec == {"mode": "hub", "target": "allenai/c4", "revision": "abc123",
                             "shard": 0, "n_shards": shards}
    monkeypatch.setattr(hf, "hub_unreachable_reason", lambda: pytest.fail("a worker probed"))
    out = read_all(src)
    assert all(args == ("allenai/c4", "en") and kwargs == {
        "split": "train", "streaming": True, "data_dir": None, "revision": "abc123"}
        for args, kwargs in seen)
    assert isinstance(out[0], Document) and out[0].source == {"shard": 0, "row": 0,
                                                              "url": "http://x"}
    assert isinstance(out[1], BadRecord)
    assert out[1].reason == ("dataset 'allenai/c4' shard 0 row 1: no text field 'text' "
                             "(fields present: url, timestamp); set text_field in the recipe")
    third = {"shard": 0, "row": 2} if shards == 1 else {"shard": 1, "row": 0}
    assert isinstance(out[2], Document) and out[2].source == {**third, "url": "http://z"}
    if shards == 2:
        assert out[3].source == {"shard": 1, "row": 1, "url": "http://w"}
    d = src.describe()
    assert d["dataset"] == "allenai/c4" and d["config"] == "en"
    assert d["resolved_revision"] == "abc123" and "revision" not in d
    assert src.notes() == []
    assert worker(src).partition_record(parts[-1]) == {
        "dataset": "allenai/c4", "revision": "abc123", "shard": shards - 1, "n_shards": shards}


# --------------------------------------------------------------------------- stdlib / pydoc


def test_stdlib_exclusions_and_bad_bytes(tmp_path: Path) -> None:
    files = {
        "json/decoder.py": "x = 1\n",
        "abc.py": "y = 2\n",
        "pydoc_data/topics.py": "topics = {}\n",
        "test/test_json.py": "broken(\n",
        "idlelib/idle_test/htest.py": "z\n",
        "lib2to3/tests/data/bad.py": "print 'x'\n",
        "foo_test/x.py": "a\n",
        "site-packages/pkg/mod.py": "b\n",
        "__pycache__/abc.py": "c\n",
        "notes.txt": "not python\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    (tmp_path / "legacy.py").write_bytes(b"# caf\xe9\n")
    src = planned(DomainConfig(name="code", source="stdlib", path=str(tmp_path)))
    out = read_all(src)
    assert [(type(d).__name__, getattr(d, "source", None)) for d in out] == [
        ("Document", {"path": "abc.py"}),
        ("Document", {"path": "json/decoder.py"}),
        ("BadRecord", None),
    ]
    assert out[0].text == "y = 2\n"
    assert "legacy.py: not UTF-8" in out[2].reason
    [p] = src.partitions()
    w = worker(src)
    list(w.read(p))
    assert w.partition_record(p) == {"files": [
        {**rfiles.file_record(str(tmp_path / rel)), "path": rel}
        for rel in ("abc.py", "json/decoder.py", "legacy.py")]}
    assert worker(src).partition_record(p) == w.partition_record(p)


def test_real_stdlib_has_no_pydoc_data_or_tests_and_several_partitions() -> None:
    src = planned(DomainConfig(name="code", source="stdlib"))
    paths = src.files  # type: ignore[attr-defined]
    assert "json/decoder.py" in paths and paths == sorted(paths)
    bad = [p for p in paths if re.search(r"(^|/)(pydoc_data|test|tests|idle_test|site-packages|"
                                         r"__pycache__|[^/]*_test)/", p)]
    assert bad == []
    parts = src.partitions()
    assert len(parts) == -(-len(paths) // 200) >= 2
    assert [rel for p in parts for rel in p.spec["files"]] == paths
    assert parts[0].key == f"{paths[0]}..{paths[199]}"


def test_chunk_paragraphs_merges_and_keeps_separators() -> None:
    text = "aaaa\n\nbb\n  \ncccccc\n\ndd"
    assert chunk_paragraphs(text, min_chars=6) == ["aaaa\n\nbb", "cccccc\n\ndd"]
    assert chunk_paragraphs("short", min_chars=6) == ["short"]
    assert chunk_paragraphs("\n\n\n", min_chars=6) == []


def test_pydoc_volume_order_and_partitions() -> None:
    from pydoc_data.topics import topics

    src = planned(DomainConfig(name="prose", source="pydoc"))
    assert len(src.partitions()) >= 5
    out = read_all(src)
    assert all(isinstance(d, Document) for d in out)
    assert len(out) >= 600
    assert sum(len(d.text.encode()) for d in out) >= 400_000
    keys = [d.source["topic"] for d in out]
    assert keys == sorted(keys) and set(keys) == {k for k in topics if topics[k].strip()}
    first = [d for d in out if d.source["topic"] == keys[0]]
    assert [d.source["part"] for d in first] == list(range(len(first)))
    assert all(len(d.text) >= 500 for d in out if d.source["part"] > 0)


# --------------------------------------------------------------------------- synthetic math

_PURE = re.compile(r"^[\d. ()+*/^-]+$")


def _eval(expr: str) -> Fraction:
    code = re.sub(r"(\d+(?:\.\d+)?)", lambda m: f"F('{m.group(1)}')", expr.replace("^", "**"))
    return eval(code, {"F": Fraction})  # noqa: S307 - digits and operators only (checked)


def synth(seed: int, n: int = 4000) -> list[Document]:
    out = docs_of(DomainConfig(name="math", source="synthetic-math", synthetic_docs=n,
                               synthetic_seed=seed))
    assert all(isinstance(d, Document) for d in out)
    return out  # type: ignore[return-value]


def test_synthetic_math_deterministic_volume_and_variety() -> None:
    a, b, c = synth(42), synth(42), synth(7, 200)
    assert [d.text for d in a] == [d.text for d in b]
    assert [d.text for d in a[:200]] != [d.text for d in c]
    assert len(a) == 4000 and sum(len(d.text.encode()) for d in a) >= 400_000
    assert len({d.text for d in a}) >= 0.98 * len(a)
    used = {d.source["template"] for d in a}
    assert len(used) >= 15 and used == set(TEMPLATES)
    assert [d.source["index"] for d in a] == list(range(4000))
    openings = {d.text.split("\n\n")[1].split(" ")[0] for d in a}
    assert {"explanation", "sol", "let"} <= openings
    for d in a:
        problem, rationale = d.text.split("\n\n")
        assert problem == problem.lower() and rationale == rationale.lower()
        assert "  " not in d.text and "answer" in rationale


def test_synthetic_math_partitions_generate_alone() -> None:
    cfg = DomainConfig(name="math", source="synthetic-math", synthetic_docs=2500,
                       synthetic_seed=42)
    src = planned(cfg)
    parts = src.partitions()
    assert [(p.key, p.spec) for p in parts] == [
        ("problems-0-999", {"seed": 42, "start": 0, "count": 1000}),
        ("problems-1000-1999", {"seed": 42, "start": 1000, "count": 1000}),
        ("problems-2000-2499", {"seed": 42, "start": 2000, "count": 500})]
    alone = [d.text for d in worker(src).read(parts[2])]  # the last partition, generated alone
    everything = read_all(src)
    assert alone == [d.text for d in everything[2000:]]
    assert [d.text for d in everything[:1000]] != [d.text for d in everything[1000:2000]]
    fewer = read_all(planned(DomainConfig(name="math", source="synthetic-math",
                                          synthetic_docs=1500, synthetic_seed=42)))
    assert [d.text for d in fewer] == [d.text for d in everything[:1500]]  # a prefix


def test_synthetic_math_arithmetic_is_right() -> None:
    checked = 0
    for d in synth(3, 2000):
        for seg in re.split(r" [.,;] (?!\d)|answer|so |then ", d.text):
            pieces = [p.strip() for p in seg.split(" = ")]
            for x, y in zip(pieces, pieces[1:], strict=False):
                if all(_PURE.match(p) and re.search(r"\d", p) for p in (x, y)):
                    checked += 1
                    assert abs(_eval(x) - _eval(y)) <= Fraction(1, 100), (x, y, d.text)
    assert checked >= 300


def test_synthetic_math_describe() -> None:
    src = planned(DomainConfig(name="math", source="synthetic-math", synthetic_docs=10,
                               synthetic_seed=5))
    d = src.describe()
    assert d["reader"] == "synthetic-math" and d["synthetic"] is True
    assert d["description"].startswith("SYNTHETIC: ")
    assert len(src.format_rules()) >= 1
    [p] = src.partitions()
    assert worker(src).partition_record(p) == {"synthetic": True, "stream": "5:synthetic-math:0",
                                               "problems": [0, 10]}


# --------------------------------------------------------------------------- plans are JSON


def test_every_reader_plans_json_partitions_that_workers_read(tmp_path: Path) -> None:
    from prep.readers import Partition

    big = tmp_path / "big.jsonl"
    big.write_bytes(jsonl([{"content": f"doc {i}", "url": f"u{i}"} for i in range(50)]))
    pf = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS * 20), pf, row_group_size=7)
    cfgs = [local_cfg("json", [str(big)]), local_cfg("parquet", [str(pf)]),
            DomainConfig(name="math", source="synthetic-math", synthetic_docs=1200),
            DomainConfig(name="prose", source="pydoc"), mathqa_cfg(make_mathqa_zip(
                tmp_path / "MathQA.zip"))]
    for cfg in cfgs:
        src = planned(cfg, partition_bytes=300)
        parts = src.partitions()
        assert len({p.key for p in parts}) == len(parts)
        assert [p.index for p in parts] == list(range(len(parts)))
        shipped = [Partition.from_dict(json.loads(json.dumps(p.to_dict()))) for p in parts]
        assert shipped == parts
        direct = read_all(src)
        assert [d for q in shipped for d in worker(src).read(q)] == direct and direct
        json.dumps(src.describe())
        json.dumps([worker(src).partition_record(q) for q in shipped])
