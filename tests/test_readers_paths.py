"""data_files patterns -> files: sorted, each real file once, loops not followed, and a path
that is not a regular file named for what it is (prep.readers.paths)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest
from readers_fixture import RECORDS, jsonl, local_cfg, planned, read_all

from prep.readers import SourceError
from prep.readers.paths import expand


def test_expand_sorts_each_pattern_and_drops_duplicates(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl", "c.txt"):
        (tmp_path / name).write_text("x\n")
    got = expand([str(tmp_path / "*.jsonl"), str(tmp_path / "*"), str(tmp_path / "a.jsonl")],
                 ValueError)
    assert got == [str(tmp_path / n) for n in ("a.jsonl", "b.jsonl", "c.txt")]
    with pytest.raises(ValueError, match=r"^data_files pattern '.*/none\*' matches no file; fix "
                                         r"the path or glob \(relative paths resolve against the "
                                         r"recipe file\)$"):
        expand([str(tmp_path / "none*")], ValueError)


def test_recursive_glob_through_a_symlink_loop_reads_each_file_once(tmp_path: Path) -> None:
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    (d / "a.jsonl").write_bytes(jsonl(RECORDS[:1]))
    (d / "sub" / "b.jsonl").write_bytes(jsonl(RECORDS[1:]))
    (d / "sub" / "up").symlink_to("..")  # a loop: data/sub/up/sub/up/...
    pattern = str(d / "**" / "*.jsonl")
    assert expand([pattern], ValueError) == [str(d / "a.jsonl"), str(d / "sub" / "b.jsonl")]
    src = planned(local_cfg("json", [pattern]))
    assert [doc.text for doc in read_all(src)] == [r["content"] for r in RECORDS]
    (d / "sub" / "again").symlink_to("..")  # two loops: glob would walk 2**40 paths
    (d / "alias").symlink_to("sub")  # not a loop, but the same files again: listed once,
    assert expand([pattern], ValueError) == [str(d / "a.jsonl"),  # under the first name
                                             str(d / "alias" / "b.jsonl")]


def test_each_real_file_once_across_patterns_and_links(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    a.write_text("x\n")
    os.link(a, tmp_path / "hard.jsonl")
    (tmp_path / "soft.jsonl").symlink_to("a.jsonl")
    assert expand([str(tmp_path / "*.jsonl"), str(a)], ValueError) == [str(a)]


@pytest.mark.parametrize("pattern", ["**/*.jsonl", "**", "d*/**/x*", "**/.h*/*", "*/**/*.jsonl",
                                     "d1/**", "**/sub/*.jsonl"])
def test_recursive_globs_match_what_glob_matches_without_loops(tmp_path: Path, pattern: str,
                                                               monkeypatch) -> None:
    for rel in ("top.jsonl", "d1/x.jsonl", "d1/sub/y.jsonl", "d1/sub/x2.txt", "d2/.hid/z.jsonl",
                ".hidden/w.jsonl", "d2/sub/v.jsonl"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x\n")
    for base in (str(tmp_path) + os.sep, ""):  # absolute and relative patterns
        monkeypatch.chdir(tmp_path)
        want = sorted(p for p in glob.glob(base + pattern, recursive=True) if os.path.isfile(p))
        assert expand([base + pattern], ValueError) == want


def test_a_fifo_directory_or_broken_link_says_what_it_is(tmp_path: Path) -> None:
    fifo = tmp_path / "stream.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match=r"^\[domains\.code\] data_files entry '.*stream\.jsonl' "
                                          r"is a FIFO \(named pipe\), not a regular file: .*copy "
                                          r"the stream into a file first, e\.g\. `cat .*stream\."
                                          r"jsonl > data\.jsonl`$"):
        planned(local_cfg("json", [str(fifo)]))
    d = tmp_path / "folder"
    d.mkdir()
    with pytest.raises(SourceError, match=r"data_files entry '.*folder' is a directory; name its "
                                          r"files with a glob, e\.g\. '.*folder/\*\.jsonl' \(or "
                                          r"'.*folder/\*\*/\*\.jsonl' with its subdirectories\)$"):
        planned(local_cfg("json", [str(d)]))
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    with pytest.raises(SourceError, match=r"'.*loop1' is a symbolic link loop .*; point the link "
                                          r"at a file, or remove it$"):
        planned(local_cfg("json", [str(tmp_path / "loop1")]))
    (tmp_path / "dangling").symlink_to("gone.jsonl")
    with pytest.raises(SourceError, match=r"'.*dangling' is a symbolic link to 'gone\.jsonl', "
                                          r"which does not exist; fix the link or the path$"):
        planned(local_cfg("json", [str(tmp_path / "dangling")]))
    with pytest.raises(SourceError, match=r"pattern '.*fol\*' matches no regular file: "
                                          r"'.*folder' is a directory; name its files"):
        planned(local_cfg("json", [str(tmp_path / "fol*")]))
