"""Figures: structure of the reconstruction grid and the training curves, and PNG output.

The plotting module builds ``matplotlib.figure.Figure`` objects directly (no pyplot); these
tests force the Agg backend anyway so nothing can open a window."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from contractive.plotting import reconstruction_grid, training_curves  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _images(m: int = 12, shape=(8, 8), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((m, int(np.prod(shape))))


def _history(n_epochs: int = 5, *, val: bool = False, higher_order: bool = False) -> list[dict]:
    hist = []
    for e in range(1, n_epochs + 1):
        h = {"epoch": e, "reconstruction": 1.0 / e, "penalty": 0.5 / e}
        if higher_order:
            h["higher_order"] = 0.1 / e
        h["loss"] = sum(v for k, v in h.items() if k != "epoch")
        if val:
            h.update({f"val_{k}": 1.1 * v for k, v in list(h.items()) if k != "epoch"})
        h["time_s"] = 0.01
        hist.append(h)
    return hist


def _check_png(path, min_bytes: int = 2000) -> None:
    blob = path.read_bytes()
    assert blob[:8] == PNG_MAGIC
    assert len(blob) > min_bytes
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert float(img[..., :3].std()) > 0.01  # not a blank canvas


# -- reconstruction_grid ------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 4, 10])
def test_reconstruction_grid_layout(n):
    X = _images()
    fig = reconstruction_grid(X, X * 0.9, (8, 8), n=n)
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert len(axes) == 2 * n
    top, bottom = axes[:n], axes[n:]
    assert top[0].get_ylabel() == "original"
    assert bottom[0].get_ylabel() == "reconstruction"
    for ax in axes:
        images = ax.get_images()
        assert len(images) == 1
        assert images[0].get_array().shape == (8, 8)
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
    for ax in top[1:] + bottom[1:]:
        assert ax.get_ylabel() == ""
    # the images drawn are the first n originals (top) and reconstructions (bottom)
    for col in range(n):
        np.testing.assert_allclose(top[col].get_images()[0].get_array(), X[col].reshape(8, 8))
        np.testing.assert_allclose(
            bottom[col].get_images()[0].get_array(), 0.9 * X[col].reshape(8, 8)
        )


def test_reconstruction_grid_default_n_and_fewer_images():
    X = _images(12)
    assert len(reconstruction_grid(X, X, (8, 8)).get_axes()) == 20
    X3 = _images(3)
    assert len(reconstruction_grid(X3, X3, (8, 8), n=10).get_axes()) == 6


def test_reconstruction_grid_shared_grey_scale():
    X = _images(4)
    rec = X * 3 - 1  # outside the originals' range: drawn clipped on the same scale
    fig = reconstruction_grid(X, rec, (8, 8), n=4)
    lo, hi = X.min(), X.max()
    for ax in fig.get_axes():
        im = ax.get_images()[0]
        assert im.get_clim() == pytest.approx((lo, hi))
        assert im.get_cmap().name == "gray"


def test_reconstruction_grid_non_square_images():
    X = _images(5, shape=(4, 7))
    fig = reconstruction_grid(X, X, [4, 7], n=5)
    assert fig.get_axes()[0].get_images()[0].get_array().shape == (4, 7)


def test_reconstruction_grid_title():
    X = _images(3)
    fig = reconstruction_grid(X, X, (8, 8), title="hello grid")
    assert fig._suptitle is not None and fig._suptitle.get_text() == "hello grid"
    assert reconstruction_grid(X, X, (8, 8))._suptitle is None


@pytest.mark.parametrize("rec_shape", [(12, 63), (11, 64), (12, 8, 8), (64,)])
def test_reconstruction_grid_mismatched_shapes(rec_shape):
    X = _images(12)
    with pytest.raises(ValueError, match="differ"):
        reconstruction_grid(X, np.zeros(rec_shape), (8, 8))


def test_reconstruction_grid_needs_images():
    X = _images(3)
    with pytest.raises(ValueError):
        reconstruction_grid(X[:0], X[:0], (8, 8))
    with pytest.raises(ValueError):
        reconstruction_grid(X, X, (8, 8), n=0)


def test_reconstruction_grid_wrong_image_shape():
    X = _images(3)
    with pytest.raises(ValueError):
        reconstruction_grid(X, X, (7, 7))


def test_reconstruction_grid_png(tmp_path):
    X = _images(10)
    fig = reconstruction_grid(X, np.clip(X + 0.1, 0, 1), (8, 8), title="t")
    fig.savefig(tmp_path / "grid.png", dpi=80)
    _check_png(tmp_path / "grid.png")


# -- training_curves ----------------------------------------------------------------------


def test_training_curves_one_axis_per_term():
    fig = training_curves(_history())
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    titles = [ax.get_title() for ax in axes]
    assert len(axes) == 3
    assert titles[0] == "loss" and titles[1] == "reconstruction"
    assert "J" in titles[2]  # mean ||J||_F^2
    for ax in axes:
        assert len(ax.get_lines()) == 1
        assert ax.get_legend() is None
        assert ax.get_xlabel() == "epoch"
        np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [1, 2, 3, 4, 5])


def test_training_curves_values_and_log_scale():
    hist = _history()
    axes = training_curves(hist).get_axes()
    np.testing.assert_allclose(axes[1].get_lines()[0].get_ydata(),
                               [h["reconstruction"] for h in hist])
    assert all(ax.get_yscale() == "log" for ax in axes)


def test_training_curves_higher_order_term():
    axes = training_curves(_history(higher_order=True)).get_axes()
    assert len(axes) == 4
    assert "CAE+H" in axes[3].get_title()


def test_training_curves_zero_term_is_linear():
    hist = _history()
    for h in hist:
        h["penalty"] = 0.0
    axes = training_curves(hist).get_axes()
    assert axes[2].get_yscale() == "linear"
    assert axes[0].get_yscale() == "log"


def test_training_curves_validation_lines():
    fig = training_curves(_history(val=True, higher_order=True))
    axes = fig.get_axes()
    assert len(axes) == 4
    for ax in axes:
        lines = ax.get_lines()
        assert len(lines) == 2
        assert lines[1].get_linestyle() == "--"
        assert ax.get_legend() is not None
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["train", "validation"]


def test_training_curves_single_epoch_and_title():
    fig = training_curves(_history(1), title="curves")
    assert len(fig.get_axes()) == 3
    assert fig._suptitle.get_text() == "curves"


def test_training_curves_empty_history():
    with pytest.raises(ValueError):
        training_curves([])


def test_training_curves_from_a_real_history(tmp_path):
    from contractive import ContractiveAutoencoder

    X = np.random.default_rng(0).random((50, 6))
    est = ContractiveAutoencoder(n_components=3, max_epochs=3, random_state=0,
                                 early_stopping=True, validation_fraction=0.2).fit(X)
    fig = training_curves(est.history_)
    axes = fig.get_axes()
    assert len(axes) == len([k for k in ("loss", "reconstruction", "penalty", "higher_order")
                             if k in est.history_[0]])
    assert all(len(ax.get_lines()) == 2 for ax in axes)
    fig.savefig(tmp_path / "curves.png", dpi=80)
    _check_png(tmp_path / "curves.png")


def test_training_curves_png(tmp_path):
    training_curves(_history(8, val=True)).savefig(tmp_path / "curves.png", dpi=80)
    _check_png(tmp_path / "curves.png")


def test_no_pyplot_figures_left_open():
    X = _images(3)
    reconstruction_grid(X, X, (8, 8))
    training_curves(_history())
    import sys

    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        assert plt.get_fignums() == []
