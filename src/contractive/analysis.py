r"""Manifold analysis: what the encoder's Jacobian says about the data's local geometry.

All functions take a *Jacobian function* ``jac(X) -> (n, k, d)`` and work through the points
in chunks, so memory stays bounded however many points there are. The estimator's methods
pass the Jacobian with respect to the input *the network sees* (after its ``scaling``):
that is the metric the contractive penalty shaped, so spectra and local dimensions are read
there, and tangent vectors are pushed forward to the units of the data (``tangents``).

* ``singular_values``: per point, the singular values of ``J_f(x)``, descending.
* ``tangents``: per point, the leading right singular vectors: orthonormal rows spanning the
  directions the code is most sensitive to, the estimated tangent plane of the manifold.
* ``local_dimension``: per point, the number of singular values needed to hold a share
  ``energy`` (default 0.8) of ``sum_i s_i^2`` (``energy``, the default), or the position of
  the largest gap in the log spectrum, ``argmax_i log(s_i / s_{i+1})`` (``gap``). The CAE
  leaves the directions normal to the manifold *inside* the data's linear span less
  contracted than the directions off it; the largest log gap then often falls after them
  (it counts the span: a noisy sphere in R^100 reads 3), while their small share of the
  energy leaves the energy count at the manifold's dimension. Measured on held-out clean
  points of 12 manifolds (``benchmarks/tangents.py``), the energy rule reads the true
  dimension where the gap rule reads the span. Its limit: ``d`` equal tangent singular
  values are counted as ``d`` only while ``(d - 1) / d < energy``, i.e. up to ``d = 4`` at
  0.8; raise ``energy`` (0.9: up to 9) or use ``gap`` for manifolds of higher dimension.
* ``contraction_curve``: the paper's contraction ratio ``E ||f(x + r u) - f(x)|| / r`` for
  ``u`` uniform on the unit sphere, for each radius ``r`` (at ``r = 0`` its limit
  ``E ||J u||``).
* ``saturation``: the share of code units near the flat ends of a sigmoid or tanh (the
  paper's SAT: ``h < 0.05`` or ``h > 0.95`` for a sigmoid).
* ``jacobian_summary``: mean ``||J||_F^2`` and the mean squared entry, ``||J||_F^2 / (k d)``
  (the scale of the paper's Table 1).
* ``principal_angles``: the largest principal angle between two sets of subspaces, to
  compare estimated tangent planes with true ones.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

JacobianFn = Callable[[np.ndarray], np.ndarray]
#: Elements of one chunk of Jacobians.
CHUNK_ELEMENTS = 1 << 23


def _chunks(X: np.ndarray, k: int, d: int):
    rows = max(1, CHUNK_ELEMENTS // max(1, k * d))
    for start in range(0, len(X), rows):
        yield X[start : start + rows]


def _shape(jac: JacobianFn, X: np.ndarray) -> tuple[int, int]:
    J = jac(X[:1])
    return J.shape[1], J.shape[2]


def singular_values(jac: JacobianFn, X: np.ndarray) -> np.ndarray:
    """Singular values of ``J_f(x)`` at each point, descending: ``(n, min(k, d))``."""
    X = np.asarray(X)
    k, d = _shape(jac, X)
    return np.concatenate([
        np.linalg.svd(jac(c).astype(np.float64), compute_uv=False) for c in _chunks(X, k, d)
    ])


def tangents(jac: JacobianFn, X: np.ndarray, n_tangents: int,
             scale: np.ndarray | None = None) -> np.ndarray:
    """Leading right singular vectors of ``J_f(x)``: ``(n, n_tangents, d)``, orthonormal rows.

    ``scale`` (``(d,)``): ``jac`` is taken with respect to ``z = (x - offset) / scale`` (the
    input the network sees); the singular vectors are tangent vectors in ``z`` and are
    pushed forward to ``x`` (``v_x = scale * v_z``), then orthonormalised in ``x``. (The right
    singular vectors of the Jacobian with respect to ``x`` itself would span
    ``diag(scale)^-2`` times the tangent plane, not the plane, whenever the scale differs
    between features.)
    """
    X = np.asarray(X)
    k, d = _shape(jac, X)
    if not isinstance(n_tangents, (int, np.integer)) or not 1 <= n_tangents <= min(k, d):
        raise ValueError(
            f"n_tangents={n_tangents!r} must be an integer between 1 and min(n_components, "
            f"n_features) = {min(k, d)}"
        )
    out = []
    for c in _chunks(X, k, d):
        _, _, vh = np.linalg.svd(jac(c).astype(np.float64), full_matrices=False)
        v = vh[:, :n_tangents, :]  # (m, t, d)
        if scale is not None:
            q, _ = np.linalg.qr(np.swapaxes(v * np.asarray(scale, dtype=np.float64), 1, 2))
            v = np.swapaxes(q, 1, 2)
        out.append(v)
    return np.concatenate(out)


#: The default local-dimension rule (see the module docstring).
LOCAL_DIMENSION_METHOD = "energy"
LOCAL_DIMENSION_ENERGY = 0.8


def local_dimension(spectrum: np.ndarray, *, method: str = LOCAL_DIMENSION_METHOD,
                    energy: float = LOCAL_DIMENSION_ENERGY) -> np.ndarray:
    """Per-point local dimension from singular values ``(n, m)`` (see the module docstring).

    method: ``energy`` (the fewest singular values holding a share ``energy`` of
    ``sum_i s_i^2``) or ``gap`` (the largest ratio between consecutive singular values).
    """
    s = np.maximum(np.asarray(spectrum, dtype=np.float64), np.finfo(np.float64).tiny)
    if s.ndim != 2 or s.shape[1] < 1:
        raise ValueError(f"spectrum of shape {s.shape} must be (n_points, n_values)")
    if method == "gap":
        if s.shape[1] < 2:
            return np.ones(len(s), dtype=np.int64)
        gaps = np.log(s[:, :-1]) - np.log(s[:, 1:])
        return gaps.argmax(1).astype(np.int64) + 1
    if method == "energy":
        if not 0 < energy <= 1:
            raise ValueError(f"energy={energy!r} must be in (0, 1]")
        share = np.cumsum(s**2, 1) / np.sum(s**2, 1, keepdims=True)
        return (share < energy - 1e-12).sum(1).astype(np.int64) + 1
    raise ValueError(f"method={method!r} is not known; valid: gap, energy")


def principal_angles(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Largest principal angle, in degrees, between the row spaces of ``A[i]`` and ``B[i]``.

    A: ``(n, p, d)``, B: ``(n, q, d)``, rows orthonormal. With ``p == q`` this is the usual
    distance between subspaces; 0 means equal, 90 means some direction of one is
    orthogonal to the other.
    """
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    if A.ndim != 3 or B.ndim != 3 or A.shape[0] != B.shape[0] or A.shape[2] != B.shape[2]:
        raise ValueError(f"bases of shapes {A.shape} and {B.shape} do not pair up")
    cos = np.linalg.svd(A @ np.swapaxes(B, 1, 2), compute_uv=False)  # (n, min(p, q))
    return np.degrees(np.arccos(np.clip(cos.min(1), -1.0, 1.0)))


