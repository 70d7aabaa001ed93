"""``source = "mathqa"``: MathQA (Amini et al. 2019) from its ZIP, as "problem\\n\\nrationale".

The coordinator finds the ZIP (a local path, or a URL downloaded once into
``settings.cache_dir``, else into a temporary folder that lives as long as the reader) and its
``train.json`` member; the one partition's spec names that local ZIP, so workers read the same
file. ``train.json`` is a JSON array, parsed incrementally.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import weakref
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prep.readers import files
from prep.readers.base import BadRecord, Document, Partition, Reader
from prep.readers.files import FileInfo
from prep.readers.jsonl import iter_json_array
from shards import atomic

MATHQA_URL = "https://math-qa.github.io/math-QA/data/MathQA.zip"
MATHQA_MEMBER = "train.json"
URL_TIMEOUT_S = 10.0


def strip_enclosing_quotes(text: str) -> str:
    """Remove ONE pair of literal double quotes enclosing `text` (after .strip()), then strip."""
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1].strip()
    return text


class MathQAReader(Reader):
    name = "mathqa"

    def __init__(self, cfg: Any, settings: Any) -> None:
        super().__init__(cfg, settings)
        self.origin = cfg.path or MATHQA_URL
        self.url = self.origin if "://" in self.origin else None
        self._tmp: str | None = None
        self.zip_path: Path | None = None
        self.member: str | None = None
        if settings.probe:
            self.zip_path = self._fetch(self.url) if self.url else Path(self.origin)
            if not self.zip_path.is_file():
                raise self._error(f"{self.zip_path}: MathQA ZIP not found; set `path` to the "
                                  f"ZIP or to {MATHQA_URL}, or use `--recipe sample`")
            self.member = self._find_member(self.zip_path)

    def _fetch(self, url: str) -> Path:
        if self.settings.cache_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="mathqa-")
            weakref.finalize(self, shutil.rmtree, self._tmp, True)
            target_dir = Path(self._tmp)
        else:
            target_dir = Path(self.settings.cache_dir)
            target_dir.mkdir(parents=True, exist_ok=True)
        name = os.path.basename(url.split("?")[0]) or "MathQA.zip"
        target = target_dir / name
        if target.is_file():
            return target
        try:  # atomically: a killed download never leaves a partial ZIP under its name
            with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as resp, \
                    atomic.atomic_open(target, "wb") as out:
                shutil.copyfileobj(resp, out, files.CHUNK)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise self._error(
                f"cannot download {url} ({e}); download it elsewhere and set `path` to the "
                "local ZIP, or use `--recipe sample` (fully offline)") from e
        return target

    def _find_member(self, zip_path: Path) -> str:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            again = " (a cached download: delete it to fetch it again)" if self.url else ""
            raise self._error(f"{zip_path}: not a readable ZIP ({e}){again}; re-download "
                              f"{MATHQA_URL}") from e
        if MATHQA_MEMBER in names:
            return MATHQA_MEMBER
        nested = sorted(n for n in names if n.endswith("/" + MATHQA_MEMBER)
                        and not n.startswith("__MACOSX/"))
        if len(nested) == 1:
            return nested[0]
        raise self._error(f"{zip_path}: ZIP has no {MATHQA_MEMBER} (members: "
                          f"{', '.join(names) or 'none'}); use the MathQA ZIP from {MATHQA_URL}")

    def _shown(self, path: str) -> str:
        """How the ZIP is named in the manifest: a download by its file name."""
        return os.path.basename(path) if self.url else path

    def _planned(self) -> tuple[Path, str]:
        if self.zip_path is None or self.member is None:
            raise RuntimeError("MathQAReader plans in the coordinator (ReadSettings(probe=True))")
        return self.zip_path, self.member

    def partitions(self) -> list[Partition]:
        zip_path, member = self._planned()
        info = files.stat_file(str(zip_path))
        spec = {"zip": info.to_spec(), "member": member}
        return [Partition(0, member, spec, files.spec_identity(spec), info.size)]

    def describe(self) -> dict[str, Any]:
        zip_path, member = self._planned()
        out: dict[str, Any] = {"reader": "mathqa"}
        if self.url:
            out["url"] = self.url
        out.update({
            "files": [{"path": self._shown(str(zip_path)), "bytes": zip_path.stat().st_size}],
            "member": member,
            "synthetic": False,
            "description": ("MathQA (Amini et al., 2019): the train split's problems with their "
                            f"worked rationales, from the original ZIP's {member}"),
        })
        return out

    def format_rules(self) -> list[str]:
        return [
            "document = Problem + blank line + Rationale, no prefixes or labels; options, "
            "correct answer letter and formulas are dropped",
            "Problem and Rationale are whitespace-stripped; ONE enclosing pair of literal double "
            "quotes around the Rationale is removed (MathQA wraps many rationales in quotes; a "
            "constant leading quote would be a surface marker a router could key on)",
            "records without a string Problem or Rationale are counted as bad and skipped",
        ]

    def read(self, partition: Partition) -> Iterator[Document | BadRecord]:
        info = FileInfo.from_spec(partition.spec["zip"])
        files.check_unchanged(info, self._error)
        member = partition.spec["member"]
        where = f"{info.path}:{member}"
        try:
            with zipfile.ZipFile(info.path) as zf, zf.open(member) as raw:
                stream = io.TextIOWrapper(raw, encoding="utf-8")
                chunks = iter(lambda: stream.read(files.CHUNK), "")
                for i, rec in enumerate(iter_json_array(chunks, where)):
                    yield self._document(rec, i, member)
        except (ValueError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
            # UnicodeDecodeError (a ValueError) and CRC failures (BadZipFile) arrive here too.
            raise self._error(f"{where}: cannot read ({e}); re-download {MATHQA_URL}") from e

    @staticmethod
    def _document(rec: Any, i: int, member: str) -> Document | BadRecord:
        where = f"{member} record {i}"
        if not isinstance(rec, dict):
            return BadRecord(f"{where}: a {type(rec).__name__}, not an object")
        problem, rationale = rec.get("Problem"), rec.get("Rationale")
        if not isinstance(problem, str) or not isinstance(rationale, str):
            return BadRecord(f"{where}: needs string fields Problem and Rationale (fields "
                             f"present: {', '.join(rec) or 'none'})")
        text = f"{problem.strip()}\n\n{strip_enclosing_quotes(rationale)}"
        return Document(text, {"file": MATHQA_MEMBER, "index": i})

    def partition_record(self, partition: Partition) -> dict[str, Any]:
        path = partition.spec["zip"]["path"]
        return {"files": [files.file_record(path, self._shown(path))],
                "member": partition.spec["member"]}
