"""The check `shards.open` runs before a token is read, and the stamp that spares repeating it.

Levels (``shards.open(path, verify=LEVEL)``):

- ``sizes``: every declared file exists, lies inside the dataset and has its declared size
  (`shards.reader.check_layout`; nothing is read);
- ``ids``: ``sizes``, and every token id of every shard is < the tokenizer's vocabulary
  (``manifest.tokenizer.vocab_size``): one vectorized pass over the shards;
- ``full``: ``ids``, and the sha256 of every shard and document index equals the manifest's,
  in the same single read (`shards.scan.scan_file`).

`python -m shards verify` checks more (the document index against the tokens, leakage); this is
the part a trainer needs before step 0, at reading speed.

The stamp: after a check, every file that passed is recorded with its state (size, mtime and
ctime in ns, inode number), the sha256 the manifest expects of it and the level it passed,
under the manifest's fingerprint and vocabulary size. The next check skips a file whose record
still matches (the same state, the same expected sha256, a level at least the one asked for)
and reads every other one. The ctime is what makes the record hard to fool by accident: the
kernel sets it to the current time on every change to the file's data or metadata (a write,
``utime`` itself, chmod, chown, a rename or link) and no system call sets it to a chosen value,
so a file written and then given its old mtime back (``os.utime``, ``touch -r``, ``cp -p`` or a
restore tool copying over it) has a new ctime; a file replaced by another (``rsync``, ``tar``,
``mv``, a copy of the dataset) has a new inode and ctime. What no file state shows, bits that
rot on the disk or a change made while the clock was set back, only a read finds: ``shards
verify`` or ``stamp="off"``. See docs/checking.md, "What the stamp sees".

The stamp lives beside the dataset (``OUT/.shards-verified.json``) or, where the dataset
directory cannot be written (read-only shared storage), in the user's cache directory:
``$XDG_CACHE_HOME`` or ``~/.cache``, ``moe-shards/verified/<sha256 of the absolute dataset
path>.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shards.atomic import write_text
from shards.format import Manifest
from shards.scan import FileScan, scan_file, sha_problem, token_problem

LEVELS = ("sizes", "ids", "full")
STAMP_NAME = ".shards-verified.json"
STAMP_FORMAT = "moe-shards-verified"
STAMP_VERSION = 2  # 2: records hold ctime and inode (version 1 stamps are ignored)
STATE_KEYS = ("size", "mtime_ns", "ctime_ns", "inode")  # a file's state, as a record holds it
STAMP_PLACES = ("auto", "dataset", "cache", "off")


@dataclass
class DataCheck:
    """What a check did: ``Dataset.verification``."""

    level: str
    files: int  # files the level covers (sizes: all; ids: shards; full: shards and indexes)
    files_read: int = 0  # read (and hashed, at `full`) by this check
    files_skipped: int = 0  # unchanged since the stamp recorded them as passed
    bytes_read: int = 0
    bytes_skipped: int = 0
    seconds: float = 0.0  # the whole check, layout included
    read_seconds: float = 0.0  # the reading pass alone
    stamp: str | None = None  # the stamp file written (or read, when nothing was read)
    problems: list[str] = field(default_factory=list)

    @property
    def gb_per_s(self) -> float:
        """Reading (and hashing) speed of the pass, GB/s; 0 when nothing was read."""
        return self.bytes_read / 1e9 / self.read_seconds if self.read_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gb_per_s": round(self.gb_per_s, 3)}

    def summary(self) -> str:
        """One line for a log."""
        if self.level == "sizes":
            return (f"data check: sizes only, {self.files} files present with their declared "
                    f"sizes; token ids and sha256 not checked ({self.seconds:.2f} s)")
        what = "sha256 and token ids" if self.level == "full" else "token ids"
        skipped = (f", {self.files_skipped} unchanged since {self.stamp} "
                   f"({self.bytes_skipped / 1e6:,.2f} MB skipped)" if self.files_skipped else "")
        read = (f"{self.files_read} read ({self.bytes_read / 1e6:,.2f} MB at "
                f"{self.gb_per_s:.2f} GB/s)" if self.files_read else "none read")
        return (f"data check: {self.level} ({what}) of {self.files} files: {read}{skipped}; "
                f"{len(self.problems)} problem(s) in {self.seconds:.2f} s")


# --------------------------------------------------------------------------- the stamp


def cache_stamp_path(root: Path) -> Path:
    """The stamp's place in the user's cache directory (for read-only datasets)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()
    return base / "moe-shards" / "verified" / f"{key}.json"


def _stamp_key(manifest: Manifest) -> dict[str, Any]:
    return {"fingerprint": manifest.fingerprint(), "vocab_size": manifest.tokenizer.vocab_size}


