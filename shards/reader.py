"""Reading the format of `shards.format`: `open` a dataset, its splits, blocks and documents.

``shards.open(path)`` validates the manifest against the files before any token is read:
every path must be relative, inside the dataset directory (no ``..``, no absolute path, no
symlink leading out), and every file must exist with the size the manifest declares.
``verify="ids"`` also reads every shard to check its token ids, ``verify="full"`` hashes every
file as well (shards/check.py; a stamp lets the next open skip unchanged files). Shards are
then mapped once, read-only, as ``np.memmap`` uint16 arrays; ``Split.block(i)`` is a view into
them, never a copy.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import tiktoken

from shards.check import DataCheck, check_files
from shards.format import (
    MANIFEST_NAME,
    TOKEN_BYTES,
    TOKEN_DTYPE,
    FormatError,
    Manifest,
)
from shards.scan import DocInfo, read_doc_index
from shards.tokenizer import EOT_ID, VOCAB_SIZE, load_gpt2


class DatasetError(FormatError):
    """A dataset whose files disagree with its manifest; `problems` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        head = self.problems[0] if len(self.problems) == 1 else (
            f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems))
        super().__init__(head)


class SplitNotFoundError(KeyError):
    """`Dataset.split` for a domain or split the manifest does not have."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


# --------------------------------------------------------------------------- validation


def manifest_path_of(path: str | Path) -> Path:
    """`path` is a dataset directory or its manifest.json; returns the manifest's path."""
    p = Path(path)
    return p / MANIFEST_NAME if p.is_dir() else p


def resolve_member(root: Path, rel: Any, where: str) -> Path:
    """The file a manifest path names, refusing anything that leads outside `root`.

    `where` names the manifest field (e.g. ``domains.code.splits.train.shards[0].path``).
    """
    if not isinstance(rel, str) or not rel:
        raise FormatError(f"{where}: path {rel!r} must be a non-empty string relative to {root}")
    if (PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute()
            or PureWindowsPath(rel).drive or rel.startswith(("/", "\\"))):
        raise FormatError(f"{where}: path {rel!r} is absolute; manifest paths must be relative "
                          f"to the dataset directory {root}")
    if "\\" in rel:
        raise FormatError(f"{where}: path {rel!r} contains a backslash; manifest paths use '/'")
    if ".." in PurePosixPath(rel).parts:
        raise FormatError(f"{where}: path {rel!r} contains '..'; manifest paths must stay inside "
                          f"the dataset directory {root}")
    full = root / rel
    real_root = root.resolve()
    real = full.resolve()
    if not real.is_relative_to(real_root):
        raise FormatError(f"{where}: path {rel!r} resolves to {real}, outside the dataset "
                          f"directory {real_root} (a symlink leads out); copy the file into the "
                          "dataset instead of linking it")
    return full


def _check_file(root: Path, rel: Any, where: str, nbytes: int, kind: str,
                tokens: int | None = None) -> tuple[Path | None, list[str]]:
    """Resolve one declared file and compare its size to the manifest; (path, problems)."""
    try:
        full = resolve_member(root, rel, where)
    except FormatError as e:
        return None, [str(e)]
    if tokens is not None and nbytes != tokens * TOKEN_BYTES:
        return None, [f"{where}: manifest declares {tokens} tokens but {nbytes} bytes for {rel} "
                      f"(a token is {TOKEN_BYTES} bytes); the manifest is inconsistent: re-run prep"]
    if not full.exists():
        return None, [f"{full}: {kind} file missing (declared by {where}); the dataset is "
                      "incomplete: re-copy it or re-run `python -m prep`"]
    if not full.is_file():
        return None, [f"{full}: {kind} is not a regular file (declared by {where})"]
    size = full.stat().st_size
    if tokens is not None and size % TOKEN_BYTES:
        return None, [f"{full}: size {size} bytes is not a multiple of {TOKEN_BYTES} (uint16 "
                      f"tokens): the shard is truncated or corrupt; re-copy it or re-run prep"]
    if size != nbytes:
        what = "truncated" if size < nbytes else "longer than declared"
        return None, [f"{full}: size {size} bytes but the manifest declares {nbytes} bytes: the "
                      f"{kind} is {what}; re-copy the dataset or re-run `python -m prep`"]
    return full, []


