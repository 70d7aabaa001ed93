"""Publishing: at every instant OUT holds either the complete old dataset or the complete new one.

Data lives in versioned directories that the manifest names (``OUT/data.<N>/<domain>/<split>/``;
every path in the manifest is relative to OUT, so readers need nothing new). Publishing version N:

1. the assembled staging directory (fsynced, marked with ``.prep-data``) is renamed to
   ``OUT/data.<N>`` (N = the published version + 1): the old manifest still names the old,
   complete version;
2. ``OUT/manifest.json`` is replaced atomically (temporary file, fsync, rename, directory fsync),
   with Ctrl-C and SIGTERM held back for that instant: the one switch from old to new;
3. only then are the old version's files removed (and, for a dataset written before versioned
   directories, the domain directories its manifest named).

A kill between any two steps leaves a readable dataset; what it leaves behind (a marked version
directory no manifest names) is removed by the next run. If the switch fails (a full disk), the
manifest on disk decides: while it still names the old version, the new directory goes back to
the work directory and nothing was published.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prep import faults
from shards import atomic
from shards.format import DOMAIN_NAME_RE, MANIFEST_NAME, Manifest

VERSION_RE = re.compile(r"^data\.(\d+)$")
MARKER = ".prep-data"  # in every version directory prep publishes: only those are ever removed


class PublishError(RuntimeError):
    pass


def version_dir(n: int) -> str:
    return f"data.{n}"


def current_version(out: Path) -> tuple[int, set[str]]:
    """(version, top-level entries) the published manifest names: version 0 for no manifest or
    one of the pre-versioning layout, whose domain directories are then the entries. A manifest
    that exists but cannot be read is an error: nothing may be removed on its account."""
    path = out / MANIFEST_NAME
    if not path.exists():
        return 0, set()
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
        tops: set[str] = set()
        for dom in m["domains"].values():
            for rec in dom["splits"].values():
                for p in [s["path"] for s in rec["shards"]] + [rec["doc_index"]["path"]]:
                    tops.add(str(p).split("/", 1)[0])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise PublishError(f"{path} exists but cannot be read ({e}); prep will not replace or "
                           "clean a dataset it cannot read: move it away, or fix it") from e
    versions = [int(v.group(1)) for t in tops if (v := VERSION_RE.match(t))]
    return (max(versions) if versions else 0), tops


def next_version(out: Path) -> int:
    return current_version(out)[0] + 1


@contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends (main thread only; elsewhere a no-op)."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def publish(staging: Path, out: Path, manifest: Manifest, version: int,
            on_switch: Callable[[], None]) -> set[str]:
    """Steps 1-2 of the module docstring (`manifest` already names `data.<version>/...`);
    calls `on_switch` the moment the new dataset is the published one. Returns the old
    version's top-level entries, for :func:`remove_old` (step 3)."""
    _, old_tops = current_version(out)
    (staging / MARKER).write_text(manifest.fingerprint() + "\n")
    atomic.fsync_dir(staging)
    dest = out / version_dir(version)
    if dest.exists():  # left by a publish killed after step 1 (remove_orphans removes it too)
        shutil.rmtree(dest)
    os.rename(staging, dest)
    atomic.fsync_dir(out)
    faults.maybe_kill("publish-moved")
    try:
        with _signals_held():
            atomic.write_text(out / MANIFEST_NAME, manifest.to_json())
            on_switch()
    except BaseException:
        if dest.name not in _named(out):  # the switch did not happen: the old one stays
            os.rename(dest, staging)
        else:
            on_switch()
        raise
    faults.maybe_kill("publish-manifest")
    return old_tops


def remove_old(out: Path, old_tops: set[str]) -> None:
    """Step 3: the files of the version the switch replaced."""
    _, now = current_version(out)
    for top in old_tops - now:
        if VERSION_RE.match(top) or DOMAIN_NAME_RE.match(top):
            shutil.rmtree(out / top, ignore_errors=True)


def _named(out: Path) -> set[str]:
    try:
        return current_version(out)[1]
    except PublishError:
        return set()


def remove_orphans(out: Path) -> list[str]:
    """Marked version directories that no manifest names (a publish killed before its switch,
    or before removing the old version); called under the lock. Returns their names."""
    if not out.is_dir():
        return []
    _, tops = current_version(out)
    removed = []
    for p in sorted(out.iterdir()):
        if (VERSION_RE.match(p.name) and p.name not in tops and p.is_dir()
                and (p / MARKER).is_file()):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed
