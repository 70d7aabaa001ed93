"""The on-disk format: the one definition of what `prep` writes and everything else reads.

A dataset directory holds::

    manifest.json                    written last, atomically; the entry point
    <domain>/<split>/shard_00000.bin raw little-endian uint16 GPT-2 token ids
    <domain>/<split>/docs.jsonl.zst  the document index (zstandard-compressed JSON lines)

Each split is one token stream: its documents' tokens, each followed by EOT, concatenated
in order and cut into shards of exactly ``shard_tokens`` tokens (the last may be shorter).
``shard_tokens`` is a multiple of ``block_size``, so block ``i`` never straddles two shards.
A shard opens with ``np.memmap(path, dtype=np.uint16, mode="r")`` (nanoGPT-compatible).

Every line of the document index describes one document, in stream order::

    {"shard": 0, "offset": 1234, "tokens": 87, "chars": 301, "sha256": "<hex>", "source": {...}}

``offset`` is the document's first token within ``shard``; ``tokens`` counts its EOT, and a
document may run on into the following shard(s). ``sha256`` is :func:`content_hash` of the
document text; ``source`` is its provenance (file, repo_name/path, article title, ...).

Each domain's ``counts`` is an open mapping, counter name -> count, in pipeline order: what
prep's steps and commit did to the documents (``docs_seen``, ``docs_filtered``,
``docs_deduplicated``, ``docs_kept``, ...). A name is lowercase ``[a-z][a-z0-9_]*``, or
``<name>:<key>`` for one of a family of keyed counts (``docs_decontaminated:bench/mmlu.jsonl``);
readers show what is there and never need to know a counter in advance.

Format versions: 3 (this one) adds ``hooks``: for each of prep's commit hooks that recorded
something, its parameters and the files it wrote into the dataset (under
``<version dir>/_hooks/<hook>/``, e.g. the near-duplicate examples ``shards sample --near-dups``
prints), each with size and sha256 (`shards verify` checks them). 2 has the open ``counts``
mapping and each domain's ``steps`` and ``commit_hooks``. Versions 1 and 2 are read as well (no
``hooks``; version 1's ``counts`` has a fixed set of 13 names, and it lacks the lists).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "moe-shards"
FORMAT_VERSION = 3
READ_VERSIONS = (1, 2, 3)  # format versions this reader understands
MANIFEST_NAME = "manifest.json"
DOC_INDEX_NAME = "docs.jsonl.zst"
HOOKS_DIR = "_hooks"  # in a version directory: never a domain name (those start alphanumeric)
TOKEN_DTYPE = np.dtype("<u2")
TOKEN_BYTES = TOKEN_DTYPE.itemsize
SPLITS = ("train", "eval")
DOMAIN_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
COUNTER_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}(:[^\x00-\x1f]{1,200})?$")


class FormatError(ValueError):
    """A dataset directory, manifest or shard that does not follow this format."""


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.bin"


def split_dir(domain: str, split: str) -> str:
    """Directory of a (domain, split), relative to the dataset root."""
    return f"{domain}/{split}"


def content_hash(text: str) -> str:
    """The content hash of a document: sha256 of its UTF-8 text, hex.

    Deduplication, the leakage check and `shards verify` all use this one definition.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_domain_name(name: str) -> str:
    if not DOMAIN_NAME_RE.match(name):
        raise FormatError(
            f"domain name {name!r} is not allowed: use lowercase letters, digits, '_' or '-' "
            "(at most 64 characters, starting with a letter or digit)"
        )
    return name


# --------------------------------------------------------------------------- records


@dataclass
class ShardRecord:
    path: str  # relative to the dataset root
    tokens: int
    bytes: int
    sha256: str


@dataclass
class DocIndexRecord:
    path: str  # relative to the dataset root
    docs: int
    bytes: int
    sha256: str


@dataclass
class SplitRecord:
    docs: int
    tokens: int
    blocks: int  # tokens // block_size
    bytes_text: int  # UTF-8 bytes of the documents' text
    shards: list[ShardRecord]
    doc_index: DocIndexRecord

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitRecord:
        d = dict(d)
        d["shards"] = [ShardRecord(**s) for s in d["shards"]]
        d["doc_index"] = DocIndexRecord(**d["doc_index"])
        return cls(**d)


@dataclass
class LeakageRecord:
    """No eval document's content hash may occur among the train documents."""

    eval_hashes_in_train: int
    cross_domain_duplicates: int  # documents whose hash occurs in another domain
    passed: bool


