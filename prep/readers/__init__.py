"""Source readers, by the recipe's `source` name.

The registry (`prep.source_names`, a leaf module that recipe validation uses too) maps names to
"module:Class" strings; a reader is imported only when a recipe uses it.
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
from prep.source_names import GROUP_NAMES, GROUPS, READERS, SOURCE_NAMES


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
