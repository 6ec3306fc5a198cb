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


# -- tangent_images -----------------------------------------------------------------------

from matplotlib.collections import PolyCollection  # noqa: E402

from contractive.plotting import (  # noqa: E402
    FLOOR,
    codes_scatter,
    contraction_curves,
    reconstruction_profiles,
    spectra,
    tangent_images,
)


def _tangents(m: int = 3, t: int = 2, d: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(m, t, d))


def _image_axes(fig: Figure) -> list:
    return [ax for ax in fig.get_axes() if ax.get_label() != "<colorbar>"]


def _colorbar_axes(fig: Figure) -> list:
    return [ax for ax in fig.get_axes() if ax.get_label() == "<colorbar>"]


def _grid(fig: Figure) -> dict[tuple[int, int], object]:
    """Image axes by (row, column) of their subplot grid."""
    out = {}
    for ax in _image_axes(fig):
        spec = ax.get_subplotspec()
        out[(spec.rowspan.start, spec.colspan.start)] = ax
    return out


@pytest.mark.parametrize("m,t", [(1, 1), (3, 2), (2, 4)])
def test_tangent_images_layout(m, t):
    X, T = _images(m), _tangents(m, t)
    fig = tangent_images(X, T, (8, 8))
    assert isinstance(fig, Figure)
    grid = _grid(fig)
    assert len(grid) == m * (t + 1)
    assert set(grid) == {(i, j) for i in range(m) for j in range(t + 1)}
    assert len(_colorbar_axes(fig)) == m  # one colorbar per row
    for (i, j), ax in grid.items():
        images = ax.get_images()
        assert len(images) == 1
        assert images[0].get_array().shape == (8, 8)
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
        expected = X[i] if j == 0 else T[i, j - 1]
        np.testing.assert_allclose(images[0].get_array(), expected.reshape(8, 8))
    for i in range(m):
        assert grid[(i, 0)].get_ylabel() == f"point {i + 1}"
    assert grid[(0, 0)].get_title() == "input"
    assert [grid[(0, j + 1)].get_title() for j in range(t)] == [
        f"tangent {j + 1}" for j in range(t)
    ]


def test_tangent_images_signed_symmetric_colour_limits():
    X, T = _images(3), _tangents(3, 3)
    T[1] *= 10.0
    T[2] = np.abs(T[2])  # all positive: limits stay symmetric about zero
    grid = _grid(tangent_images(X, T, (8, 8)))
    for i in range(3):
        lims = [grid[(i, j + 1)].get_images()[0].get_clim() for j in range(3)]
        for vmin, vmax in lims:
            assert vmin == -vmax and vmax > 0
            assert vmax == pytest.approx(np.abs(T[i]).max())  # one scale per row
        assert len(set(lims)) == 1
        assert grid[(i, 1)].get_images()[0].get_cmap().name == "RdBu_r"
    assert grid[(0, 0)].get_images()[0].get_cmap().name == "gray"


def test_tangent_images_zero_tangent_keeps_a_valid_scale():
    X, T = _images(1), np.zeros((1, 2, 64))
    grid = _grid(tangent_images(X, T, (8, 8)))
    vmin, vmax = grid[(0, 1)].get_images()[0].get_clim()
    assert vmin == -vmax and vmax > 0


def test_tangent_images_titles_with_singular_values():
    X, T = _images(2), _tangents(2, 2)
    s = np.array([[3.5, 0.125], [2.0, 0.0625]])
    fig = tangent_images(X, T, (8, 8), singular_values=s, title="tangents!")
    grid = _grid(fig)
    assert grid[(0, 1)].get_title() == "tangent 1\ns=3.5"
    assert grid[(0, 2)].get_title() == "tangent 2\ns=0.125"
    assert grid[(1, 1)].get_title() == "s=2"
    assert grid[(1, 2)].get_title() == "s=0.0625"
    assert grid[(1, 0)].get_title() == ""
    assert fig._suptitle is not None and fig._suptitle.get_text() == "tangents!"
    # without singular values: no s= anywhere, no suptitle
    plain = tangent_images(X, T, (8, 8))
    assert all("s=" not in ax.get_title() for ax in plain.get_axes())
    assert plain._suptitle is None


