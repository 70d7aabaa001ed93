"""shards: the on-disk token-shard format, its writer and reader, and the reviewer's tools.

    import shards
    ds = shards.open("data/sample")          # validates paths and sizes before reading a token
    ds = shards.open("data/sample", verify="full")  # and every token id and sha256 (stamped)
    sp = ds.split("code", "train")           # or ds["code", "train"]
    x = sp.block(0)                          # a zero-copy view into the shard's memmap
    print(ds.decode(sp.document_tokens(0)))  # document 0's text

Elsewhere: `shards.to_hf` (a `datasets.Dataset`), `shards.torch` (PyTorch datasets),
`python -m shards export` (nanoGPT, llm.c and Megatron-LM files; docs/exports.md).
"""

from typing import Any

from shards.check import DataCheck
from shards.format import FormatError
from shards.reader import Dataset, DatasetError, DocInfo, Split, SplitNotFoundError, decode, open


def to_hf(ds: Any, domain: str, split: str, **kwargs: Any) -> Any:
    """The split's documents as a Hugging Face `datasets.Dataset`; see `shards.hf.to_hf`."""
    from shards.hf import to_hf as _to_hf  # `datasets` is imported only when asked for

    return _to_hf(ds, domain, split, **kwargs)


__all__ = [
    "DataCheck",
    "Dataset",
    "DatasetError",
    "DocInfo",
    "FormatError",
    "Split",
    "SplitNotFoundError",
    "decode",
    "open",
    "to_hf",
]
