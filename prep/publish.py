"""Publishing: at every instant OUT holds either the complete old dataset or the complete new one.

Data lives in versioned directories that the manifest names (``OUT/data.<N>/<domain>/<split>/``;
every path in the manifest is relative to OUT, so readers need nothing new). Publishing version N:

1. the assembled staging directory is renamed to ``OUT/data.<N>`` (N = the published version
   + 1; a leftover ``data.<N>`` of a killed publish is removed first): the old manifest still
   names the old, complete version;
2. ``OUT/manifest.json`` is replaced atomically (temporary file, fsync, rename, directory fsync):
   the one switch from old to new;
3. only then the old version's files (and the pre-versioning layout's domain directories the old
   manifest named) are removed.

A kill between any two steps leaves a readable dataset; what a killed publish leaves behind is
removed by the next run. A full disk at step 2 leaves the old manifest and data untouched, and
the new version directory is taken back into the work directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from prep import faults
from shards import atomic
from shards.format import DOMAIN_NAME_RE, MANIFEST_NAME, Manifest

VERSION_RE = re.compile(r"^data\.(\d+)$")


def version_dir(n: int) -> str:
    return f"data.{n}"


def current_version(out: Path) -> tuple[int, set[str]]:
    """(version, top-level entries) the published manifest names: version 0 for none or for a
    manifest of the pre-versioning layout, whose domain directories are the entries."""
    try:
        m = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0, set()
    tops: set[str] = set()
    try:
        for dom in m["domains"].values():
            for rec in dom["splits"].values():
                for path in [s["path"] for s in rec["shards"]] + [rec["doc_index"]["path"]]:
                    tops.add(str(path).split("/", 1)[0])
    except (KeyError, TypeError, AttributeError):
        return 0, set()
    versions = [int(v.group(1)) for t in tops if (v := VERSION_RE.match(t))]
    return (max(versions) if versions else 0), tops


def next_version(out: Path) -> int:
    return current_version(out)[0] + 1


def publish(staging: Path, out: Path, manifest: Manifest, version: int) -> None:
    """Steps 1-3 of the module docstring; `manifest` already names `data.<version>/...`."""
    _, old_tops = current_version(out)
    dest = out / version_dir(version)
    if dest.exists():  # left by a publish killed after step 1
        shutil.rmtree(dest)
    os.rename(staging, dest)
    atomic.fsync_dir(out)
    faults.maybe_kill("publish-moved")
    try:
        atomic.write_text(out / MANIFEST_NAME, manifest.to_json())
    except BaseException:
        os.rename(dest, staging)  # the old dataset stays the published one
        raise
    faults.maybe_kill("publish-manifest")
    for top in old_tops:
        if top != dest.name and (VERSION_RE.match(top) or DOMAIN_NAME_RE.match(top)):
            shutil.rmtree(out / top, ignore_errors=True)


def remove_orphans(out: Path) -> list[str]:
    """Version directories that no manifest names (a publish killed before its switch, or
    before removing the old version); called under the lock."""
    _, tops = current_version(out)
    removed = []
    for p in out.iterdir() if out.is_dir() else []:
        if VERSION_RE.match(p.name) and p.name not in tops and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed
