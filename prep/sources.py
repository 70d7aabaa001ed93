"""Source readers: stream documents out of the corpora a recipe names (datatrove-style readers).

Every reader is a :class:`Source`: iterating it yields :class:`Document` (text plus a small
provenance dict) or :class:`BadRecord` (an unreadable record the pipeline counts and skips);
anything that makes the whole source unusable raises :class:`SourceError` with a message naming
the domain, the file/URL/dataset and the fix. ``describe()`` feeds ``domains.<d>.source`` in the
manifest and ``format_rules()`` says in words how records became documents.

Readers, by ``source`` in the recipe:

``hf``        a Hugging Face Hub dataset, streamed (needs the network; checked up front)
``json``      local JSON / JSON Lines files (.gz/.zst too), through datasets' own builder
``parquet``   local Parquet files, through datasets' own builder
``text``      local text files, one row per line, through datasets' own builder
``mathqa``    the MathQA ZIP (local path or URL), ``train.json`` parsed incrementally
``stdlib``    the ``.py`` files of the running Python's standard library
``pydoc``     the documentation prose shipped in ``pydoc_data.topics``
``synthetic-math``  seeded MathQA-style problems (:mod:`prep.synthetic_math`)

Iteration order is deterministic (sorted file lists, fixed row order): one recipe, one stream.
"""

from __future__ import annotations

import ast
import bz2
import glob
import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import re
import shutil
import socket
import sysconfig
import tempfile
import threading
import urllib.error
import urllib.request
import weakref
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from prep.recipe import DomainConfig

# Record fields copied into a document's provenance when a row has them.
# (max_stars_repo_* are starcoderdata's names for the repository and path.)
PROVENANCE_FIELDS = ("repo_name", "path", "title", "url", "id", "max_stars_repo_name",
                     "max_stars_repo_path")

HUB_HOST = "huggingface.co"
HUB_PORT = 443
HUB_TIMEOUT_S = 3.0
URL_TIMEOUT_S = 10.0
MATHQA_URL = "https://math-qa.github.io/math-QA/data/MathQA.zip"
MATHQA_MEMBER = "train.json"
PYDOC_MIN_CHUNK = 500  # characters: pydoc paragraphs merge until a chunk has this many
_OFFLINE_VALUES = {"1", "on", "yes", "true"}
_CHUNK = 1 << 20
BATCH_ROWS = 1000  # rows per Arrow batch read from datasets


@dataclass
class Document:
    text: str  # the formatted document (length filters are applied later by the pipeline)
    source: dict[str, Any] = field(default_factory=dict)  # small JSON-serialisable provenance


@dataclass
class BadRecord:
    reason: str  # names the file/row, what is wrong and the fix


class SourceError(Exception):
    """A source that cannot be read at all; the message names domain, origin and the fix."""


class Source:
    """One reader. Subclasses set ``domain`` and implement the three methods below."""

    domain: str = "?"

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def format_rules(self) -> list[str]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Document | BadRecord]:
        raise NotImplementedError

    def _error(self, message: str) -> SourceError:
        return SourceError(f"[domains.{self.domain}] {message}")


# --------------------------------------------------------------------------- helpers


