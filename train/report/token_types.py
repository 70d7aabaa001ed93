"""Python token types of GPT-2 BPE tokens, for token-type x expert routing of code.

The source text is classified character by character with the standard ``tokenize`` module:
keyword (``keyword.iskeyword``), name (other identifiers, soft keywords included), operator,
number, string (f-strings included), comment, whitespace (spaces, newlines, indentation, and
any character between tokenize tokens). Each BPE token then takes the type of its first
non-whitespace character (GPT-2 tokens often start with a space: `` def`` is a keyword), or
``whitespace`` when it has none. A BPE token's characters are located by the cumulative UTF-8
byte lengths of the decoded tokens, so the mapping is exact for any text the tokens decode to.

Code that ``tokenize`` cannot read to the end (an unterminated string, a document cut by the
block size, Python 2 source) keeps the types found before the error; the rest is ``other``.
"""

from __future__ import annotations

import io
import keyword
import token as tokmod
import tokenize
from collections.abc import Sequence

import numpy as np
import tiktoken

TOKEN_TYPES: tuple[str, ...] = ("keyword", "name", "operator", "number", "string", "comment",
                                "whitespace", "other")
_INDEX = {name: i for i, name in enumerate(TOKEN_TYPES)}
_WS = _INDEX["whitespace"]
_OTHER = _INDEX["other"]
_STRING_PARTS = {getattr(tokmod, n) for n in ("STRING", "FSTRING_START", "FSTRING_MIDDLE",
                                              "FSTRING_END") if hasattr(tokmod, n)}


def _kind(tok: tokenize.TokenInfo) -> int | None:
    if tok.type == tokmod.NAME:
        return _INDEX["keyword" if keyword.iskeyword(tok.string) else "name"]
    if tok.type == tokmod.OP:
        return _INDEX["operator"]
    if tok.type == tokmod.NUMBER:
        return _INDEX["number"]
    if tok.type in _STRING_PARTS:
        return _INDEX["string"]
    if tok.type == tokmod.COMMENT:
        return _INDEX["comment"]
    if tok.type in (tokmod.NEWLINE, tokmod.NL, tokmod.INDENT, tokmod.DEDENT,
                    tokmod.ENDMARKER):
        return _WS
    return None  # ERRORTOKEN and anything unknown: left as it is


def char_types(source: str) -> np.ndarray:
    """(len(source),) int8 token-type index (into TOKEN_TYPES) of every character."""
    out = np.full(len(source), _OTHER, dtype=np.int8)
    line_starts = [0]
    for line in source.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))

    def pos(rc: tuple[int, int]) -> int:
        row, col = rc
        return min(line_starts[min(row - 1, len(line_starts) - 1)] + col, len(source))

    covered = 0  # characters before this offset are classified
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            start, end = pos(tok.start), pos(tok.end)
            if start > covered:
                out[covered:start] = _WS  # the gap between two tokens is whitespace
            kind = _kind(tok)
            if kind is not None and end > start:
                out[start:end] = kind
            covered = max(covered, end)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    # whitespace characters are whitespace whatever the tokenizer did (e.g. inside ERRORTOKEN)
    if source:
        ws = np.frombuffer(source.encode("utf-32-le"), dtype=np.uint32)
        is_space = np.isin(ws, [0x20, 0x09, 0x0A, 0x0D, 0x0C])
        out[is_space & (out == _OTHER)] = _WS
    return out


def bpe_token_types(enc: tiktoken.Encoding, ids: Sequence[int]) -> tuple[str, np.ndarray]:
    """(text, (len(ids),) int8 type index of every BPE token) for a token sequence.

    A token whose bytes do not end on a character boundary (a multi-byte character split
    across tokens) is located at the character its first byte falls in.
    """
    pieces = [enc.decode_single_token_bytes(int(t)) for t in ids]
    raw = b"".join(pieces)
    text = raw.decode("utf-8", errors="replace")
    ctypes = char_types(text)
    # byte offset -> character index, for valid UTF-8 (the common case); replacement chars
    # make the mapping approximate, which only shifts a few tokens' types.
    lead = np.frombuffer(raw, dtype=np.uint8)
    is_start = (lead & 0xC0) != 0x80
    char_of_byte = np.cumsum(is_start) - 1
    starts = np.concatenate([[0], np.cumsum([len(p) for p in pieces])[:-1]]).astype(np.int64)
    out = np.full(len(pieces), _WS, dtype=np.int8)
    text_ws = np.array([c.isspace() for c in text], dtype=bool) if text else np.zeros(0, bool)
    for i, (s, p) in enumerate(zip(starts, pieces, strict=True)):
        if not p:
            continue
        c0 = int(char_of_byte[s]) if s < len(char_of_byte) else len(text)
        c1 = int(char_of_byte[s + len(p) - 1]) + 1 if s + len(p) - 1 < len(char_of_byte) else c0
        c1 = min(max(c1, c0 + 1), len(text))
        for c in range(c0, c1):
            if not text_ws[c]:
                out[i] = ctypes[c]
                break
    return text, out


def type_names(types: np.ndarray) -> list[str]:
    return [TOKEN_TYPES[int(t)] for t in types]
