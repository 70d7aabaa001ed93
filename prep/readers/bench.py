"""Reader throughput against a bare loop, measured side by side: ``python -m prep.readers.bench``.

Input: real code, the running Python's standard library ``.py`` files as JSON Lines records
(``content``, ``repo_name``, ``path``), repeated (each copy with its own path) to ``--mb`` MB,
written plain and as ``.jsonl.zst``. Measured, best of ``--repeat``, in MB of JSON Lines text
per CPU-second of this process:

- ``baseline``: the bare loop a user would write: zstandard ``stream_reader`` + text lines +
  ``json.loads`` (plain file: ``open`` + ``json.loads``), text field taken, nothing else;
- ``json reader``: every partition read by :class:`prep.readers.jsonl.JsonReader` (truncation
  check, provenance, Document objects) plus ``partition_record`` (sha256 of the input, on disk:
  the .zst's 4x fewer bytes, or all of the plain file's), and the same less the time sha256
  alone takes over those bytes (``sha256_range``), to show what the checksum costs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import zstandard

from prep.readers import ReadSettings, open_reader
from prep.readers.files import sha256_range
from prep.readers.stdlib import stdlib_files


@dataclass
class BenchConfig:
    mb: float = field(default=60.0, metadata={
        "help": "MB of JSON Lines text to build from the standard library's .py files"})
    repeat: int = field(default=3, metadata={
        "help": "runs of each measurement; the fastest counts"})
    dir: str | None = field(default=None, metadata={
        "help": "folder for the input files (default: a temporary folder); removed after"})


_TYPES = {"float": float, "int": int}


def build_input(folder: str, mb: float) -> tuple[str, str, int]:
    """code.jsonl and code.jsonl.zst of at least `mb` MB; returns the paths and the size."""
    root = sysconfig.get_paths()["stdlib"]
    records = []
    for rel in stdlib_files(root):
        try:
            records.append((rel, open(os.path.join(root, rel), encoding="utf-8").read()))
        except (OSError, UnicodeDecodeError):
            continue
    plain = os.path.join(folder, "code.jsonl")
    size, copy = 0, 0
    with open(plain, "w", encoding="utf-8") as f:
        while size < mb * 1e6:
            for rel, text in records:
                line = json.dumps({"content": text, "repo_name": "cpython",
                                   "path": f"copy{copy}/{rel}"}) + "\n"
                f.write(line)
                size += len(line.encode())
            copy += 1
    packed = plain + ".zst"
    with open(plain, "rb") as src, open(packed, "wb") as dst:
        zstandard.ZstdCompressor(level=3).copy_stream(src, dst)
    return plain, packed, os.path.getsize(plain)


def baseline(path: str) -> int:
    n = 0
    with open(path, "rb") as raw:
        if path.endswith(".zst"):
            stream = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw),
                                      encoding="utf-8")
        else:
            stream = io.TextIOWrapper(raw, encoding="utf-8")
        for line in stream:
            n += len(json.loads(line)["content"])
    return n


def json_reader(path: str) -> int:
    from prep.recipe import DomainConfig

    cfg = DomainConfig(name="code", source="json", data_files=[path], text_field="content")
    n = 0
    for p in open_reader(cfg, ReadSettings()).partitions():
        reader = open_reader(cfg, ReadSettings(probe=False))
        for doc in reader.read(p):
            n += len(doc.text)  # type: ignore[union-attr]
        reader.partition_record(p)
    return n


def best_cpu_s(fn: Callable[[str], int], path: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn(path)
        times.append(time.process_time() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(BenchConfig):
        parser.add_argument(f"--{f.name}", type=_TYPES.get(str(f.type), str), default=f.default,
                            help=f.metadata["help"])
    cfg = BenchConfig(**vars(parser.parse_args(argv)))
    with tempfile.TemporaryDirectory(dir=cfg.dir) as folder:
        plain, packed, size = build_input(folder, cfg.mb)
        mb = size / 1e6
        print(f"input: {mb:.1f} MB of JSON Lines (stdlib code), {os.path.getsize(packed) / 1e6:.1f}"
              " MB as .zst; MB/s = MB of text per CPU-second, best of "
              f"{cfg.repeat}")
        for label, path in (("jsonl.zst", packed), ("jsonl (plain)", plain)):
            base = best_cpu_s(baseline, path, cfg.repeat)
            ours = best_cpu_s(json_reader, path, cfg.repeat)
            digest = best_cpu_s(sha256_range, path, cfg.repeat)
            print(f"{label:14s} baseline {mb / base:4.0f} MB/s | json reader {mb / ours:4.0f} MB/s"
                  f" = {base / ours:.2f}x | less sha256 {mb / (ours - digest):4.0f} MB/s = "
                  f"{base / (ours - digest):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