def file_record(path: str | Path) -> dict[str, Any]:
    """``{"path", "bytes", "sha256"}`` of one file, hashed in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return {"path": str(path), "bytes": os.path.getsize(path), "sha256": h.hexdigest()}


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) else str(value)


def _fields_present(row: dict[str, Any]) -> str:
    # Columnar builders fill fields that other rows have with None: those are not "present".
    names = [k for k, v in row.items() if v is not None]
    return ", ".join(names) if names else "none"


def hub_unreachable_reason(timeout: float = HUB_TIMEOUT_S) -> str | None:
    """Why the Hugging Face Hub cannot be used now, or None when a TCP connect succeeds.

    Offline flags count first; the connect runs in a daemon thread so that a slow DNS lookup
    cannot hold the caller for longer than `timeout` (+0.5 s).
    """
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _OFFLINE_VALUES:
            return f"{var} is set"
    result: dict[str, Any] = {}

    def probe() -> None:
        try:
            socket.create_connection((HUB_HOST, HUB_PORT), timeout=timeout).close()
            result["ok"] = True
        except OSError as e:
            result["error"] = e

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if result.get("ok"):
        return None
    if "error" in result:
        return f"cannot connect to {HUB_HOST}:{HUB_PORT} ({result['error']})"
    return f"no answer from {HUB_HOST}:{HUB_PORT} within {timeout:g} s"


def iter_decompressed(path: str | Path) -> Iterator[bytes]:
    """The bytes of a file, decompressed by suffix (.gz .zst .zstd .bz2 .xz); plain otherwise.

    Raises ValueError on a truncated or corrupt compressed stream (zstandard's streaming
    reader would otherwise just stop early).
    """
    name = str(path).lower()
    if name.endswith((".zst", ".zstd")):
        yield from _iter_zstd(path)
        return
    opener: Any = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(
        os.path.splitext(name)[1], open)
    try:
        with opener(path, "rb") as f:
            while block := f.read(_CHUNK):
                yield block
    except (EOFError, OSError, lzma.LZMAError, zlib.error) as e:
        raise ValueError(f"compressed data is truncated or corrupt ({e})") from e


def _iter_zstd(path: str | Path) -> Iterator[bytes]:
    dctx = zstandard.ZstdDecompressor()
    with open(path, "rb") as f:
        dobj = dctx.decompressobj()
        started = False
        while block := f.read(_CHUNK):
            while block:
                started = True
                try:
                    out = dobj.decompress(block)
                except zstandard.ZstdError as e:
                    raise ValueError(f"zstandard data is corrupt ({e})") from e
                if out:
                    yield out
                if dobj.eof:  # a frame ended: the rest (if any) is the next frame
                    block = dobj.unused_data
                    dobj = dctx.decompressobj()
                    started = False
                else:
                    block = b""
        if started:
            raise ValueError("zstandard data is truncated (the last frame never ends); "
                             "the file was cut short, re-download or re-compress it")


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line bytes without the newline) of a possibly compressed file."""
    rest = b""
    n = 0
    for block in iter_decompressed(path):
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        for line in parts:
            n += 1
            yield n, line
    if rest:
        yield n + 1, rest


def diagnose_file(path: str | Path, builder: str) -> str | None:
    """Find why `builder` could not read `path`: truncation, bad UTF-8, malformed JSON line.

    Returns a message naming the line and the fix, or None when the scan finds nothing.
    """
    jsonl: bool | None = None
    try:
        for n, raw in iter_lines(path):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return (f"line {n}: bytes are not UTF-8 ({e.reason}: byte {raw[e.start]:#04x} at "
                        f"column {e.start + 1}); re-encode the file as UTF-8")
            if builder != "json":
                continue
            stripped = line.strip()
            if jsonl is None and stripped:
                jsonl = not stripped.startswith("[")
            if jsonl and stripped:
                try:
                    json.loads(stripped)
                except json.JSONDecodeError as e:
                    return (f"line {n}: malformed JSON ({e.msg} at column {e.colno}); fix or "
                            "remove that line")
    except ValueError as e:
        return f"{e}"
    except OSError as e:
        return f"cannot read it ({e})"
    return None


# --------------------------------------------------------------------------- rows -> documents


def column_values(table: Any, name: str) -> list[Any]:
    """A pyarrow column as Python values; datasets' ``Json`` extension columns (what the json
    builder makes of a field with mixed types) hold JSON text, decoded here."""
    col = table.column(name)
    values = col.to_pylist()
    kind = getattr(col.type, "extension_name", "") or ""
    if "json" in kind.lower():
        values = [None if v is None else json.loads(v) for v in values]
    return values


