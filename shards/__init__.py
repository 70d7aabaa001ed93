"""shards: the on-disk token-shard format, its writer and reader, and the reviewer's tools.

    import shards
    ds = shards.open("data/sample")          # validates paths and sizes before reading a token
    sp = ds.split("code", "train")           # or ds["code", "train"]
    x = sp.block(0)                          # a zero-copy view into the shard's memmap
    print(ds.decode(sp.document_tokens(0)))  # document 0's text
"""

from shards.format import FormatError
from shards.reader import Dataset, DatasetError, DocInfo, Split, SplitNotFoundError, decode, open

__all__ = [
    "Dataset",
    "DatasetError",
    "DocInfo",
    "FormatError",
    "Split",
    "SplitNotFoundError",
    "decode",
    "open",
]
