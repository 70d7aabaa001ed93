"""``source = "stdlib"``: the running Python's standard library, one document per .py file.

Files in sorted path order, minus test and vendored directories; partitions are consecutive
packs of FILES_PER_PARTITION files, each listed in the partition's spec.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prep.readers.base import BadRecord, Document, Partition, Reader
from prep.readers.files import sha256_range, spec_identity

FILES_PER_PARTITION = 200
STDLIB_EXCLUDED_DIRS = {"site-packages", "dist-packages", "__pycache__", "pydoc_data",
                        "test", "tests", "idle_test"}


def _excluded_dir(name: str) -> bool:
    return name in STDLIB_EXCLUDED_DIRS or name.endswith(("_test", "_tests"))


def stdlib_files(root: str | Path) -> list[str]:
    """Sorted '/'-separated relative paths of the .py files under `root`, minus excluded dirs."""
    out: list[str] = []
    root = str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _excluded_dir(d))
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            if name.endswith(".py"):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                out.append(rel.replace(os.sep, "/"))
    return sorted(out)


class StdlibReader(Reader):
    name = "stdlib"

    def __init__(self, cfg: Any, settings: Any) -> None:
        super().__init__(cfg, settings)
        self.root = Path(cfg.path or sysconfig.get_paths()["stdlib"])
        self._files: list[str] | None = None
        self._digests: dict[str, list[dict[str, Any]]] = {}
        if settings.probe:
            self.files  # noqa: B018 - fail fast on a missing or empty root

    @property
    def files(self) -> list[str]:
        if self._files is None:
            if not self.root.is_dir():
                raise self._error(f"{self.root}: standard library directory not found; set "
                                  "`path` to a directory of .py files")
            self._files = stdlib_files(self.root)
            if not self._files:
                raise self._error(f"{self.root}: no .py files found; set `path` to the "
                                  "standard library directory")
        return self._files

    def partitions(self) -> list[Partition]:
        out = []
        for k in range(0, len(self.files), FILES_PER_PARTITION):
            rels = self.files[k:k + FILES_PER_PARTITION]
            stats = [os.stat(self.root / rel) for rel in rels]
            spec = {"root": str(self.root), "files": rels}
            identity = spec_identity({**spec, "stats": [[s.st_size, s.st_mtime_ns]
                                                        for s in stats]})
            key = rels[0] if len(rels) == 1 else f"{rels[0]}..{rels[-1]}"
            out.append(Partition(len(out), key, spec, identity, sum(s.st_size for s in stats)))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "reader": "stdlib",
            "root": str(self.root),
            "python": platform.python_version(),
            "files_count": len(self.files),
            "files_bytes": sum(os.path.getsize(self.root / rel) for rel in self.files),
            "excluded_dirs": sorted(STDLIB_EXCLUDED_DIRS) + ["*_test", "*_tests"],
            "synthetic": False,
            "description": (f"the .py files of the Python {platform.python_version()} standard "
                            "library, in sorted path order (sha256 of each file in the task "
                            "records)"),
        }

    def format_rules(self) -> list[str]:
        return ["each .py file (UTF-8) is one document, unchanged",
                "excluded directories: site-packages, __pycache__, pydoc_data (prose, used by "
                "the pydoc reader), test/tests/idle_test and *_test dirs (deliberately broken "
                "files)",
                "files that are not valid UTF-8 are counted as bad and skipped"]

    def read(self, partition: Partition) -> Iterator[Document | BadRecord]:
        root = Path(partition.spec["root"])
        records = []
        for rel in partition.spec["files"]:
            try:
                raw = (root / rel).read_bytes()
            except OSError as e:
                yield BadRecord(f"{root / rel}: cannot read ({e})")
                continue
            records.append({"path": rel, "bytes": len(raw),
                            "sha256": hashlib.sha256(raw).hexdigest()})
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadRecord(f"{root / rel}: not UTF-8 ({e.reason} at byte {e.start})")
                continue
            yield Document(text, {"path": rel})
        self._digests[partition.key] = records  # reached only when read to its end

    def partition_record(self, partition: Partition) -> dict[str, Any]:
        records = self._digests.pop(partition.key, None)
        if records is None:
            root = Path(partition.spec["root"])
            records = [{"path": rel, "bytes": os.path.getsize(root / rel),
                        "sha256": sha256_range(str(root / rel))}
                       for rel in partition.spec["files"] if (root / rel).is_file()]
        return {"files": records}
