import hashlib

import numpy as np
import pytest

from shards.tokenizer import (
    EOT_ID,
    GPT2_RANKS_PATH,
    GPT2_RANKS_SHA256,
    TokenizerError,
    encode_document,
    load_gpt2,
    tokenizer_record,
)


@pytest.fixture(scope="module")
def enc():
    return load_gpt2()


def test_shipped_ranks_are_pinned():
    assert hashlib.sha256(GPT2_RANKS_PATH.read_bytes()).hexdigest() == GPT2_RANKS_SHA256
    rec = tokenizer_record()
    assert (rec.vocab_size, rec.eot_id, rec.ranks_sha256) == (50257, 50256, GPT2_RANKS_SHA256)


@pytest.mark.parametrize("text, ids", [
    ("Hello world", [15496, 995]),
    ("The quick brown fox", [464, 2068, 7586, 21831]),
    # special-token text in a document is ordinary text, never the EOT id
    ("<|endoftext|>", [27, 91, 437, 1659, 5239, 91, 29]),
    ("def f(x):\n    return x**2\n",
     [4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 1174, 17, 198]),
])
def test_known_gpt2_ids(enc, text, ids):
    assert enc.encode_ordinary(text) == ids
    doc = encode_document(enc, text)
    assert doc.dtype == np.uint16
    assert doc.tolist() == ids + [EOT_ID]
    assert enc.decode(doc[:-1].tolist()) == text


def test_tokenizer_file_errors(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        load_gpt2(tmp_path / "missing.tiktoken")
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("aGVsbG8= 0\n")
    with pytest.raises(TokenizerError, match="holds 1 ranks, GPT-2 has 50256"):
        load_gpt2(bad)


def test_tokenizer_file_copy_is_accepted(tmp_path):
    copy = tmp_path / "gpt2.tiktoken"
    copy.write_bytes(GPT2_RANKS_PATH.read_bytes())
    assert load_gpt2(copy).encode_ordinary("Hello world") == [15496, 995]
    assert tokenizer_record(copy).ranks_file == str(copy)