@dataclass
class DomainRecord:
    name: str
    source: dict[str, Any]  # reader, dataset id/config/revision, files with sha256, ...
    format_rules: list[str]  # how records became documents, in words
    shuffle_buffer: int
    size_budget_bytes: int | None
    token_budget: int | None
    budget_reached: bool  # False: the source ran out before the budget
    min_chars: int
    max_chars: int
    eval_fraction: float
    counts: dict[str, int]  # counter name -> count (see the module docstring)
    leakage: LeakageRecord
    splits: dict[str, SplitRecord]
    # How the document order was built (prep.order) and which partitions of the source were
    # read, each with its counts and provenance (files and sha256). Absent from older manifests.
    order: dict[str, Any] = field(default_factory=dict)
    partitions: list[dict[str, Any]] = field(default_factory=list)
    # The worker steps each task ran and the commit hooks, in order (absent before version 2).
    steps: list[str] = field(default_factory=list)
    commit_hooks: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DomainRecord:
        d = dict(d)
        d["counts"] = dict(d["counts"])
        d["leakage"] = LeakageRecord(**d["leakage"])
        d["splits"] = {k: SplitRecord.from_dict(v) for k, v in d["splits"].items()}
        return cls(**d)


@dataclass
class FileRecord:
    path: str  # relative to the dataset root
    bytes: int
    sha256: str


@dataclass
class HookRecord:
    """What one of prep's commit hooks recorded (format version 3): its parameters and the
    files it wrote into the dataset."""

    params: dict[str, Any]
    files: list[FileRecord] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HookRecord:
        return cls(params=dict(d["params"]),
                   files=[FileRecord(**f) for f in d.get("files", [])])


@dataclass
class TokenizerRecord:
    name: str
    vocab_size: int
    eot_id: int
    ranks_sha256: str
    ranks_file: str
    pattern: str


@dataclass
class Manifest:
    format: str
    format_version: int
    recipe: dict[str, Any]  # the resolved recipe: every domain's settings after defaults
    config: dict[str, Any]  # the command line as given
    seed: int
    split_salt: str
    block_size: int
    shard_tokens: int
    tokenizer: TokenizerRecord
    domains: dict[str, DomainRecord]
    leakage_passed: bool
    run: dict[str, Any] = field(default_factory=dict)  # timing, throughput, versions
    hooks: dict[str, HookRecord] = field(default_factory=dict)  # commit hook -> its record (v3)

    # ------------------------------------------------------------------ (de)serialise
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = MANIFEST_NAME) -> Manifest:
        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise FormatError(f"{source}: not a {FORMAT_NAME} manifest (field 'format' is "
                              f"{d.get('format') if isinstance(d, dict) else None!r})")
        version = d.get("format_version")
        if version not in READ_VERSIONS or isinstance(version, bool):
            raise FormatError(
                f"{source}: unknown format_version {version!r}; this reader understands "
                f"versions {', '.join(map(str, READ_VERSIONS))}. Re-run `python -m prep` with "
                "this version, or install the version of this package that wrote it."
            )
        check_manifest_values(d, source)
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        try:
            d["tokenizer"] = TokenizerRecord(**d["tokenizer"])
            d["domains"] = {k: DomainRecord.from_dict(v) for k, v in d["domains"].items()}
            d["hooks"] = {k: HookRecord.from_dict(v) for k, v in d.get("hooks", {}).items()}
        except (TypeError, KeyError, AttributeError, ValueError) as e:
            raise FormatError(f"{source}: malformed manifest record: {e!r}") from e
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise FormatError(f"{path}: no manifest here; is this a `python -m prep` output "
                              "directory?") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FormatError(f"{path}: manifest is not valid JSON: {e}") from e
        return cls.from_dict(raw, source=str(path))

    def fingerprint(self) -> str:
        """A hash of the data itself (every shard's and index's checksum and the tokenizer).

        Two manifests with the same fingerprint describe byte-identical token streams, whatever
        their run timings and whichever directory holds the files; checkpoints record it to refuse resuming on other data.
        """
        h = hashlib.sha256()
        h.update(self.tokenizer.ranks_sha256.encode())
        for name in sorted(self.domains):
            for split in SPLITS:
                rec = self.domains[name].splits[split]
                h.update(f"{name}/{split}/{rec.tokens}/{rec.doc_index.sha256}".encode())
                for i, s in enumerate(rec.shards):  # by position: where the files lie is not data
                    h.update(f"{i}:{s.tokens}:{s.sha256}".encode())
        return h.hexdigest()


# --------------------------------------------------------------------------- value checks

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_VOCAB = 1 << (8 * TOKEN_BYTES)  # token ids are stored as uint16
# The lowest value of an integer field, by (record, field); None: any integer. Every other
# integer field is a count, a size or a position: >= 0.
INT_MIN: dict[tuple[str, str], int | None] = {
    ("Manifest", "seed"): None,
    ("Manifest", "block_size"): 1,
    ("Manifest", "shard_tokens"): 1,
    ("TokenizerRecord", "vocab_size"): 1,
}
FLOAT_RANGE: dict[tuple[str, str], tuple[float, float]] = {
    ("DomainRecord", "eval_fraction"): (0.0, 1.0),
}
SHA256_FIELDS = {("ShardRecord", "sha256"), ("DocIndexRecord", "sha256"),
                 ("TokenizerRecord", "ranks_sha256"), ("FileRecord", "sha256")}
