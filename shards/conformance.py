"""A fast encoder must write tiktoken's ids, always: the conformance corpus and the sampled check.

- **The conformance corpus** (``assets/conformance.json.gz``, built by
  ``tests/conformance_cases.py``): Unicode whitespace runs (NBSP and the rest), CJK, emoji with
  ZWJ and skin tones, combining marks, digit runs, contractions, the literal ``<|endoftext|>``,
  seeded random code points from all 17 planes, real code and prose, and a multi-MB line built
  from them, with tiktoken's digest of each document's ids. :func:`first_mismatch` encodes every
  text with a backend when a process loads it (gigatoken ~0.05 s, fastokens ~0.2 s) and
  compares digests; tiktoken itself runs only for a ranks file other than the shipped one, and
  to describe a mismatch.
- **The sampled check** (:class:`SampledCheck`): during a run, the documents whose content
  digest selects them (1 in ``every``, by digest, so the same documents whatever the backend,
  worker or order) are re-encoded with tiktoken; a difference stops the task before the
  document is written (:class:`EncoderMismatch`, naming it).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shards.encoders import Encoder, TokenizerError

CORPUS_PATH = Path(__file__).with_name("assets") / "conformance.json.gz"
CORPUS_FORMAT = 1
MULTI_MB_LINE = "multi-MB line"
MULTI_MB_LINE_BYTES = 3_000_000
DEFAULT_CHECK_EVERY = 256
PREVIEW_CHARS = 40


class EncoderMismatch(TokenizerError):
    """A backend's ids differ from tiktoken's on a document; the message names it."""


@dataclass
class Corpus:
    cases: list[tuple[str, str]]  # (name, text)
    reference: dict[str, Any]  # {"encoder", "ranks_sha256", "digests": {name: digest}}

    def texts(self) -> Iterator[tuple[str, str]]:
        """Every case, then the multi-MB line: the real text joined into one line, repeated
        to MULTI_MB_LINE_BYTES."""
        yield from self.cases
        real = " ".join(t.replace("\n", " ").replace("\r", " ")
                        for n, t in self.cases if n.startswith("real "))
        if real:
            reps = -(-MULTI_MB_LINE_BYTES // len(real.encode("utf-8")))
            yield MULTI_MB_LINE, " ".join([real] * reps)


@functools.lru_cache(maxsize=1)
def load_corpus(path: str = str(CORPUS_PATH)) -> Corpus:
    data = json.loads(gzip.decompress(Path(path).read_bytes()))
    if data.get("format") != CORPUS_FORMAT:
        raise TokenizerError(f"{path}: conformance corpus format {data.get('format')!r}, this "
                             f"code reads {CORPUS_FORMAT}; reinstall the package")
    return Corpus([(n, t) for n, t in data["cases"]], data["reference"])


@functools.lru_cache(maxsize=1)
def corpus_sha256(path: str = str(CORPUS_PATH)) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def digest(doc: np.ndarray) -> str:
    """The digest of one document's uint16 ids (EOT included)."""
    return hashlib.blake2b(np.ascontiguousarray(doc, dtype=np.uint16).tobytes(),
                           digest_size=16).hexdigest()


@dataclass
class Mismatch:
    """The first conformance text a backend encodes differently (or fails on)."""

    case: str
    text: str
    got: np.ndarray | None  # None: the backend raised `error`
    want: np.ndarray
    error: str = ""

    def describe(self, decode: Callable[[list[int]], str]) -> str:
        """One line: the case, the text where the ids first differ, both ids."""
        if self.got is None:
            return f"raised {self.error} on conformance text {self.case!r} {preview(self.text)}"
        n = min(len(self.got), len(self.want))
        diff = np.flatnonzero(self.got[:n] != self.want[:n])
        i = int(diff[0]) if len(diff) else n
        at = len(decode(self.want[:i].tolist()))
        got = int(self.got[i]) if i < len(self.got) else "end"
        want = int(self.want[i]) if i < len(self.want) else "end"
        return (f"ids differ from tiktoken's on conformance text {self.case!r} at token {i} "
                f"(id {got}, tiktoken {want}), text {preview(self.text[at:])}")


