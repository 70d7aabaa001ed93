"""GPT-2 BPE from the ranks this package ships: no download, pinned by sha256.

tiktoken's own `tiktoken.get_encoding("gpt2")` fetches its files from the network at run time;
this builds the same encoding from ``shards/assets/gpt2.tiktoken`` (a copy of
``whisper/assets/gpt2.tiktoken`` from the openai-whisper 20250625 sdist, MIT licence, see
``assets/GPT2_BPE_LICENSE.txt``) with tiktoken's own GPT-2 split pattern.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str

from shards.format import TokenizerRecord
from shards.hashing import file_sha256  # noqa: F401 (re-exported: shards.tokenizer.file_sha256)

GPT2_RANKS_PATH = Path(__file__).with_name("assets") / "gpt2.tiktoken"
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_RANKS = 50256
EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
VOCAB_SIZE = 50257


class TokenizerError(ValueError):
    pass


def load_gpt2(ranks_file: str | Path | None = None) -> tiktoken.Encoding:
    """The GPT-2 encoding from the shipped ranks, or from `ranks_file` (tiktoken format).

    The shipped file is checked against its pinned sha256; a file given by the user is checked
    to hold GPT-2's 50,256 ranks, and its own sha256 goes into the manifest.
    """
    path = Path(ranks_file) if ranks_file is not None else GPT2_RANKS_PATH
    if not path.is_file():
        raise TokenizerError(f"{path}: tokenizer ranks file not found (--tokenizer-file)")
    if ranks_file is None and file_sha256(path) != GPT2_RANKS_SHA256:
        raise TokenizerError(
            f"{path}: sha256 differs from the pinned {GPT2_RANKS_SHA256}; the package's copy "
            "of the GPT-2 ranks is damaged, reinstall the package"
        )
    try:
        ranks = load_tiktoken_bpe(str(path))
    except Exception as e:  # tiktoken raises plain ValueError/binascii errors
        raise TokenizerError(f"{path}: not a tiktoken ranks file ({e})") from e
    if len(ranks) != GPT2_RANKS:
        raise TokenizerError(f"{path}: holds {len(ranks)} ranks, GPT-2 has {GPT2_RANKS}")
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={EOT_TOKEN: EOT_ID},
    )


def tokenizer_record(ranks_file: str | Path | None = None) -> TokenizerRecord:
    path = Path(ranks_file) if ranks_file is not None else GPT2_RANKS_PATH
    return TokenizerRecord(
        name="gpt2",
        vocab_size=VOCAB_SIZE,
        eot_id=EOT_ID,
        ranks_sha256=file_sha256(path),
        ranks_file="shipped:shards/assets/gpt2.tiktoken" if ranks_file is None else str(path),
        pattern=r50k_pat_str,
    )


def encode_document(enc: tiktoken.Encoding, text: str) -> np.ndarray:
    """`encode_ordinary(text) + [EOT]` as a uint16 array, with no Python list in between.

    `encode_to_numpy` with no special token allowed or disallowed encodes exactly as
    `encode_ordinary` does (special-token text is encoded as ordinary text).
    """
    ids = enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
    out = np.empty(len(ids) + 1, dtype=np.uint16)
    out[:-1] = ids
    out[-1] = EOT_ID
    return out
