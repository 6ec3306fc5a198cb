"""Figures. Each function returns a ``matplotlib.figure.Figure`` (no pyplot, no global state),
or draws into ``ax=`` where it makes one panel; save with ``fig.savefig(path)``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


def reconstruction_grid(
    originals: np.ndarray, reconstructions: np.ndarray, image_shape: Sequence[int],
    *, n: int = 10, title: str | None = None,
) -> Figure:
    """Originals (top row) above their reconstructions (bottom row), as the seed shows.

    originals, reconstructions: ``(m, prod(image_shape))``; the first ``n`` are drawn, on
    the grey scale of the originals' range (values outside it are clipped).
    """
    originals = np.asarray(originals, dtype=np.float64)
    reconstructions = np.asarray(reconstructions, dtype=np.float64)
    if originals.shape != reconstructions.shape:
        raise ValueError(
            f"originals {originals.shape} and reconstructions {reconstructions.shape} differ"
        )
    n = min(n, len(originals))
    if n < 1:
        raise ValueError("reconstruction_grid needs at least one image")
    shape = tuple(image_shape)
    lo, hi = float(originals[:n].min()), float(originals[:n].max())
    fig = Figure(figsize=(1.1 * n + 0.8, 2.6), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    rows = (("original", originals), ("reconstruction", reconstructions))
    for row, (label, images) in enumerate(rows):
        for col in range(n):
            ax = axes[row, col]
            ax.imshow(images[col].reshape(shape), cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def reconstruction_profiles(
    originals: np.ndarray, reconstructions: np.ndarray, *, title: str | None = None,
) -> Figure:
    """For data that are not images: each row's features (solid) and reconstruction (dashed).

    originals, reconstructions: ``(m, d)``; one colour per row.
    """
    originals = np.asarray(originals, dtype=np.float64)
    reconstructions = np.asarray(reconstructions, dtype=np.float64)
    if originals.shape != reconstructions.shape or originals.ndim != 2 or not len(originals):
        raise ValueError(
            f"originals {originals.shape} and reconstructions {reconstructions.shape} must be "
            "the same non-empty 2-D shape"
        )
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.subplots()
    features = np.arange(1, originals.shape[1] + 1)
    for i, (x, r) in enumerate(zip(originals, reconstructions)):
        (line,) = ax.plot(features, x, "-", lw=1.2, label=f"row {i + 1}")
        ax.plot(features, r, "--", lw=1.2, color=line.get_color())
    ax.set_xlabel("feature")
    ax.set_ylabel("value")
    ax.legend(fontsize=7, ncol=min(5, len(originals)))
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def training_curves(history: Sequence[dict], *, title: str | None = None) -> Figure:
    """Each loss term per epoch (one panel per term, log scale; validation dashed)."""
    if not history:
        raise ValueError("training_curves needs a non-empty history")
    terms = [k for k in ("loss", "reconstruction", "penalty", "higher_order") if k in history[0]]
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(3.2 * len(terms), 2.8), layout="constrained")
    axes = fig.subplots(1, len(terms), squeeze=False)[0]
    labels = {"penalty": "mean ||J||_F^2", "higher_order": "CAE+H term"}
    for ax, term in zip(axes, terms):
        ax.plot(epochs, [h[term] for h in history], label="train")
        if f"val_{term}" in history[0]:
            ax.plot(epochs, [h[f"val_{term}"] for h in history], "--", label="validation")
            ax.legend(fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_title(labels.get(term, term), fontsize=9)
        if all(h[term] > 0 for h in history):
            ax.set_yscale("log")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
