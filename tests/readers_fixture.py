"""Helpers for the reader tests: read a source as the coordinator plans it and workers read it."""

from __future__ import annotations

import json
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