def check_layout(root: Path, manifest: Manifest) -> tuple[dict[str, Path], list[str]]:
    """Check every declared file (path safety, existence, size) without reading contents.

    Returns the resolved path of every file that passed (keyed by its manifest path) and the
    list of problems, each naming the file or manifest field and the fix.
    """
    ok: dict[str, Path] = {}
    problems: list[str] = []
    for dname, dom in manifest.domains.items():
        for sname, rec in dom.splits.items():
            base = f"{root / MANIFEST_NAME}: domains.{dname}.splits.{sname}"
            declared = sum(s.tokens for s in rec.shards)
            if declared != rec.tokens:
                problems.append(f"{base}: tokens={rec.tokens} but its shards declare {declared} "
                                "tokens in all; the manifest is inconsistent: re-run prep")
            for i, s in enumerate(rec.shards):
                full, errs = _check_file(root, s.path, f"{base}.shards[{i}].path", s.bytes,
                                         "shard", tokens=s.tokens)
                problems += errs
                if full is not None:
                    ok[s.path] = full
            di = rec.doc_index
            full, errs = _check_file(root, di.path, f"{base}.doc_index.path", di.bytes,
                                     "document index")
            problems += errs
            if full is not None:
                ok[di.path] = full
    return ok, problems


# --------------------------------------------------------------------------- decoding


@functools.cache
def _gpt2() -> tiktoken.Encoding:
    return load_gpt2()


def decode(tokens: np.ndarray | list[int]) -> str:
    """GPT-2 text of `tokens`, EOT tokens stripped. An id outside the vocabulary is never
    decoded: FormatError names it and its position (`Split.document_text` names its file)."""
    ids = np.asarray(tokens, dtype=np.int64)
    bad = np.flatnonzero((ids < 0) | (ids >= VOCAB_SIZE))
    if len(bad):
        raise FormatError(f"token id {int(ids[bad[0]])} at position {int(bad[0])} is not in the "
                          f"GPT-2 vocabulary (ids 0..{VOCAB_SIZE - 1}): it cannot be decoded; "
                          "the tokens are damaged")
    ids = ids[ids != EOT_ID]
    return _gpt2().decode_bytes(ids.tolist()).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- splits


