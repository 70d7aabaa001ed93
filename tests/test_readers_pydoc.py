"""The pydoc reader: the topics of pydoc_data, paragraphs, partitions."""

from __future__ import annotations

from readers_fixture import planned, read_all

from prep.readers import Document
from prep.readers.pydoc import chunk_paragraphs
from prep.recipe import DomainConfig


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