def contraction_curve(
    encode: Callable[[np.ndarray], np.ndarray], jac: JacobianFn, X: np.ndarray,
    radii: np.ndarray, *, n_directions: int = 1, random_state: int | None = 0,
) -> np.ndarray:
    """Mean contraction ratio ``||f(x + r u) - f(x)|| / r`` at each radius: ``(len(radii),)``.

    ``u`` is drawn uniformly on the unit sphere (``n_directions`` per point); at ``r = 0``
    the ratio is its limit ``||J_f(x) u||``. Radii are in the units of ``X``.
    """
    X = np.asarray(X, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64).ravel()
    if radii.size == 0 or np.any(~np.isfinite(radii)) or np.any(radii < 0):
        raise ValueError("radii must be a non-empty list of finite numbers >= 0")
    rng = np.random.default_rng(random_state)
    X0 = np.repeat(X, n_directions, axis=0)
    U = rng.normal(size=X0.shape)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    H0 = encode(X0).astype(np.float64)
    ratios = []
    for r in radii:
        if r == 0:
            k, d = _shape(jac, X0)
            norms = [np.linalg.norm(np.einsum("nkd,nd->nk", jac(c), u), axis=1)
                     for c, u in zip(_chunks(X0, k, d), _chunks(U, k, d))]
            ratios.append(float(np.mean(np.concatenate(norms))))
        else:
            H1 = encode(X0 + r * U).astype(np.float64)
            ratios.append(float(np.mean(np.linalg.norm(H1 - H0, axis=1) / r)))
    return np.asarray(ratios)


def pairwise_distance_summary(X: np.ndarray, *, max_points: int = 2000,
                              random_state: int | None = 0) -> dict[str, float]:
    """Min, median and max distance between distinct points (on a subsample of ``X``)."""
    X = np.asarray(X, dtype=np.float64)
    if len(X) > max_points:
        X = X[np.random.default_rng(random_state).choice(len(X), max_points, replace=False)]
    if len(X) < 2:
        raise ValueError("distances need at least two points")
    sq = np.sum(X**2, 1)
    D2 = np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0)
    iu = np.triu_indices(len(X), 1)
    D = np.sqrt(D2[iu])
    return {"min": float(D.min()), "median": float(np.median(D)), "max": float(D.max())}


SATURATION_BOUNDS = {"sigmoid": (0.05, 0.95), "tanh": (-0.9, 0.9)}


def saturation(codes: np.ndarray, activation: str) -> float | None:
    """Share of code values near the flat ends of the activation (None if it has none)."""
    if activation not in SATURATION_BOUNDS:
        return None
    lo, hi = SATURATION_BOUNDS[activation]
    codes = np.asarray(codes)
    return float(np.mean((codes < lo) | (codes > hi)))


def jacobian_summary(penalties: np.ndarray, k: int, d: int) -> dict[str, float]:
    """Mean ``||J||_F^2`` and the mean squared Jacobian entry (the paper's Table 1 scale)."""
    mean = float(np.mean(penalties))
    return {"mean_jacobian_frobenius_sq": mean, "mean_squared_jacobian_entry": mean / (k * d)}