NONEMPTY_FIELDS = {("ShardRecord", "path"), ("DocIndexRecord", "path"), ("FileRecord", "path")}


def check_manifest_values(d: Any, source: str = MANIFEST_NAME) -> None:
    """Check every field of a manifest's JSON against the records' declared types and ranges.

    The types come from the dataclasses' annotations (a field added to a record is checked
    with it); ranges from INT_MIN, FLOAT_RANGE and the cross-field rules below. Raises a
    one-line FormatError naming the field, its value and what was expected.
    """
    _check_record(Manifest, d, "", source)
    if not d["domains"]:
        raise FormatError(f"{source}: field 'domains' must be a non-empty object of domain "
                          "name -> record")
    for name, dom in d["domains"].items():
        if sorted(dom["splits"]) != sorted(SPLITS):
            raise FormatError(f"{source}: domains.{name}.splits must hold exactly "
                              f"{' and '.join(SPLITS)}, found {sorted(dom['splits'])!r}")
        for key in dom["counts"]:
            if not COUNTER_RE.match(key):
                raise _bad(source, f"domains.{name}.counts key", key, "a counter name: "
                           "[a-z][a-z0-9_]*, optionally followed by ':<key>'")
    bs, st, tok = d["block_size"], d["shard_tokens"], d["tokenizer"]
    if st % bs:
        raise FormatError(f"{source}: shard_tokens={st} is not a multiple of block_size={bs}; "
                          "the manifest is damaged: re-run `python -m prep`")
    if tok["vocab_size"] > MAX_VOCAB:
        raise FormatError(f"{source}: tokenizer.vocab_size={tok['vocab_size']} does not fit the "
                          f"uint16 token format (at most {MAX_VOCAB})")
    if not tok["eot_id"] < tok["vocab_size"]:
        raise FormatError(f"{source}: tokenizer.eot_id={tok['eot_id']} must be < "
                          f"tokenizer.vocab_size={tok['vocab_size']}")


def _bad(source: str, where: str, value: Any, expected: str) -> FormatError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return FormatError(f"{source}: field {where} is {shown} ({type(value).__name__}); expected "
                       f"{expected}: the manifest is damaged or was edited; re-run "
                       "`python -m prep` or restore the original manifest.json")


def _check_record(cls: type, d: Any, where: str, source: str) -> None:
    if not isinstance(d, dict):
        raise _bad(source, where.rstrip(".") or "(top level)", d, "a JSON object")
    hints = typing.get_type_hints(cls)
    missing = [f.name for f in fields(cls) if f.name not in d
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        what = f"record {where.rstrip('.')}" if where else "manifest"
        raise FormatError(f"{source}: {what} lacks field(s) {', '.join(missing)}")
    for f in fields(cls):
        if f.name in d:
            _check_value(d[f.name], hints[f.name], where + f.name, (cls.__name__, f.name),
                         source)


def _check_value(v: Any, hint: Any, where: str, key: tuple[str, str], source: str) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return
    if origin in (types.UnionType, typing.Union):
        if v is None and type(None) in args:
            return
        (inner,) = [a for a in args if a is not type(None)]
        _check_value(v, inner, where, key, source)
        return
    if origin is dict or hint is dict:
        if not isinstance(v, dict):
            raise _bad(source, where, v, "a JSON object")
        if args and args[1] is not Any:
            for k, item in v.items():
                _check_value(item, args[1], f"{where}.{k}", key, source)
        return
    if origin is list or hint is list:
        if not isinstance(v, list):
            raise _bad(source, where, v, "a JSON list")
        if args and args[0] is not Any:
            for i, item in enumerate(v):
                _check_value(item, args[0], f"{where}[{i}]", key, source)
        return
    if is_dataclass(hint):
        _check_record(hint, v, where + ".", source)
    elif hint is bool:
        if not isinstance(v, bool):
            raise _bad(source, where, v, "true or false")
    elif hint is int:
        low = INT_MIN.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or (low is not None and v < low):
            raise _bad(source, where, v, "an integer" + (f" >= {low}" if low is not None else ""))
    elif hint is float:
        lo, hi = FLOAT_RANGE.get(key, (-math.inf, math.inf))
        if (not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v)
                or not lo <= v <= hi):
            raise _bad(source, where, v, f"a number in [{lo}, {hi}]" if key in FLOAT_RANGE
                       else "a finite number")
    elif hint is str:
        if not isinstance(v, str):
            raise _bad(source, where, v, "a string")
        if key in SHA256_FIELDS and not SHA256_RE.match(v):
            raise _bad(source, where, v, "a sha256 of 64 lowercase hex digits")
        if key in NONEMPTY_FIELDS and not v:
            raise _bad(source, where, v, "a non-empty path relative to the dataset directory")
