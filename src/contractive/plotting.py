"""Figures. Each function returns a ``matplotlib.figure.Figure`` (no pyplot, no global state),
or draws into ``ax=`` where it makes one panel; save with ``fig.savefig(path)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
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
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r} must be an integer >= 1: how many images to draw")
    n = min(n, len(originals))
    if n < 1 or originals.ndim != 2:
        raise ValueError(f"originals of shape {originals.shape} must be 2-D (images, pixels) "
                         "with at least one image")
    shape = _image_shape(image_shape, originals.shape[1])
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
    originals: np.ndarray, reconstructions: np.ndarray, *, title: str | None = None, ax=None,
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
    fig, ax = _figure_and_axes(ax, (7, 3.2))
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


def training_curves(history: Sequence[dict], *, title: str | None = None,
                    ax=None) -> Figure:
    """Each loss term per epoch (one panel per term, log scale; validation dashed).

    ax: one Axes per term drawn (a single Axes where there is one term), all in one figure;
    the title then goes to that figure."""
    if isinstance(history, dict) or not isinstance(history, Sequence) or not history:
        raise ValueError("history must be a non-empty list of per-epoch records (dicts)")
    terms = [k for k in ("loss", "reconstruction", "penalty", "higher_order")
             if isinstance(history[0], dict) and k in history[0]]
    if not terms:
        raise ValueError("history[0] holds none of the loss terms: loss, reconstruction, "
                         "penalty, higher_order")
    needed = ("epoch", *terms)
    for i, h in enumerate(history):
        missing = [k for k in needed if not isinstance(h, dict) or k not in h]
        if missing:
            raise ValueError(f"history[{i}] lacks {', '.join(missing)}")
        for k, v in h.items():
            if (k in needed or k.startswith("val_")) and (
                    isinstance(v, bool) or not isinstance(v, (int, float, np.number))):
                raise ValueError(f"history[{i}][{k!r}] = {v!r} must be a number")
    # validation values where a record has them (NaN, a gap in the line, where not)
    val = {t: [float(h.get(f"val_{t}", np.nan)) for h in history] for t in terms
           if any(f"val_{t}" in h for h in history)}
    epochs = [h["epoch"] for h in history]
    if ax is None:
        fig = Figure(figsize=(3.2 * len(terms), 2.8), layout="constrained")
        axes = fig.subplots(1, len(terms), squeeze=False)[0]
    else:
        axes = [ax] if isinstance(ax, Axes) else list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != len(terms) or not all(isinstance(a, Axes) for a in axes) or len(
                {id(a.figure) for a in axes}) != 1:
            raise TypeError(f"ax must be {len(terms)} matplotlib Axes of one figure, one per "
                            f"term drawn ({', '.join(terms)}), or None")
        fig = axes[0].figure
    labels = {"penalty": "mean ||J||_F^2", "higher_order": "CAE+H term"}
    for ax, term in zip(axes, terms):
        ax.plot(epochs, [h[term] for h in history], label="train")
        if term in val:
            ax.plot(epochs, val[term], "--", marker="." if len(epochs) < 30 else None,
                    label="validation")
            ax.legend(fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_title(labels.get(term, term), fontsize=9)
        if all(h[term] > 0 for h in history) and all(v > 0 or np.isnan(v)
                                                      for v in val.get(term, [])):
            ax.set_yscale("log")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def tangent_images(
    X: np.ndarray, tangent_vectors: np.ndarray, image_shape: Sequence[int], *,
    singular_values: np.ndarray | None = None, title: str | None = None,
) -> Figure:
    """Each input image (first column) beside its leading tangent vectors as images.

    X: ``(m, d)``; tangent_vectors: ``(m, t, d)``. Tangents use a signed, symmetric colormap
    (red positive, blue negative, white zero), one colorbar per row.
    """
    X, T = np.asarray(X, dtype=np.float64), np.asarray(tangent_vectors, dtype=np.float64)
    if T.ndim != 3 or X.ndim != 2 or len(X) != len(T) or X.shape[1] != T.shape[2] or not len(X):
        raise ValueError(f"images {X.shape} and tangents {T.shape} do not pair up")
    m, t = T.shape[:2]
    if t < 1:
        raise ValueError(f"tangents of shape {T.shape} hold no tangent vector")
    if singular_values is not None:
        singular_values = np.asarray(singular_values, dtype=np.float64)
        if singular_values.ndim != 2 or singular_values.shape[0] < m or \
                singular_values.shape[1] < t:
            raise ValueError(f"singular_values of shape {singular_values.shape} must be "
                             f"(>= {m}, >= {t}): one row per image, one value per tangent")
    shape = _image_shape(image_shape, X.shape[1])
    fig = Figure(figsize=(1.25 * (t + 1) + 0.8, 1.3 * m + 0.5), layout="constrained")
    axes = fig.subplots(m, t + 1, squeeze=False)
    for i in range(m):
        ax = axes[i, 0]
        ax.imshow(X[i].reshape(shape), cmap="gray")
        ax.set_ylabel(f"point {i + 1}", fontsize=8)
        lim = float(np.abs(T[i]).max()) or 1.0
        for j in range(t):
            ax = axes[i, j + 1]
            im = ax.imshow(T[i, j].reshape(shape), cmap="RdBu_r", vmin=-lim, vmax=lim)
            if i == 0:
                label = f"tangent {j + 1}"
                if singular_values is not None:
                    label += f"\ns={singular_values[i, j]:.3g}"
                ax.set_title(label, fontsize=8)
            elif singular_values is not None:
                ax.set_title(f"s={singular_values[i, j]:.3g}", fontsize=7)
        fig.colorbar(im, ax=axes[i, 1:], shrink=0.8, pad=0.01)
        axes[i, 0].set_title("input" if i == 0 else "", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


FLOOR = 1e-7  # the spectra's y axis ends here, relative to the largest value drawn


def spectra(curves: dict[str, np.ndarray], *, normalise: bool = True, title: str | None = None,
            ax=None) -> Figure:
    """Mean singular-value spectra (with the 10th-90th percentile band), log scale.

    curves: name -> ``(n_points, m)`` singular values per point (or ``(m,)``); each is
    divided by its own leading value when ``normalise``, so shapes compare.

    The y axis stops at ``FLOOR`` (1e-7) times the largest value drawn: float32 Jacobians
    resolve singular values down to about that fraction of the largest, and what lies
    below is rounding noise, which would otherwise stretch the axis over many decades.
    """
    _check_curves(curves)
    fig, ax = _figure_and_axes(ax, (5.5, 3.6))
    drawn = []
    for name, s in curves.items():
        s = np.atleast_2d(_numbers(s, f"curves[{name!r}]"))
        if s.ndim != 2 or not s.size:
            raise ValueError(f"curves[{name!r}] of shape {np.shape(curves[name])} must be "
                             "(n_points, m) or (m,) singular values, not empty")
        if not np.isfinite(s).all() or (s < 0).any():
            raise ValueError(f"curves[{name!r}] must hold finite singular values >= 0")
        if normalise:
            s = s / np.maximum(s[:, :1], np.finfo(float).tiny)
        drawn.append((s, name))
    top = max(float(np.max(s)) for s, _ in drawn)
    floor = FLOOR * top if top > 0 else np.finfo(float).tiny
    for s, name in drawn:
        idx = np.arange(1, s.shape[1] + 1)
        (line,) = ax.plot(idx, s.mean(0), marker="o", ms=3, label=name)
        if len(s) > 1:
            lo, hi = np.percentile(s, [10, 90], axis=0)
            ax.fill_between(idx, np.maximum(lo, floor / 10), np.maximum(hi, floor / 10),
                            color=line.get_color(), alpha=0.2)
    ax.set_yscale("log")
    ax.set_ylim(bottom=max(ax.get_ylim()[0], floor))
    ax.set_xlabel("index of singular value")
    ax.set_ylabel("singular value" + (" / largest" if normalise else ""))
    ax.legend(fontsize=8)
    ax.set_title(title or "spectrum of the encoder's Jacobian (mean, 10-90% band)", fontsize=9)
    return fig


def contraction_curves(radii: np.ndarray, curves: dict[str, np.ndarray], *,
                       distances: dict[str, float] | None = None, title: str | None = None,
                       ax=None) -> Figure:
    """Contraction ratio against radius, one line per model; vertical lines mark the
    minimum, median and maximum distance between training points."""
    _check_curves(curves)
    radii = _numbers(radii, "radii")
    for name, ratios in curves.items():
        _numbers(ratios, f"curves[{name!r}]")
        if np.shape(ratios) != radii.shape or radii.ndim != 1:
            raise ValueError(f"curves[{name!r}] of shape {np.shape(ratios)} must match radii of "
                             f"shape {radii.shape} (1-D)")
    if distances is not None:
        if not isinstance(distances, Mapping):
            raise TypeError("distances must be a dict such as {'min': ..., 'median': ..., "
                            f"'max': ...}}, not {type(distances).__name__}")
        for key, value in distances.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not np.isfinite(value):
                raise ValueError(f"distances[{key!r}] = {value!r} must be a finite number")
    fig, ax = _figure_and_axes(ax, (5.5, 3.6))
    for name, ratios in curves.items():
        ax.plot(radii, ratios, marker="o", ms=3, label=name)
    for label, style in (("min", ":"), ("median", "--"), ("max", "-.")):
        if distances and label in distances:
            ax.axvline(distances[label], color="grey", ls=style, lw=1,
                       label=f"{label} distance between training points")
    ax.set_xlabel("radius r (input units)")
    ax.set_ylabel("mean ||f(x + r u) - f(x)|| / r")
    ax.legend(fontsize=7)
    ax.set_title(title or "contraction curves", fontsize=9)
    return fig


def codes_scatter(codes: np.ndarray, labels: np.ndarray | None = None, *,
                  title: str | None = None, ax=None) -> Figure:
    """Codes in 2-D: the first two components, or a PCA of the codes when there are more,
    coloured by label (with a legend for up to 20 classes, else a colorbar)."""
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or not codes.size:
        raise ValueError(f"codes of shape {codes.shape} must be a non-empty 2-D array")
    if not np.isfinite(codes).all():
        raise ValueError("codes hold NaN or infinite values")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(codes),):
            raise ValueError(f"labels of shape {labels.shape} must be ({len(codes)},): one "
                             "per row of codes")
    if codes.shape[1] > 2:
        centred = codes - codes.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = np.zeros((len(codes), 2))
        xy[:, : min(2, len(vt))] = centred @ vt[:2].T  # one point: one component
        axis = "PC"
    else:
        xy, axis = np.column_stack([codes, np.zeros(len(codes))])[:, :2], "code"
    fig, ax = _figure_and_axes(ax, (5, 4.2))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.6)
    else:
        try:
            classes = np.unique(labels)
        except TypeError:  # labels of several kinds (None among numbers, say): as text
            labels = labels.astype(str)
            classes = np.unique(labels)
        if len(classes) <= 20:
            for c in classes:
                sel = labels == c
                ax.scatter(xy[sel, 0], xy[sel, 1], s=4, alpha=0.6, label=str(c))
            ax.legend(fontsize=7, markerscale=3, ncol=2, title="label", title_fontsize=7)
        else:  # numbers on their own scale; other labels by their rank in sorted order
            values = (labels.astype(float) if labels.dtype.kind in "biuf"
                      else np.searchsorted(classes, labels).astype(float))
            sc = ax.scatter(xy[:, 0], xy[:, 1], s=4, c=values, cmap="viridis")
            fig.colorbar(sc, ax=ax, label="label" if labels.dtype.kind in "biuf"
                         else "label (rank in sorted order)")
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title(title or ("codes (PCA of the codes)" if axis == "PC" else "codes"), fontsize=9)
    return fig


def _figure_and_axes(ax, size):
    if ax is not None:
        if not isinstance(ax, Axes):
            raise TypeError(f"ax must be one matplotlib Axes or None, not {type(ax).__name__}")
        return ax.figure, ax
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots()


def _check_curves(curves) -> None:
    if not isinstance(curves, Mapping):
        raise TypeError(f"curves must be a dict of name -> values, not {type(curves).__name__}")
    if not curves:
        raise ValueError("curves is empty: give at least one name -> values")


def _numbers(values, what: str) -> np.ndarray:
    """``values`` as a float64 array, or one ``ValueError`` naming ``what``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must hold numbers") from None
    return arr


def _image_shape(image_shape, n_pixels: int) -> tuple[int, ...]:
    """``image_shape`` as a tuple of integers >= 1 whose product is ``n_pixels``."""
    try:
        shape = tuple(int(v) for v in image_shape)
        ok = all(v >= 1 and v == w for v, w in zip(shape, image_shape)) and len(shape) in (2, 3)
    except (TypeError, ValueError):
        ok = False
    if not ok or int(np.prod(shape)) != n_pixels:
        raise ValueError(f"image_shape={image_shape!r} must be (height, width) or (height, "
                         f"width, channels), integers whose product is the {n_pixels} features "
                         "of a row")
    return shape