class _RowSource(Source):
    """Shared record handling for readers whose rows carry the text in `text_field`.

    Rows stream as Arrow record batches of BATCH_ROWS (``with_format("arrow")``): several
    times faster than datasets' row-by-row dicts, and still bounded in memory.
    """

    text_field: str = "text"

    def _row_items(self, ds: Any, where: Callable[[int], str],
                   base: Callable[[int], dict[str, Any]],
                   fail: Callable[[int, Exception], SourceError]) -> Iterator[Document | BadRecord]:
        """Documents from an IterableDataset; row 0 missing its text field is fatal."""
        try:
            batches = iter(ds.with_format("arrow").iter(batch_size=BATCH_ROWS))
        except Exception as e:
            raise fail(0, e) from e
        start = 0
        while True:
            try:
                table = next(batches)
                names = table.column_names
                texts = (column_values(table, self.text_field) if self.text_field in names
                         else [None] * table.num_rows)
                prov = {k: column_values(table, k) for k in PROVENANCE_FIELDS if k in names}
            except StopIteration:
                return
            except Exception as e:  # bad bytes can surface only when Arrow converts them
                raise fail(start, e) from e
            for j, text in enumerate(texts):
                i = start + j
                if isinstance(text, str):
                    p = base(i)
                    for key, col in prov.items():
                        if col[j] is not None:
                            p[key] = _jsonable(col[j])
                    yield Document(text, p)
                else:
                    try:
                        row = {k: column_values(table.slice(j, 1), k)[0] for k in names}
                    except Exception as e:
                        raise fail(i, e) from e
                    yield self._bad_row(row, where(i), i == 0)
            start += table.num_rows

    def _bad_row(self, row: dict[str, Any], where: str, first: bool) -> BadRecord:
        value = row.get(self.text_field)
        if value is None:
            reason = (f"{where}: no text field {self.text_field!r} (fields present: "
                      f"{_fields_present(row)}); set text_field in the recipe")
        else:
            reason = (f"{where}: text field {self.text_field!r} holds a "
                      f"{type(value).__name__}, not a string; set text_field in the recipe to "
                      "a string field")
        if first:
            raise self._error(f"{reason} (the first record: the whole source would fail)")
        return BadRecord(reason)


class HFSource(_RowSource):
    """A Hub dataset streamed with ``datasets.load_dataset(..., streaming=True)``."""

    def __init__(self, cfg: DomainConfig) -> None:
        self.domain = cfg.name
        self.cfg = cfg
        self.text_field = cfg.text_field
        why = hub_unreachable_reason()
        if why is not None:
            raise self._error(
                f"dataset {cfg.dataset!r} needs the Hugging Face Hub, which is unreachable: "
                f"{why}. Use `--recipe sample` (fully offline), or download the data and point "
                "the domain at local files (source = \"json\" / \"parquet\" / \"text\")."
            )
        self.resolved_revision = self._resolve_revision()

    def _resolve_revision(self) -> str | None:
        try:
            from huggingface_hub import HfApi

            info = HfApi().dataset_info(self.cfg.dataset, revision=self.cfg.revision,
                                        timeout=URL_TIMEOUT_S)
            return info.sha
        except Exception:  # the revision pin is informative; loading reports real failures
            return None

    def describe(self) -> dict[str, Any]:
        c = self.cfg
        out: dict[str, Any] = {"reader": "hf", "dataset": c.dataset}
        for key in ("config", "split", "data_dir", "revision"):
            if getattr(c, key) is not None:
                out[key] = getattr(c, key)
        if self.resolved_revision:
            out["resolved_revision"] = self.resolved_revision
        out["synthetic"] = False
        out["description"] = (f"Hugging Face Hub dataset {c.dataset}"
                              f"{' (' + c.config + ')' if c.config else ''}, split {c.split}, "
                              f"field {c.text_field!r}, streamed in the dataset's row order")
        return out

    def format_rules(self) -> list[str]:
        return [f"each row's {self.text_field!r} field is one document, unchanged",
                "rows whose field is missing or not a string are counted as bad and skipped"]

    def __iter__(self) -> Iterator[Document | BadRecord]:
        import datasets

        c = self.cfg
        name = f"dataset {c.dataset!r}"
        try:
            ds = datasets.load_dataset(c.dataset, c.config, split=c.split, streaming=True,
                                       data_dir=c.data_dir, revision=c.revision)
        except Exception as e:
            raise self._error(f"{name}: loading failed ({type(e).__name__}: {e}); check "
                              "dataset/config/split/data_dir/revision, or use local files") from e

        def fail(i: int, e: Exception) -> SourceError:
            return self._error(f"{name} near row {i}: streaming failed ({type(e).__name__}: "
                               f"{e}); retry, or use local files")

        yield from self._row_items(ds, lambda i: f"{name} row {i}", lambda i: {"row": i}, fail)