def preview(text: str) -> str:
    head = text[:PREVIEW_CHARS]
    return repr(head) + (f" (+{len(text) - len(head)} chars)" if len(text) > len(head) else "")


def first_mismatch(encoder: Encoder, reference: Encoder, ranks_sha256: str,
                   corpus: Corpus | None = None) -> Mismatch | None:
    """The first corpus text `encoder` encodes differently from tiktoken (`reference`), or None.

    The corpus's reference digests are used when they were made from these ranks; otherwise
    (another --tokenizer-file) tiktoken encodes every text too."""
    corpus = corpus or load_corpus()
    stored = corpus.reference["digests"] if corpus.reference.get(
        "ranks_sha256") == ranks_sha256 else None
    for name, text in corpus.texts():
        try:
            got = encoder.encode_document(text)
        except Exception as e:  # a backend that panics or refuses a text fails the check
            return Mismatch(name, text, None, reference.encode_document(text),
                            f"{type(e).__name__}: {str(e)[:80]}")
        if stored is not None and digest(got) == stored.get(name):
            continue
        want = reference.encode_document(text)
        if not np.array_equal(got, want):
            return Mismatch(name, text, got, want)
        if stored is not None:
            raise TokenizerError(f"{CORPUS_PATH}: the stored digest of {name!r} is not tiktoken's "
                             "(the corpus was built with other ranks or is damaged); rebuild it "
                             "with tests/conformance_cases.py")
    return None


class SampledCheck:
    """Re-encodes with tiktoken the documents whose content digest selects them (1 in `every`;
    0: none), raising :class:`EncoderMismatch` naming the document on any difference. A no-op
    for the tiktoken backend (its ids are the reference). ``checked`` counts the documents
    re-encoded."""

    def __init__(self, every: int, encoder: Encoder, reference: Callable[[], Encoder],
                 task: str = "") -> None:
        self.every = every
        self.active = every > 0 and encoder.name != "tiktoken"
        self.encoder = encoder
        self._reference = reference
        self.task = task
        self.checked = 0
        self._routed = getattr(encoder, "routed", 0)  # documents the guard sent to tiktoken

    def selects(self, sha: bytes) -> bool:
        """Whether a document is in the sample: bytes 24..32 of its sha256 (the split and the
        dedup keys use other bits) modulo `every`."""
        return self.every > 0 and int.from_bytes(sha[24:32], "big") % self.every == 0

    def __call__(self, sha: bytes, text: str, ids: np.ndarray, source: dict[str, Any]) -> None:
        """Check one document about to be written (`sha`: its content sha256)."""
        if not self.active or int.from_bytes(sha[24:32], "big") % self.every:
            return
        want = self._reference().encode_document(text)
        self.checked += 1
        if np.array_equal(ids, want):
            return
        where = ", ".join(f"{k} {v}" for k, v in source.items()) or "a document"
        n = min(len(ids), len(want))
        diff = np.flatnonzero(ids[:n] != want[:n])
        i = int(diff[0]) if len(diff) else n
        raise EncoderMismatch(
            f"{'task ' + self.task + ': ' if self.task else ''}the {self.encoder.label} encoder "
            f"wrote ids that differ from tiktoken's for the document at {where} (sha256 "
            f"{sha.hex()[:16]}, {len(text)} chars), first at token {i}; nothing of it was "
            "written. Re-run with --tokenizer-backend tiktoken, and please report the document "
            f"to the {self.encoder.name} project")

    def record(self) -> dict[str, Any]:
        """What a task's record says about its encoder and the check."""
        return {"backend": self.encoder.name, "version": self.encoder.version,
                "check_every": self.every, "docs_checked": self.checked,
                "docs_by_tiktoken": getattr(self.encoder, "routed", 0) - self._routed}