class Split:
    """One (domain, split) token stream: its shards as memmaps, blocks and documents."""

    def __init__(self, dataset: Dataset, domain: str, name: str) -> None:
        self.dataset = dataset
        self.domain = domain
        self.name = name
        self.record = dataset.manifest.domains[domain].splits[name]
        self.block_size = dataset.block_size
        self.num_tokens = int(self.record.tokens)
        self.num_docs = int(self.record.docs)
        self.shards: list[np.memmap | np.ndarray] = [
            np.memmap(dataset.root / s.path, dtype=TOKEN_DTYPE, mode="r") if s.tokens
            else np.zeros(0, dtype=TOKEN_DTYPE)
            for s in self.record.shards
        ]
        self.shard_starts = np.zeros(len(self.shards) + 1, dtype=np.int64)
        np.cumsum([s.tokens for s in self.record.shards], out=self.shard_starts[1:])
        st = dataset.manifest.shard_tokens
        self._uniform = all(s.tokens == st for s in self.record.shards[:-1])
        self._docs: list[DocInfo] | None = None
        self._doc_starts: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"Split({self.domain}/{self.name}: {self.num_docs} docs, {self.num_tokens} "
                f"tokens, {len(self.shards)} shards)")

    @property
    def num_blocks(self) -> int:
        return self.num_tokens // self.block_size

    def _locate(self, pos: int) -> int:
        """The shard holding global token position `pos` (0 <= pos < num_tokens)."""
        if self._uniform:
            return pos // self.dataset.manifest.shard_tokens
        return int(np.searchsorted(self.shard_starts, pos, side="right")) - 1

    def block(self, i: int) -> np.ndarray:
        """Block `i` (`block_size` tokens) as a view into its shard's memmap."""
        if not 0 <= i < self.num_blocks:
            raise IndexError(f"block {i} out of range: {self.domain}/{self.name} has "
                             f"{self.num_blocks} blocks of {self.block_size} tokens")
        return self.tokens(i * self.block_size, (i + 1) * self.block_size)

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the stream: a view inside one shard, else a copy."""
        if not 0 <= start <= stop <= self.num_tokens:
            raise IndexError(f"tokens [{start}, {stop}) out of range: {self.domain}/{self.name} "
                             f"has {self.num_tokens} tokens")
        if start == stop:
            return np.zeros(0, dtype=TOKEN_DTYPE)
        s = self._locate(start)
        base = int(self.shard_starts[s])
        if stop <= self.shard_starts[s + 1]:
            return self.shards[s][start - base:stop - base]
        parts = []
        pos = start
        while pos < stop:
            s = self._locate(pos)
            base = int(self.shard_starts[s])
            end = min(stop, int(self.shard_starts[s + 1]))
            parts.append(self.shards[s][pos - base:end - base])
            pos = end
        return np.concatenate(parts)

    def stream(self) -> np.ndarray:
        """The whole split as one array (a view for a single shard, else a copy)."""
        return self.tokens(0, self.num_tokens)

    # ------------------------------------------------------------------ documents
    def documents(self) -> list[DocInfo]:
        """The document index, read once from the zstd JSON lines."""
        if self._docs is None:
            self._docs = read_doc_index(self.dataset.root / self.record.doc_index.path)
        return self._docs

    @property
    def doc_starts(self) -> np.ndarray:
        """int64 start of each document in the split stream (len = num documents)."""
        if self._doc_starts is None:
            docs = self.documents()
            shard = np.fromiter((d.shard for d in docs), dtype=np.int64, count=len(docs))
            off = np.fromiter((d.offset for d in docs), dtype=np.int64, count=len(docs))
            if len(docs) and (shard.min() < 0 or shard.max() >= len(self.shards)):
                raise FormatError(f"{self.dataset.root / self.record.doc_index.path}: a "
                                  f"document names a shard outside 0..{len(self.shards) - 1}")
            self._doc_starts = self.shard_starts[shard] + off if len(docs) else off
        return self._doc_starts

    def document(self, k: int) -> DocInfo:
        docs = self.documents()
        if not 0 <= k < len(docs):
            raise IndexError(f"document {k} out of range: {self.domain}/{self.name} has "
                             f"{len(docs)} documents")
        return docs[k]

    def document_tokens(self, k: int) -> np.ndarray:
        """Document `k`'s tokens, its EOT included; FormatError when the index places it
        outside the split's tokens (index and shards disagree)."""
        doc = self.document(k)
        start = int(self.doc_starts[k])
        if not 0 <= start <= start + doc.tokens <= self.num_tokens or doc.tokens < 1:
            raise FormatError(
                f"{self.dataset.root / self.record.doc_index.path}: document {k} spans tokens "
                f"[{start}, {start + doc.tokens}) but {self.domain}/{self.name} holds "
                f"{self.num_tokens}: the index and the shards disagree; run `python -m shards "
                "verify`")
        return self.tokens(start, start + doc.tokens)

    def token_problem(self, start: int, tokens: np.ndarray, what: str = "") -> str | None:
        """The problem line for an id >= the vocabulary in `tokens` (the split's tokens from
        `start`): the shard file, the token offset in it and the id; None when all are valid."""
        bad = np.flatnonzero(tokens >= self.dataset.vocab_size)
        if not len(bad):
            return None
        pos = start + int(bad[0])
        s = self._locate(pos)
        return (f"{self.dataset.root / self.record.shards[s].path}: token id {int(tokens[bad[0]])} "
                f"at token offset {pos - int(self.shard_starts[s])}{what} is >= the vocabulary "
                f"size {self.dataset.vocab_size}: the shard is damaged; run `python -m shards "
                "verify` and re-copy the dataset or re-run prep")

    def document_text(self, k: int) -> str:
        """Document `k`'s text; FormatError naming the shard, the offset and the id when a
        token of it is outside the vocabulary (never decoded)."""
        toks = self.document_tokens(k)
        problem = self.token_problem(int(self.doc_starts[k]), toks,
                                     f" (document {k} of {self.domain}/{self.name})")
        if problem:
            raise FormatError(problem)
        return decode(toks)


