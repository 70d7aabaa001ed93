"""The lock on a training run's --out: one process writes into a run directory at a time.

``OUT/.train.lock`` is held (``flock``) by rank 0 of the run that writes metrics.jsonl and the
checkpoints in OUT, from just before it touches OUT (an ``--overwrite``'s deletions, a
``--resume``'s truncation of the metrics) until it exits; it holds the holder's PID, host, start
time and command line. A second run into the same OUT is refused naming the first. The kernel
drops the lock when its holder dies, even by kill -9, so a stale lock never needs cleaning up;
the file itself stays (an empty run directory's only file). prep holds the same kind of lock on
its own --out (``.prep.lock``).
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

from train.config import TrainError

LOCK_NAME = ".train.lock"


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


class RunLock:
    """An exclusive lock on the run directory `out` for the life of the `with` block."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK_NAME
        self._f: IO[str] | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder_of(f)
            f.close()
            raise TrainError(f"another training run is writing to {self.path.parent} ({who}); "
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
