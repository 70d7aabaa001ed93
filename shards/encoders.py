"""GPT-2 encoder backends behind one small interface: :class:`Encoder`.

- ``tiktoken``: the reference (OpenAI's encoder); every other backend is checked against it.
- ``gigatoken`` (MIT, PyPI): a Rust BPE, 5-10x tiktoken's speed per core on real code.
- ``fastokens`` (Apache-2.0, PyPI): a Rust BPE, 2-4x tiktoken's speed.

Each is built from the same GPT-2 ranks file with no special tokens, so the literal text
``<|endoftext|>`` in a document is ordinary text; :meth:`Encoder.encode_document` appends the
EOT id itself. Nothing here decides which backend a run uses, nor trusts a fast one:
`shards.tokenizer` chooses, `shards.conformance` checks (that module is the entry point).

Threads: the Rust backends run thread pools; a prep worker is one process per core, so each
uses one thread (``RAYON_NUM_THREADS=1``, ``FASTOKENS_BPE_THREADS=1``, set before the import),
and only single-document calls are made (gigatoken's never touch its pool). A process that
forks workers must not have run a Rust backend first (a forked pool has no threads: a child
using it hangs); `shards.tokenizer.probe_backend` checks a backend in a child process for that.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tiktoken

RUST_THREADS_ENV = {"RAYON_NUM_THREADS": "1", "FASTOKENS_BPE_THREADS": "1"}
FAST_EXTRA = "pip install 'moe-shards[fast]'"


class TokenizerError(ValueError):
    """A tokenizer that cannot be used; the message is one line naming the fix."""


class BackendMissing(TokenizerError):
    """The backend's package is not installed (or cannot be imported)."""


class Encoder:
    """GPT-2 BPE ids of a document: ``encode_document(text)`` is ``encode_ordinary(text) + [EOT]``
    as uint16, special-token text encoded as ordinary text. ``name``/``version`` say which
    backend made them (the manifest records it)."""

    name = "?"

    def __init__(self, eot_id: int, version: str) -> None:
        self.eot_id = eot_id
        self.version = version

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    def encode_ordinary(self, text: str) -> np.ndarray:
        """The ids of `text` (any integer dtype), special-token text as ordinary text."""
        raise NotImplementedError

    def encode_document(self, text: str) -> np.ndarray:
        ids = self.encode_ordinary(text)
        out = np.empty(len(ids) + 1, dtype=np.uint16)
        out[:-1] = ids
        out[-1] = self.eot_id
        return out


class TiktokenEncoder(Encoder):
    name = "tiktoken"

    def __init__(self, enc: tiktoken.Encoding, eot_id: int) -> None:
        super().__init__(eot_id, _version("tiktoken"))
        self.encoding = enc
        self._none: set[str] = set()

    def encode_ordinary(self, text: str) -> np.ndarray:
        # with no special token allowed or disallowed this encodes exactly as encode_ordinary,
        # into a numpy array with no Python list in between
        return self.encoding.encode_to_numpy(text, allowed_special=self._none,
                                             disallowed_special=())


