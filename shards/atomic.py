"""Atomic, durable file writes: the one helper every package of this project uses.

A write goes to a temporary file beside its destination (``.<name>.tmp-<pid>``), is flushed
and fsynced, renamed over the destination with ``os.replace`` (atomic on POSIX), and the
directory is fsynced so the rename itself survives a power loss. At every instant a reader
sees the complete old file or the complete new one. A failed write removes its temporary file;
one left by a killed process is found by :func:`stale_temps` (its PID no longer runs).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TMP_MARK = ".tmp-"


def temp_path(path: str | Path) -> Path:
    """The temporary name this process writes `path` under: ``.<name>.tmp-<pid>`` beside it."""
    p = Path(path)
    return p.with_name(f".{p.name}{TMP_MARK}{os.getpid()}")


def fsync_dir(path: str | Path) -> None:
    """fsync a directory, so that renames and new entries in it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on a clean exit it replaces `path` atomically.

    On an exception (a full disk, Ctrl-C) the temporary file is removed and `path` is untouched;
    an OSError that names no file (a write or close on a full disk) is given `path`, so that its
    message says which file could not be written.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} has no 'w'")
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def copy_file(src: str | Path, dest: str | Path) -> Path:
    """Copy `src` to `dest` atomically (a reader never sees a partial copy)."""
    with open(src, "rb") as fin, atomic_open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    return Path(dest)


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def stale_temps(directory: str | Path) -> list[Path]:
    """Temporary files of :func:`atomic_open` in `directory` whose writing process is gone."""
    d = Path(directory)
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.iterdir()):
        head, sep, pid = p.name.rpartition(TMP_MARK)
        if sep and head.startswith(".") and pid.isdigit() and not pid_alive(int(pid)):
            out.append(p)
    return out


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete what :func:`stale_temps` finds; returns the removed paths."""
    removed = stale_temps(directory)
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
