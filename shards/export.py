"""`python -m shards export DIR --format megatron|llmc --out OUT`: the dataset for other trainers.

One export per (domain, split), in a directory per domain; documents keep their trailing EOT
(id 50256), as in the source dataset and as Megatron's ``preprocess_data.py --append-eod`` writes:

- ``megatron``: Megatron-LM's indexed dataset, ``OUT/<domain>/<domain>_<split>_text_document``
  ``.bin`` (the split's uint16 tokens) and ``.idx`` (MMIDIDX: the 9-byte magic, version 1, dtype
  code 8 = uint16, the sequence and document-index counts, then int32 sequence lengths, int64
  byte offsets and the int64 document indices 0..n). One sequence per document, so every
  document boundary is kept. Pass the prefixes to ``--train-data-path`` / ``--valid-data-path``.
- ``llmc``: llm.c's token files, ``OUT/<domain>/<domain>_<train|val>_000000.bin`` (llm.c calls
  eval "val"): a header of 256 little-endian int32 (magic 20240520, version 1, token count, zeros)
  then the uint16 tokens. A split is cut into the fewest files of at most ``--shard-tokens``
  tokens, all of the same size (within one token), so no short tail file trips llm.c's loader,
  which requires every file to hold at least B*T*processes+1 tokens; documents may run on into
  the next file, as in llm.c's own ``fineweb.py``. Glob ``OUT/*/*_train_??????.bin`` for
  llm.c's ``-i`` and ``OUT/*/*_val_??????.bin`` for ``-j``.

Splits without tokens get no file (both readers refuse empty files); export.json lists them.

The export streams the tokens once, one chunk in memory whatever the size, every source byte
checked against the manifest's sha256 and every token id against the vocabulary on the way
(`shards.stream`); Megatron's document boundaries are the EOTs found in that same pass (prep
encodes text with no special token, so EOT ends documents and nothing else; the count is checked
against the manifest, and `shards verify` checks each against the document index).

Everything is written into ``.OUT.tmp-<pid>`` beside OUT; ``export.json`` (the sha256 of every
file, token and document counts, the source dataset's fingerprint) is written last, atomically,
and the directory is then renamed to OUT. A killed or failed export leaves OUT as it was; the
next export removes the temporary directory. (A kill between the two renames of --overwrite
leaves the earlier export in ``.OUT.old.tmp-<pid>`` and no OUT; the next export removes it.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import struct
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

import shards
from shards import atomic
from shards.console import Out
from shards.format import SPLITS, TOKEN_BYTES, FormatError
from shards.reader import Dataset, Split, SplitNotFoundError
from shards.stream import token_chunks

EXPORT_NAME = "export.json"
EXPORT_FORMAT = "moe-shards-export"
EXPORT_VERSION = 1
FORMATS = ("megatron", "llmc")
MMIDIDX_MAGIC = b"MMIDIDX\x00\x00"
MMIDIDX_VERSION = 1
MMIDIDX_UINT16 = 8  # Megatron's DType code of numpy.uint16
LLMC_MAGIC = 20240520
LLMC_VERSION = 1  # uint16 GPT-2 tokens
LLMC_HEADER_INTS = 256
LLMC_MAX_FILE_TOKENS = 2**31 - 1  # the header's int32 token count
LLMC_SPLIT_NAME = {"train": "train", "eval": "val"}
LAYOUTS = {
    "megatron": "Megatron-LM indexed dataset per split: <prefix>.bin holds the uint16 tokens, "
                "<prefix>.idx (MMIDIDX v1, dtype code 8) one sequence per document and the "
                "document indices 0..n",
    "llmc": "llm.c token files per split: 256 x int32 header (magic 20240520, version 1, token "
            "count), then uint16 tokens; equal files of at most shard_tokens tokens",
}
KILL_AT_ENV = "SHARDS_EXPORT_TEST_KILL_AT"  # test hook: SIGKILL this process at a named point


class ExportError(ValueError):
    """Export options or an output directory that cannot be used; the message says the fix."""


@dataclass
class ExportConfig:
    dir: Path = field(metadata={"help": "dataset directory (or its manifest.json)"})
    format: str = field(metadata={"help": "megatron: Megatron-LM indexed dataset (.bin + .idx, "
                                          "one entry per document); llmc: llm.c token files "
                                          "(256 x int32 header + uint16 tokens)",
                                  "choices": FORMATS})
    out: Path = field(metadata={"help": "output directory; must not exist or be empty, unless "
                                        "--overwrite replaces an earlier export"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace an earlier export in --out (a directory holding export.json); a "
                "directory that is not an export is never replaced"})
    domain: list[str] | None = field(default=None, metadata={
        "help": "export this domain (repeat for several; default: every domain)"})
    split: list[str] | None = field(default=None, metadata={
        "help": "export this split (repeat for both; default: train and eval)",
        "choices": SPLITS})
    shard_tokens: int = field(default=100_000_000, metadata={
        "help": "llmc only: at most this many tokens per file; a split is cut into the fewest "
                "files of equal size (within one token) that respect it (default: 100000000, "
                "llm.c's fineweb shard size; at most 2147483647, the header's int32)"})


def configure_parser(p: argparse.ArgumentParser) -> None:
    """The command line of ExportConfig: one flag per field, its default written once there."""
    for f in fields(ExportConfig):
        meta = dict(f.metadata)
        if f.default is MISSING and f.name == "dir":
            p.add_argument(f.name, type=Path, help=meta["help"])
            continue
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"help": meta["help"], "dest": f.name}
        if "choices" in meta:
            kwargs["choices"] = meta["choices"]
        if f.default is MISSING:
            kwargs.update(required=True, type=Path if f.type in ("Path", Path) else str)
        elif isinstance(f.default, bool):
            kwargs["action"] = "store_true"
        elif f.default is None:
            kwargs.update(action="append", default=None)
        else:
            kwargs.update(type=type(f.default), default=f.default)
        p.add_argument(flag, **kwargs)


# --------------------------------------------------------------------------- records


@dataclass
class FileRecord:
    path: str  # relative to the export directory
    bytes: int
    sha256: str
    tokens: int | None = None  # token files; None for a Megatron .idx


@dataclass
class SplitExport:
    domain: str
    split: str
    docs: int
    tokens: int
    files: list[FileRecord]
    megatron_prefix: str | None = None  # relative to the export directory


@dataclass
class ExportResult:
    out: Path
    manifest: dict[str, Any]
    splits: list[SplitExport]
    bytes_written: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes_written / 1e6 / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- writers


def _kill_point(name: str) -> None:
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _hash_file(f: Any, size: int) -> str:
    f.flush()
    f.seek(0)
    h = hashlib.sha256()
    left = size
    while left:
        block = f.read(min(left, 8 << 20))
        if not block:
            raise OSError(f"{f.name}: ended after {size - left} of {size} bytes written")
        h.update(block)
        left -= len(block)
    return h.hexdigest()


def write_megatron(split: Split, stage: Path, prefix: str) -> list[FileRecord]:
    """``prefix.bin`` and ``prefix.idx`` (MMIDIDX) of `split` under `stage`, in one pass.

    Document boundaries are the EOT tokens: the format ends every document with one and nothing
    else is EOT (`shards verify` checks them against the document index). Their count must equal
    the manifest's documents and the split must end with one. The .idx sections are written at
    their offsets as the EOTs are found, so memory holds one chunk's worth of lengths.
    """
    n = split.num_docs
    eot = split.dataset.eot_id
    head = len(MMIDIDX_MAGIC) + struct.calcsize("<QBQQ")
    lengths_at, pointers_at, docs_at = head, head + 4 * n, head + 12 * n
    idx_size = docs_at + 8 * (n + 1)
    h = hashlib.sha256()
    ntok = k = last_end = 0
    with atomic.atomic_open(stage / f"{prefix}.bin") as fb, \
            atomic.atomic_open(stage / f"{prefix}.idx", "w+b") as fi:
        fi.write(MMIDIDX_MAGIC + struct.pack("<QBQQ", MMIDIDX_VERSION, MMIDIDX_UINT16, n, n + 1))
        fi.seek(docs_at)
        fi.write(struct.pack("<q", 0))
        for chunk in token_chunks(split):
            view = memoryview(chunk.tokens).cast("B")
            fb.write(view)
            h.update(view)
            ends = np.flatnonzero(chunk.tokens == eot) + (ntok + 1)  # one past each EOT
            ntok += len(chunk.tokens)
            if not len(ends):
                continue
            if k + len(ends) > n:
                raise FormatError(f"{split.dataset.root}: {split.domain}/{split.name} holds more "
                                  f"EOT tokens than its {n} documents; run `python -m shards "
                                  "verify`")
            lens = np.diff(ends, prepend=last_end)
            if int(lens.max()) > np.iinfo(np.int32).max:
                raise ExportError(f"{split.domain}/{split.name}: a document of "
                                  f"{int(lens.max())} tokens exceeds Megatron's int32 lengths")
            fi.seek(lengths_at + 4 * k)
            fi.write(lens.astype("<i4").tobytes())
            fi.seek(pointers_at + 8 * k)
            fi.write((TOKEN_BYTES * (ends - lens)).astype("<i8").tobytes())
            fi.seek(docs_at + 8 * (k + 1))
            fi.write(np.arange(k + 1, k + len(ends) + 1, dtype="<i8").tobytes())
            k += len(ends)
            last_end = int(ends[-1])
        if k != n or last_end != ntok:
            raise FormatError(f"{split.dataset.root}: {split.domain}/{split.name} holds {k} "
                              f"EOT-terminated documents and {ntok - last_end} tokens after the "
                              f"last EOT; the manifest declares {n} documents, each ending with "
                              "EOT: run `python -m shards verify`")
        files = [FileRecord(f"{prefix}.bin", ntok * TOKEN_BYTES, h.hexdigest(), ntok),
                 FileRecord(f"{prefix}.idx", idx_size, _hash_file(fi, idx_size))]
    _kill_point("file")
    return files


def write_llmc(split: Split, stage: Path, stem: str, max_tokens: int) -> list[FileRecord]:
    """``stem_000000.bin``... of `split` under `stage`: equal files of <= `max_tokens` tokens."""
    total = split.num_tokens
    if total == 0:
        return []
    n_files = -(-total // max_tokens)
    base, extra = divmod(total, n_files)
    chunks = token_chunks(split)
    pending = np.zeros(0, dtype=np.uint16)
    files = []
    for i in range(n_files):
        ntok = base + (i < extra)
        header = np.zeros(LLMC_HEADER_INTS, dtype="<i4")
        header[:3] = (LLMC_MAGIC, LLMC_VERSION, ntok)
        h = hashlib.sha256(header.tobytes())
        rel = f"{stem}_{i:06d}.bin"
        with atomic.atomic_open(stage / rel) as f:
            f.write(header.tobytes())
            need = ntok
            while need:
                if not len(pending):
                    pending = next(chunks).tokens
                view = memoryview(pending[:need]).cast("B")
                f.write(view)
                h.update(view)
                need -= len(view) // TOKEN_BYTES
                pending = pending[len(view) // TOKEN_BYTES:]
        files.append(FileRecord(rel, header.nbytes + ntok * TOKEN_BYTES, h.hexdigest(), ntok))
        _kill_point("file")
    for _ in chunks:  # runs the last shard's sha256 check; no tokens may be left
        raise FormatError(f"{split.domain}/{split.name}: the shards hold more tokens than the "
                          f"manifest's {total}; run `python -m shards verify`")
    return files


# --------------------------------------------------------------------------- the export


def _selected(ds: Dataset, cfg: ExportConfig) -> list[Split]:
    domains = list(dict.fromkeys(cfg.domain or ds.domains))
    splits = list(dict.fromkeys(cfg.split or SPLITS))
    return [ds.split(d, s) for d in domains for s in splits]


def _check_out(out: Path, overwrite: bool) -> bool:
    """Whether `out` holds an export to replace; ExportError if it may not be written."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a directory; choose another --out")
    if not out.exists() or not any(out.iterdir()):
        return False
    if not (out / EXPORT_NAME).is_file():
        raise ExportError(f"{out}: not empty and holds no {EXPORT_NAME}, so it is no export "
                          "of `shards export`; it is never replaced: choose another --out")
    if not overwrite:
        raise ExportError(f"{out}: holds an earlier export; pass --overwrite to replace it, or "
                          "choose another --out")
    return True