class GigatokenEncoder(Encoder):
    """gigatoken's BPETokenizer, built without special tokens (built with them, it raises on
    the literal ``<|endoftext|>``), one document per call.

    Its per-word cache grows with the distinct words it has seen (+7 MB per MB of text made of
    distinct words, measured), and it has no way to empty it: the tokenizer is rebuilt (~50 ms)
    when this process's RSS has grown by `cache_limit_mb` since the last build (read every
    `check_chars` characters; where /proc is missing, every `rebuild_chars` characters). The
    cache never changes an id, so neither does a rebuild."""

    name = "gigatoken"
    CACHE_LIMIT_MB = 128.0
    CHECK_CHARS = 4_000_000
    REBUILD_CHARS = 256_000_000

    def __init__(self, ranks_path: str, eot_id: int, cache_limit_mb: float = CACHE_LIMIT_MB,
                 check_chars: int = CHECK_CHARS, rebuild_chars: int = REBUILD_CHARS) -> None:
        super().__init__(eot_id, _version("gigatoken"))
        os.environ.update(RUST_THREADS_ENV)
        self._ranks = ranks_path
        self.cache_limit_mb = cache_limit_mb
        self.check_chars = check_chars
        self.rebuild_chars = rebuild_chars
        self.rebuilds = 0
        self._build()

    def _build(self) -> None:
        from gigatoken.gigatoken_rs import BPETokenizer

        self._tok = None  # free the old cache before building the new one
        self._tok = BPETokenizer.from_tiktoken(self._ranks, "gpt2", None)
        self._encode = self._tok.encode
        self._rss_at_build = rss_mb()
        self._chars = 0
        self._next_check = self.check_chars if self._rss_at_build else self.rebuild_chars

    def encode_ordinary(self, text: str) -> np.ndarray:
        self._chars += len(text)
        if self._chars >= self._next_check:
            self._bound_cache()
        return self._encode(text)

    def encode_document(self, text: str) -> np.ndarray:  # one call less per document
        self._chars += len(text)
        if self._chars >= self._next_check:
            self._bound_cache()
        ids = self._encode(text)
        out = np.empty(len(ids) + 1, dtype=np.uint16)
        out[:-1] = ids
        out[-1] = self.eot_id
        return out

    def _bound_cache(self) -> None:
        rss = rss_mb()
        if not rss or rss - self._rss_at_build >= self.cache_limit_mb:
            self.rebuilds += 1
            self._build()
        else:
            self._next_check = self._chars + self.check_chars


class FastokensEncoder(Encoder):
    """fastokens' Tokenizer from the ranks and GPT-2's pattern with no special tokens;
    ``encode_batch_flat`` of one document (raw uint32 bytes: 1.3x ``encode_ordinary().ids``)."""

    name = "fastokens"

    def __init__(self, ranks_path: str, eot_id: int, pattern: str) -> None:
        super().__init__(eot_id, _version("fastokens"))
        os.environ.update(RUST_THREADS_ENV)
        import fastokens

        self._tok = fastokens.Tokenizer.from_tiktoken(ranks_path, pattern=pattern,
                                                      special_tokens={})
        self._flat = self._tok.encode_batch_flat

    def encode_ordinary(self, text: str) -> np.ndarray:
        return np.frombuffer(self._flat([text])[0], dtype=np.uint32)


@dataclass(frozen=True)
class Backend:
    """How to find, name and build one backend: ``build(ranks_path, eot_id, pattern)``."""

    name: str
    module: str  # the import name
    requirement: str  # what pip installs
    build: Callable[[str, int, str], Encoder]
    native: str | None = None  # the compiled extension module (its sha256 names the build)

    def installed(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):  # a parent missing, or sys.modules[name] is None
            return False

    def load(self, ranks_path: str, eot_id: int, pattern: str) -> Encoder:
        """The backend's encoder; BackendMissing (one line, how to install it) if it cannot be
        imported. Rust thread pools get one thread (set before the first import)."""
        os.environ.update(RUST_THREADS_ENV)
        try:
            importlib.import_module(self.module)
        except ImportError as e:
            raise BackendMissing(
                f"--tokenizer-backend {self.name}: the {self.module} package is not installed "
                f"({e.msg}); pip install '{self.requirement}' (or {FAST_EXTRA}), or use "
                "--tokenizer-backend auto") from e
        return self.build(ranks_path, eot_id, pattern)

    def identity(self) -> dict[str, str]:
        """What names this build of the (loaded) backend: version, compiled library's sha256."""
        out = {"backend": self.name, "version": _version(self.module)}
        mod = sys.modules.get(self.native) if self.native else None
        if mod is not None and getattr(mod, "__file__", None):
            with open(mod.__file__, "rb") as f:
                out["native_sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
        return out


def _gigatoken(ranks: str, eot_id: int, pattern: str) -> Encoder:
    return GigatokenEncoder(ranks, eot_id)  # its "gpt2" pretokenizer is this pattern


# The fast backends, fastest first: `auto` takes the first installed one that passes the
# conformance check (measured: docs/tokenizer.md).
FAST_BACKENDS: dict[str, Backend] = {
    "gigatoken": Backend("gigatoken", "gigatoken", "gigatoken>=0.10", _gigatoken,
                         "gigatoken.gigatoken_rs"),
    "fastokens": Backend("fastokens", "fastokens", "fastokens>=0.3.5", FastokensEncoder,
                         "fastokens._native"),
}


def rss_mb() -> float:
    """This process's resident set in MB (0.0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return 0.0


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"

