"""Synthetic manifolds (``contractive.manifolds``): shapes, orthonormal and correct tangent
spaces (against the analytic ones for the linear embedding; by nearest-neighbour secants for
both embeddings), noise, determinism and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from contractive.manifolds import EMBEDDINGS, MANIFOLDS, make_manifold

DIMS = {"circle": (1, 2), "sphere": (2, 3), "swiss_roll": (2, 3), "torus": (2, 3),
        "saddle": (2, 3), "sphere3": (3, 4)}


def _analytic(name: str, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(n, m)`` and tangent vectors ``(n, d, m)`` before the embedding, from the
    intrinsic coordinates, written out independently of the generators."""
    a, b = params[:, 0], params[:, -1]
    zero = np.zeros_like(a)
    if name == "circle":
        return np.stack([np.cos(a), np.sin(a)], 1), np.stack([-np.sin(a), np.cos(a)], 1)[:, None]
    if name == "sphere":  # theta (from +z), phi; tangents d/dtheta and d/dphi / sin(theta)
        p = np.stack([np.sin(a) * np.cos(b), np.sin(a) * np.sin(b), np.cos(a)], 1)
        t1 = np.stack([np.cos(a) * np.cos(b), np.cos(a) * np.sin(b), -np.sin(a)], 1)
        t2 = np.stack([-np.sin(b), np.cos(b), zero], 1)
        return p, np.stack([t1, t2], 1)
    if name == "swiss_roll":  # t, h
        p = np.stack([a * np.cos(a), b, a * np.sin(a)], 1) / 10
        t1 = np.stack([np.cos(a) - a * np.sin(a), zero, np.sin(a) + a * np.cos(a)], 1)
        t2 = np.stack([zero, zero + 1, zero], 1)
        return p, np.stack([t1, t2], 1)
    if name == "saddle":  # x, y
        p = np.stack([a, b, a**2 - b**2], 1)
        t1 = np.stack([zero + 1, zero, 2 * a], 1)
        t2 = np.stack([zero, zero + 1, -2 * b], 1)
        return p, np.stack([t1, t2], 1)
    if name == "sphere3":  # psi, theta, phi: the partial derivatives
        c = params[:, 1]
        p = np.stack([np.cos(a), np.sin(a) * np.cos(c), np.sin(a) * np.sin(c) * np.cos(b),
                      np.sin(a) * np.sin(c) * np.sin(b)], 1)
        t1 = np.stack([-np.sin(a), np.cos(a) * np.cos(c), np.cos(a) * np.sin(c) * np.cos(b),
                       np.cos(a) * np.sin(c) * np.sin(b)], 1)
        t2 = np.stack([zero, -np.sin(c), np.cos(c) * np.cos(b), np.cos(c) * np.sin(b)], 1)
        t3 = np.stack([zero, zero, -np.sin(b), np.cos(b)], 1)
        return p, np.stack([t1, t2, t3], 1)
    ring = 2 + np.cos(b)  # torus: u around the axis, v around the tube; R=2, r=1
    p = np.stack([ring * np.cos(a), ring * np.sin(a), np.sin(b)], 1)
    t1 = np.stack([-np.sin(a), np.cos(a), zero], 1)
    t2 = np.stack([-np.sin(b) * np.cos(a), -np.sin(b) * np.sin(a), np.cos(b)], 1)
    return p, np.stack([t1, t2], 1)


def _projectors(T: np.ndarray) -> np.ndarray:
    """Orthogonal projectors ``(n, D, D)`` onto the row spans of ``T`` ``(n, d, D)``."""
    q, _ = np.linalg.qr(np.swapaxes(T, 1, 2))
    return q @ np.swapaxes(q, 1, 2)


def _off_tangent(sample, X: np.ndarray) -> np.ndarray:
    """For each point, the part of the unit secant to its nearest neighbour that lies off
    the point's tangent space (0: in it, 1: orthogonal to it)."""
    _, idx = NearestNeighbors(n_neighbors=2).fit(X).kneighbors(X)
    sec = X[idx[:, 1]] - X
    sec /= np.linalg.norm(sec, axis=1, keepdims=True)
    inside = np.einsum("nde,ne->nd", sample.tangents, sec)
    return np.sqrt(np.clip(1 - (inside**2).sum(1), 0, None))


@pytest.mark.parametrize("embedding", EMBEDDINGS)
@pytest.mark.parametrize("name", MANIFOLDS)
def test_shapes_and_orthonormal_tangents(name, embedding):
    d, _ = DIMS[name]
    s = make_manifold(name, 300, ambient_dim=11, embedding=embedding, random_state=0)
    assert s.intrinsic_dim == d
    assert s.X.shape == s.X_clean.shape == (300, 11)
    assert s.tangents.shape == (300, d, 11) and s.params.shape == (300, d)
    for a in (s.X, s.X_clean, s.tangents, s.params):
        assert np.isfinite(a).all()
    gram = s.tangents @ np.swapaxes(s.tangents, 1, 2)
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(d), gram.shape), atol=1e-10)
    np.testing.assert_array_equal(s.X, s.X_clean)  # no noise by default


@pytest.mark.parametrize("name", MANIFOLDS)
def test_linear_embedding_tangents_are_the_analytic_ones(name):
    """``X = p Q^T`` with ``Q`` orthonormal: recover ``Q`` from the points and the intrinsic
    coordinates, then the tangent spaces must be the analytic tangents mapped by ``Q``."""
    d, m = DIMS[name]
    s = make_manifold(name, 500, ambient_dim=9, embedding="linear", random_state=1)
    p, t = _analytic(name, s.params)
    Qt, *_ = np.linalg.lstsq(p, s.X_clean, rcond=None)  # (m, D)
    np.testing.assert_allclose(p @ Qt, s.X_clean, atol=1e-10)  # the coordinates fit
    np.testing.assert_allclose(Qt @ Qt.T, np.eye(m), atol=1e-10)  # an isometry
    expected = _projectors(t @ Qt)
    np.testing.assert_allclose(_projectors(s.tangents), expected, atol=1e-8)


@pytest.mark.parametrize("embedding", EMBEDDINGS)
@pytest.mark.parametrize("name", MANIFOLDS)
def test_tangents_contain_nearest_neighbour_secants(name, embedding):
    """A finite-difference check for any embedding: with 4,000 points, the secant from each
    point to its nearest neighbour lies almost in the tangent space there; and the check
    has power: with the tangents of other points it fails by far."""
    s = make_manifold(name, 4000, ambient_dim=20, embedding=embedding, random_state=0)
    off = _off_tangent(s, s.X_clean)
    # the secant leaves the tangent space by about half its length times the curvature;
    # 4,000 points on a 3-manifold are farther apart than on a 2-manifold
    assert np.median(off) < (0.05 if s.intrinsic_dim < 3 else 0.1), np.median(off)
    shuffled = type(s)(s.X, s.X_clean, s.tangents[np.random.default_rng(0).permutation(4000)],
                       s.intrinsic_dim, s.params)
    assert np.median(_off_tangent(shuffled, s.X_clean)) > 0.3


@pytest.mark.parametrize("name", ["sphere", "torus"])
def test_smooth_tangents_are_not_the_linear_ones(name):
    """The smooth embedding bends the tangent spaces: those of the linear part alone (same
    points and ``Q``, drawn first from the same seed) fail the secant check."""
    smooth = make_manifold(name, 4000, ambient_dim=20, embedding="smooth", random_state=0)
    linear = make_manifold(name, 4000, ambient_dim=20, embedding="linear", random_state=0)
    np.testing.assert_array_equal(smooth.params, linear.params)
    assert np.abs(smooth.X_clean - linear.X_clean).max() > 0.1
    wrong = type(smooth)(smooth.X, smooth.X_clean, linear.tangents, 2, smooth.params)
    assert np.median(_off_tangent(wrong, smooth.X_clean)) > 0.2


@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_noise_has_the_right_std(embedding):
    s = make_manifold("torus", 3000, ambient_dim=15, embedding=embedding, noise=0.05,
                      random_state=2)
    eps = s.X - s.X_clean
    assert eps.std() == pytest.approx(0.05, rel=0.02)
    assert abs(eps.mean()) < 0.002
    per_coordinate = eps.std(0)
    np.testing.assert_allclose(per_coordinate, 0.05, rtol=0.1)
    clean = make_manifold("torus", 3000, ambient_dim=15, embedding=embedding, random_state=2)
    np.testing.assert_array_equal(s.X_clean, clean.X_clean)  # noise is added afterwards
    np.testing.assert_array_equal(s.tangents, clean.tangents)


def test_no_noise_gives_a_copy():
    s = make_manifold("circle", 10, noise=0.0, random_state=0)
    assert s.X is not s.X_clean
    s.X[0, 0] += 1
    assert s.X[0, 0] != s.X_clean[0, 0]


@pytest.mark.parametrize("name", MANIFOLDS)
def test_points_lie_on_the_manifold(name):
    """The linear embedding is an isometry: distances between points are those of the
    low-dimensional manifold (circle and sphere: unit radius from their centre)."""
    s = make_manifold(name, 200, ambient_dim=7, random_state=3)
    p, _ = _analytic(name, s.params)
    dist = lambda a: np.linalg.norm(a[:, None] - a[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(s.X_clean), dist(p), atol=1e-10)
    if name in ("circle", "sphere"):
        np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0)


def test_deterministic_by_random_state():
    a = make_manifold("swiss_roll", 100, embedding="smooth", noise=0.1, random_state=5)
    b = make_manifold("swiss_roll", 100, embedding="smooth", noise=0.1, random_state=5)
    c = make_manifold("swiss_roll", 100, embedding="smooth", noise=0.1, random_state=6)
    for field in ("X", "X_clean", "tangents", "params"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.allclose(a.X, c.X)
    r1, r2 = np.random.RandomState(7), np.random.RandomState(7)
    np.testing.assert_array_equal(make_manifold("circle", 5, random_state=r1).X,
                                  make_manifold("circle", 5, random_state=r2).X)


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="klein_bottle"), "klein_bottle.*circle"),
    (dict(embedding="cubic"), "embedding='cubic'.*linear"),
    (dict(ambient_dim=2), "ambient_dim=2.*>= 3"),
    (dict(name="circle", ambient_dim=1), "ambient_dim=1.*>= 2"),
    (dict(ambient_dim=10.5), "ambient_dim"),
    (dict(ambient_dim="10"), "ambient_dim"),
    (dict(noise=-0.1), "noise"),
    (dict(noise=float("nan")), "noise"),
    (dict(noise=float("inf")), "noise"),
    (dict(noise="0.1"), "noise"),
    (dict(n_samples=0), "n_samples"),
    (dict(n_samples=-5), "n_samples"),
    (dict(n_samples=2.5), "n_samples"),
    (dict(n_samples="10"), "n_samples"),
])
def test_errors(kwargs, match):
    args = dict(name="sphere", n_samples=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_manifold(args.pop("name"), args.pop("n_samples"), **args)


def test_circle_in_its_own_plane():
    s = make_manifold("circle", 50, ambient_dim=2, random_state=0)
    np.testing.assert_allclose(np.linalg.norm(s.X, axis=1), 1.0)
    np.testing.assert_allclose(np.einsum("ne,ne->n", s.tangents[:, 0], s.X), 0, atol=1e-12)


def test_noise_takes_numpy_scalars_and_refuses_overflow():
    a = make_manifold("sphere", 20, noise=np.float32(0.1), random_state=0)
    b = make_manifold("sphere", 20, noise=0.1, random_state=0)
    np.testing.assert_allclose(a.X, b.X, atol=1e-7)
    for bad in (1e308, True, "0.1"):
        with pytest.raises(ValueError, match="noise"):
            make_manifold("sphere", 20, noise=bad)
    for bad in (True, 2.5):
        with pytest.raises(ValueError, match="n_samples"):
            make_manifold("sphere", bad)
    with pytest.raises(ValueError, match="is not known"):
        make_manifold(["sphere"])
