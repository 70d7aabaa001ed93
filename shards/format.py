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
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "moe-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DOC_INDEX_NAME = "docs.jsonl.zst"
TOKEN_DTYPE = np.dtype("<u2")
TOKEN_BYTES = TOKEN_DTYPE.itemsize
SPLITS = ("train", "eval")
DOMAIN_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


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
class CountsRecord:
    """What happened to the documents of one domain, in pipeline order."""

    docs_seen: int = 0  # records read from the source (after grouping)
    bytes_seen: int = 0  # UTF-8 bytes of formatted documents read
    docs_bad: int = 0  # records skipped as unreadable (missing text field, undecodable file)
    docs_empty: int = 0  # empty after formatting
    docs_too_short: int = 0  # fewer than min_chars characters
    docs_too_long: int = 0  # more than max_chars characters
    docs_filtered: int = 0  # empty + too short + too long
    docs_deduplicated: int = 0  # exact duplicates of a kept document (content hash), any domain
    docs_split_conflicts: int = 0  # kept by an earlier domain on the other side of the split;
    #                                0 since prep removes duplicates across domains (see below)
    docs_kept: int = 0  # written to a split
    bytes_kept: int = 0  # UTF-8 bytes of the kept documents
    docs_deduplicated_across_domains: int = 0  # of docs_deduplicated: kept by an earlier domain
    docs_over_budget: int = 0  # read and passed the filters, but the budget was already reached


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
    counts: CountsRecord
    leakage: LeakageRecord
    splits: dict[str, SplitRecord]
    # How the document order was built (prep.order) and which partitions of the source were
    # read, each with its counts and provenance (files and sha256). Absent from older manifests.
    order: dict[str, Any] = field(default_factory=dict)
    partitions: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DomainRecord:
        d = dict(d)
        d["counts"] = CountsRecord(**d["counts"])
        d["leakage"] = LeakageRecord(**d["leakage"])
        d["splits"] = {k: SplitRecord.from_dict(v) for k, v in d["splits"].items()}
        return cls(**d)


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

    # ------------------------------------------------------------------ (de)serialise
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = MANIFEST_NAME) -> Manifest:
        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise FormatError(f"{source}: not a {FORMAT_NAME} manifest (field 'format' is "
                              f"{d.get('format') if isinstance(d, dict) else None!r})")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise FormatError(
                f"{source}: unknown format_version {version!r}; this reader understands "
                f"version {FORMAT_VERSION}. Re-run `python -m prep` with this version, or "
                "install the version of this package that wrote it."
            )
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in names if n not in d and n != "run")
        if missing:
            raise FormatError(f"{source}: manifest lacks field(s) {', '.join(missing)}")
        d = {k: v for k, v in d.items() if k in names}
        if not isinstance(d["domains"], dict) or not d["domains"]:
            raise FormatError(f"{source}: field 'domains' must be a non-empty object of "
                              "domain name -> record")
        for name, dom in d["domains"].items():
            splits = dom.get("splits") if isinstance(dom, dict) else None
            if not isinstance(splits, dict) or sorted(splits) != sorted(SPLITS):
                found = sorted(splits) if isinstance(splits, dict) else splits
                raise FormatError(f"{source}: domains.{name}.splits must hold exactly "
                                  f"{' and '.join(SPLITS)}, found {found!r}")
        try:
            d["tokenizer"] = TokenizerRecord(**d["tokenizer"])
            d["domains"] = {k: DomainRecord.from_dict(v) for k, v in d["domains"].items()}
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
