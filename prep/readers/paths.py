"""`data_files` patterns -> the regular files they name, each real file once.

- A pattern that is an existing path is used as is (even with glob characters in it).
- A glob is expanded in sorted order; ``**`` matches zero or more directories (as
  ``glob.glob(recursive=True)``: hidden names only where the pattern spells the dot) but walks
  each directory once: a symbolic link back into a directory it is already inside (a loop) is
  not followed, where ``glob`` would list the same file once per level until the kernel's
  symlink limit (41 times for ``a/loop -> .``) or, with two such links, practically forever.
- A real file (device and inode) is listed once, under its first path in that order, even
  when two patterns, two links or a hard link name it again.
- A path that exists but is not a regular file is an error that says what it is and the fix
  (a FIFO, a directory, a symlink loop or a dangling link, a device, a socket), never the
  generic "matches no file"; so is a glob that matches only such paths.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import stat
from collections.abc import Callable, Iterable, Iterator

NO_FILE_FIX = "fix the path or glob (relative paths resolve against the recipe file)"


def expand(patterns: Iterable[str], error: Callable[[str], Exception]) -> list[str]:
    """Paths of the regular files `patterns` name: each pattern's matches sorted, patterns in
    order, each real file once (see the module docstring)."""
    files: list[str] = []
    seen: set[tuple[int, int]] = set()
    for pattern in patterns:
        if os.path.lexists(pattern):
            why = not_a_file(pattern)
            if why is not None:
                raise error(f"data_files entry {pattern!r} {why}")
            matches = [pattern]
        else:
            found = sorted(_iglob(pattern))
            matches = [p for p in found if _is_file(p)]
            if not matches:
                if found:
                    raise error(f"data_files pattern {pattern!r} matches no regular file: "
                                f"{found[0]!r} {not_a_file(found[0])}")
                raise error(f"data_files pattern {pattern!r} matches no file; {NO_FILE_FIX}")
        for m in matches:
            st = os.stat(m)
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                files.append(m)
    return files


def not_a_file(path: str) -> str | None:
    """What `path` is, and the fix, when it is not a regular file (None when it is one)."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return ("is a symbolic link loop (resolving it fails: too many levels of symbolic "
                    "links); point the link at a file, or remove it")
        if os.path.islink(path):
            return (f"is a symbolic link to {os.readlink(path)!r}, which does not exist; fix "
                    "the link or the path")
        return f"cannot be read ({e.strerror}); {NO_FILE_FIX}"
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        base = path.rstrip(os.sep) or os.sep
        return (f"is a directory; name its files with a glob, e.g. "
                f"'{os.path.join(base, '*.jsonl')}' (or '{os.path.join(base, '**', '*.jsonl')}' "
                "with its subdirectories)")
    if stat.S_ISFIFO(st.st_mode):
        return ("is a FIFO (named pipe), not a regular file: prep needs its size and reads it "
                "more than once (plan, workers, checksums, a resume); copy the stream into a "
                f"file first, e.g. `cat {path} > data.jsonl`")
    kind = ("a socket" if stat.S_ISSOCK(st.st_mode) else
            "a character device" if stat.S_ISCHR(st.st_mode) else
            "a block device" if stat.S_ISBLK(st.st_mode) else "not a regular file")
    return f"is {kind}, not a regular file; copy its data into a file and name that file"


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _iglob(pattern: str) -> Iterator[str]:
    if "**" not in pattern:
        return glob.iglob(pattern)
    absolute = pattern.startswith(os.sep)
    parts = [p for p in pattern.split(os.sep) if p]
    return _walk(os.sep if absolute else "", parts, frozenset())


def _dir_key(path: str) -> tuple[int, int] | None:
    """(device, inode) of a directory (links followed), or None if it is not one."""
    try:
        st = os.stat(path or os.curdir)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _entries(path: str, hidden: bool) -> list[str]:
    try:
        names = os.listdir(path or os.curdir)
    except OSError:
        return []
    return sorted(n for n in names if hidden or not n.startswith("."))


def _walk(base: str, parts: list[str], inside: frozenset[tuple[int, int]]) -> Iterator[str]:
    """Paths below directory `base` matching the components `parts`; `inside` holds the
    directories the walk is in (a link to one of them is a loop, not followed)."""
    if not parts:
        yield base
        return
    here = _dir_key(base)
    if here is None:
        return
    inside = inside | {here}
    head, rest = parts[0], parts[1:]
    if head == "**":
        yield from _walk(base, rest, inside)  # zero directories
        for name in _entries(base, hidden=False):
            path = os.path.join(base, name)
            key = _dir_key(path)
            if key is None:
                if not rest:
                    yield path  # a trailing ** matches files too
            elif key not in inside:
                yield from _walk(path, parts, inside)
    elif glob.has_magic(head):
        for name in fnmatch.filter(_entries(base, hidden=head.startswith(".")), head):
            yield from _walk(os.path.join(base, name), rest, inside)
    else:
        path = os.path.join(base, head)
        if os.path.lexists(path):
            yield from _walk(path, rest, inside)
