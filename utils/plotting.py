"""Small matplotlib helpers the chapters share (static figures, labelled for a reader)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def _array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float32).numpy()
    return np.asarray(values, dtype=np.float32)


def heatmap(values, title: str, xlabel: str, ylabel: str, xticklabels: Sequence | None = None,
            yticklabels: Sequence | None = None, center: bool = True, colorbar_label: str = "",
            ax=None, figsize=(7, 4.5)):
    """A labelled heat map; ``center`` uses a diverging colour map symmetric around zero."""
    data = _array(values)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    kwargs = {"cmap": "viridis"}
    if center:
        bound = float(np.nanmax(np.abs(data))) or 1.0
        kwargs = {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound}
    image = ax.imshow(data, aspect="auto", interpolation="nearest", **kwargs)
    ax.figure.colorbar(image, ax=ax, label=colorbar_label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if xticklabels is not None:
        ax.set_xticks(range(len(xticklabels)), labels=list(xticklabels), rotation=90)
    if yticklabels is not None:
        ax.set_yticks(range(len(yticklabels)), labels=list(yticklabels))
    ax.figure.tight_layout()
    return ax


def line(x, ys: dict[str, object], title: str, xlabel: str, ylabel: str, ax=None,
         figsize=(7, 4), marker: str = "o"):
    """One or more labelled lines sharing an x axis (``ys``: legend label -> values)."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    for label, values in ys.items():
        ax.plot(_array(x), _array(values), marker=marker, label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if len(ys) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    ax.figure.tight_layout()
    return ax


def bars(labels: Sequence[str], values, title: str, xlabel: str, ylabel: str, ax=None,
         figsize=(8, 4)):
    """A labelled bar chart (e.g. one bar per component or head)."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    ax.bar(range(len(labels)), _array(values))
    ax.set_xticks(range(len(labels)), labels=list(labels), rotation=90)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.figure.tight_layout()
    return ax
