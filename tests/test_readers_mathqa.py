"""The mathqa reader: MathQA's ZIP of JSON arrays, exact documents, download and cache,
errors naming the ZIP and member."""

from __future__ import annotations

import http.server
import io
import json
import socket
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
from readers_fixture import (
    MATHQA_EXPECTED,
    MATHQA_RECORDS,
    docs_of,
    make_mathqa_zip,
    mathqa_cfg,
    planned,
    read_all,
    worker,
)

from prep.readers import BadRecord, Document, SourceError
from prep.readers import files as rfiles
from prep.readers.jsonl import iter_json_array
from prep.readers.mathqa import strip_enclosing_quotes


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