def test_tangent_images_non_square_images():
    X, T = _images(2, shape=(4, 7)), _tangents(2, 1, d=28)
    grid = _grid(tangent_images(X, T, [4, 7]))
    assert all(ax.get_images()[0].get_array().shape == (4, 7) for ax in grid.values())


@pytest.mark.parametrize("x_shape,t_shape", [
    ((3, 64), (2, 2, 64)),   # different number of points
    ((3, 64), (3, 2, 63)),   # different number of features
    ((3, 64), (3, 64)),      # tangents not 3-D
    ((64,), (1, 2, 64)),     # images not 2-D
    ((0, 64), (0, 2, 64)),   # no points
])
def test_tangent_images_mismatched_shapes(x_shape, t_shape):
    with pytest.raises(ValueError, match="pair up"):
        tangent_images(np.zeros(x_shape), np.zeros(t_shape), (8, 8))


def test_tangent_images_png(tmp_path):
    X, T = _images(3), _tangents(3, 2)
    fig = tangent_images(X, T, (8, 8), singular_values=np.abs(T[:, :, 0]) + 1, title="t")
    fig.savefig(tmp_path / "tangents.png", dpi=80)
    _check_png(tmp_path / "tangents.png")


# -- spectra ------------------------------------------------------------------------------


def _spectra(n: int = 20, m: int = 5, seed: int = 0, scale: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return -np.sort(-scale * rng.random((n, m)) - 0.01, axis=1)  # descending rows


def _bands(ax) -> list:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_spectra_one_line_per_curve_log_scale_normalised():
    curves = {"CAE": _spectra(seed=0), "plain AE": _spectra(seed=1, scale=50.0)}
    fig = spectra(curves)
    assert isinstance(fig, Figure)
    (ax,) = fig.get_axes()
    lines = ax.get_lines()
    assert len(lines) == 2
    assert ax.get_yscale() == "log"
    for line, s in zip(lines, curves.values()):
        np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 6))
        y = np.asarray(line.get_ydata())
        assert y[0] == pytest.approx(1.0)  # each curve divided by its own leading value
        np.testing.assert_allclose(y, (s / s[:, :1]).mean(0))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["CAE", "plain AE"]
    assert "largest" in ax.get_ylabel()
    assert "singular value" in ax.get_xlabel()


def test_spectra_not_normalised():
    s = _spectra(scale=40.0)
    (ax,) = spectra({"a": s}, normalise=False, title="raw").get_axes()
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), s.mean(0))
    assert "largest" not in ax.get_ylabel()
    assert ax.get_title() == "raw"


def test_spectra_band_only_with_several_points():
    s = _spectra(n=30, m=4)
    (ax,) = spectra({"many": s, "one vector": s[0], "one row": s[:1]}).get_axes()
    assert len(ax.get_lines()) == 3
    bands = _bands(ax)
    assert len(bands) == 1  # only the curve of several points gets a 10-90% band
    assert bands[0].get_facecolor()[0][:3] == pytest.approx(
        matplotlib.colors.to_rgba(ax.get_lines()[0].get_color())[:3])
    # a single (m,) vector is one point: normalised, it starts at 1
    assert ax.get_lines()[1].get_ydata()[0] == pytest.approx(1.0)


def test_spectra_band_spans_the_percentiles():
    s = _spectra(n=50, m=3)
    (ax,) = spectra({"x": s}).get_axes()
    (band,) = _bands(ax)
    verts = band.get_paths()[0].vertices
    norm = s / s[:, :1]
    lo, hi = np.percentile(norm, [10, 90], axis=0)
    assert verts[:, 1].min() == pytest.approx(lo.min())
    assert verts[:, 1].max() == pytest.approx(hi.max())


