"""Tokenization in worker processes: batches of texts in, one uint16 array and lengths out."""

from __future__ import annotations

import signal

import numpy as np
import tiktoken

from shards.tokenizer import encode_document, load_gpt2


class _WorkerState:
    """The encoding of this worker process (built once by the pool initializer)."""

    enc: tiktoken.Encoding | None = None


def init_worker(tokenizer_file: str | None) -> None:
    # Ctrl-C goes to the whole process group: only the parent handles it and shuts us down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WorkerState.enc = load_gpt2(tokenizer_file)


def encode_batch(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of every text followed by EOT, concatenated, and each document's token count."""
    enc = _WorkerState.enc
    assert enc is not None, "init_worker was not run in this process"
    parts = [encode_document(enc, t) for t in texts]
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    tokens = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint16)
    return tokens, lengths
