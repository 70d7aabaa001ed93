"""GPT-2 BPE from the ranks this package ships (no download, pinned by sha256), and the one
entry point to its encoders.

tiktoken's own `tiktoken.get_encoding("gpt2")` fetches its files from the network at run time;
this builds the same encoding from ``shards/assets/gpt2.tiktoken`` (a copy of
``whisper/assets/gpt2.tiktoken`` from the openai-whisper 20250625 sdist, MIT licence, see
``assets/GPT2_BPE_LICENSE.txt``) with tiktoken's own GPT-2 split pattern.

Encoders (`shards.encoders`): tiktoken is the reference; gigatoken and fastokens are faster
backends that must write the same ids. :func:`load_encoder` gives a process its encoder for a
``--tokenizer-backend`` value: ``auto`` takes the fastest installed backend that passes the
conformance check (`shards.conformance`), else tiktoken, with a one-line warning when a backend
is refused; an explicit backend that is missing or fails the check is a one-line error.
:func:`probe_backend` answers the same question for a process that will fork workers, without
running a Rust encoder in it.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str

from shards import codepoints, conformance
from shards.encoders import (
    FAST_BACKENDS,
    FAST_EXTRA,
    BackendMissing,
    Encoder,
    TiktokenEncoder,
    TokenizerError,
)
from shards.format import TokenizerRecord
from shards.hashing import file_sha256  # noqa: F401 (re-exported: shards.tokenizer.file_sha256)

GPT2_RANKS_PATH = Path(__file__).with_name("assets") / "gpt2.tiktoken"
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_RANKS = 50256
EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
VOCAB_SIZE = 50257
BACKEND_CHOICES = ("auto", "tiktoken", *FAST_BACKENDS)
DEFAULT_BACKEND = "auto"


def load_gpt2(ranks_file: str | Path | None = None) -> tiktoken.Encoding:
    """The GPT-2 encoding from the shipped ranks, or from `ranks_file` (tiktoken format).

    The shipped file is checked against its pinned sha256; a file given by the user is checked
    to hold GPT-2's 50,256 ranks, and its own sha256 goes into the manifest.
    """
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=load_ranks(ranks_file),
        special_tokens={EOT_TOKEN: EOT_ID},
    )


def load_ranks(ranks_file: str | Path | None = None) -> dict[bytes, int]:
    """The GPT-2 ranks (token bytes -> id) `load_gpt2` builds its encoding from, checked as it
    says; without an encoder (for a table over the vocabulary, e.g. `shards.ngrams`)."""
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
    return ranks


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


# --------------------------------------------------------------------------- encoders


@dataclass(frozen=True)
class BackendChoice:
    """Which encoder a ``--tokenizer-backend`` value gives on this machine, and what to tell
    the person running (a refused backend's one-line warning, a hint)."""

    requested: str
    name: str
    version: str
    notes: tuple[str, ...] = ()
    verdict_key: str = ""  # the backend's verdict, and the code points its guard sends to
    divergent: tuple[tuple[int, int], ...] = ()  # tiktoken (`shards.codepoints`)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    def describe(self) -> str:
        """One line: the encoder, what was asked for, what its guard sends to tiktoken."""
        guard = ""
        if self.divergent:
            guard = (f"; documents holding one of the "
                     f"{codepoints.describe(list(self.divergent), most=2)}"
                     " it classes unlike tiktoken are encoded by tiktoken")
        return f"{self.label} (--tokenizer-backend {self.requested}{guard})"


@functools.lru_cache(maxsize=4)
def reference_encoder(ranks_file: str | None = None) -> TiktokenEncoder:
    """tiktoken on the GPT-2 ranks (the shipped ones, or `ranks_file`), once per process."""
    return TiktokenEncoder(load_gpt2(ranks_file), EOT_ID)


def load_encoder(backend: str = DEFAULT_BACKEND, ranks_file: str | None = None) -> Encoder:
    """This process's encoder for a ``--tokenizer-backend`` value (chosen and checked once per
    process); TokenizerError (one line) for an explicit backend that is missing or refused."""
    return _chosen(backend, ranks_file)[0]


def choose_backend(backend: str = DEFAULT_BACKEND, ranks_file: str | None = None
                   ) -> BackendChoice:
    """:func:`load_encoder`'s choice, described (runs the backends in this process)."""
    enc, notes = _chosen(backend, ranks_file)
    if isinstance(enc, codepoints.GuardedEncoder):
        return BackendChoice(backend, enc.name, enc.version, notes, enc.verdict_key,
                             tuple((a, z) for a, z in enc.guard.ranges))
    return BackendChoice(backend, enc.name, enc.version, notes)


def probe_backend(backend: str = DEFAULT_BACKEND, ranks_file: str | None = None
                  ) -> BackendChoice:
    """:func:`choose_backend`, run in a child process whenever it would load a Rust backend:
    a process that forks workers must never have run one (see `shards.encoders`)."""
    if backend not in BACKEND_CHOICES:
        raise TokenizerError(f"--tokenizer-backend {backend!r}: one of "
                             f"{', '.join(BACKEND_CHOICES)}")
    names = list(FAST_BACKENDS) if backend == "auto" else [backend]
    if not any(n in FAST_BACKENDS and FAST_BACKENDS[n].installed() for n in names):
        return choose_backend(backend, ranks_file)  # tiktoken, or a one-line error
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else "spawn")
    try:
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            choice = pool.submit(choose_backend, backend, ranks_file).result()
    except BrokenProcessPool as e:  # the backend crashed the process checking it
        if backend != "auto":
            raise TokenizerError(f"--tokenizer-backend {backend}: checking it crashed the "
                                 f"process ({e}); use --tokenizer-backend auto or tiktoken") from e
        ref = choose_backend("tiktoken", ranks_file)
        return BackendChoice("auto", ref.name, ref.version, (
            f"warning: checking the fast encoders crashed the process ({e}); using tiktoken",))
    if choice.verdict_key:  # workers forked from here need not check again
        codepoints.remember(choice.verdict_key, {"divergent": [list(r) for r in choice.divergent],
                                                 "mismatch": None})
    return choice