def test_spectra_into_a_given_ax():
    host = Figure()
    ax1, ax2 = host.subplots(1, 2)
    fig = spectra({"a": _spectra()}, ax=ax2)
    assert fig is host
    assert len(ax2.get_lines()) == 1 and ax2.get_yscale() == "log"
    assert len(ax1.get_lines()) == 0
    assert len(host.get_axes()) == 2


def test_spectra_png(tmp_path):
    spectra({"CAE": _spectra(), "PCA": np.array([5.0, 2.0, 1.0, 0.5, 0.1])}).savefig(
        tmp_path / "spectra.png", dpi=80)
    _check_png(tmp_path / "spectra.png")


# -- contraction_curves -------------------------------------------------------------------


def test_contraction_curves_one_line_per_model():
    radii = np.linspace(0, 5, 11)
    curves = {"CAE": np.linspace(1, 0.2, 11), "plain AE": np.linspace(2, 0.5, 11)}
    fig = contraction_curves(radii, curves)
    assert isinstance(fig, Figure)
    (ax,) = fig.get_axes()
    lines = ax.get_lines()
    assert len(lines) == 2
    for line, ratios in zip(lines, curves.values()):
        np.testing.assert_allclose(line.get_xdata(), radii)
        np.testing.assert_allclose(line.get_ydata(), ratios)
    assert ax.get_xlabel() == "radius r (input units)"
    assert ax.get_ylabel() == "mean ||f(x + r u) - f(x)|| / r"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["CAE", "plain AE"]
    assert ax.get_title() == "contraction curves"


def test_contraction_curves_distance_markers():
    radii = np.linspace(0, 6, 7)
    distances = {"min": 0.5, "median": 2.25, "max": 5.0}
    (ax,) = contraction_curves(radii, {"CAE": np.ones(7)}, distances=distances,
                               title="c").get_axes()
    lines = ax.get_lines()
    assert len(lines) == 1 + 3
    vertical = lines[1:]
    for line, (label, value), style in zip(vertical, distances.items(), (":", "--", "-.")):
        np.testing.assert_allclose(line.get_xdata(), [value, value])
        assert label in line.get_label()
        assert line.get_linestyle() == style
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 4 and legend[0] == "CAE"
    assert ax.get_title() == "c"


def test_contraction_curves_into_a_given_ax_and_png(tmp_path):
    host = Figure()
    ax = host.subplots()
    fig = contraction_curves(np.linspace(0, 1, 5), {"a": np.linspace(1, 0.5, 5)},
                             distances={"min": 0.1, "median": 0.4, "max": 0.9}, ax=ax)
    assert fig is host and len(ax.get_lines()) == 4
    fig.savefig(tmp_path / "contraction.png", dpi=80)
    _check_png(tmp_path / "contraction.png")


# -- codes_scatter ------------------------------------------------------------------------


def _codes(n: int = 60, k: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, k)) * np.arange(k, 0, -1)


def _offsets(ax) -> np.ndarray:
    return np.concatenate([np.asarray(c.get_offsets()) for c in ax.collections])


def test_codes_scatter_two_columns_as_given():
    codes = _codes(k=2)
    fig = codes_scatter(codes)
    assert isinstance(fig, Figure)
    (ax,) = fig.get_axes()
    assert len(ax.collections) == 1
    np.testing.assert_allclose(_offsets(ax), codes)
    assert ax.get_xlabel() == "code 1" and ax.get_ylabel() == "code 2"
    assert ax.get_legend() is None
    assert ax.get_title() == "codes"


def test_codes_scatter_one_column_on_a_line():
    codes = _codes(k=1)
    (ax,) = codes_scatter(codes).get_axes()
    xy = _offsets(ax)
    np.testing.assert_allclose(xy[:, 0], codes[:, 0])
    np.testing.assert_allclose(xy[:, 1], 0.0)


