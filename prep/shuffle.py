"""A seeded shuffle buffer: streaming approximate shuffling before the budget cut."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def default_buffer_size(size_mb: float) -> int:
    """`max(1000, size_mb * 200)`: the study's heuristic, recorded in the manifest."""
    return max(1000, int(size_mb * 200))


class ShuffleBuffer:
    """Fill a buffer of `size` items; then each new item replaces a random slot, whose old
    item is emitted. At the end the remaining items are emitted in a random order.

    Every input item is emitted exactly once (a permutation); with `size` >= the stream length
    this is a full uniform shuffle. The same seed and input give the same output.
    """

    def __init__(self, size: int, seed: int | str) -> None:
        if size < 1:
            raise ValueError(f"shuffle buffer size must be >= 1, got {size}")
        self.size = size
        self.seed = seed

    def __call__(self, items: Iterable[T]) -> Iterator[T]:
        rng = random.Random(self.seed)
        buf: list[T] = []
        for item in items:
            if len(buf) < self.size:
                buf.append(item)
                continue
            j = rng.randrange(self.size)
            out, buf[j] = buf[j], item
            yield out
        rng.shuffle(buf)
        yield from buf
