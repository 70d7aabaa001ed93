"""Helpers for the reader tests: read a source as the coordinator plans it and workers read it."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from prep.readers import BadRecord, Document, Reader, ReadSettings, open_reader
from prep.recipe import DomainConfig


def planned(cfg: DomainConfig, **settings: Any) -> Reader:
    """The coordinator's reader (probe=True)."""
    return open_reader(cfg, ReadSettings(**settings))


def worker(reader: Reader) -> Reader:
    """A worker's own reader of the same domain: same settings, probe=False."""
    s = reader.settings
    return open_reader(reader.cfg, ReadSettings(partition_bytes=s.partition_bytes,
                                                cache_dir=s.cache_dir, probe=False))


def read_all(reader: Reader) -> list[Document | BadRecord]:
    """Every partition in plan order, each read by a fresh worker reader."""
    out: list[Document | BadRecord] = []
    for p in reader.partitions():
        out += list(worker(reader).read(p))
    return out


def docs_of(cfg: DomainConfig, **settings: Any) -> list[Document | BadRecord]:
    return read_all(planned(cfg, **settings))


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


# MathQA's layout (the mathqa tests and the every-reader plan test)

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


# Code records (json, parquet and the every-reader plan test)

RECORDS = [
    {"content": "def f():\n    return 1\n", "repo_name": "a/b", "path": "f.py", "size": 3},
    {"content": "x = 'é'\n", "repo_name": "a/c", "path": "x.py", "size": 4},
    {"content": "print('hi')\n", "repo_name": "a/b", "path": "p.py", "size": 5},
]


def local_cfg(source: str, files: list[str], text_field: str = "content",
              group: str | None = None) -> DomainConfig:
    return DomainConfig(name="code", source=source, data_files=files, text_field=text_field,
                        group=group)


