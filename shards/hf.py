"""`shards.to_hf(ds, domain, split)`: a split as a Hugging Face `datasets.Dataset`.

    import shards
    hf = shards.to_hf(shards.open("shards_out"), "code", "train")
    hf[0]  # {"input_ids": [...], "domain": "code", "source": '{"path": "..."}'}

One row per document, in stream order: ``input_ids`` (int32 GPT-2 ids, the trailing EOT 50256
included, exactly the shards' document tokens), ``domain``, and ``source``, the document's
provenance as a JSON object in a string (provenance keys differ between sources and Arrow needs
one schema: ``json.loads(row["source"])`` gives the dict back). ``hf.with_format("torch")``
gives tensors, ready for a `transformers` collator.

The rows come from a generator (`datasets.Dataset.from_generator`) over `shards.scan.documents`, so
memory stays bounded whatever the split's size, and every shard and index byte is checked against
the manifest on the way. `datasets` writes them to its Arrow cache (``cache_dir``, by default
``~/.cache/huggingface/datasets``) and names the cache entry by a hash of the generator and its
arguments: these include the dataset's fingerprint (a hash of every shard's and index's sha256),
so a dataset rewritten in the same directory, or another dataset, never reuses a stale entry,
while the same data opened again reuses its entry instantly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
from datasets.exceptions import DatasetGenerationError

import shards
from shards.format import FormatError
from shards.hashing import distinct
from shards.reader import Dataset
from shards.scan import documents

HF_LAYOUT_VERSION = 1  # part of the cache key: bump when the rows' layout changes

FEATURES = datasets.Features({
    "input_ids": datasets.Sequence(datasets.Value("int32")),
    "domain": datasets.Value("string"),
    "source": datasets.Value("string"),
})


def _rows(root: str, domain: str, split: str, fingerprint: str,
          layout: int) -> Iterator[dict[str, Any]]:
    del layout  # only part of the cache key
    ds = shards.open(root)
    if ds.fingerprint != fingerprint:
        now, was = distinct(ds.fingerprint, fingerprint, 12)
        raise FormatError(f"{root}: the dataset changed while it was being read (fingerprint "
                          f"{now}, expected {was}); call to_hf again")
    for doc, ids in documents(ds.split(domain, split)):
        yield {"input_ids": ids, "domain": domain,
               "source": json.dumps(doc.source, ensure_ascii=False)}


def to_hf(ds: Dataset | str | Path, domain: str, split: str, *,
          cache_dir: str | Path | None = None, **kwargs: Any) -> datasets.Dataset:
    """The documents of `domain`/`split` as a `datasets.Dataset` (see the module docstring).

    `ds` is an open dataset or its directory; `cache_dir` is where `datasets` writes the Arrow
    files (default: its own cache); other keyword arguments go to
    `datasets.Dataset.from_generator` (e.g. ``keep_in_memory``).
    """
    if not isinstance(ds, Dataset):
        ds = shards.open(ds)
    if not ds.split(domain, split).num_docs:  # (SplitNotFoundError before any work)
        # `datasets` refuses a generator that yields nothing: an empty table, nothing cached
        return datasets.Dataset.from_dict({k: [] for k in FEATURES}, features=FEATURES,
                                          split=datasets.NamedSplit(split))
    kwargs.setdefault("split", datasets.NamedSplit(split))
    try:
        return datasets.Dataset.from_generator(
            _rows, features=FEATURES, cache_dir=str(cache_dir) if cache_dir is not None else None,
            gen_kwargs={"root": str(ds.root.resolve()), "domain": domain, "split": split,
                        "fingerprint": ds.fingerprint, "layout": HF_LAYOUT_VERSION},
            **kwargs)
    except DatasetGenerationError as e:  # a damaged dataset: our message, not the wrapper's
        if isinstance(e.__cause__, FormatError):
            raise e.__cause__ from None
        raise
