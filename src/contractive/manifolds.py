"""Synthetic manifolds with known tangent spaces, for examples and tests.

Each generator samples points on a ``d``-dimensional manifold in a low-dimensional space
``R^m`` (circle: d=1, m=2; sphere, swiss roll, torus, saddle: d=2, m=3; sphere3, the unit
3-sphere: d=3, m=4), with an orthonormal basis of the tangent space at every point, then
embeds them in ``R^D``:

* ``linear``:  ``y = Q p`` with ``Q`` ``(D, m)`` of orthonormal columns (an isometry);
* ``smooth``:  ``y = Q p + A tanh(B p)``, a smooth non-linear embedding whose Jacobian
  ``Q + A diag(1 - tanh^2(B p)) B`` carries the tangent vectors along.

Tangent bases are re-orthonormalised after the embedding. Gaussian noise of standard
deviation ``noise`` per coordinate is added to ``X`` afterwards; ``X_clean`` and the tangents
are those of the noise-free points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_random_state

from .validation import check_float, check_int

MANIFOLDS = ("circle", "sphere", "swiss_roll", "torus", "saddle", "sphere3")
EMBEDDINGS = ("linear", "smooth")


@dataclass
class ManifoldSample:
    """Points and their tangent spaces.

    X: ``(n, D)`` noisy points; X_clean: ``(n, D)``; tangents: ``(n, d, D)``, orthonormal
    rows spanning the tangent space at each clean point; intrinsic_dim: ``d``;
    params: ``(n, d)`` intrinsic coordinates (angles, heights).
    """

    X: np.ndarray
    X_clean: np.ndarray
    tangents: np.ndarray
    intrinsic_dim: int
    params: np.ndarray


def _orthonormal_rows(T: np.ndarray) -> np.ndarray:
    """Orthonormalise the rows of each ``(d, D)`` block: ``(n, d, D) -> (n, d, D)``."""
    q, _ = np.linalg.qr(np.swapaxes(T, 1, 2))  # (n, D, d)
    return np.swapaxes(q, 1, 2)


def _circle(n, rs):
    t = rs.uniform(0, 2 * np.pi, n)
    p = np.stack([np.cos(t), np.sin(t)], 1)
    T = np.stack([-np.sin(t), np.cos(t)], 1)[:, None, :]
    return p, T, t[:, None]


def _sphere_tangents(p):
    """Orthonormal bases of the tangent spaces of the unit sphere at the rows of ``p``:
    the eigenvectors of ``I - p p^T`` with eigenvalue 1, ``(n, m - 1, m)``."""
    m = p.shape[1]
    proj = np.eye(m)[None] - p[:, :, None] * p[:, None, :]
    _, vecs = np.linalg.eigh(proj)  # ascending: all but the first have eigenvalue 1
    return np.swapaxes(vecs[:, :, 1:], 1, 2)


def _sphere(n, rs):
    p = rs.normal(size=(n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    T = _sphere_tangents(p)
    theta = np.arccos(np.clip(p[:, 2], -1, 1))
    phi = np.arctan2(p[:, 1], p[:, 0])
    return p, T, np.stack([theta, phi], 1)


def _swiss_roll(n, rs):
    t = rs.uniform(1.5 * np.pi, 4.5 * np.pi, n)
    h = rs.uniform(0, 10.0, n)
    p = np.stack([t * np.cos(t), h, t * np.sin(t)], 1) / 10.0
    dt = np.stack([np.cos(t) - t * np.sin(t), np.zeros(n), np.sin(t) + t * np.cos(t)], 1)
    dh = np.tile([0.0, 1.0, 0.0], (n, 1))
    return p, np.stack([dt, dh], 1), np.stack([t, h], 1)


def _torus(n, rs, major=2.0, minor=1.0):
    u, v = rs.uniform(0, 2 * np.pi, n), rs.uniform(0, 2 * np.pi, n)
    ring = major + minor * np.cos(v)
    p = np.stack([ring * np.cos(u), ring * np.sin(u), minor * np.sin(v)], 1)
    du = np.stack([-ring * np.sin(u), ring * np.cos(u), np.zeros(n)], 1)
    dv = np.stack([-minor * np.sin(v) * np.cos(u), -minor * np.sin(v) * np.sin(u),
                   minor * np.cos(v)], 1)
    return p, np.stack([du, dv], 1), np.stack([u, v], 1)


def _saddle(n, rs):
    """The graph of ``z = x^2 - y^2`` over ``[-1, 1]^2``."""
    x, y = rs.uniform(-1, 1, n), rs.uniform(-1, 1, n)
    one, zero = np.ones(n), np.zeros(n)
    p = np.stack([x, y, x**2 - y**2], 1)
    T = np.stack([np.stack([one, zero, 2 * x], 1), np.stack([zero, one, -2 * y], 1)], 1)
    return p, T, np.stack([x, y], 1)


def _sphere3(n, rs):
    """The unit 3-sphere in R^4; params: hyperspherical angles (psi, theta, phi)."""
    p = rs.normal(size=(n, 4))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    psi = np.arccos(np.clip(p[:, 0], -1, 1))
    theta = np.arctan2(np.linalg.norm(p[:, 2:], axis=1), p[:, 1])
    phi = np.arctan2(p[:, 3], p[:, 2])
    return p, _sphere_tangents(p), np.stack([psi, theta, phi], 1)


_GENERATORS = {"circle": _circle, "sphere": _sphere, "swiss_roll": _swiss_roll, "torus": _torus,
               "saddle": _saddle, "sphere3": _sphere3}
_LOW_DIM = {"circle": 2, "sphere": 3, "swiss_roll": 3, "torus": 3, "saddle": 3, "sphere3": 4}


def make_manifold(
    name: str, n_samples: int = 1000, *, ambient_dim: int = 20, embedding: str = "linear",
    noise: float = 0.0, random_state=None,
) -> ManifoldSample:
    """Sample ``n_samples`` points of manifold ``name`` embedded in ``R^ambient_dim``.

    The embedding (its random matrices) and then the points come from ``random_state``: two
    calls with the same ``random_state`` and ``ambient_dim`` share the embedding, so
    ``random_state=(seed)`` with different sizes gives training and test sets of one
    manifold (the first ``n`` points also coincide).
    """
    if not isinstance(name, str) or name not in _GENERATORS:
        raise ValueError(f"manifold {name!r} is not known; valid: {', '.join(MANIFOLDS)}")
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding={embedding!r} is not known; valid: {', '.join(EMBEDDINGS)}")
    n_samples = check_int("n_samples", n_samples, 1)
    noise = check_float("noise", noise, 0)
    m = _LOW_DIM[name]
    if not isinstance(ambient_dim, (int, np.integer)) or ambient_dim < m:
        raise ValueError(f"ambient_dim={ambient_dim!r} must be an integer >= {m} for {name}")
    rs = check_random_state(random_state)
    # the embedding first, so that samples of any size from one random_state share it
    Q, _ = np.linalg.qr(rs.normal(size=(ambient_dim, m)))  # (D, m), orthonormal columns
    width = 2 * m
    B = rs.normal(size=(width, m))
    A = rs.normal(size=(ambient_dim, width)) * (0.3 / np.sqrt(width))
    p, T, params = _GENERATORS[name](int(n_samples), rs)
    X = p @ Q.T
    T = T @ Q.T  # (n, d, D)
    if embedding == "smooth":
        act = np.tanh(p @ B.T)  # (n, width)
        X = X + act @ A.T
        # push the intrinsic tangents through the embedding's Jacobian
        t_low = T @ Q  # (n, d, m): the tangents before the embedding
        dact = (1 - act**2)[:, None, :] * (t_low @ B.T)  # (n, d, width)
        T = T + dact @ A.T
    tangents = _orthonormal_rows(T)
    noisy = X + noise * rs.normal(size=X.shape) if noise > 0 else X.copy()
    return ManifoldSample(noisy, X, tangents, T.shape[1], params)
