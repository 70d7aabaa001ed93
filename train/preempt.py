"""SIGTERM, what Slurm and Kubernetes send before they kill a job: stop after the step, saved.

Inside :class:`Preemption` a SIGTERM only sets a flag; the loop reads it once per optimizer
step (all-reduced, so every DDP rank stops at the same step), writes a checkpoint, logs the
summary and exits with EXIT_PREEMPTED, and ``--resume`` continues exactly where it stopped (an
eval that was due at that step runs first). A
second SIGTERM while the checkpoint is being written kills the process at once (the previous
checkpoint stays intact: writes are atomic).

Test hook: ``MOE_TEST_SIGTERM_AT=STEP`` (or ``STEP:RANK``) makes the process send itself a
real SIGTERM during optimizer step STEP, after its first forward pass.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

EXIT_PREEMPTED = 143  # 128 + SIGTERM: what a shell reports for a job ended by SIGTERM
TEST_HOOK_ENV = "MOE_TEST_SIGTERM_AT"


class Preemption:
    """A context in which SIGTERM asks the loop to stop (main thread only; elsewhere inert)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False
        hook = os.environ.get(TEST_HOOK_ENV, "")
        step, _, rank = hook.partition(":")
        self._hook = (int(step), int(rank) if rank else None) if step.isdigit() else None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # the second one: go now
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        self.requested = True

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False

    def test_hook(self, step: int, rank: int) -> None:
        """Send SIGTERM to this process if MOE_TEST_SIGTERM_AT names this step (and rank)."""
        if self._hook and self._hook[0] == step and self._hook[1] in (None, rank):
            os.kill(os.getpid(), signal.SIGTERM)
