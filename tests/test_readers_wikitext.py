"""The wikitext group: line rows regrouped into articles, exact across partitions."""

from __future__ import annotations

from pathlib import Path

import pytest
from readers_fixture import docs_of, jsonl, planned, read_all, worker

from prep.readers import Document
from prep.readers.wikitext import article_title, group_articles
from prep.recipe import DomainConfig

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