def test_codes_scatter_pca_of_wider_codes():
    codes = _codes(n=80, k=5) + 7.0
    (ax,) = codes_scatter(codes).get_axes()
    assert ax.get_xlabel() == "PC 1" and ax.get_ylabel() == "PC 2"
    assert "PCA" in ax.get_title()
    xy = _offsets(ax)
    assert xy.shape == (80, 2)
    np.testing.assert_allclose(xy.mean(0), 0.0, atol=1e-9)  # centred
    centred = codes - codes.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    for j in range(2):  # same projection up to the sign of each component
        assert min(np.abs(xy[:, j] - expected[:, j]).max(),
                   np.abs(xy[:, j] + expected[:, j]).max()) < 1e-9
    np.testing.assert_allclose(np.linalg.norm(xy, axis=0), s[:2])


def test_codes_scatter_legend_one_entry_per_class():
    codes = _codes(n=90)
    labels = np.repeat([2, 0, 1], 30)
    (ax,) = codes_scatter(codes, labels).get_axes()
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["0", "1", "2"]
    assert len(ax.collections) == 3
    for c, cls in zip(ax.collections, [0, 1, 2]):
        np.testing.assert_allclose(c.get_offsets(), codes[labels == cls])


def test_codes_scatter_twenty_classes_still_a_legend():
    labels = np.arange(100) % 20
    fig = codes_scatter(_codes(n=100), labels)
    (ax,) = fig.get_axes()
    assert len(ax.get_legend().get_texts()) == 20


def test_codes_scatter_colorbar_for_many_classes():
    labels = np.arange(100) % 21
    fig = codes_scatter(_codes(n=100), labels)
    axes = fig.get_axes()
    assert len(axes) == 2
    main = [ax for ax in axes if ax.get_label() != "<colorbar>"]
    assert len(main) == 1 and len(_colorbar_axes(fig)) == 1
    assert main[0].get_legend() is None
    assert len(main[0].collections) == 1
    np.testing.assert_allclose(main[0].collections[0].get_array(), labels.astype(float))


def test_codes_scatter_string_labels():
    labels = np.array(["cat", "dog"] * 20)
    (ax,) = codes_scatter(_codes(n=40), labels).get_axes()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cat", "dog"]


@pytest.mark.parametrize("shape", [(10,), (0, 2), (2, 3, 4)])
def test_codes_scatter_bad_shapes(shape):
    with pytest.raises(ValueError):
        codes_scatter(np.zeros(shape))


def test_codes_scatter_into_a_given_ax_and_png(tmp_path):
    host = Figure()
    ax1, ax2 = host.subplots(1, 2)
    fig = codes_scatter(_codes(n=50, k=4), np.arange(50) % 3, title="mine", ax=ax1)
    assert fig is host
    assert ax1.get_title() == "mine" and len(ax1.collections) == 3
    assert len(ax2.collections) == 0
    fig.savefig(tmp_path / "codes.png", dpi=80)
    _check_png(tmp_path / "codes.png")
    codes_scatter(_codes(n=200), np.arange(200) % 30).savefig(tmp_path / "many.png", dpi=80)
    _check_png(tmp_path / "many.png")


# -- reconstruction_profiles --------------------------------------------------------------


def test_reconstruction_profiles_solid_and_dashed_per_row():
    X = np.random.default_rng(0).normal(size=(4, 6))
    R = X + 0.1
    fig = reconstruction_profiles(X, R, title="profiles")
    assert isinstance(fig, Figure)
    (ax,) = fig.get_axes()
    lines = ax.get_lines()
    assert len(lines) == 2 * 4
    colours = set()
    for i in range(4):
        solid, dashed = lines[2 * i], lines[2 * i + 1]
        assert solid.get_linestyle() == "-" and dashed.get_linestyle() == "--"
        assert solid.get_color() == dashed.get_color()
        colours.add(solid.get_color())
        np.testing.assert_array_equal(solid.get_xdata(), np.arange(1, 7))
        np.testing.assert_allclose(solid.get_ydata(), X[i])
        np.testing.assert_allclose(dashed.get_ydata(), R[i])
    assert len(colours) == 4  # one colour per row
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        f"row {i + 1}" for i in range(4)]
    assert ax.get_xlabel() == "feature" and ax.get_title() == "profiles"


