"""Build small datasets in the on-disk format for tests, through the real shard writer.

    root = make_dataset(tmp_path, {"code": {"train": ["def f(): ...", ...], "eval": [...]}})

CLEAN_DOCS is the clean dataset the shards tests start from (conftest.py's `clean_dataset`,
written once per session, and `clean_copy`, a copy of it to damage); the helpers at the end
damage a copy as a bad disk or a bad edit would.

A document is a text, or a (text, source) pair whose dict becomes its provenance. Documents
are tokenized with `shards.tokenizer.encode_document` and written with `SplitWriter`; the
manifest is filled in as `prep` would (counts, leakage by content hash) and written last.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken

from shards.format import LeakageRecord, SplitRecord, content_hash
from shards.tokenizer import encode_document, load_gpt2
from shards.writer import DocEntry, SplitWriter, manifest_for, write_manifest

Doc = str | tuple[str, dict[str, Any]]

# train/moe.py options for a run of a few seconds on the datasets built here (block size 16)
TINY_RUN = ["--preset", "tiny", "--block-size", "16", "--batch-size", "2", "--warmup", "2",
            "--lr", "3e-3", "--n-experts", "4", "--moe-layers", "1", "--eval-batch-size", "8",
            "--eval-max-blocks", "2"]


# The clean dataset (shards of 64 tokens, blocks of 16): code, 31 train documents of 1-4 lines
# with provenance (the last, 201 tokens, runs over several shards) and 2 eval; prose, 12 train
# documents with non-ASCII text and provenance, and 2 eval; math, 8 train documents and no eval
# document (a split without tokens).
CLEAN_DOCS: dict[str, dict[str, list[Doc]]] = {
    "code": {"train": [(f"def f{i}():\n    return {i}\n" * (1 + i % 4),
                        {"repo_name": f"r{i}", "path": f"p/{i}.py"}) for i in range(30)]
             + [("x = 1\n" * 50, {"repo_name": "long", "path": "long.py"})],
             "eval": [("y = 2\n", {"repo_name": "e", "path": "e.py"}),
                      ("z = 3\n", {"repo_name": "e", "path": "z.py"})]},
    "prose": {"train": [(f"Straße Nummer {i}. " * (1 + i % 3) + f"Paragraph {i} of the prose.",
                         {"title": f"Tèxt {i}", "id": i}) for i in range(12)],
              "eval": ["Rain today.", "Sun tomorrow."]},
    "math": {"train": [f"{i} + {i} = {2 * i}" for i in range(8)], "eval": []},
}
CLEAN_SHARD_TOKENS = 64
CLEAN_BLOCK_SIZE = 16


def make_clean_dataset(tmp_path: Path, name: str = "data") -> Path:
    return make_dataset(tmp_path, CLEAN_DOCS, shard_tokens=CLEAN_SHARD_TOKENS,
                        block_size=CLEAN_BLOCK_SIZE, name=name)


@functools.cache
def gpt2() -> tiktoken.Encoding:
    return load_gpt2()


def make_dataset(tmp_path: Path, docs_by_domain_split: Mapping[str, Mapping[str, Sequence[Doc]]],
                 *, shard_tokens: int = 256, block_size: int = 16, name: str = "data",
                 seed: int = 42) -> Path:
    """Write `docs_by_domain_split` as a dataset under ``tmp_path/name``; returns its root."""
    root = Path(tmp_path) / name
    root.mkdir(parents=True, exist_ok=False)
    enc = gpt2()
    hashes = {(d, s): {content_hash(_text(x)) for x in docs}
              for d, splits in docs_by_domain_split.items() for s, docs in splits.items()}
    records: dict[str, dict[str, SplitRecord]] = {}
    counts: dict[str, dict[str, int]] = {}
    leakage: dict[str, LeakageRecord] = {}
    for dname, splits in docs_by_domain_split.items():
        records[dname] = {}
        counts[dname] = c = dict.fromkeys(
            ("docs_seen", "bytes_seen", "docs_kept", "bytes_kept"), 0)
        for sname in ("train", "eval"):
            writer = SplitWriter(root, dname, sname, shard_tokens, block_size)
            for i, doc in enumerate(splits.get(sname, [])):
                text, source = (doc, {"index": i}) if isinstance(doc, str) else doc
                toks = encode_document(enc, text)
                nbytes = len(text.encode("utf-8"))
                writer.add(toks, [DocEntry(tokens=len(toks), chars=len(text), nbytes=nbytes,
                                           sha256=content_hash(text), source=dict(source))])
                c["docs_seen"] += 1
                c["docs_kept"] += 1
                c["bytes_seen"] += nbytes
                c["bytes_kept"] += nbytes
            records[dname][sname] = writer.close()
        train = hashes.get((dname, "train"), set())
        leaks = len(hashes.get((dname, "eval"), set()) & train)
        others = set().union(*(h for (d, _), h in hashes.items() if d != dname))
        own = train | hashes.get((dname, "eval"), set())
        leakage[dname] = LeakageRecord(eval_hashes_in_train=leaks,
                                       cross_domain_duplicates=len(own & others),
                                       passed=leaks == 0)
    manifest = manifest_for(records, origin="fixture", block_size=block_size,
                            shard_tokens=shard_tokens, seed=seed, eval_fraction=0.1,
                            shuffle_buffer=1000, counts=counts, leakage=leakage)
    write_manifest(root, manifest)
    return root


def _text(doc: Doc) -> str:
    return doc if isinstance(doc, str) else doc[0]


# Three toy domains with disjoint-looking vocabularies, for routing and training tests.
VOCABS = {
    "code": ["def", "x", "return", "(", ")", ":", "import", "self", "if", "for", "in", "="],
    "math": ["1", "2", "+", "=", "solve", "x", "7", "*", "answer", "3", "/", "5"],
    "prose": ["the", "cat", "sat", "on", "a", "mat", "and", "then", "slept", "well", "."],
}


def domain_docs(rng: np.random.Generator, n_train: int, n_eval: int,
                n_words: int = 50) -> dict[str, dict[str, list[str]]]:
    """{domain: {split: documents}} of VOCABS words, for make_dataset."""
    return {d: {"train": [words_doc(rng, n_words, v) for _ in range(n_train)],
                "eval": [words_doc(rng, n_words, v) for _ in range(n_eval)]}
            for d, v in VOCABS.items()}


def words_doc(rng: np.random.Generator, n_words: int, vocab: Sequence[str]) -> str:
    """A document of `n_words` words drawn from `vocab` (seeded, for generated test data)."""
    return " ".join(vocab[i] for i in rng.integers(0, len(vocab), n_words)) + "\n"


# --------------------------------------------------------------------------- damage


def set_token(path: Path, pos: int, value: int) -> int:
    """Overwrite token `pos` of a shard with `value`; returns the id it held."""
    toks = np.fromfile(path, dtype="<u2")
    old = int(toks[pos])
    toks[pos] = value
    toks.tofile(path)
    return old


def non_eot_position(path: Path, eot: int = 50256) -> int:
    """The first token of a shard that is not EOT (so that a change keeps the EOT count)."""
    return int(np.flatnonzero(np.fromfile(path, dtype="<u2") != eot)[0])


def match_manifest(root: Path) -> None:
    """Set every shard's and index's bytes and sha256 in the manifest to the files' own, as
    someone who edited a shard and 'fixed' the manifest would: only the data can tell."""
    mpath = root / "manifest.json"
    m = json.loads(mpath.read_text())
    for dom in m["domains"].values():
        for rec in dom["splits"].values():
            for f in [*rec["shards"], rec["doc_index"]]:
                data = (root / f["path"]).read_bytes()
                f["bytes"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    mpath.write_text(json.dumps(m))
