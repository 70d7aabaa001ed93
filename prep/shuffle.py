"""A seeded shuffle buffer bounded in documents and in bytes: streaming approximate shuffling.

Each task shuffles its partition's documents with one, before any budget is applied. Items
enter the buffer in stream order; whenever the next item would overfill it (more than
`max_items` items or `max_bytes` bytes), items are drawn from random slots and emitted until it
fits. At the end the remaining items are emitted in random order. Every input item is emitted
exactly once (a permutation); a buffer larger than the stream gives a uniform shuffle; the same
seed and input give the same output. Output starts as soon as the buffer is full, so a reader
never holds more than the buffer, and any prefix of the output depends only on a prefix of the
input (a task that stops early emits a prefix of what a longer one emits).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class ShuffleBuffer:
    def __init__(self, max_items: int, seed: int | str, max_bytes: int | None = None,
                 size_of: Callable[[T], int] | None = None) -> None:
        if max_items < 1:
            raise ValueError(f"shuffle buffer size must be >= 1, got {max_items}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"shuffle buffer bytes must be >= 1, got {max_bytes}")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.size_of = size_of
        self.seed = seed

    def __call__(self, items: Iterable[T]) -> Iterator[T]:
        rng = random.Random(self.seed)
        buf: list[T] = []
        sizes: list[int] = []
        held = 0
        cap_items, cap_bytes, size_of = self.max_items, self.max_bytes, self.size_of
        for item in items:
            size = size_of(item) if size_of is not None else 0
            while buf and (len(buf) >= cap_items
                           or (cap_bytes is not None and held + size > cap_bytes)):
                j = rng.randrange(len(buf))
                buf[j], buf[-1] = buf[-1], buf[j]
                sizes[j], sizes[-1] = sizes[-1], sizes[j]
                held -= sizes.pop()
                yield buf.pop()
            buf.append(item)
            sizes.append(size)
            held += size
        rng.shuffle(buf)
        yield from buf
