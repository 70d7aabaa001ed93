"""`python -m shards export DIR --format megatron|llmc|nanogpt --out OUT`: data for other trainers.

Documents keep their trailing EOT (id 50256), as in the source dataset and as Megatron's
``preprocess_data.py --append-eod`` writes. Megatron and llm.c get one export per (domain,
split), in a directory per domain; nanoGPT gets one file per split with the domains mixed:

- ``megatron``: Megatron-LM's indexed dataset, ``OUT/<domain>/<domain>_<split>_text_document``
  ``.bin`` + ``.idx`` (the names ``preprocess_data.py --output-prefix <domain>_<split>`` gives),
  one sequence per document, so every document boundary is kept. Pass the prefixes to
  ``--train-data-path`` / ``--valid-data-path``.
- ``llmc``: llm.c's token files, ``OUT/<domain>/<domain>_<train|val>_000000.bin`` (llm.c's
  ``<name>_<split>_NNNNNN.bin``; llm.c calls eval "val"). A split is cut into the fewest files of
  at most ``--shard-tokens`` tokens, all of the same size (within one token), so no short tail
  file trips llm.c's loader, which asserts that every file holds at least B*T*processes+1
  tokens; documents run on into the next file, as in llm.c's own ``fineweb.py``. Glob
  ``OUT/*/*_train_??????.bin`` for llm.c's ``-i`` and ``OUT/*/*_val_??????.bin`` for ``-j``
  (the ``??????`` keeps a domain named like ``a_train_b`` out of the wrong glob).
- ``nanogpt``: ``OUT/train.bin`` and ``OUT/val.bin`` for nanoGPT's ``train.py --dataset=OUT``,
  whole documents of every domain in the proportions of ``--domain-weights`` (default: equal
  token shares, as train/moe.py trains), in a seeded order; see `shards.export_nanogpt`.

The bytes of Megatron's and llm.c's formats are described in `shards.export_formats`.

Splits without tokens get no Megatron or llm.c file (both readers refuse empty files);
export.json lists them.

The export streams the tokens once, one chunk in memory whatever the size, every source byte
checked against the manifest's sha256 and every token id against the vocabulary on the way
(`shards.scan`); Megatron's document boundaries are the EOTs found in that same pass (prep
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
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import shards
from shards import atomic
from shards.console import Out
from shards.export_formats import (
    LAYOUTS,
    LLMC_MAX_FILE_BYTES,
    LLMC_MAX_FILE_TOKENS,
    LLMC_SPLIT_NAME,
    ExportError,
    FileRecord,
    write_llmc,
    write_megatron,
)
from shards.export_nanogpt import LAYOUT as NANOGPT_LAYOUT
from shards.export_nanogpt import WHEN_EXHAUSTED, parse_weights, write_nanogpt
from shards.format import SPLITS, FormatError
from shards.reader import Dataset, Split, SplitNotFoundError

EXPORT_NAME = "export.json"
EXPORT_FORMAT = "moe-shards-export"
EXPORT_VERSION = 1
FORMATS = ("megatron", "llmc", "nanogpt")
KILL_AT_ENV = "SHARDS_EXPORT_TEST_KILL_AT"  # test hook: SIGKILL this process at a named point


@dataclass
class ExportConfig:
    dir: Path = field(metadata={"help": "dataset directory (or its manifest.json)"})
    format: str = field(metadata={"help": "megatron: Megatron-LM indexed dataset (.bin + .idx, "
                                          "one entry per document); llmc: llm.c token files "
                                          "(256 x int32 header + uint16 tokens); nanogpt: "
                                          "nanoGPT's train.bin and val.bin, the domains mixed "
                                          "by --domain-weights",
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
                "llm.c's fineweb shard size; at most 1073741311: llm.c seeks with an int, so a "
                "file stays under 2 GiB)"})
    domain_weights: str | None = field(default=None, metadata={
        "help": "nanogpt only: each domain's share of the tokens of train.bin and val.bin, as "
                "NAME=WEIGHT,... (default: equal shares, as train/moe.py trains; 0 leaves a "
                "domain out)", "type": str, "metavar": "code=1,math=1,prose=1"})
    seed: int = field(default=0, metadata={
        "help": "nanogpt only: seed of the order in which the domains' documents are mixed"})
    when_exhausted: str = field(default="repeat", metadata={
        "help": "nanogpt only: when a domain runs out of documents, repeat it until every "
                "domain was written whole (all data used, as train/moe.py samples), or stop the "
                "file there (no document twice; the larger domains are cut)",
        "choices": WHEN_EXHAUSTED})


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
        if "metavar" in meta:
            kwargs["metavar"] = meta["metavar"]
        if f.default is MISSING:
            kwargs.update(required=True, type=Path if f.type in ("Path", Path) else str)
        elif isinstance(f.default, bool):
            kwargs["action"] = "store_true"
        elif "type" in meta:
            kwargs.update(type=meta["type"], default=f.default)
        elif f.default is None:
            kwargs.update(action="append", default=None)
        else:
            kwargs.update(type=type(f.default), default=f.default)
        p.add_argument(flag, **kwargs)


# --------------------------------------------------------------------------- records


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


class ExportIOError(ExportError):
    """Reading or writing failed (a full disk, a permission); nothing was published."""


def _kill_point(name: str) -> None:
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


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


def _publish(stage: Path, out: Path, replace: bool) -> Path | None:
    """Rename the finished `stage` to `out`, moving an earlier export aside first; returns
    where the earlier export now lies, for the caller to remove."""
    old = out.with_name(f".{out.name}.old{atomic.TMP_MARK}{os.getpid()}")
    moved = False
    try:
        if replace:
            os.rename(out, old)
            moved = True
        elif out.exists():
            out.rmdir()  # empty (checked); if another export filled it meanwhile, this fails
        os.rename(stage, out)
    except BaseException:  # an error or Ctrl-C between the renames: put the earlier one back
        if moved:
            os.rename(old, out)
        raise
    return old if replace else None


def export(cfg: ExportConfig, log: Out | None = None) -> ExportResult:
    """Export the dataset `cfg.dir` as `cfg.format` into `cfg.out`; see the module docstring."""
    t0 = time.perf_counter()
    if cfg.format not in FORMATS:
        raise ExportError(f"--format {cfg.format!r}: choose one of {', '.join(FORMATS)}")
    if cfg.format == "llmc" and not 1 <= cfg.shard_tokens <= LLMC_MAX_FILE_TOKENS:
        raise ExportError(f"--shard-tokens {cfg.shard_tokens}: must be between 1 and "
                          f"{LLMC_MAX_FILE_TOKENS}: llm.c's dataloader.h seeks with an int offset, "
                          f"so a file must stay under 2 GiB ({LLMC_MAX_FILE_BYTES} bytes with "
                          "its 1024-byte header)")
    if cfg.format != "nanogpt" and cfg.domain_weights is not None:
        raise ExportError("--domain-weights: only --format nanogpt mixes domains in one file")
    ds = shards.open(cfg.dir)
    selected = _selected(ds, cfg)
    weights = None
    if cfg.format == "nanogpt":
        weights = parse_weights(cfg.domain_weights, list(dict.fromkeys(s.domain
                                                                       for s in selected)))
    out = Path(os.path.abspath(cfg.out))
    if ds.root.resolve().is_relative_to(out.resolve()):
        raise ExportError(f"--out {cfg.out}: holds the dataset {ds.root}; choose a directory "
                          "outside it")
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
        extra: dict[str, Any] = {}
        if weights is not None:  # one file per split, every domain in it
            splits = list(dict.fromkeys(sp.name for sp in selected))
            written, extra["nanogpt"] = write_nanogpt(ds, stage, splits, weights, cfg.seed,
                                                      cfg.when_exhausted)
            for split, f in written:
                mix = extra["nanogpt"]["domains"][f.path]
                done.append(SplitExport("+".join(mix), split, sum(m["docs"] for m in mix.values()),
                                        f.tokens or 0, [f]))
            selected = []
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
            _kill_point("file")
        manifest = {**_manifest(ds, cfg, done), **extra}
        atomic.write_text(stage / EXPORT_NAME, json.dumps(manifest, indent=2) + "\n")
        _kill_point("manifest")
        old = _publish(stage, out, replace)
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        raise ExportIOError(f"export to {out} failed: {e}; nothing was published ({out} is as "
                            "it was)") from e
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    atomic.fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old)
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
        "layout": {**LAYOUTS, "nanogpt": NANOGPT_LAYOUT}[cfg.format],
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
    if result.manifest["target"] == "nanogpt":
        return [f"nanoGPT: python train.py --dataset={out}"]
    return [f'llm.c: -i "{out}/*/*_train_??????.bin" -j "{out}/*/*_val_??????.bin"']


def run(args: argparse.Namespace) -> int:
    cfg = ExportConfig(**{f.name: getattr(args, f.name) for f in fields(ExportConfig)})
    log = Out()
    try:
        result = export(cfg, log)
    except KeyboardInterrupt:
        print(f"export: interrupted; nothing was published ({cfg.out} is as it was)",
              file=sys.stderr)
        return 130
    except ExportIOError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ExportError, FormatError, SplitNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # after publishing (removing the replaced export): claim nothing more
        print(f"error: {e}", file=sys.stderr)
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
