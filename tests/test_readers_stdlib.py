"""The stdlib reader: which files of the standard library are read, bad bytes."""

from __future__ import annotations

import re
from pathlib import Path

from readers_fixture import planned, read_all, worker

from prep.readers import files as rfiles
from prep.recipe import DomainConfig


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