@functools.lru_cache(maxsize=8)
def _chosen(requested: str, ranks_file: str | None) -> tuple[Encoder, tuple[str, ...]]:
    ref = reference_encoder(ranks_file)
    if requested == "tiktoken":
        return ref, ()
    if requested != "auto" and requested not in FAST_BACKENDS:
        raise TokenizerError(f"--tokenizer-backend {requested!r}: one of "
                             f"{', '.join(BACKEND_CHOICES)}")
    explicit = requested != "auto"
    path = str(Path(ranks_file) if ranks_file is not None else GPT2_RANKS_PATH)
    ranks_sha = GPT2_RANKS_SHA256 if ranks_file is None else file_sha256(path)
    notes: list[str] = []
    tried = 0
    for name in [requested] if explicit else list(FAST_BACKENDS):
        backend = FAST_BACKENDS[name]
        if not explicit and not backend.installed():
            continue
        tried += 1
        try:
            enc, bad = _checked(backend, backend.load(path, EOT_ID, r50k_pat_str), ref, ranks_sha)
        except BackendMissing as e:
            if explicit:
                raise
            notes.append(f"warning: {name} is installed but does not import ({e}); skipped")
            continue
        except Exception as e:  # a young package's API or build failing: never fatal for auto
            if explicit:
                raise TokenizerError(f"--tokenizer-backend {name}: could not build the encoder "
                                     f"({type(e).__name__}: {e})") from e
            notes.append(f"warning: {name} failed to build ({type(e).__name__}: {e}); skipped")
            continue
        if bad is None:
            return enc, tuple(notes)
        what = f"{enc.label}: {bad}"
        if explicit:
            raise TokenizerError(f"--tokenizer-backend {name} refused: {what}; use "
                                 "--tokenizer-backend auto or tiktoken")
        notes.append(f"warning: not using {what}")
    if tried == 0:
        notes.append(f"no fast encoder installed, using tiktoken ({FAST_EXTRA} for a 3-10x "
                     "faster one that writes the same ids)")
    elif notes:
        notes[-1] += "; using tiktoken"
    return ref, tuple(notes)


def _checked(backend: Any, fast: Encoder, ref: TiktokenEncoder, ranks_sha: str
             ) -> tuple[codepoints.GuardedEncoder, str | None]:
    """`fast` guarded (the documents holding a code point it classes unlike tiktoken go to
    tiktoken), and why it is refused (None: it passed). The verdict (code point scan, then the
    conformance corpus through the guard) is made once per machine for a backend's build."""

    def verdict() -> dict[str, Any]:
        corpus = conformance.load_corpus()
        stored = corpus.reference.get("block_digests")
        digests = stored if corpus.reference.get("ranks_sha256") == ranks_sha else None
        ranges = codepoints.divergent(fast, ref, digests)
        if any(a < 0x80 for a, _ in ranges):
            first = chr(next(a for a, _ in ranges))
            return {"divergent": ranges, "mismatch": f"ids differ from tiktoken's around the "
                                                     f"ASCII character {first!r}"}
        enc = codepoints.GuardedEncoder(fast, ref, codepoints.Guard(ranges))
        bad = conformance.first_mismatch(enc, ref, ranks_sha)
        return {"divergent": ranges,
                "mismatch": None if bad is None else bad.describe(ref.encoding.decode)}

    key = codepoints.verdict_key(backend.identity(), ranks_sha, conformance.corpus_sha256())
    v = codepoints.cached_verdict(key, verdict)
    return codepoints.GuardedEncoder(fast, ref, codepoints.Guard(v["divergent"]), key), \
        v["mismatch"]