def _remove_stale(parent: Path, name: str) -> list[Path]:
    """Temporary directories of killed exports into ``parent/name``."""
    removed = []
    for p in atomic.stale_temps(parent):
        if p.name.startswith((f".{name}{atomic.TMP_MARK}", f".{name}.old{atomic.TMP_MARK}")):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(p)
    return removed


def _publish(stage: Path, out: Path, replace: bool) -> None:
    """Rename the finished `stage` to `out`, moving an earlier export aside first."""
    old = out.with_name(f".{out.name}.old{atomic.TMP_MARK}{os.getpid()}")
    if replace:
        os.rename(out, old)
    elif out.exists():
        out.rmdir()  # empty (checked); another export may have filled it meanwhile: then fails
    try:
        os.rename(stage, out)
    except OSError:
        if replace:
            os.rename(old, out)
        raise
    atomic.fsync_dir(out.parent)
    if replace:
        shutil.rmtree(old)


def export(cfg: ExportConfig, log: Out | None = None) -> ExportResult:
    """Export the dataset `cfg.dir` as `cfg.format` into `cfg.out`; see the module docstring."""
    t0 = time.perf_counter()
    if cfg.format not in FORMATS:
        raise ExportError(f"--format {cfg.format!r}: choose one of {', '.join(FORMATS)}")
    if not 1 <= cfg.shard_tokens <= LLMC_MAX_FILE_TOKENS:
        raise ExportError(f"--shard-tokens {cfg.shard_tokens}: must be between 1 and "
                          f"{LLMC_MAX_FILE_TOKENS} (llm.c's header counts tokens in an int32)")
    ds = shards.open(cfg.dir)
    selected = _selected(ds, cfg)
    out = Path(os.path.abspath(cfg.out))
    replace = _check_out(out, cfg.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    for p in _remove_stale(out.parent, out.name):
        if log:
            log.line(f"removed {p}, left by a killed export")
    stage = atomic.temp_path(out)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        done = []
        for sp in selected:
            (stage / sp.domain).mkdir(exist_ok=True)
            rec = SplitExport(sp.domain, sp.name, sp.num_docs, sp.num_tokens, [])
            if sp.num_tokens and cfg.format == "megatron":
                rec.megatron_prefix = f"{sp.domain}/{sp.domain}_{sp.name}_text_document"
                rec.files = write_megatron(sp, stage, rec.megatron_prefix)
            elif sp.num_tokens:
                stem = f"{sp.domain}/{sp.domain}_{LLMC_SPLIT_NAME[sp.name]}"
                rec.files = write_llmc(sp, stage, stem, cfg.shard_tokens)
            done.append(rec)
        manifest = _manifest(ds, cfg, done)
        atomic.write_text(stage / EXPORT_NAME, json.dumps(manifest, indent=2) + "\n")
        _kill_point("manifest")
        _publish(stage, out, replace)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    nbytes = sum(f.bytes for r in done for f in r.files)
    return ExportResult(out, manifest, done, nbytes, time.perf_counter() - t0)


def _manifest(ds: Dataset, cfg: ExportConfig, done: list[SplitExport]) -> dict[str, Any]:
    tok = ds.manifest.tokenizer
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "target": cfg.format,
        "source": {"path": str(ds.root.resolve()), "fingerprint": ds.fingerprint,
                   "format_version": ds.manifest.format_version},
        "tokenizer": {"name": tok.name, "vocab_size": tok.vocab_size, "eot_id": tok.eot_id},
        "documents": f"every document's tokens end with EOT ({tok.eot_id})",
        "layout": LAYOUTS[cfg.format],
        "shard_tokens": cfg.shard_tokens if cfg.format == "llmc" else None,
        "splits": [asdict(r) for r in done],
    }