class LocalFilesSource(_RowSource):
    """Local json / parquet / text files, each streamed through datasets' own builder."""

    def __init__(self, cfg: DomainConfig) -> None:
        self.domain = cfg.name
        self.builder = cfg.source
        self.text_field = cfg.text_field
        self.patterns = list(cfg.data_files)
        self.files = self._expand(self.patterns)
        self._described: dict[str, Any] | None = None

    def _expand(self, patterns: Iterable[str]) -> list[str]:
        files: list[str] = []
        seen: set[str] = set()
        for pattern in patterns:
            if os.path.isfile(pattern):  # a plain path, even one with glob characters in it
                matches = [pattern]
            else:
                matches = sorted(p for p in glob.glob(pattern, recursive=True)
                                 if os.path.isfile(p))
            if not matches:
                raise self._error(
                    f"data_files pattern {pattern!r} matches no file; fix the path or glob "
                    "(relative paths resolve against the recipe file)")
            for m in matches:
                if m not in seen:
                    seen.add(m)
                    files.append(m)
        return files

    def describe(self) -> dict[str, Any]:
        if self._described is None:
            self._described = {
                "reader": self.builder,
                "data_files": self.patterns,
                "files": [file_record(f) for f in self.files],
                "synthetic": False,
                "description": (f"{len(self.files)} local {self.builder} file(s), field "
                                f"{self.text_field!r}, read in sorted path order through the "
                                f"datasets {self.builder!r} builder"),
            }
        return self._described

    def format_rules(self) -> list[str]:
        unit = "line of each file" if self.builder == "text" else "record"
        return [f"each {unit}'s {self.text_field!r} field is one document, unchanged",
                "records whose field is missing or not a string are counted as bad and skipped "
                "(in a file's first record it is an error: the field name is probably wrong)"]

    def __iter__(self) -> Iterator[Document | BadRecord]:
        for path in self.files:
            yield from self._iter_file(path)

    def _fail(self, path: str, e: BaseException) -> SourceError:
        detail = diagnose_file(path, self.builder)
        if detail is None:
            detail = (f"the datasets {self.builder!r} builder failed "
                      f"({type(e).__name__}: {str(e)[:500]}); check the file is valid "
                      f"{self.builder}")
        return self._error(f"{path}: {detail}")

    def _iter_file(self, path: str) -> Iterator[Document | BadRecord]:
        import datasets

        try:
            ds = datasets.load_dataset(self.builder, data_files=[path], split="train",
                                       streaming=True)
        except Exception as e:  # StopIteration too: the json builder raises it on empty input
            raise self._fail(path, e) from e
        yield from self._row_items(ds, lambda i: f"{path} row {i}",
                                   lambda i: {"file": path, "row": i},
                                   lambda i, e: self._fail(path, e))
        if path.lower().endswith((".zst", ".zstd")):
            # A truncated .zst can end the builder's stream early without an error.
            try:
                for _ in _iter_zstd(path):
                    pass
            except ValueError as e:
                raise self._error(f"{path}: {e}") from e


# --------------------------------------------------------------------------- MathQA


def strip_enclosing_quotes(text: str) -> str:
    """Remove ONE pair of literal double quotes enclosing `text` (after .strip()), then strip."""
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1].strip()
    return text


