"""The lock on a training run's --out: one process writes into a run directory at a time.

``OUT/.train.lock`` is held (``flock``) by rank 0 of the run that writes metrics.jsonl and the
checkpoints in OUT, from just before it touches OUT (an ``--overwrite``'s deletions, a
``--resume``'s truncation of the metrics) until it exits; it holds the holder's PID, host, start
time and command line. A second run into the same OUT is refused naming the first. The kernel
drops the lock when its holder dies, even by kill -9, so a stale lock never needs cleaning up;
the file itself stays (an empty run directory's only file). The lock itself is `shards.lock.DirLock`,
which prep holds on its own --out (``.prep.lock``).
"""

from __future__ import annotations

from pathlib import Path

from shards.lock import DirLock, LockHeld
from train.config import TrainError

LOCK_NAME = ".train.lock"


class RunLock(DirLock):
    """An exclusive lock on the run directory `out` for the life of the `with` block (a
    refusal is a TrainError)."""

    def __init__(self, out: Path) -> None:
        super().__init__(Path(out) / LOCK_NAME, "training run")

    def __enter__(self) -> RunLock:
        try:
            super().__enter__()
        except LockHeld as e:
            raise TrainError(str(e)) from None
        return self