def read_stamp(root: Path, manifest: Manifest, place: str = "auto") -> tuple[dict, Path | None]:
    """The file records of the stamps that match this manifest ({} when none does; with
    "auto", those beside the dataset and in the cache together) and the first one's path."""
    if place == "off":
        return {}, None
    candidates = {"auto": [root / STAMP_NAME, cache_stamp_path(root)],
                  "dataset": [root / STAMP_NAME], "cache": [cache_stamp_path(root)]}[place]
    key = _stamp_key(manifest)
    records: dict[str, Any] = {}
    first = None
    for path in candidates:
        try:
            st = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (isinstance(st, dict) and st.get("format") == STAMP_FORMAT
                and st.get("version") == STAMP_VERSION
                and all(st.get(k) == v for k, v in key.items())
                and isinstance(st.get("files"), dict)):
            records.update(st["files"])  # each record is checked against its file anyway
            first = first or path
    return records, first


def write_stamp(root: Path, manifest: Manifest, files: dict[str, Any],
                place: str = "auto") -> Path | None:
    """Write the stamp atomically beside the dataset, or in the cache when the dataset
    directory is read-only (or `place` says so); the path written, None if neither worked."""
    if place == "off":
        return None
    text = json.dumps({"format": STAMP_FORMAT, "version": STAMP_VERSION,
                       "root": str(root.resolve()), **_stamp_key(manifest), "files": files},
                      indent=1) + "\n"
    targets = {"auto": [root / STAMP_NAME, cache_stamp_path(root)],
               "dataset": [root / STAMP_NAME], "cache": [cache_stamp_path(root)]}[place]
    for path in targets:
        try:
            if path.parent == root and not os.access(root, os.W_OK):
                continue  # read-only dataset directory: the cache holds the stamp
            path.parent.mkdir(parents=True, exist_ok=True)
            return write_text(path, text)
        except OSError:  # read-only file system, permissions root's access() did not see
            continue
    return None


def file_state(path: Path) -> dict[str, int]:
    """What the stamp records of a file, and compares: see the module docstring."""
    st = path.stat()
    return dict(zip(STATE_KEYS, (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino),
                    strict=True))


# --------------------------------------------------------------------------- the check


def check_files(root: Path, manifest: Manifest, files: dict[str, Path], level: str, *,
                stamp: str = "auto", workers: int | None = None) -> DataCheck:
    """Check the files of `manifest` (resolved by `check_layout`: manifest path -> file) at
    `level`; reads and writes the stamp as `stamp` says (auto, dataset, cache or off)."""
    if level not in LEVELS:
        raise ValueError(f"verify={level!r}: choose one of {', '.join(LEVELS)}")
    if stamp not in STAMP_PLACES:
        raise ValueError(f"stamp={stamp!r}: choose one of {', '.join(STAMP_PLACES)}")
    if level == "sizes":
        return DataCheck(level=level, files=len(files))
    full = level == "full"
    vocab = manifest.tokenizer.vocab_size
    expected: dict[str, tuple[str, str]] = {}  # manifest path -> (sha256, kind)
    for dom in manifest.domains.values():
        for rec in dom.splits.values():
            expected.update({s.path: (s.sha256, "shard") for s in rec.shards})
            if full:
                expected[rec.doc_index.path] = (rec.doc_index.sha256, "document index")
    check = DataCheck(level=level, files=len(expected))
    recorded, stamp_read = read_stamp(root, manifest, stamp)
    rank = LEVELS.index(level)
    states = {rel: file_state(files[rel]) for rel in expected}
    todo = []
    for rel, (sha, _) in expected.items():
        r = recorded.get(rel)
        if (isinstance(r, dict) and all(r.get(k) == v for k, v in states[rel].items())
                and r.get("sha256") == sha and r.get("level") in LEVELS
                and LEVELS.index(r["level"]) >= rank):
            check.files_skipped += 1
            check.bytes_skipped += states[rel]["size"]
        else:
            todo.append(rel)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers or min(2, os.cpu_count() or 1)) as pool:
        futures = {rel: pool.submit(scan_file, files[rel], sha256=full,
                                    vocab_size=vocab if expected[rel][1] == "shard" else None)
                   for rel in todo}
        scans: dict[str, FileScan] = {rel: f.result() for rel, f in futures.items()}
    check.read_seconds = time.perf_counter() - t0
    check.files_read = len(scans)
    check.bytes_read = sum(s.size for s in scans.values())

    # files the manifest no longer declares (an older version's paths) drop out of the stamp
    passed = {rel: r for rel, r in recorded.items() if rel in files and rel not in scans}
    for rel, scan in scans.items():
        sha, kind = expected[rel]
        bad_sha = sha_problem(scan, sha, kind)  # one line per file, its token ids first
        found = token_problem(scan, vocab, sha_differs=bad_sha is not None) or bad_sha
        if found:
            check.problems.append(found)
        elif file_state(files[rel]) == states[rel]:  # unchanged while it was read
            passed[rel] = {**states[rel], "sha256": sha, "level": level}
    if scans and passed:
        written = write_stamp(root, manifest, passed, stamp)
        check.stamp = str(written) if written else None
    elif stamp_read is not None:
        check.stamp = str(stamp_read)
    return check