def iter_json_array(stream: io.TextIOBase, where: str) -> Iterator[Any]:
    """The elements of a JSON array read incrementally from a text stream.

    Each element is decoded with ``json.JSONDecoder.raw_decode`` from a buffer refilled in
    1 MiB chunks, so the whole array never sits in memory at once. Raises ValueError naming
    `where` and the element index on malformed input.
    """
    decoder = json.JSONDecoder()
    buf = ""
    pos = 0
    eof = False

    def fill() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        chunk = stream.read(_CHUNK)
        if not chunk:
            eof = True
            return False
        buf = buf[pos:] + chunk
        pos = 0
        return True

    def peek() -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not fill():
                return ""

    if peek() != "[":
        raise ValueError(f"{where}: not a JSON array (it should start with '[')")
    pos += 1
    index = 0
    if peek() == "]":
        return
    while True:
        if peek() == "":
            raise ValueError(f"{where}: ends inside the array after element {index - 1}; "
                             "the file is truncated")
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as e:
                if not fill():
                    raise ValueError(f"{where}: element {index} is malformed JSON "
                                     f"({e.msg}) or the file is truncated") from e
        # A scalar could stop at the buffer's end; objects/arrays cannot (they need a closer).
        if end == len(buf) and not isinstance(value, dict | list) and fill():
            continue
        pos = end
        yield value
        index += 1
        sep = peek()
        if sep == ",":
            pos += 1
        elif sep == "]":
            return
        else:
            raise ValueError(f"{where}: expected ',' or ']' after element {index - 1}, found "
                             f"{sep!r}" if sep else f"{where}: ends after element {index - 1} "
                             "without ']'; the file is truncated")


