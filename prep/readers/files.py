"""Local input files: glob expansion, identity, checksums, decompression, lines, partitions.

Everything the file readers (json, text, parquet) and the code/prose readers share:

- :func:`expand` (from :mod:`prep.readers.paths`): data_files patterns -> sorted paths, each
  real file once (a pattern matching nothing, or something that is not a file, is an error);
- :class:`FileInfo`: a file's identity (size + mtime_ns), checked again in the worker;
- :func:`sha256_range` / :func:`file_record`: checksums, computed in workers only;
- :func:`iter_decompressed`: bytes decompressed by suffix (.gz .zst/.zstd .bz2 .xz), with
  truncation detection (a stream that never ends is an error, not an early stop);
- :func:`iter_range` / :func:`line_lists` / :func:`iter_lines`: the lines a byte range of a
  plain file owns. A range ``[start, end)`` owns exactly the lines whose first byte lies in it,
  so the ranges of a file share its lines out, each line to exactly one range;
- :func:`pack_files` / :func:`byte_ranges`: consecutive files packed into partitions of up to
  ``partition_bytes`` (a compressed file counting as COMPRESSION_RATIO times its size on disk);
  a larger plain file split into byte ranges, a larger compressed file made a stream partition
  cut into pieces (:mod:`prep.readers.pieces`) (used by :class:`prep.readers.local.FileReader`).
"""

from __future__ import annotations

import bz2
import hashlib
import json
import lzma
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import zstandard

from shards.hashing import hash_range

CHUNK = 1 << 16  # bytes per read: 64 KiB keeps the decompressed output in cache (a .zst
#                  JSON Lines file reads ~1.1x faster than with 1 MiB); looked up at call
#                  time, so tests can shrink it

COMPRESSION_RATIO = 4  # a compressed file's text, estimated from its size on disk: JSON Lines
#                       of code compresses 4.3x with zstd -3 (prep.bench's input), text 3-5x

# suffix -> (format name, decompressor factory, skip NUL padding between streams)
_FORMATS: dict[str, tuple[str, Callable[[], Any], bool]] = {
    ".gz": ("gzip", lambda: zlib.decompressobj(31), True),
    ".bz2": ("bzip2", bz2.BZ2Decompressor, False),
    ".xz": ("xz", lzma.LZMADecompressor, True),
    ".zst": ("zstandard", lambda: zstandard.ZstdDecompressor().decompressobj(), False),
    ".zstd": ("zstandard", lambda: zstandard.ZstdDecompressor().decompressobj(), False),
}
_CORRUPT = (zlib.error, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError)


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FileInfo:
    """A file and its identity: a changed size or mtime means a changed input."""

    path: str
    size: int
    mtime_ns: int

    def to_spec(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns}

    @classmethod
    def from_spec(cls, d: dict[str, Any]) -> FileInfo:
        return cls(str(d["path"]), int(d["size"]), int(d["mtime_ns"]))


def stat_file(path: str) -> FileInfo:
    st = os.stat(path)
    return FileInfo(path, st.st_size, st.st_mtime_ns)


def check_unchanged(f: FileInfo, error: Callable[[str], Exception]) -> None:
    """Raise error(...) when a file's size or mtime differs from what the plan recorded."""
    try:
        now = stat_file(f.path)
    except OSError as e:
        raise error(f"{f.path}: cannot read it ({e})") from e
    if (now.size, now.mtime_ns) != (f.size, f.mtime_ns):
        raise error(f"{f.path}: changed since the run was planned (was {f.size} bytes, "
                    f"mtime_ns {f.mtime_ns}; now {now.size} bytes, mtime_ns {now.mtime_ns}); "
                    "plan the run again")


def spec_identity(spec: dict[str, Any]) -> str:
    """A short digest of a partition's spec (paths, sizes, mtimes, ranges): its identity."""
    canon = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()[:32]


def sha256_range(path: str, start: int = 0, end: int | None = None) -> str:
    """sha256 of bytes [start, end) of a file (the whole file by default)."""
    h = hashlib.sha256()
    hash_range(h, path, start, end)
    return h.hexdigest()


def file_record(path: str, name: str | None = None) -> dict[str, Any]:
    """``{"path", "bytes", "sha256"}`` of one whole file (`name` replaces the path shown)."""
    return {"path": name or path, "bytes": os.path.getsize(path), "sha256": sha256_range(path)}


def compression(path: str) -> str | None:
    """The compression format a file's suffix names, or None for a plain file."""
    fmt = _FORMATS.get(os.path.splitext(path.lower())[1])
    return fmt[0] if fmt else None


def empty_file_error(path: str, what: str = "is empty (0 bytes)") -> str:
    return (f"{path}: the file {what}; remove it from data_files (or fix the glob), or "
            "re-create it")


# --------------------------------------------------------------------------- bytes


def iter_decompressed(path: str, hasher: Any = None) -> Iterator[bytes]:
    """The bytes of a file, decompressed by suffix (.gz .zst .zstd .bz2 .xz); plain otherwise.

    Concatenated streams (frames, members) are read one after another. Raises ValueError on a
    corrupt stream, and on a truncated one: a stream that started but never ended, including
    a file cut right after the next frame's header (zstandard's streaming reader would just
    stop early). `hasher`, if given, is fed the raw (on-disk) bytes.
    """
    fmt = _FORMATS.get(os.path.splitext(path.lower())[1])
    with open(path, "rb") as f:
        if fmt is None:
            while block := f.read(CHUNK):
                if hasher is not None:
                    hasher.update(block)
                yield block
            return
        name, new, skip_padding = fmt
        unit = "frame" if name == "zstandard" else "stream"
        dec, started = new(), False
        while block := f.read(CHUNK):
            if hasher is not None:
                hasher.update(block)
            while block:
                if not started and skip_padding:
                    block = block.lstrip(b"\0")
                    if not block:
                        break
                started = True
                try:
                    out = dec.decompress(block)
                except _CORRUPT as e:
                    raise ValueError(f"{name} data is corrupt ({e}); re-download or "
                                     "re-compress the file") from e
                if out:
                    yield out
                if dec.eof:  # a stream ended: the rest (if any) is the next one
                    block, dec, started = dec.unused_data, new(), False
                else:
                    block = b""
        if started:
            raise ValueError(f"{name} data is truncated (the last {unit} never ends); the file "
                             "was cut short, re-download or re-compress it")


def iter_range(path: str, start: int, end: int,
               hasher: Any = None) -> Iterator[tuple[int, bytes]]:
    """(offset, chunk): the bytes of the lines a plain file's range [start, end) owns.

    A range owns the lines whose first byte lies in it: it skips a line begun before
    `start` and reads past `end` to finish its last line. `hasher` gets exactly the bytes
    [start, end).
    """
    with open(path, "rb") as f:
        pos = max(start - 1, 0)  # the byte before `start` says whether a line begins there
        f.seek(pos)
        skipping = start > 0
        while True:
            block = f.read(CHUNK)
            if not block:
                return
            at, pos = pos, pos + len(block)
            if hasher is not None and at < end:
                hasher.update(block[max(start - at, 0):end - at])
            lo = 0
            if skipping:  # the owned lines begin after the first newline at index >= start-1
                nl = block.find(b"\n")
                if nl < 0 and pos < end:
                    continue
                if nl < 0 or at + nl + 1 >= end:  # no line begins inside the range
                    return  # (pos >= end here: the range is hashed)
                lo, skipping = nl + 1, False
            if pos >= end:  # the last owned line ends at the first newline at index >= end-1
                nl = block.find(b"\n", max(end - 1 - at, lo))
                if nl >= 0:
                    yield at + lo, block[lo:nl + 1]
                    return
            yield at + lo, block[lo:] if lo else block


def with_offsets(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(offset, chunk) pairs of a byte stream."""
    at = 0
    for chunk in chunks:
        yield at, chunk
        at += len(chunk)


def line_lists(chunks: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, list[bytes]]]:
    """Lines of a byte stream of (offset, chunk) pairs, a list per chunk: (offset of the first
    line, lines without their "\n"). A last line without "\n" counts as a line.

    Each chunk is split once; only a line that straddles two chunks is copied again.
    """
    rest, rest_at = b"", 0
    for at, chunk in chunks:
        lines = chunk.split(b"\n")
        first_at = at
        if rest:
            lines[0] = rest + lines[0]
            first_at = rest_at
        rest = lines.pop()
        rest_at = at + len(chunk) - len(rest)
        if lines:
            yield first_at, lines
        elif rest:
            rest_at = first_at
    if rest:
        yield rest_at, [rest]


def open_lines(path: str, start: int | None = None, end: int | None = None,
               hasher: Any = None) -> Iterator[tuple[int, list[bytes]]]:
    """(offset, lines) of a whole file, decompressed by suffix (offsets then count
    decompressed bytes), or of a plain file's byte range [start, end); see line_lists."""
    if start is None:
        return line_lists(with_offsets(iter_decompressed(path, hasher)))
    if compression(path) is not None:
        raise ValueError(f"{path}: a compressed file cannot be read as a byte range")
    return line_lists(iter_range(path, start, end if end is not None else start, hasher))


def bad_line(path: str, raw: bytes, pos: int, by_row: bool,
             e: ValueError | RecursionError) -> str:
    """Why line `raw` (line index or byte offset `pos`) is unreadable: not UTF-8, bad JSON,
    JSON nested deeper than the parser allows."""
    where = f"{path}: line {pos + 1}" if by_row else f"{path}: line at byte {pos}"
    if isinstance(e, RecursionError):
        return (f"{where}: JSON nested deeper than Python's parser allows ({len(raw)} bytes); "
                "flatten or remove that line")
    if isinstance(e, UnicodeDecodeError):
        return (f"{where}: bytes are not UTF-8 ({e.reason}: byte {raw[e.start]:#04x} at "
                f"column {e.start + 1}); re-encode the file as UTF-8")
    if isinstance(e, json.JSONDecodeError):
        return f"{where}: malformed JSON ({e.msg} at column {e.colno}); fix or remove that line"
    return f"{where}: {e}"


def iter_lines(path: str, start: int | None = None,
               end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(offset of its first byte, line without "\n") of a whole file or a plain range."""
    for at, lines in open_lines(path, start, end):
        for line in lines:
            yield at, line
            at += len(line) + 1


# --------------------------------------------------------------------------- partitions


def text_size(f: FileInfo) -> int:
    """What a file counts for when packing partitions: its size on disk, times
    COMPRESSION_RATIO for a compressed file (so that a partition of .zst files holds about as
    much text, and takes a task about as long, as one of plain files)."""
    return f.size * COMPRESSION_RATIO if compression(f.path) is not None else f.size


def pack_files(files: list[FileInfo], limit: int,
               size_of: Callable[[FileInfo], int] = text_size) -> list[list[FileInfo]]:
    """Consecutive files packed into groups of up to `limit` bytes of text (by `size_of`,
    :func:`text_size` by default); a file larger than `limit` is a group of its own."""
    groups: list[list[FileInfo]] = []
    current: list[FileInfo] = []
    size = 0
    for f in files:
        n = size_of(f)
        if n > limit or (current and size + n > limit):
            if current:
                groups.append(current)
            current, size = [], 0
        current.append(f)
        size += n
        if n > limit:
            groups.append(current)
            current, size = [], 0
    if current:
        groups.append(current)
    return groups


def byte_ranges(size: int, limit: int) -> list[tuple[int, int]]:
    return [(s, min(s + limit, size)) for s in range(0, size, limit)]
