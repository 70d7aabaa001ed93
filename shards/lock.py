"""The lock on an output directory: one process writes into it at a time.

A lock file in the directory is held (``flock``) by the process that writes there, for the life
of a ``with`` block; it records the holder's PID, host, start time and command line, so a second
process is refused naming the first. The kernel drops the lock when its holder dies, even by
kill -9, so a stale lock never needs cleaning up; the file itself stays. prep holds one on its
``--out`` (``.prep.lock``), training on its run directory (``.train.lock``).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO


class LockHeld(RuntimeError):
    """Another process holds the lock; the message names it and what to do."""


def holder_of(f: IO[str]) -> str:
    """The holder recorded in an open lock file, in words."""
    f.seek(0)
    text = f.read().strip()
    try:
        h = json.loads(text)
        return (f"PID {h['pid']} on host {h['host']}, started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(h['started']))}")
    except (ValueError, KeyError, TypeError):
        return text or "holder unknown"


class DirLock:
    """An exclusive lock on `path`'s directory; `what` names a holder in the refusal ("prep
    run", "training run")."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._f: IO[str] | None = None

    def __enter__(self) -> DirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder_of(f)
            f.close()
            raise LockHeld(f"another {self.what} is writing to {self.path.parent} ({who}); "
                           "wait for it to finish, or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "started": time.time(), "argv": sys.argv}) + "\n")
        f.flush()
        self._f = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self._f is not None:
            self._f.close()  # closing the descriptor releases the flock
            self._f = None