@pytest.mark.parametrize("x_shape,r_shape", [
    ((4, 6), (4, 5)), ((4, 6), (3, 6)), ((6,), (6,)), ((0, 6), (0, 6)), ((2, 3, 2), (2, 3, 2)),
])
def test_reconstruction_profiles_bad_shapes(x_shape, r_shape):
    with pytest.raises(ValueError):
        reconstruction_profiles(np.zeros(x_shape), np.zeros(r_shape))


def test_reconstruction_profiles_png(tmp_path):
    X = np.random.default_rng(1).normal(size=(5, 7))
    reconstruction_profiles(X, 0.8 * X).savefig(tmp_path / "profiles.png", dpi=80)
    _check_png(tmp_path / "profiles.png")


def test_new_figures_leave_no_pyplot_figures_open():
    import sys

    tangent_images(_images(1), _tangents(1, 1), (8, 8))
    spectra({"a": _spectra()})
    contraction_curves(np.arange(3.0), {"a": np.ones(3)})
    codes_scatter(_codes())
    reconstruction_profiles(np.ones((2, 3)), np.ones((2, 3)))
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        assert plt.get_fignums() == []


def test_bad_plot_arguments_are_value_or_type_errors():
    from contractive.plotting import codes_scatter, contraction_curves, spectra, tangent_images

    X, T = np.random.default_rng(0).random((5, 16)), np.random.default_rng(1).random((5, 2, 16))
    fig = Figure()
    for bad_ax in ("x", fig, fig.subplots(1, 2)):
        with pytest.raises(TypeError, match="ax must be one matplotlib Axes"):
            spectra({"a": np.ones(3)}, ax=bad_ax)
    for bad in ([np.ones(3)], None):
        with pytest.raises(TypeError, match="curves must be a dict"):
            spectra(bad)
        with pytest.raises(TypeError, match="curves must be a dict"):
            contraction_curves(np.arange(3.0), bad)
    with pytest.raises(ValueError, match="curves is empty"):
        spectra({})
    with pytest.raises(ValueError, match=r"curves\['a'\] of shape \(2,\) must match radii"):
        contraction_curves(np.arange(3.0), {"a": np.ones(2)})
    for labels in (np.arange(3), np.zeros((10, 2)), 5):
        with pytest.raises(ValueError, match="labels of shape"):
            codes_scatter(np.random.default_rng(2).random((10, 3)), labels)
    for codes in (np.empty((10, 0)), np.full((4, 3), np.nan)):
        with pytest.raises(ValueError, match="codes"):
            codes_scatter(codes)
    for sv in (np.ones((5, 1)), np.ones(5)):
        with pytest.raises(ValueError, match=r"singular_values of shape .* must be \(>= 5, >= 2\)"):
            tangent_images(X, T, (4, 4), singular_values=sv)
    with pytest.raises(ValueError, match="no tangent vector"):
        tangent_images(X, T[:, :0], (4, 4))
    for history, words in (([{"loss": 1.0}], r"history\[0\] lacks epoch"),
                           ([{"epoch": 1, "loss": 1.0}, {"epoch": 2}], r"history\[1\] lacks loss"),
                           ({"epoch": 1}, "non-empty list"),
                           ([{"epoch": 1}], "none of the loss terms"),
                           ([{"epoch": 1, "loss": "x"}], r"history\[0\]\['loss'\] = 'x' must be "
                                                         "a number"),
                           ([{"epoch": 1, "loss": 1.0, "val_loss": None}],
                            r"\['val_loss'\] = None must be a number")):
        with pytest.raises(ValueError, match=words):
            training_curves(history)


def test_codes_scatter_of_one_point_with_many_codes():
    from contractive.plotting import codes_scatter

    fig = codes_scatter(np.random.default_rng(0).random((1, 3)))
    assert fig.axes[0].collections[0].get_offsets().shape == (1, 2)