# --------------------------------------------------------------------------- command line


def usage_lines(result: ExportResult) -> list[str]:
    """How to hand the export to its trainer."""
    out = result.out
    if result.manifest["target"] == "megatron":
        lines = []
        for split, flag in (("train", "--train-data-path"), ("eval", "--valid-data-path")):
            prefixes = [f"1 {out / r.megatron_prefix}" for r in result.splits
                        if r.split == split and r.megatron_prefix]
            if prefixes:
                lines.append(f"Megatron-LM: {flag} {' '.join(prefixes)}")
        return lines
    return [f'llm.c: -i "{out}/*/*_train_??????.bin" -j "{out}/*/*_val_??????.bin"']


def run(args: argparse.Namespace) -> int:
    cfg = ExportConfig(**{f.name: getattr(args, f.name) for f in fields(ExportConfig)})
    log = Out()
    try:
        result = export(cfg, log)
    except (ExportError, FormatError, SplitNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: export to {cfg.out} failed: {e}; nothing was published ({cfg.out} is as "
              "it was)", file=sys.stderr)
        return 1
    rows = [[r.domain, r.split, r.docs, r.tokens, len(r.files),
             f"{sum(f.bytes for f in r.files) / 1e6:.2f}"] for r in result.splits]
    log.table(f"export {cfg.format} -> {result.out}",
              ["domain", "split", "docs", "tokens", "files", "MB"], rows)
    for r in result.splits:
        if not r.files:
            log.line(f"{r.domain}/{r.split}: no tokens, no file written")
    log.line(f"wrote {result.bytes_written / 1e6:.1f} MB in {result.seconds:.2f} s "
             f"({result.mb_per_s:.0f} MB/s); manifest {result.out / EXPORT_NAME}")
    for line in usage_lines(result):
        log.line(line)
    return 0