# --------------------------------------------------------------------------- datasets


class Dataset:
    """A validated dataset directory; see :func:`open`."""

    def __init__(self, root: Path, manifest: Manifest,
                 verification: DataCheck | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self.verification = verification  # what `open` checked (level, files, GB/s, ...)
        self.domains: list[str] = list(manifest.domains)
        self.block_size = int(manifest.block_size)
        self.vocab_size = int(manifest.tokenizer.vocab_size)
        self.eot_id = int(manifest.tokenizer.eot_id)
        self.fingerprint = manifest.fingerprint()
        self._splits = {(d, s): Split(self, d, s)
                        for d in self.domains for s in manifest.domains[d].splits}

    def __repr__(self) -> str:
        return f"Dataset({self.root}, domains={self.domains})"

    def split(self, domain: str, split: str = "train") -> Split:
        try:
            return self._splits[domain, split]
        except KeyError:
            if domain not in self.manifest.domains:
                msg = (f"{self.root}: no domain {domain!r}; the dataset has "
                       f"{', '.join(self.domains) or 'no domains'}")
            else:
                have = ", ".join(self.manifest.domains[domain].splits) or "none"
                msg = f"{self.root}: domain {domain!r} has no split {split!r} (it has: {have})"
            raise SplitNotFoundError(msg) from None

    def __getitem__(self, key: tuple[str, str]) -> Split:
        domain, split = key
        return self.split(domain, split)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._splits

    def splits(self) -> list[Split]:
        return list(self._splits.values())

    def decode(self, tokens: np.ndarray | list[int]) -> str:
        return decode(tokens)


def load_manifest(path: str | Path) -> tuple[Path, Manifest]:
    """(root, manifest) for a dataset directory or its manifest.json; FormatError if unreadable."""
    mpath = manifest_path_of(path)
    manifest = Manifest.load(mpath)
    return mpath.parent, manifest


def open(path: str | Path, verify: str = "sizes", *, stamp: str = "auto",
         workers: int | None = None) -> Dataset:
    """Open a dataset directory (or its manifest.json), checking it before reading tokens.

    `verify`: ``sizes`` (paths and sizes), ``ids`` (also every token id < the vocabulary) or
    ``full`` (also the sha256 of every shard and document index); see shards/check.py. `stamp`
    (auto, dataset, cache or off) says where the record of passed files is kept: auto puts it
    beside the dataset, or in the user's cache when the dataset directory is read-only.
    `workers`: threads reading files (default min(2, CPU count)).

    Raises FormatError (DatasetError listing every problem, one line each) for an unreadable
    manifest, an unknown format version, a field of the wrong type, an unsafe path, a missing
    or wrongly sized file, and at `ids`/`full` a token id out of the vocabulary or a sha256
    that differs from the manifest's. ``Dataset.verification`` tells what was checked.
    """
    t0 = time.perf_counter()
    root, manifest = load_manifest(path)
    files, problems = check_layout(root, manifest)
    if problems:
        raise DatasetError(problems)
    check = check_files(root, manifest, files, verify, stamp=stamp, workers=workers)
    check.seconds = time.perf_counter() - t0
    if check.problems:
        raise DatasetError(check.problems)
    return Dataset(root, manifest, check)
