"""nanoGPT's layout for `shards export --format nanogpt`: ``train.bin`` and ``val.bin``, domains mixed.

nanoGPT (karpathy/nanoGPT, ``train.py --dataset=DIR``) reads ``DIR/train.bin`` and ``DIR/val.bin``
as ``np.memmap(..., dtype=np.uint16, mode="r")`` and trains on windows starting at uniformly
random positions. A window's domain is therefore drawn in proportion to that domain's share of
the file's tokens: for nanoGPT to see the domains as train/moe.py does by default (equal token
shares, whatever each domain's size), the file itself must hold them in those proportions.

Each file (train.bin from the train splits, val.bin from the eval splits) holds whole documents,
each ending with its EOT (50256), flat uint16, no header. Each domain's documents come in its
split's stream order (prep's seeded shuffle). The order of the domains is drawn:

- before each document, the domains at or below their share of the tokens written so far (those
  with ``tokens_d <= w_d * tokens_written``, `w` the normalised ``--domain-weights``) are the
  candidates, and one is drawn with probability proportional to its weight, by a NumPy PCG64
  generator seeded with ``[--seed, 0]`` for train.bin and ``[--seed, 1]`` for val.bin (one
  ``random()`` per document where two or more are candidates). So at every point of the file each
  domain is within a few documents of its share (over by at most one document, under by at most
  one per other domain), and the sequence of domains is random, not a pattern a model could learn.
- when a domain runs out of documents (``--when-exhausted``): ``repeat`` (the default) starts it
  again from its first document, and the file ends once every domain has been written whole at
  least once: every document is in the file, the smaller domains (relative to their weight) more
  than once, as train/moe.py samples them; ``stop`` ends the file when the first domain runs out:
  no document appears twice, and the other domains' remaining documents are left out (counted).

A domain with weight 0 is left out. Memory: one reader per domain (`shards.scan.documents`: a
chunk of READ_BYTES and a batch of its index), and WRITE_BYTES of output, whatever the size;
every source byte is checked against the manifest on the way, as for the other formats.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shards import atomic
from shards.export_formats import ExportError, FileRecord
from shards.format import SPLITS, TOKEN_BYTES
from shards.reader import Dataset
from shards.scan import documents
from shards.weights import WeightsError, parse_domain_weights

NANOGPT_FILES = {"train": "train.bin", "eval": "val.bin"}
WHEN_EXHAUSTED = ("repeat", "stop")
READ_BYTES = 1 << 20  # token chunk of each domain's reader
WRITE_BYTES = 4 << 20  # output gathered before a write
LAYOUT = ("nanoGPT: train.bin and val.bin, flat uint16 GPT-2 tokens, no header; whole documents "
          "each ending with EOT, domains mixed in the proportions of the weights (see order)")
ORDER = ("each domain's documents in its split's stream order; before each document, among the "
         "domains with tokens_d <= w_d * tokens_written, one drawn with probability proportional "
         "to its weight (numpy PCG64 seeded with [seed, 0] for train.bin, [seed, 1] for val.bin; "
         "one random() per document with two or more candidates); when_exhausted: repeat = a "
         "domain that runs out starts again, the file ends once every domain was written whole; "
         "stop = the file ends when the first domain runs out")


def parse_weights(spec: str | None, domains: list[str]) -> dict[str, float]:
    """`shards.weights.parse_domain_weights` for the exported domains (ExportError)."""
    try:
        return parse_domain_weights(spec, domains, "exported domain")
    except WeightsError as e:
        raise ExportError(str(e)) from None


@dataclass
class DomainMix:
    """What one domain put into one file."""

    weight: float
    docs_available: int  # in the split
    tokens_available: int
    docs: int = 0  # written (repeats counted)
    tokens: int = 0
    passes: float = 0.0  # tokens / tokens_available: how many times the split was written
    share: float = 0.0  # tokens / the file's tokens


class _Reader:
    """A domain's documents, from the start again on `restart`."""

    def __init__(self, ds: Dataset, domain: str, split: str) -> None:
        self.split = ds.split(domain, split)
        self.it: Iterator[tuple[Any, np.ndarray]] = iter(())
        self.restart()

    def restart(self) -> None:
        self.it = documents(self.split, chunk_bytes=READ_BYTES)

    def next(self) -> np.ndarray | None:
        item = next(self.it, None)
        return None if item is None else item[1]


