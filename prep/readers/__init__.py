"""Source readers, by the recipe's `source` name (the registry recipe validation uses too).

The registry maps names to "module:Class" strings and imports a reader only when a recipe uses
it, so that `prep.recipe` can validate names without importing any reader (no import cycle,
no datasets/pyarrow import for a recipe that needs neither).
"""

from __future__ import annotations

import importlib

from prep.readers.base import (
    BadRecord,
    Document,
    Partition,
    Reader,
    ReadSettings,
    SourceError,
)

READERS: dict[str, str] = {
    "hf": "prep.readers.hf:HFReader",
    "json": "prep.readers.jsonl:JsonReader",
    "parquet": "prep.readers.parquet:ParquetReader",
    "text": "prep.readers.text:TextReader",
    "mathqa": "prep.readers.mathqa:MathQAReader",
    "stdlib": "prep.readers.stdlib:StdlibReader",
    "pydoc": "prep.readers.pydoc:PydocReader",
    "synthetic-math": "prep.readers.synthetic_math:SyntheticMathReader",
}
GROUPS: dict[str, str] = {
    "wikitext": "prep.readers.wikitext:WikiTextArticles",
}
SOURCE_NAMES = tuple(READERS)
GROUP_NAMES = tuple(GROUPS)


def _load(ref: str) -> type:
    module, _, cls = ref.partition(":")
    return getattr(importlib.import_module(module), cls)


def open_reader(cfg, settings: ReadSettings | None = None) -> Reader:  # noqa: ANN001
    """The reader of one domain (wrapped by its `group`, if any). Fails fast with SourceError
    on what can be checked before reading when ``settings.probe`` is true."""
    settings = settings or ReadSettings()
    if cfg.source not in READERS:
        raise SourceError(f"[domains.{cfg.name}] unknown source {cfg.source!r}; one of "
                          f"{', '.join(SOURCE_NAMES)}")
    reader = _load(READERS[cfg.source])(cfg, settings)
    if cfg.group is not None:
        if cfg.group not in GROUPS:
            raise SourceError(f"[domains.{cfg.name}] unknown group {cfg.group!r}; one of "
                              f"{', '.join(GROUP_NAMES)}")
        reader = _load(GROUPS[cfg.group])(reader)
    return reader


__all__ = ["BadRecord", "Document", "GROUP_NAMES", "Partition", "READERS", "ReadSettings",
           "Reader", "SOURCE_NAMES", "SourceError", "open_reader"]
