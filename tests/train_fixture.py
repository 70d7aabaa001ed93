"""Helpers for the training loop's tests: faults injected into the real model."""

from __future__ import annotations

import pytest

from train.model import GPT


def poison_from(monkeypatch: pytest.MonkeyPatch, forward_call: int) -> None:
    """Every training forward from the `forward_call`-th on returns a NaN LM loss."""
    calls = {"n": 0}
    forward = GPT.forward

    def poisoned(self, *a, **k):
        out = forward(self, *a, **k)
        if self.training:
            calls["n"] += 1
            if calls["n"] >= forward_call:
                out.lm_loss = out.lm_loss * float("nan")
        return out

    monkeypatch.setattr(GPT, "forward", poisoned)