def write_split(ds: Dataset, stage: Path, split: str, weights: dict[str, float], seed: int,
                when_exhausted: str) -> tuple[FileRecord, dict[str, DomainMix]]:
    """Write ``stage/<train|val>.bin`` from `split` of the domains with a weight > 0."""
    active = [d for d, w in weights.items() if w > 0]
    mix = {d: DomainMix(weights[d], ds.split(d, split).num_docs, ds.split(d, split).num_tokens)
           for d in active}
    empty = [d for d in active if not mix[d].docs_available]
    if empty:
        raise ExportError(f"{', '.join(f'{d}/{split}' for d in empty)}: no documents, so "
                          f"{NANOGPT_FILES[split]} cannot hold a share of them: give "
                          f"{' and '.join(empty)} weight 0 in --domain-weights, or leave "
                          "them out with --domain")
    readers = {d: _Reader(ds, d, split) for d in active}
    ahead: dict[str, np.ndarray | None] = {d: readers[d].next() for d in active}
    w = [weights[d] for d in active]  # plain floats: a few domains, one draw per document
    done = [0] * len(active)  # tokens written per domain
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    rel = NANOGPT_FILES[split]
    h = hashlib.sha256()
    total, pending, pending_bytes = 0, [], 0
    with atomic.atomic_open(stage / rel) as f:
        while True:
            behind = [k for k, x in enumerate(w) if done[k] <= x * total]
            if not behind:  # rounding: none at or below its share; the furthest behind
                behind = [min(range(len(w)), key=lambda k: done[k] / w[k])]
            k = behind[-1]
            if len(behind) > 1:  # the first whose cumulated weight exceeds the draw
                r, acc = rng.random() * sum(w[j] for j in behind), 0.0
                for j in behind:
                    acc += w[j]
                    if r < acc:
                        k = j
                        break
            d = active[k]
            toks = ahead[d]
            assert toks is not None
            pending.append(toks)
            pending_bytes += toks.nbytes
            done[k] += len(toks)
            total += len(toks)
            mix[d].docs += 1
            if pending_bytes >= WRITE_BYTES:
                _flush(f, h, pending)
                pending, pending_bytes = [], 0
            ahead[d] = readers[d].next()
            if ahead[d] is None:  # the domain's pass is complete
                mix[d].passes += 1
                if when_exhausted == "stop" or all(m.passes >= 1 for m in mix.values()):
                    break
                readers[d].restart()
                ahead[d] = readers[d].next()
        _flush(f, h, pending)
    for k, d in enumerate(active):
        mix[d].tokens = int(done[k])
        mix[d].passes = mix[d].tokens / mix[d].tokens_available
        mix[d].share = mix[d].tokens / total
    return FileRecord(rel, total * TOKEN_BYTES, h.hexdigest(), total), mix


def _flush(f: Any, h: Any, pending: list[np.ndarray]) -> None:
    if pending:
        data = np.concatenate(pending).astype("<u2", copy=False).tobytes()
        f.write(data)
        h.update(data)


def write_nanogpt(ds: Dataset, stage: Path, splits: list[str], weights: dict[str, float],
                  seed: int, when_exhausted: str
                  ) -> tuple[list[tuple[str, FileRecord]], dict[str, Any]]:
    """Both files (of `splits`) under `stage`; (split, record) of each and export.json's ``nanogpt``
    section: the weights, seed and policy, what each domain put into each file, and the source
    files read, with the sha256 the manifest gives them (every byte was checked against it)."""
    if when_exhausted not in WHEN_EXHAUSTED:
        raise ExportError(f"--when-exhausted {when_exhausted!r}: choose one of "
                          f"{', '.join(WHEN_EXHAUSTED)}")
    files, mixed, sources = [], {}, []
    for split in splits:
        rec, mix = write_split(ds, stage, split, weights, seed, when_exhausted)
        files.append((split, rec))
        mixed[rec.path] = {d: asdict(m) for d, m in mix.items()}
        for d in mix:
            r = ds.split(d, split).record
            sources += [{"domain": d, "split": split, "path": s.path, "bytes": s.bytes,
                         "sha256": s.sha256} for s in r.shards]
            sources.append({"domain": d, "split": split, "path": r.doc_index.path,
                            "bytes": r.doc_index.bytes, "sha256": r.doc_index.sha256})
    section = {"weights": weights, "seed": seed, "when_exhausted": when_exhausted,
               "order": ORDER, "domains": mixed, "sources": sources,
               "usage": "nanoGPT: python train.py --dataset=<this directory> (an absolute path; "
                        "each file must hold more tokens than --block_size)"}
    return files, section
