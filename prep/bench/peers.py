"""The peers `python -m prep.bench` compares prep with, each run in a fresh process
(`prep.bench.children`), read from their scripts (never copied):

- ``fineweb``: build-nanogpt's ``fineweb.py`` pattern: ``datasets.load_dataset`` of the files,
  ``multiprocessing.Pool(workers).imap(tokenize, dataset, chunksize=16)`` with EOT before each
  document, ids checked to fit uint16, written into preallocated shards of 1e8 tokens saved with
  ``np.save`` (the first named val, the rest train). The script's own pool is
  ``cpu_count() // 2`` processes; here it gets --workers, as prep does.
- ``nanogpt``: nanoGPT ``data/openwebtext/prepare.py``'s pattern: ``load_dataset(num_proc)``,
  ``train_test_split(test_size=0.0005, seed=2357)``, ``map(num_proc=workers)`` of
  ``encode_ordinary`` + EOT, then per split a ``np.memmap`` filled in 1024 contiguous batches.

Both load the JSON Lines files into a fresh datasets cache (as a first run does). Their outputs
are checked against the ceiling's reference ids by the bench (`prep.bench.ids`).
"""

from __future__ import annotations

import functools
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from prep.bench.ids import EOT
from prep.bench.procfs import peak_rss_mb

NANOGPT_TEST_SIZE = 0.0005
NANOGPT_SEED = 2357
NANOGPT_BATCHES = 1024
FINEWEB_SHARD = int(1e8)
FINEWEB_CHUNKSIZE = 16


def fineweb(files: list[str], workers: int, out: str) -> dict[str, Any]:
    import multiprocessing as mp

    from datasets import disable_progress_bars, load_dataset

    disable_progress_bars()
    t0 = time.perf_counter()
    ds = load_dataset("json", data_files=files, split="train", cache_dir=f"{out}/hf_cache")
    _fineweb_encoding()  # loaded before the pool forks, as the script's module-level `enc`
    shard = np.empty((FINEWEB_SHARD,), dtype=np.uint16)
    count = index = tokens_total = 0
    with mp.get_context("fork").Pool(workers) as pool:
        for tokens in pool.imap(_fineweb_tokenize, ds, chunksize=FINEWEB_CHUNKSIZE):
            tokens_total += len(tokens)
            if count + len(tokens) < FINEWEB_SHARD:
                shard[count:count + len(tokens)] = tokens
                count += len(tokens)
            else:
                room = FINEWEB_SHARD - count
                shard[count:] = tokens[:room]
                np.save(_fineweb_name(out, index), shard)
                index += 1
                shard[:len(tokens) - room] = tokens[room:]
                count = len(tokens) - room
    if count:
        np.save(_fineweb_name(out, index), shard[:count])
    seconds = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return {"tokens": tokens_total, "seconds": seconds,
            "peak_rss_mb": max(peak_rss_mb(), kids.ru_maxrss / 1024),
            "parent_cpu_s": me.ru_utime + me.ru_stime,
            "workers_cpu_s": kids.ru_utime + kids.ru_stime}


@functools.lru_cache(maxsize=1)
def _fineweb_encoding() -> Any:
    from shards.tokenizer import load_gpt2

    return load_gpt2()  # tiktoken.get_encoding("gpt2") needs the network: the same ranks


def _fineweb_tokenize(doc: dict[str, Any]) -> np.ndarray:
    arr = np.array([EOT, *_fineweb_encoding().encode_ordinary(doc["text"])])
    assert (arr >= 0).all() and (arr < 2**16).all(), "token ids do not fit uint16"
    return arr.astype(np.uint16)


def _fineweb_name(out: str, index: int) -> str:
    return os.path.join(out, f"fineweb_{'val' if index == 0 else 'train'}_{index:06d}")


def fineweb_outputs(out: str) -> list[str]:
    """The shards in the order written (by index: the first one is named val, the rest train)."""
    return sorted((str(p) for p in Path(out).glob("fineweb_*.npy")),
                  key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))


def nanogpt(files: list[str], workers: int, out: str) -> dict[str, Any]:
    from datasets import disable_progress_bars, load_dataset

    from shards.tokenizer import load_gpt2

    disable_progress_bars()
    t0 = time.perf_counter()
    dataset = load_dataset("json", data_files=files, num_proc=workers,
                           cache_dir=f"{out}/hf_cache")
    split = dataset["train"].train_test_split(test_size=NANOGPT_TEST_SIZE, seed=NANOGPT_SEED,
                                              shuffle=True)
    split["val"] = split.pop("test")
    enc = load_gpt2()

    def process(example: dict[str, Any]) -> dict[str, Any]:
        ids = enc.encode_ordinary(example["text"])
        ids.append(EOT)
        return {"ids": ids, "len": len(ids)}

    tokenized = split.map(process, remove_columns=["text"], num_proc=workers)
    total = 0
    for name, dset in tokenized.items():
        arr_len = int(np.sum(dset["len"], dtype=np.uint64))
        arr = np.memmap(os.path.join(out, f"{name}.bin"), dtype=np.uint16, mode="w+",
                        shape=(arr_len,))
        idx = 0
        for b in range(NANOGPT_BATCHES):
            try:
                batch = dset.shard(num_shards=NANOGPT_BATCHES, index=b,
                                   contiguous=True).with_format("numpy")
            except IndexError:
                break
            if not len(batch):  # fewer rows than batches (the tiny val split)
                continue
            chunk = np.concatenate(batch["ids"])
            arr[idx:idx + len(chunk)] = chunk
            idx += len(chunk)
        arr.flush()
        total += arr_len
    seconds = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"tokens": total, "seconds": seconds, "peak_rss_mb": max(peak_rss_mb(), kids)}


def nanogpt_outputs(out: str) -> list[str]:
    return [os.path.join(out, f"{n}.bin") for n in ("train", "val")]
