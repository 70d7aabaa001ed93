"""Stream partitions read as pieces (prep.readers.pieces): cuts that depend only on the
content, each line in exactly one piece, spills, and a worker that has no spill."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
import random
from pathlib import Path

import pytest
import zstandard
from readers_fixture import jsonl, local_cfg, planned, worker

from prep.readers import BadRecord, Document, SourceError, pieces
from prep.readers import files as rfiles
from prep.readers.wikitext import group_articles
from prep.recipe import DomainConfig


@pytest.mark.parametrize("seed", range(40))
def test_a_piece_holds_exactly_the_lines_a_byte_range_would(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    data = b"".join(rng.choice([b"a", b"bb", b"\n", b"\n\n", b"c" * 40])
                    for _ in range(rng.randint(0, 200)))
    size, chunk = rng.randint(1, 50), rng.randint(1, 30)
    got = list(pieces.cut_lines((data[i:i + chunk] for i in range(0, len(data), chunk)), size))
    assert [p.index for p in got] == list(range(len(got)))
    assert [p.last for p in got] == [False] * (len(got) - 1) + [True]
    assert b"".join(p.data for p in got) == data
    plain = tmp_path / "plain.txt"
    plain.write_bytes(data)
    for p in got:  # the rule of a plain file's byte ranges, on the decompressed stream
        assert p.data == b"".join(c for _, c in rfiles.iter_range(str(plain), p.index * size,
                                                                  (p.index + 1) * size))
        assert (p.start, p.end) == (p.start, p.start + len(p.data))


def test_a_line_longer_than_a_piece_leaves_empty_pieces() -> None:
    data = b"a\n" + b"x" * 25 + b"\nb\n"
    got = list(pieces.cut_lines([data], 10))
    assert [(p.index, p.data, p.start, p.end, p.last) for p in got] == [
        (0, b"a\n" + b"x" * 25 + b"\n", 0, 28, False), (1, b"", 28, 28, False),
        (2, b"b\n", 28, 30, True)]
    assert [(p.index, p.data) for p in pieces.cut_lines([], 10)] == [(0, b"")]


def test_rows_are_cut_by_the_bytes_of_their_texts() -> None:
    rows = [pieces.row_line("é" * r, {"row": r}) for r in range(8)]
    rows.insert(3, pieces.row_line(None, bad="row 99: no text"))
    got = list(pieces.cut_rows(rows, 12))
    offsets = [0]
    for n, _ in rows:
        offsets.append(offsets[-1] + n)
    for p in got:
        held = [i for i, at in enumerate(offsets[:-1]) if p.index * 12 <= at < (p.index + 1) * 12]
        assert p.data == b"".join(rows[i][1] for i in held)
    records = [r for p in got for r in pieces.row_records(p.data)]
    assert [getattr(r, "source", None) for r in records] == [
        {"row": 0}, {"row": 1}, {"row": 2}, None, *({"row": r} for r in range(3, 8))]
    assert records[3] == BadRecord("row 99: no text") and records[8] == Document("é" * 7,
                                                                                  {"row": 7})


def write_stream(path: Path, raw: bytes, level: int = 3) -> Path:
    suffix = path.suffix
    data = {".zst": lambda b: zstandard.ZstdCompressor(level=level).compress(b),
            ".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix](raw)
    path.write_bytes(data)
    return path


def corpus(n: int = 400, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    return jsonl([{"content": " ".join(str(rng.random()) for _ in range(rng.randint(1, 60))),
                   "id": i} for i in range(n)])


def cuts(src, partition) -> list[tuple[int, int, str]]:  # noqa: ANN001
    return [(p.start, p.end, hashlib.sha256(p.data).hexdigest()) for p in src.cut(partition)]


def test_cuts_depend_only_on_the_content(tmp_path: Path) -> None:
    raw = corpus()
    a = write_stream(tmp_path / "a.jsonl.zst", raw)
    seen = []
    for path in (a, write_stream(tmp_path / "other-name.jsonl.zst", raw, level=19),
                 write_stream(tmp_path / "b.jsonl.gz", raw), write_stream(tmp_path / "c.jsonl.xz",
                                                                          raw)):
        os.utime(path, ns=(1, 123456789))
        src = planned(local_cfg("json", [str(path)]), partition_bytes=5000)
        [p] = src.partitions()
        assert p.stream and p.spec["cut"] == 5000
        seen.append(cuts(src, p))
    assert all(s == seen[0] for s in seen) and len(seen[0]) >= 10
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(raw)
    ranges = planned(local_cfg("json", [str(plain)]), partition_bytes=5000)
    src = planned(local_cfg("json", [str(a)]), partition_bytes=5000)
    [stream] = src.partitions()
    docs = [[(d.text, d.source.get("row", d.source.get("byte"))) for d in worker(src).read(
        pieces.piece_of(stream, i))] for i in range(len(seen[0]))]
    by_range = [[(d.text, d.source.get("row", d.source.get("byte")))
                 for d in worker(ranges).read(r)] for r in ranges.partitions()]
    assert by_range[:len(docs)] == docs  # (a plain file also has ranges past its last line)
    assert not any(by_range[len(docs):])


def test_a_worker_reads_a_piece_from_its_spill_or_cuts_again(tmp_path: Path) -> None:
    a = write_stream(tmp_path / "a.jsonl.zst", corpus())
    src = planned(local_cfg("json", [str(a)]), partition_bytes=5000)
    [stream] = src.partitions()
    spilled = list(src.cut(stream))
    spill_dir = tmp_path / "spills"
    spill_dir.mkdir()
    piece = pieces.piece_of(stream, 3)
    path = pieces.spill_path(str(spill_dir), "code", piece)
    assert path == str(spill_dir / "code.000000.p00003")
    pieces.write_spill(path, spilled[3])
    assert pieces.read_spill(path) == spilled[3]
    settings = {"partition_bytes": 5000, "probe": False}
    with_spill = planned(local_cfg("json", [str(a)]), spill_dir=str(spill_dir), **settings)
    without = planned(local_cfg("json", [str(a)]), **settings)
    assert list(with_spill.read(piece)) == list(without.read(piece))
    assert with_spill.partition_record(piece) == without.partition_record(piece) == {
        "files": [{"path": str(a), "piece": 3, "text_start": spilled[3].start,
                   "text_end": spilled[3].end,
                   "text_sha256": hashlib.sha256(spilled[3].data).hexdigest()}], "last": False}
    last = pieces.piece_of(stream, len(spilled) - 1)
    assert without.partition_record(last)["files"][0]["sha256"] == rfiles.sha256_range(str(a))
    Path(path).write_bytes(Path(path).read_bytes()[:-1])  # a short spill is not trusted
    assert pieces.read_spill(path) is None
    assert list(with_spill.read(piece)) == list(without.read(piece))


def test_compressed_arrays_empty_and_truncated_streams(tmp_path: Path) -> None:
    arr = tmp_path / "arr.json.zst"
    records = [{"content": f"document {i} " * 30} for i in range(200)]
    write_stream(arr, json.dumps(records).encode())
    src = planned(local_cfg("json", [str(arr)]), partition_bytes=2000)
    [stream] = src.partitions()
    [whole] = list(src.cut(stream))  # a JSON array is never cut: its one piece reads it all
    assert whole.whole and whole.last
    out = list(worker(src).read(pieces.piece_of(stream, 0)))
    assert [d.text for d in out] == [r["content"] for r in records]
    blank = write_stream(tmp_path / "blank.jsonl.zst", b"\n" * 50_000, level=19)
    with pytest.raises(SourceError, match=r"blank\.jsonl\.zst: the file holds only blank lines"):
        list(planned(local_cfg("json", [str(blank)]), partition_bytes=100).cut(
            planned(local_cfg("json", [str(blank)]), partition_bytes=100).partitions()[0]))
    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(zstandard.ZstdCompressor().compress(corpus(2000))[:-50])
    src = planned(local_cfg("json", [str(cut)]), partition_bytes=2000)
    got = src.cut(src.partitions()[0])
    assert next(got).index == 0  # the pieces before the damage are fine ...
    with pytest.raises(SourceError, match=r"cut\.jsonl\.zst: zstandard data is truncated"):
        list(got)  # ... and the read fails where the stream does


def test_wikitext_articles_read_on_into_the_next_pieces(tmp_path: Path) -> None:
    lines = [" stray ", ""]
    for a in range(30):
        lines += [f" = Article {a} = ", ""] + [f" Text {a}.{s} with words . " for s in range(a % 5)]
    f = write_stream(tmp_path / "wiki.txt.zst", ("\n".join(lines) + "\n").encode())
    cfg = DomainConfig(name="prose", source="text", data_files=[str(f)], group="wikitext")
    src = planned(cfg, partition_bytes=60)
    [stream] = src.partitions()
    n = len(list(src.cut(stream)))
    assert n > 10
    got = [d for i in range(n) for d in worker(src).read(pieces.piece_of(stream, i))]
    whole = planned(cfg)
    expected = list(group_articles(whole.inner.read(whole.partitions()[0])))
    assert [(d.text, d.source["title"]) for d in got] == \
           [(d.text, d.source["title"]) for d in expected]
    assert all(isinstance(d, Document) for d in got)
