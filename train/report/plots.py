"""Matplotlib figures of the specialization report (Agg backend, small PNGs).

matplotlib is an optional extra of this package (``pip install 'moe-shards[report]'`` or
``pip install matplotlib``); it is imported lazily, so everything else works without it.
Every function takes plain numbers, writes one PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DPI = 80


class PlotError(RuntimeError):
    pass


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or a clear error when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError as e:
        raise PlotError("the report's figures need matplotlib (an optional extra): "
                        "pip install 'moe-shards[report]' (or matplotlib), or pass --no-plots") from e
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def heatmap(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str,
            path: Path, *, uniform: float | None = None, dpi: int = DPI,
            fmt: str = "{:.2f}") -> Path:
    """Annotated heatmap; with `uniform`, a diverging colour scale whose white is the uniform
    share (red above, blue below) and the uniform value marked on the colour bar."""
    plt = pyplot()
    from matplotlib.colors import TwoSlopeNorm

    m = np.asarray(matrix, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * max(len(cols), 4), 1.2 + 0.45 * len(rows)))
    if uniform is not None:
        vmax = max(float(m.max()) if m.size else 1.0, uniform * 1.01, 1e-9)
        norm = TwoSlopeNorm(vmin=0.0, vcenter=uniform, vmax=vmax)
        im = ax.imshow(m, cmap="RdBu_r", norm=norm, aspect="auto")
    else:
        im = ax.imshow(m, cmap="viridis", aspect="auto")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if uniform is not None:
        cb.ax.axhline(uniform, color="black", linewidth=1.5)
        cb.set_label(f"uniform = {uniform:.3f}", fontsize=8)
    ax.set_xticks(range(len(cols)), labels=list(cols), fontsize=8)
    ax.set_yticks(range(len(rows)), labels=list(rows), fontsize=8)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=6)
    ax.set_title(title, fontsize=9)
    return _save(fig, path, dpi)


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float]], title: str,
                 ylabel: str, path: Path, *, hline: float | None = None,
                 hline_label: str = "", dpi: int = DPI) -> Path:
    """Bars of several series side by side for each group, an optional reference line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(groups), 3.2))
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(groups))
    for i, (name, vals) in enumerate(series.items()):
        v = np.array([np.nan if a is None else a for a in vals], dtype=np.float64)
        ax.bar(x + (i - (n - 1) / 2) * width, v, width, label=name)
    if hline is not None:
        ax.axhline(hline, color="black", linestyle="--", linewidth=1, label=hline_label or None)
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xticks(x, labels=list(groups), fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path, dpi)


def curves(panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]], title: str,
           path: Path, *, ylabel: str = "", dpi: int = DPI) -> Path:
    """One subplot per panel; in each, one line per run: panels[panel][run] = (steps, values)."""
    plt = pyplot()
    n = max(len(panels), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 2.9), squeeze=False)
    for ax, (pname, runs) in zip(axes[0], panels.items(), strict=False):
        for run, (steps, vals) in runs.items():
            v = [np.nan if a is None else a for a in vals]
            ax.plot(steps, v, marker=".", markersize=3, linewidth=1, label=run)
        ax.set_title(pname, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        if runs:
            ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi)