class MathQASource(Source):
    """MathQA (Amini et al. 2019) from its ZIP: documents are "problem\\n\\nrationale"."""

    def __init__(self, cfg: DomainConfig, cache_dir: Path | None = None) -> None:
        self.domain = cfg.name
        self.origin = cfg.path or MATHQA_URL
        self.url = self.origin if "://" in self.origin else None
        self._tmp: str | None = None
        self.zip_path = self._fetch(self.url, cache_dir) if self.url else Path(self.origin)
        if not self.zip_path.is_file():
            raise self._error(f"{self.zip_path}: MathQA ZIP not found; set `path` to the ZIP or "
                              f"to {MATHQA_URL}, or use `--recipe sample`")
        self.member = self._find_member()
        self._described: dict[str, Any] | None = None

    def _fetch(self, url: str, cache_dir: Path | None) -> Path:
        if cache_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="mathqa-")
            weakref.finalize(self, shutil.rmtree, self._tmp, True)
            target_dir = Path(self._tmp)
        else:
            target_dir = Path(cache_dir)
            target_dir.mkdir(parents=True, exist_ok=True)
        name = os.path.basename(url.split("?")[0]) or "MathQA.zip"
        target = target_dir / name
        if target.is_file():
            return target
        part = target.with_name(target.name + f".part-{os.getpid()}")
        try:
            with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as resp, \
                    open(part, "wb") as out:
                shutil.copyfileobj(resp, out, _CHUNK)
        except (urllib.error.URLError, OSError, ValueError) as e:
            part.unlink(missing_ok=True)
            raise self._error(
                f"cannot download {url} ({e}); download it elsewhere and set `path` to the "
                "local ZIP, or use `--recipe sample` (fully offline)") from e
        os.replace(part, target)
        return target

    def _find_member(self) -> str:
        try:
            with zipfile.ZipFile(self.zip_path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            again = " (a cached download: delete it to fetch it again)" if self.url else ""
            raise self._error(f"{self.zip_path}: not a readable ZIP ({e}){again}; re-download "
                              f"{MATHQA_URL}") from e
        if MATHQA_MEMBER in names:
            return MATHQA_MEMBER
        nested = sorted(n for n in names if n.endswith("/" + MATHQA_MEMBER)
                        and not n.startswith("__MACOSX/"))
        if len(nested) == 1:
            return nested[0]
        raise self._error(f"{self.zip_path}: ZIP has no {MATHQA_MEMBER} (members: "
                          f"{', '.join(names) or 'none'}); use the MathQA ZIP from {MATHQA_URL}")

    def describe(self) -> dict[str, Any]:
        if self._described is None:
            rec = file_record(self.zip_path)
            if self.url:
                rec["path"] = os.path.basename(str(self.zip_path))
            out: dict[str, Any] = {"reader": "mathqa"}
            if self.url:
                out["url"] = self.url
            out.update({
                "files": [rec],
                "member": self.member,
                "synthetic": False,
                "description": ("MathQA (Amini et al., 2019): the train split's problems with "
                                "their worked rationales, from the original ZIP's "
                                f"{self.member}"),
            })
            self._described = out
        return self._described

    def format_rules(self) -> list[str]:
        return [
            "document = Problem + blank line + Rationale, no prefixes or labels; options, "
            "correct answer letter and formulas are dropped",
            "Problem and Rationale are whitespace-stripped; ONE enclosing pair of literal double "
            "quotes around the Rationale is removed (MathQA wraps many rationales in quotes; a "
            "constant leading quote would be a surface marker a router could key on)",
            "records without a string Problem or Rationale are counted as bad and skipped",
        ]

    def __iter__(self) -> Iterator[Document | BadRecord]:
        where = f"{self.zip_path}:{self.member}"
        try:
            with zipfile.ZipFile(self.zip_path) as zf, zf.open(self.member) as raw:
                stream = io.TextIOWrapper(raw, encoding="utf-8")
                for i, rec in enumerate(iter_json_array(stream, where)):
                    yield self._document(rec, i)
        except (ValueError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
            # UnicodeDecodeError (a ValueError) and CRC failures (BadZipFile) arrive here too.
            raise self._error(f"{where}: cannot read ({e}); re-download {MATHQA_URL}") from e

    def _document(self, rec: Any, i: int) -> Document | BadRecord:
        where = f"{self.member} record {i}"
        if not isinstance(rec, dict):
            return BadRecord(f"{where}: a {type(rec).__name__}, not an object")
        problem, rationale = rec.get("Problem"), rec.get("Rationale")
        if not isinstance(problem, str) or not isinstance(rationale, str):
            return BadRecord(f"{where}: needs string fields Problem and Rationale (fields "
                             f"present: {', '.join(rec) or 'none'})")
        text = f"{problem.strip()}\n\n{strip_enclosing_quotes(rationale)}"
        return Document(text, {"file": MATHQA_MEMBER, "index": i})


# --------------------------------------------------------------------------- stdlib code

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


class StdlibSource(Source):
    """The running Python's standard library source, one document per .py file."""

    def __init__(self, cfg: DomainConfig) -> None:
        self.domain = cfg.name
        self.root = Path(cfg.path or sysconfig.get_paths()["stdlib"])
        if not self.root.is_dir():
            raise self._error(f"{self.root}: standard library directory not found; set `path` "
                              "to a directory of .py files")
        self.files = stdlib_files(self.root)
        if not self.files:
            raise self._error(f"{self.root}: no .py files found; set `path` to the standard "
                              "library directory")
        self._described: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        if self._described is None:
            tree = hashlib.sha256()
            total = 0
            for rel in self.files:
                rec = file_record(self.root / rel)
                total += rec["bytes"]
                tree.update(f"{rel}\0{rec['sha256']}\n".encode())
            self._described = {
                "reader": "stdlib",
                "root": str(self.root),
                "python": platform.python_version(),
                "files_count": len(self.files),
                "files_bytes": total,
                "tree_sha256": tree.hexdigest(),
                "excluded_dirs": sorted(STDLIB_EXCLUDED_DIRS) + ["*_test", "*_tests"],
                "synthetic": False,
                "description": (f"the .py files of the Python {platform.python_version()} "
                                "standard library, in sorted path order (tree_sha256: sha256 "
                                "over 'path\\0sha256\\n' lines)"),
            }
        return self._described

    def format_rules(self) -> list[str]:
        return ["each .py file (UTF-8) is one document, unchanged",
                "excluded directories: site-packages, __pycache__, pydoc_data (prose, used by "
                "the pydoc reader), test/tests/idle_test and *_test dirs (deliberately broken "
                "files)",
                "files that are not valid UTF-8 are counted as bad and skipped"]

    def __iter__(self) -> Iterator[Document | BadRecord]:
        for rel in self.files:
            try:
                raw = (self.root / rel).read_bytes()
            except OSError as e:
                yield BadRecord(f"{self.root / rel}: cannot read ({e})")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadRecord(f"{self.root / rel}: not UTF-8 ({e.reason} at byte {e.start})")
                continue
            yield Document(text, {"path": rel})


# --------------------------------------------------------------------------- pydoc prose


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


class PydocSource(Source):
    """English prose: the language reference and library topics of pydoc_data.topics."""

    def __init__(self, cfg: DomainConfig) -> None:
        self.domain = cfg.name
        try:
            self.topics, self.file = load_pydoc_topics(cfg.path)
        except (OSError, SyntaxError, ValueError, ImportError) as e:
            raise self._error(f"{cfg.path or 'pydoc_data.topics'}: cannot load the pydoc topics "
                              f"({e}); set `path` to a pydoc_data/topics.py file") from e
        self._described: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        if self._described is None:
            files = [file_record(self.file)] if self.file.is_file() else []
            self._described = {
                "reader": "pydoc",
                "python": platform.python_version(),
                "files": files,
                "topics": len(self.topics),
                "synthetic": False,
                "description": ("the Python documentation prose shipped with Python "
                                "(pydoc_data.topics: language reference and library topics)"),
            }
        return self._described

    def format_rules(self) -> list[str]:
        return [
            "topics in sorted key order; each topic split at blank lines into paragraphs",
            f"consecutive paragraphs merge until a chunk has >= {PYDOC_MIN_CHUNK} characters "
            "(a shorter tail merges into the previous chunk); each chunk, whitespace-stripped, "
            "is one document",
        ]

    def __iter__(self) -> Iterator[Document | BadRecord]:
        for key in sorted(self.topics):
            for part, chunk in enumerate(chunk_paragraphs(self.topics[key])):
                yield Document(chunk, {"topic": key, "part": part})


# --------------------------------------------------------------------------- factory


def open_source(cfg: DomainConfig, *, cache_dir: Path | None = None) -> Source:
    """The reader for one domain (wrapped in WikiText article grouping when cfg.group says so).

    Fails fast (SourceError) on what can be checked before reading: missing files, an
    unreachable Hub or URL, a corrupt ZIP.
    """
    source: Source
    if cfg.source == "hf":
        source = HFSource(cfg)
    elif cfg.source in ("json", "parquet", "text"):
        source = LocalFilesSource(cfg)
    elif cfg.source == "mathqa":
        source = MathQASource(cfg, cache_dir=cache_dir)
    elif cfg.source == "stdlib":
        source = StdlibSource(cfg)
    elif cfg.source == "pydoc":
        source = PydocSource(cfg)
    elif cfg.source == "synthetic-math":
        from prep.synthetic_math import SyntheticMathSource

        source = SyntheticMathSource(cfg, seed=cfg.synthetic_seed)
    else:
        raise SourceError(f"[domains.{cfg.name}] unknown source {cfg.source!r}")
    if cfg.group == "wikitext":
        from prep.wikitext import WikiTextArticles

        source = WikiTextArticles(source)
    elif cfg.group is not None:
        raise SourceError(f"[domains.{cfg.name}] unknown group {cfg.group!r}; one of: wikitext")
    return source


__all__ = [
    "BadRecord", "Document", "HFSource", "LocalFilesSource", "MathQASource", "PydocSource",
    "Source", "SourceError", "StdlibSource", "chunk_paragraphs", "diagnose_file",
    "hub_unreachable_reason", "iter_json_array", "open_source", "strip_enclosing_quotes",
]
