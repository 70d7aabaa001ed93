"""Counting host syncs: every place the host waits for a value computed on the device.

On CUDA a read of a device tensor's value on the host (``.item()``, ``float(t)``, ``bool(t)``,
``.tolist()``, ``.numpy()``, ``.cpu()``, a boolean-mask index, ``nonzero``) waits until the GPU
has run everything queued before it, which empties the queue the host keeps ahead of the GPU. A
CPU run has no queue, but it makes the same calls at the same places: :class:`SyncCounter`
counts them there, so a CPU test can hold the loop to its sync budget (train/loop.py: one read
per ``--log-every`` steps).

It counts at two levels, so a read is seen whether Python or C++ makes it:

- a ``TorchDispatchMode`` sees every aten op; ``_local_scalar_dense`` is the op behind
  ``.item()``, ``float()``, ``int()``, ``bool()`` and ``__index__`` of a tensor, and
  ``nonzero``, ``masked_select``, ``unique`` and boolean-index ``index`` need a size only the
  data knows;
- ``Tensor.tolist``, ``Tensor.numpy`` and ``Tensor.cpu`` are wrapped (they copy without an aten
  op on a CPU tensor).

It over-counts rather than under-counts: a read of a tensor that lives on the host anyway (an
optimizer's CPU step counter) is counted too. On CUDA, :func:`cuda_sync_warnings` uses torch's
own sync debug mode instead (the GPU benchmark, train/bench_loop.py).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_SYNC_OPS = {"aten._local_scalar_dense.default", "aten.nonzero.default",
             "aten.masked_select.default", "aten._unique2.default", "aten.unique_dim.default",
             "aten.unique_consecutive.default", "aten.repeat_interleave.Tensor"}
_WRAPPED = ("tolist", "numpy", "cpu")


class _Mode(TorchDispatchMode):
    def __init__(self, counter: SyncCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        name = str(func)
        if name in _SYNC_OPS:
            self.counter.hit(name)
        elif name.startswith("aten.index.Tensor") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ()):
            self.counter.hit("aten.index.Tensor(bool)")
        return func(*args, **(kwargs or {}))


class SyncCounter:
    """``with SyncCounter() as c: ...``: ``c.total`` host reads of tensor values inside, by
    kind in ``c.by_kind``. Not thread-safe; not for compiled code (a dispatch mode makes
    torch.compile fall back)."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self._mode = _Mode(self)
        self._saved: dict[str, Any] = {}

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def hit(self, kind: str) -> None:
        self.by_kind[kind] += 1

    def __enter__(self) -> SyncCounter:
        for name in _WRAPPED:
            orig = getattr(torch.Tensor, name)
            self._saved[name] = orig

            def wrapped(t: torch.Tensor, *a: Any, _orig: Any = orig, _name: str = name,
                        **k: Any) -> Any:
                self.hit(f"Tensor.{_name}")
                return _orig(t, *a, **k)

            setattr(torch.Tensor, name, wrapped)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)
        for name, orig in self._saved.items():
            setattr(torch.Tensor, name, orig)
        self._saved.clear()


@contextmanager
def cuda_sync_warnings() -> Iterator[list[str]]:
    """On CUDA: torch's sync debug mode ("warn") inside; yields the list the warnings of
    synchronizing CUDA calls are appended to (one entry per call)."""
    seen: list[str] = []
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        old_show = warnings.showwarning

        def show(message: Any, category: Any, filename: str, lineno: int, *a: Any,
                 **k: Any) -> None:
            text = str(message)
            if "synchroniz" in text:
                seen.append(f"{filename}:{lineno}: {text.splitlines()[0]}")
            else:
                old_show(message, category, filename, lineno, *a, **k)

        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield seen
        finally:
            torch.cuda.set_sync_debug_mode(previous)
            warnings.showwarning = old_show