def test_spectra_axis_ends_at_float32_resolution_but_not_above_the_data():
    s = _spectra(n=30, m=6)
    s[:, -2:] = np.r_[1e-9, 1e-18]  # rounding noise at the tail, and an exact zero-like value
    (ax,) = spectra({"noisy tail": s, "zero": np.r_[1.0, 0.0]}).get_axes()
    assert ax.get_ylim()[0] == pytest.approx(FLOOR)  # relative to the largest value, 1
    (ax,) = spectra({"raw": s * 1e3}, normalise=False).get_axes()
    assert ax.get_ylim()[0] == pytest.approx(FLOOR * float(np.max(s * 1e3)))
    clean = _spectra(n=30, m=4)  # nothing near the floor: the axis stays near the data
    (ax,) = spectra({"clean": clean}).get_axes()
    norm = clean / clean[:, :1]
    assert FLOOR * 1e3 < ax.get_ylim()[0] <= np.percentile(norm, 10, axis=0).min()


def test_validation_values_are_drawn_wherever_they_appear():
    """Validation from the second record on (or with gaps) is drawn, not dropped."""
    history = [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5, "val_loss": 1.8},
               {"epoch": 3, "loss": 1.2, "val_loss": 1.6}]
    ax = training_curves(history).axes[0]
    val = [line for line in ax.get_lines() if line.get_label() == "validation"]
    assert len(val) == 1
    np.testing.assert_array_equal(val[0].get_ydata(), [np.nan, 1.8, 1.6])


def test_more_plot_arguments_are_checked_in_one_line():
    A = np.random.default_rng(0).random((3, 64))
    for shape in ((7, 8), 64, (8, "8"), (8, 8.5), (0, 64)):
        with pytest.raises(ValueError, match="image_shape=.* must be .height, width"):
            reconstruction_grid(A, A, shape)
    for n in (0, 1.5, True):
        with pytest.raises(ValueError, match="n=.* must be an integer >= 1"):
            reconstruction_grid(A, A, (8, 8), n=n)
    for bad in (np.zeros((0, 4)), np.zeros((2, 2, 2))):
        with pytest.raises(ValueError, match=r"curves\['a'\] of shape"):
            spectra({"a": bad})
    with pytest.raises(ValueError, match="finite singular values"):
        spectra({"a": [1.0, -1.0]})
    with pytest.raises(ValueError, match="must hold numbers"):
        contraction_curves([0, 1], {"a": ["x", "y"]})
    with pytest.raises(ValueError, match=r"distances\['min'\] = 'x' must be a finite number"):
        contraction_curves([0, 1], {"a": [1, 1]}, distances={"min": "x"})
    with pytest.raises(TypeError, match="distances must be a dict"):
        contraction_curves([0, 1], {"a": [1, 1]}, distances=[1, 2])


def test_codes_scatter_with_many_or_mixed_labels():
    codes = np.random.default_rng(0).random((60, 3))
    words = np.array([f"w{i}" for i in range(30)] * 2)
    assert codes_scatter(codes, words).axes  # 30 text labels: a colorbar by rank
    mixed = np.array([None, 1, "a"] * 20, dtype=object)
    assert codes_scatter(codes, mixed).axes  # several kinds: read as text


def test_reconstruction_profiles_draws_into_a_given_axes():
    fig = Figure()
    ax = fig.subplots()
    A = np.random.default_rng(0).random((3, 5))
    assert reconstruction_profiles(A, A, ax=ax) is fig
    assert len(ax.get_lines()) == 6


def test_training_curves_draw_into_given_axes():
    history = [{"epoch": e, "loss": 1.0 / e, "penalty": 0.5 / e} for e in range(1, 4)]
    fig = Figure()
    axes = fig.subplots(1, 2)
    assert training_curves(history, ax=axes) is fig
    assert [a.get_title() for a in axes] == ["loss", "mean ||J||_F^2"]
    one = Figure().subplots()
    assert training_curves([{"epoch": 1, "loss": 1.0}], ax=one) is one.figure
    for bad in (one, "x", Figure().subplots(1, 3)):
        with pytest.raises(TypeError, match="ax must be 2 matplotlib Axes of one figure"):
            training_curves(history, ax=bad)
