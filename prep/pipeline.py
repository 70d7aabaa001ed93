"""The prep run: for each domain, stream -> filter -> shuffle -> budget -> dedup -> split ->
tokenize (worker processes) -> write shards; then the leakage check and the manifest, last.

Only the parent process reads sources and writes files. Worker processes tokenize fixed-size
batches, whose results are consumed in submission order, so the output is byte-identical for
any number of workers.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prep.progress import Reporter
from prep.recipe import DomainConfig, Recipe, load_recipe
from prep.shuffle import ShuffleBuffer
from prep.sources import BadRecord, Document, Source, open_source
from prep.split import EVAL, TRAIN, assign_split
from prep.tokenize import encode_batch, init_worker
from shards.format import (
    DOMAIN_NAME_RE,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    SPLITS,
    CountsRecord,
    DomainRecord,
    LeakageRecord,
    Manifest,
)
from shards.tokenizer import load_gpt2, tokenizer_record
from shards.writer import DocEntry, SplitWriter, write_manifest

TMP_PREFIX = ".prep-tmp-"
BATCH_DOCS = 256  # documents per tokenization task: fixed, so output never depends on workers
BATCH_BYTES = 1 << 20  # ... or this many bytes of text, whichever comes first
MIN_BAD_FOR_EARLY_STOP = 100  # judge the bad-record fraction mid-stream only after this many
# Batches read ahead of the writer. Fixed (not a function of --workers) so that a token budget
# stops the reader at the same record, and the manifest's counts match, for any worker count.
MAX_PENDING = 16


class PrepError(RuntimeError):
    """A run that cannot finish; the message says why and what to do."""


@dataclass
class PrepConfig:
    """The command line, resolved (None = take the recipe's value or the default)."""

    recipe: str = "sample"
    out: str = "shards_out"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    size_mb: float | None = None
    size_tokens: int | None = None
    block_size: int | None = None
    seed: int | None = None
    eval_fraction: float | None = None
    min_eval_docs: int = 20
    shuffle_buffer: int | None = None
    shard_tokens: int = 1 << 27
    overwrite: bool = False
    tokenizer_file: str | None = None
    max_bad_fraction: float = 0.001
    cache_dir: str | None = None


# ------------------------------------------------------------------------------ the run


def run(cfg: PrepConfig, reporter: Reporter) -> Manifest:
    t0 = time.perf_counter()
    recipe = load_recipe(cfg.recipe)
    seed = cfg.seed if cfg.seed is not None else recipe.seed
    block_size = cfg.block_size if cfg.block_size is not None else recipe.block_size
    if cfg.workers < 1:
        raise PrepError(f"--workers must be >= 1, got {cfg.workers}")
    if block_size < 1 or cfg.shard_tokens % block_size:
        raise PrepError(f"--shard-tokens {cfg.shard_tokens} must be a multiple of the block size "
                        f"{block_size}, so that no block straddles two shards")
    domains = [_resolve_domain(d, cfg) for d in recipe.domains]
    out = Path(cfg.out)
    _prepare_out(out, [d.name for d in domains], cfg.overwrite)
    tok = tokenizer_record(cfg.tokenizer_file)
    load_gpt2(cfg.tokenizer_file)  # fail here, in the parent, on a bad ranks file
    # Open every source first: an unreachable Hub or URL fails now, not after hours of work.
    cache = Path(cfg.cache_dir) if cfg.cache_dir else None
    sources = {d.name: open_source(d, cache_dir=cache) for d in domains}
    work = out / f"{TMP_PREFIX}{os.getpid()}"
    work.mkdir()
    records: dict[str, DomainRecord] = {}
    hashes: dict[str, dict[str, set[bytes]]] = {}
    earlier: dict[str, set[bytes]] = {TRAIN: set(), EVAL: set()}  # earlier domains' hashes
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    try:
        pool = ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=init_worker,
                                   initargs=(cfg.tokenizer_file,))
        try:
            for dcfg in domains:
                builder = DomainBuilder(dcfg, sources[dcfg.name], recipe, cfg, seed, block_size,
                                        work, pool, reporter, earlier)
                records[dcfg.name], hashes[dcfg.name] = builder.build()
                for split in SPLITS:
                    earlier[split] |= hashes[dcfg.name][split]
        finally:
            # on Ctrl-C or an error, drop queued batches instead of tokenizing them first
            pool.shutdown(wait=True, cancel_futures=True)
        leakage_ok = _check_leakage(records, hashes, all_train=earlier[TRAIN])
        elapsed = time.perf_counter() - t0
        total_tokens = sum(s.tokens for r in records.values() for s in r.splits.values())
        total_bytes = sum(r.counts.bytes_kept for r in records.values())
        manifest = Manifest(
            format=FORMAT_NAME,
            format_version=FORMAT_VERSION,
            recipe={**recipe.to_dict(), "domains": [asdict(d) for d in domains],
                    "seed": seed, "block_size": block_size},
            config=asdict(cfg),
            seed=seed,
            split_salt=recipe.split_salt,
            block_size=block_size,
            shard_tokens=cfg.shard_tokens,
            tokenizer=tok,
            domains=records,
            leakage_passed=leakage_ok,
            run={
                "seconds": round(elapsed, 3),
                "tokens": total_tokens,
                "tokens_per_s": round(total_tokens / elapsed, 1),
                "mb_per_s": round(total_bytes / 1e6 / elapsed, 3),
                "workers": cfg.workers,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
        )
        if not leakage_ok:
            raise PrepError("leakage check failed: an eval document's content hash occurs in "
                            "train; this is a bug in prep, please report it")
        _publish(work, out, manifest)
        return manifest
    except BrokenProcessPool as e:
        raise PrepError("a tokenizer worker process died (killed, or out of memory); nothing "
                        "was published, re-run when the cause is fixed") from e
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise PrepError(f"disk full while writing under {out}: nothing was published; free "
                            "space or choose another --out") from e
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _resolve_domain(d: DomainConfig, cfg: PrepConfig) -> DomainConfig:
    if cfg.size_mb is not None:
        d.size_mb = cfg.size_mb
    if cfg.size_tokens is not None:
        d.size_tokens = cfg.size_tokens
    if cfg.shuffle_buffer is not None:
        d.shuffle_buffer = cfg.shuffle_buffer
    if cfg.eval_fraction is not None:
        d.eval_fraction = cfg.eval_fraction
    return d.resolved(size_mb=10.0, eval_fraction=0.05)


# ------------------------------------------------------------------------------ one domain


@dataclass
class _Pending:
    future: Future
    docs: list[tuple[Document, str, bytes, int]]  # (doc, split, sha256 digest, nbytes)


class DomainBuilder:
    """Builds one domain: reads its source in this process, tokenizes in the pool."""

    def __init__(self, dcfg: DomainConfig, source: Source, recipe: Recipe, cfg: PrepConfig,
                 seed: int, block_size: int, work: Path, pool: ProcessPoolExecutor,
                 reporter: Reporter, earlier: dict[str, set[bytes]]) -> None:
        self.d, self.source, self.recipe, self.cfg = dcfg, source, recipe, cfg
        self.earlier = earlier  # content hashes kept by earlier domains, per split
        self.seed, self.block_size, self.work = seed, block_size, work
        self.pool, self.reporter = pool, reporter
        self.counts = CountsRecord()
        self.tokens = 0
        self.first_bad: list[str] = []
        self.bytes_budget_hit = False

    def build(self) -> tuple[DomainRecord, dict[str, set[bytes]]]:
        d, source = self.d, self.source
        budget_bytes = int(d.size_mb * 1e6) if d.size_mb is not None else None
        self.reporter.start_domain(d.name, budget_bytes)
        writers = {s: SplitWriter(self.work, d.name, s, self.cfg.shard_tokens, self.block_size)
                   for s in SPLITS}
        hashes: dict[str, set[bytes]] = {s: set() for s in SPLITS}
        pending: deque[_Pending] = deque()
        budget_reached = False
        try:
            for batch in self._batches(source, budget_bytes):
                pending.append(_Pending(self.pool.submit(encode_batch, [b[0].text for b in batch]),
                                        batch))
                while len(pending) > MAX_PENDING:
                    if self._consume(pending.popleft(), writers, hashes):
                        budget_reached = True
                        break
                if budget_reached:
                    break
            while pending and not budget_reached:
                budget_reached = self._consume(pending.popleft(), writers, hashes)
            budget_reached = budget_reached or self.bytes_budget_hit
            for p in pending:
                p.future.cancel()
            splits = {s: w.close() for s, w in writers.items()}
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        self._check_bad(final=True)
        if splits[EVAL].docs < self.cfg.min_eval_docs:
            raise PrepError(
                f"domain {d.name}: only {splits[EVAL].docs} eval documents, fewer than "
                f"--min-eval-docs {self.cfg.min_eval_docs} (eval_fraction {d.eval_fraction}, "
                f"{splits[TRAIN].docs + splits[EVAL].docs} documents kept); raise the size budget "
                "(--size-mb), raise --eval-fraction, or lower --min-eval-docs"
            )
        record = DomainRecord(
            name=d.name,
            source=source.describe(),
            format_rules=source.format_rules(),
            shuffle_buffer=d.shuffle_buffer,
            size_budget_bytes=budget_bytes,
            token_budget=d.size_tokens,
            budget_reached=budget_reached,
            min_chars=d.min_chars,
            max_chars=d.max_chars,
            eval_fraction=d.eval_fraction,
            counts=self.counts,
            leakage=LeakageRecord(0, 0, False),  # set by _check_leakage over all domains
            splits=splits,
        )
        self.reporter.end_domain(d.name, record)
        return record, hashes

    # ---------------------------------------------------------------- reading side
    def _documents(self, source: Any) -> Iterator[Document]:
        """Count and drop bad, empty, too short and too long records."""
        c, d = self.counts, self.d
        for rec in source:
            c.docs_seen += 1
            if isinstance(rec, BadRecord):
                c.docs_bad += 1
                if len(self.first_bad) < 5:
                    self.first_bad.append(rec.reason)
                self._check_bad(final=False)
                continue
            n = len(rec.text)
            try:
                c.bytes_seen += len(rec.text.encode("utf-8"))
            except UnicodeEncodeError as e:  # e.g. a lone surrogate from a "\ud800" JSON escape
                c.docs_bad += 1
                if len(self.first_bad) < 5:
                    self.first_bad.append(f"{rec.source}: text is not encodable as UTF-8 ({e})")
                self._check_bad(final=False)
                continue
            if not rec.text.strip():
                c.docs_empty += 1
            elif n < d.min_chars:
                c.docs_too_short += 1
            elif n > d.max_chars:
                c.docs_too_long += 1
            else:
                yield rec
                continue
            c.docs_filtered += 1

    def _batches(self, source: Any, budget_bytes: int | None
                 ) -> Iterator[list[tuple[Document, str, bytes, int]]]:
        """Shuffle, dedup, split and cut to the byte budget; yield fixed-size batches."""
        d = self.d
        shuffle = ShuffleBuffer(d.shuffle_buffer, seed=f"{self.seed}:{d.name}:shuffle")
        seen: set[bytes] = set()
        batch: list[tuple[Document, str, bytes, int]] = []
        batch_bytes = queued = 0
        for doc in shuffle(self._documents(source)):
            raw = doc.text.encode("utf-8")
            digest = hashlib.sha256(raw).digest()
            if digest in seen:
                self.counts.docs_deduplicated += 1
                continue
            seen.add(digest)
            split = assign_split(raw, self.recipe.split_salt, d.eval_fraction)
            if digest in self.earlier[EVAL if split == TRAIN else TRAIN]:
                # An earlier domain with another eval_fraction put this text on the other side:
                # keeping it here would leak eval text into train.
                self.counts.docs_split_conflicts += 1
                continue
            batch.append((doc, split, digest, len(raw)))
            batch_bytes += len(raw)
            queued += len(raw)
            last = budget_bytes is not None and queued >= budget_bytes
            if last or len(batch) >= BATCH_DOCS or batch_bytes >= BATCH_BYTES:
                yield batch
                batch, batch_bytes = [], 0
            if last:
                self.bytes_budget_hit = True
                return
        if batch:
            yield batch

    def _check_bad(self, *, final: bool) -> None:
        c = self.counts
        if c.docs_bad == 0 or (not final and c.docs_bad < MIN_BAD_FOR_EARLY_STOP):
            return
        frac = c.docs_bad / max(1, c.docs_seen)
        if frac > self.cfg.max_bad_fraction:
            examples = "\n  ".join(self.first_bad)
            raise PrepError(
                f"domain {self.d.name}: {c.docs_bad} of {c.docs_seen} records were bad "
                f"({frac:.2%} > --max-bad-fraction {self.cfg.max_bad_fraction:g}); first ones:\n"
                f"  {examples}\nfix the source or the recipe (text_field?), or raise "
                "--max-bad-fraction to skip them"
            )

    # ---------------------------------------------------------------- writing side
    def _consume(self, p: _Pending, writers: dict[str, SplitWriter],
                 hashes: dict[str, set[bytes]]) -> bool:
        """Write one tokenized batch in order; True once the token budget is reached."""
        tokens, lengths = p.future.result()
        ends = np.cumsum(lengths)
        starts = ends - lengths
        budget = self.d.size_tokens
        take = len(p.docs)
        if budget is not None:
            over = np.nonzero(self.tokens + ends >= budget)[0]
            if len(over):
                take = int(over[0]) + 1
        for split in SPLITS:
            idx = [i for i in range(take) if p.docs[i][1] == split]
            if not idx:
                continue
            entries = []
            for i in idx:
                doc, _, digest, nbytes = p.docs[i]
                entries.append(DocEntry(tokens=int(lengths[i]), chars=len(doc.text), nbytes=nbytes,
                                        sha256=digest.hex(), source=doc.source))
                hashes[split].add(digest)
            chunk = np.concatenate([tokens[starts[i]:ends[i]] for i in idx])
            writers[split].add(chunk, entries)
        kept_bytes = sum(p.docs[i][3] for i in range(take))
        kept_tokens = int(ends[take - 1]) if take else 0
        self.counts.docs_kept += take
        self.counts.bytes_kept += kept_bytes
        self.tokens += kept_tokens
        self.reporter.update(self.d.name, docs=self.counts.docs_kept,
                             nbytes=self.counts.bytes_kept, tokens=self.tokens)
        return budget is not None and self.tokens >= budget


# ------------------------------------------------------------------------------ checks, output


def _check_leakage(records: dict[str, DomainRecord], hashes: dict[str, dict[str, set[bytes]]],
                   *, all_train: set[bytes]) -> bool:
    """No eval hash in any train split (any domain); count documents shared across domains."""
    ok = True
    for name, rec in records.items():
        mine = hashes[name][TRAIN] | hashes[name][EVAL]
        others: set[bytes] = set()
        for other, h in hashes.items():
            if other != name:
                others |= h[TRAIN] | h[EVAL]
        leaked = len(hashes[name][EVAL] & all_train)
        rec.leakage = LeakageRecord(eval_hashes_in_train=leaked,
                                    cross_domain_duplicates=len(mine & others),
                                    passed=leaked == 0)
        ok = ok and leaked == 0
    return ok


def _prepare_out(out: Path, domains: list[str], overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PrepError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{TMP_PREFIX}*"):
        pid = stale.name[len(TMP_PREFIX):]
        if not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    if (out / MANIFEST_NAME).exists() and not overwrite:
        raise PrepError(f"{out / MANIFEST_NAME} exists: {out} holds a finished dataset. Pass "
                        "--overwrite to replace it, or choose another --out")
    clash = [d for d in domains if (out / d).exists()]
    if clash and not overwrite:
        raise PrepError(f"{out} already holds {', '.join(clash)} (no manifest: a dataset from "
                        "an unfinished or foreign run?); pass --overwrite to replace them, or "
                        "choose another --out")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _publish(work: Path, out: Path, manifest: Manifest) -> None:
    """Move the finished domains into place, then write the manifest, last and atomically."""
    old = out / MANIFEST_NAME
    if old.exists():  # --overwrite
        stale = [name for name in _manifest_domains(old)
                 if name not in manifest.domains and DOMAIN_NAME_RE.match(name)]
        old.unlink()  # never leave a manifest describing half-replaced data
        for name in stale:  # the old dataset's domains that the new one lacks
            shutil.rmtree(out / name, ignore_errors=True)
    for name in manifest.domains:
        dest = out / name
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(work / name, dest)
    write_manifest(out, manifest)


def _manifest_domains(path: Path) -> list[str]:
    """Domain names of an existing manifest, or none if it cannot be read."""
    try:
        domains = json.loads(path.read_text(encoding="utf-8")).get("domains", {})
    except (OSError, ValueError, AttributeError):
        return []
    return [d for d in domains if isinstance(d, str)] if isinstance(domains, dict) else []
