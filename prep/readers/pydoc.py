"""``source = "pydoc"``: English prose, the topics of ``pydoc_data.topics``.

Topics in sorted key order, each split at blank lines into paragraphs merged into chunks of at
least PYDOC_MIN_CHUNK characters; partitions are consecutive runs of TOPICS_PER_PARTITION
topics (the running Python's 79 topics give 8).
"""

from __future__ import annotations

import ast
import platform
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prep.readers.base import BadRecord, Document, Partition, Reader
from prep.readers.files import file_record, spec_identity

PYDOC_MIN_CHUNK = 500  # characters: pydoc paragraphs merge until a chunk has this many
TOPICS_PER_PARTITION = 10


def load_pydoc_topics(path: str | Path | None = None) -> tuple[dict[str, str], Path]:
    """The `topics` dict of pydoc_data.topics (or of the topics.py at `path`) and its file."""
    if path is None:
        from pydoc_data import topics as module

        return dict(module.topics), Path(module.__file__ or "")
    p = Path(path)
    if p.is_dir():  # a standard library root
        p = p / "pydoc_data" / "topics.py"
    tree = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "topics"):
            topics = ast.literal_eval(node.value)
            if isinstance(topics, dict):
                return {str(k): str(v) for k, v in topics.items()}, p
    raise ValueError(f"{p}: no `topics = {{...}}` dict literal")


_PARAGRAPH_BREAK = re.compile(r"(\n[ \t]*\n(?:[ \t]*\n)*)")


def chunk_paragraphs(text: str, min_chars: int = PYDOC_MIN_CHUNK) -> list[str]:
    """Split at blank lines and merge consecutive paragraphs until a chunk has >= min_chars.

    The original separators are kept between merged paragraphs; a final chunk shorter than
    `min_chars` merges into the previous chunk.
    """
    parts = _PARAGRAPH_BREAK.split(text)
    chunks: list[str] = []
    current = ""
    for i in range(0, len(parts), 2):
        para = parts[i]
        if not para.strip():
            continue
        sep = parts[i - 1] if i else ""
        current = f"{current}{sep}{para}" if current else para
        if len(current.strip()) >= min_chars:
            chunks.append(current)
            current = ""
    if current.strip():
        if chunks:
            chunks[-1] = f"{chunks[-1]}\n\n{current}"
        else:
            chunks.append(current)
    return [c.strip() for c in chunks]


class PydocReader(Reader):
    name = "pydoc"

    def __init__(self, cfg: Any, settings: Any) -> None:
        super().__init__(cfg, settings)
        self._loaded: tuple[dict[str, str], Path] | None = None
        if settings.probe:
            self._topics()

    def _topics(self) -> tuple[dict[str, str], Path]:
        if self._loaded is None:
            try:
                self._loaded = load_pydoc_topics(self.cfg.path)
            except (OSError, SyntaxError, ValueError, ImportError) as e:
                raise self._error(f"{self.cfg.path or 'pydoc_data.topics'}: cannot load the "
                                  f"pydoc topics ({e}); set `path` to a pydoc_data/topics.py "
                                  "file") from e
        return self._loaded

    def partitions(self) -> list[Partition]:
        topics, file = self._topics()
        keys = sorted(topics)
        stat = file.stat() if file.is_file() else None
        out = []
        for k in range(0, len(keys), TOPICS_PER_PARTITION):
            run = keys[k:k + TOPICS_PER_PARTITION]
            spec = {"path": self.cfg.path, "topics": run}
            identity = spec_identity({**spec, "python": platform.python_version(),
                                      "file": [str(file), stat.st_size if stat else None,
                                               stat.st_mtime_ns if stat else None]})
            size = sum(len(topics[t].encode()) for t in run)
            out.append(Partition(len(out), f"{run[0]}..{run[-1]}", spec, identity, size))
        return out

    def describe(self) -> dict[str, Any]:
        topics, file = self._topics()
        return {
            "reader": "pydoc",
            "python": platform.python_version(),
            "files": [{"path": str(file), "bytes": file.stat().st_size}] if file.is_file() else [],
            "topics": len(topics),
            "synthetic": False,
            "description": ("the Python documentation prose shipped with Python "
                            "(pydoc_data.topics: language reference and library topics)"),
        }

    def format_rules(self) -> list[str]:
        return [
            "topics in sorted key order; each topic split at blank lines into paragraphs",
            f"consecutive paragraphs merge until a chunk has >= {PYDOC_MIN_CHUNK} characters "
            "(a shorter tail merges into the previous chunk); each chunk, whitespace-stripped, "
            "is one document",
        ]

    def read(self, partition: Partition) -> Iterator[Document | BadRecord]:
        topics, _ = self._topics()
        for key in partition.spec["topics"]:
            if key not in topics:
                raise self._error(f"pydoc topic {key!r} is missing here (Python "
                                  f"{platform.python_version()}): run every worker on the "
                                  "coordinator's Python, or set `path` to one topics.py")
            for part, chunk in enumerate(chunk_paragraphs(topics[key])):
                yield Document(chunk, {"topic": key, "part": part})

    def partition_record(self, partition: Partition) -> dict[str, Any]:
        _, file = self._topics()
        return {"files": [file_record(str(file))] if file.is_file() else [],
                "topics": len(partition.spec["topics"])}
