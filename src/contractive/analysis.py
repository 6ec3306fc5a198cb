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
  the largest gap in the log spectrum, ``argmax_i log(s_i / s_{i+1})`` (``gap``); 0 where
  the Jacobian is zero (a locally constant encoder has no tangent direction). The CAE
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
* ``tangent_residual``: per point, the share of the squared offsets to its nearest
  neighbours that lies off an estimated tangent plane, to compare tangent estimators (two
  recipes, say) on data whose true tangents are unknown; ``tangent_scorer`` makes it a
  ``scoring=`` for scikit-learn's model selection.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .validation import FLOAT32_MAX, check_choice, check_int

JacobianFn = Callable[[np.ndarray], np.ndarray]
#: Elements of one chunk of Jacobians.
CHUNK_ELEMENTS = 1 << 23


def _chunks(X: np.ndarray, k: int, d: int):
    rows = max(1, CHUNK_ELEMENTS // max(1, k * d))
    for start in range(0, len(X), rows):
        yield X[start : start + rows]


def _check_points(X: Any) -> np.ndarray:
    """``X`` as an array of shape ``(n_points, n_features)`` with ``n_points >= 1``."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"X of shape {X.shape} must be 2-D (n_points, n_features) with at "
                         "least 1 point")
    return X


def _real_array(X: Any, name: str) -> np.ndarray:
    """``X`` (an array, a list, a pandas frame of any numeric dtype) as float64;
    ``TypeError`` unless it holds real numbers."""
    if hasattr(X, "to_numpy"):  # pandas, its nullable dtypes included
        try:
            X = X.to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must hold real numbers (no missing values): "
                            f"{exc}") from None
    X = np.asarray(X)
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise TypeError(f"{name} must hold real numbers, not {X.dtype}")
    return X.astype(np.float64)


def _real_points(X: Any, name: str) -> np.ndarray:
    """``X`` as float64 points ``(n_points, n_features)``, at least one of each."""
    X = _real_array(X, name)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{name} of shape {X.shape} must be 2-D (n_points, n_features) with "
                         "at least 1 point and 1 feature")
    return X


def _shape(jac: JacobianFn, X: np.ndarray) -> tuple[int, int]:
    J = jac(X[:1])
    return J.shape[1], J.shape[2]


def singular_values(jac: JacobianFn, X: np.ndarray) -> np.ndarray:
    """Singular values of ``J_f(x)`` at each point, descending: ``(n, min(k, d))``."""
    X = _check_points(X)
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

    At a point where the Jacobian is all zeros (the encoder is locally constant there, e.g.
    every unit of a ReLU layer off) there is no tangent direction to read: its rows are
    arbitrary orthonormal vectors, and one ``RuntimeWarning`` says how many points were so.
    """
    X = _check_points(X)
    k, d = _shape(jac, X)
    if (isinstance(n_tangents, bool) or not isinstance(n_tangents, (int, np.integer))
            or not 1 <= n_tangents <= min(k, d)):
        raise ValueError(
            f"n_tangents={n_tangents!r} must be an integer between 1 and min(n_components, "
            f"n_features) = {min(k, d)}"
        )
    out = []
    n_flat = 0
    for c in _chunks(X, k, d):
        _, sv, vh = np.linalg.svd(jac(c).astype(np.float64), full_matrices=False)
        n_flat += int(np.sum(sv[:, 0] == 0))  # the largest singular value: J == 0
        v = vh[:, :n_tangents, :]  # (m, t, d)
        if scale is not None:
            q, _ = np.linalg.qr(np.swapaxes(v * np.asarray(scale, dtype=np.float64), 1, 2))
            v = np.swapaxes(q, 1, 2)
        out.append(v)
    if n_flat:
        warnings.warn(
            f"the encoder's Jacobian is zero at {n_flat} of {len(X)} points (a locally "
            "constant encoder, e.g. saturated or dead units): their tangent rows are arbitrary",
            RuntimeWarning, stacklevel=2,
        )
    return np.concatenate(out)


#: The default local-dimension rule (see the module docstring).
LOCAL_DIMENSION_METHOD = "energy"
LOCAL_DIMENSION_ENERGY = 0.8


def local_dimension(spectrum: np.ndarray, *, method: str = LOCAL_DIMENSION_METHOD,
                    energy: float = LOCAL_DIMENSION_ENERGY) -> np.ndarray:
    """Per-point local dimension from singular values ``(n, m)`` (see the module docstring).

    method: ``energy`` (the fewest singular values holding a share ``energy`` of
    ``sum_i s_i^2``) or ``gap`` (the largest ratio between consecutive singular values).
    energy: a number in ``(0, 1]`` (checked whatever the method). spectrum: finite values
    ``>= 0``.

    A point whose singular values are all zero (the encoder is locally constant there, e.g.
    every unit saturated or dead) has no tangent direction: its local dimension is 0, by
    either method.
    """
    check_choice("method", method, ("energy", "gap"))
    if (isinstance(energy, bool) or not isinstance(energy, numbers.Real)
            or not 0 < energy <= 1):  # (NaN fails the comparison)
        raise ValueError(f"energy={energy!r} must be a number in (0, 1]")
    try:
        raw = np.asarray(spectrum, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"spectrum must be an array of numbers: {exc}") from exc
    if raw.ndim != 2 or raw.shape[1] < 1:
        raise ValueError(f"spectrum of shape {raw.shape} must be (n_points, n_values)")
    if not np.all(np.isfinite(raw)) or np.any(raw < 0):
        raise ValueError("spectrum must hold finite singular values >= 0")
    flat = ~np.any(raw > 0, axis=1)  # all-zero rows: dimension 0
    if method == "gap":
        s = np.maximum(raw, np.finfo(np.float64).tiny)
        if s.shape[1] < 2:
            dims = np.ones(len(s), dtype=np.int64)
        else:
            gaps = np.log(s[:, :-1]) - np.log(s[:, 1:])
            dims = gaps.argmax(1).astype(np.int64) + 1
        dims[flat] = 0
        return dims
    # the share is scale-free: compute it on each row divided by its largest value, so
    # squares neither overflow nor lose digits as subnormals (rows near 1e154 or 1e-160)
    top = raw.max(1, keepdims=True)
    top[flat] = 1.0  # (any value: these rows are set to 0 below)
    with np.errstate(under="ignore"):
        sq = (raw / top) ** 2
    total = np.sum(sq, 1, keepdims=True)
    total[flat] = 1.0
    share = np.cumsum(sq, 1) / total
    dims = (share < energy - 1e-12).sum(1).astype(np.int64) + 1
    dims[flat] = 0
    return dims


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


def tangent_residual(X: Any, tangents: Any, reference: Any = None, *,
                     n_neighbors: int = 20) -> np.ndarray:
    r"""Per point, the share of the squared offsets to its nearest neighbours that lies off
    its tangent plane: ``(n,)`` in ``[0, 1]``.

    .. math:: r_i = \frac{\sum_j \|(I - T_i^\top T_i)(x_j - x_i)\|^2}
                         {\sum_j \|x_j - x_i\|^2}

    over the ``n_neighbors`` rows ``x_j`` of ``reference`` nearest to ``x_i`` (Euclidean, in
    the units of ``X``); with ``reference=None``, the other rows of ``X`` (a point is not its
    own neighbour). X: ``(n, d)``; tangents: ``(n, p, d)``, orthonormal rows (as
    ``ContractiveAutoencoder.tangents`` returns); reference: ``(m, d)``. A point whose
    neighbours all coincide with it has nothing off the plane: 0.

    A check of tangent planes where the true ones are unknown: compare estimators (recipes,
    local PCA) at the same ``p`` on the same points; the lower the mean, the closer to the
    plane the neighbours lie. It does not fall to 0 for the true planes: noise and the
    manifold's curvature over the neighbourhood leave a floor, the same for every estimator
    compared (0.09-0.68 for the true planes of 15 manifolds in R^50-R^100 at noise 0.01 per
    coordinate, 2,000 points: ``benchmarks/tangent_selection.py``), so read differences,
    not values. With noisy points, use neighbourhoods wider than the noise: on a noisy
    circle, 8 neighbours barely told a good plane from a poor one, 20-40 did.
    """
    X = _real_points(X, "X")
    T = _real_array(tangents, "tangents")
    n, d = X.shape
    if T.ndim != 3 or T.shape[0] != n or T.shape[2] != d or not 1 <= T.shape[1] <= d:
        raise ValueError(f"tangents of shape {T.shape} must be (n_points, n_tangents, "
                         f"n_features) = ({n}, p, {d}) with 1 <= p <= {d}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(T))):
        raise ValueError("X and tangents must be finite")
    gram = T @ np.swapaxes(T, 1, 2)
    if np.abs(gram - np.eye(T.shape[1])).max() > 1e-4:
        raise ValueError("tangents must have orthonormal rows at each point (T T^T = I)")
    ref = X if reference is None else _real_points(reference, "reference")
    if ref.shape[1] != X.shape[1] or not np.all(np.isfinite(ref)):
        raise ValueError(f"reference of shape {ref.shape} must be finite, with "
                         f"{X.shape[1]} features as X")
    available = len(ref) - (reference is None)
    n_neighbors = check_int("n_neighbors", n_neighbors, 1)
    if n_neighbors > available:
        raise ValueError(f"n_neighbors={n_neighbors} exceeds the {available} reference points"
                         + (" (the other rows of X)" if reference is None else ""))
    from sklearn.neighbors import NearestNeighbors

    # residuals are ratios, unchanged by a shift and a scale of all points: centre (the
    # neighbour search loses digits for points far from 0 against their spacing) and
    # rescale (squares of 1e160 overflow, of 1e-170 vanish)
    centre = ref.min(0) / 2 + ref.max(0) / 2
    X, ref = X - centre, ref - centre
    unit = max(np.abs(X).max(), np.abs(ref).max())
    if 0 < unit < np.inf:
        X, ref = X / unit, ref / unit
    nn = NearestNeighbors(n_neighbors=n_neighbors).fit(ref)
    # without a query, kneighbors leaves each point out of its own neighbours
    neighbors = nn.kneighbors(None if reference is None else X, return_distance=False)
    out = np.empty(len(X))
    rows = max(1, CHUNK_ELEMENTS // (n_neighbors * X.shape[1]))
    for start in range(0, len(X), rows):
        x = X[start : start + rows]
        offsets = ref[neighbors[start : start + rows]] - x[:, None, :]  # (m, k, d)
        along = np.einsum("mkd,mpd->mkp", offsets, T[start : start + rows])
        total = np.sum(offsets**2, axis=(1, 2))
        off = np.maximum(total - np.sum(along**2, axis=(1, 2)), 0.0)
        out[start : start + rows] = np.divide(off, total, out=np.zeros_like(off),
                                              where=total > 0)
    return out


class TangentScorer:
    """A ``scoring=`` callable ``(estimator, X, y=None) -> float`` for scikit-learn's model
    selection: minus the mean ``tangent_residual`` of ``estimator.tangents(X, n_tangents)``
    among the rows of ``X`` (higher is better). The estimator must have ``tangents`` (a
    ``ContractiveAutoencoder``, not a pipeline around one). Picklable, so a fitted search
    that uses it can be saved."""

    def __init__(self, n_tangents: int, *, n_neighbors: int = 20) -> None:
        self.n_tangents = check_int("n_tangents", n_tangents, 1)
        self.n_neighbors = check_int("n_neighbors", n_neighbors, 1)

    def __call__(self, estimator: Any, X: Any, y: Any = None) -> float:
        if not hasattr(estimator, "tangents"):
            raise TypeError(f"tangent_scorer needs an estimator with tangents(), not "
                            f"{type(estimator).__name__}")
        T = estimator.tangents(X, self.n_tangents)  # X as given: feature names kept
        return -float(np.mean(tangent_residual(X, T, n_neighbors=self.n_neighbors)))

    def __repr__(self) -> str:
        return f"tangent_scorer({self.n_tangents}, n_neighbors={self.n_neighbors})"


def tangent_scorer(n_tangents: int, *, n_neighbors: int = 20) -> TangentScorer:
    """The ``scoring=`` of ``TangentScorer``: ``GridSearchCV(..., scoring=tangent_scorer(d))``
    chooses the candidate whose tangent planes leave the least of the neighbours' offsets
    off them."""
    return TangentScorer(n_tangents, n_neighbors=n_neighbors)


def contraction_curve(
    encode: Callable[[np.ndarray], np.ndarray], jac: JacobianFn, X: np.ndarray,
    radii: np.ndarray, *, n_directions: int = 1, random_state: int | None = 0,
) -> np.ndarray:
    """Mean contraction ratio ``||f(x + r u) - f(x)|| / r`` at each radius: ``(len(radii),)``.

    ``u`` is drawn uniformly on the unit sphere (``n_directions`` per point); at ``r = 0``
    the ratio is its limit ``||J_f(x) u||``. Radii are in the units of ``X``. The points
    and their directions go through in chunks (memory bounded by ``CHUNK_ELEMENTS``,
    whatever ``len(X) * n_directions``).

    radii: a number or a non-empty 1-D sequence of finite numbers ``>= 0`` and at most
    float32's largest value (the network computes in float32). n_directions: an integer
    ``>= 1``. random_state: None, an integer ``>= 0``, a ``SeedSequence`` or
    ``BitGenerator`` (each seeds ``numpy.random.default_rng``), or a ``Generator`` or
    ``RandomState`` used as is.
    """
    X = _check_points(X)
    try:
        X = X.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"X must be an array of numbers: {exc}") from exc
    radii = _check_radii(radii)
    n_directions = check_int("n_directions", n_directions, 1)
    rng = _check_rng(random_state)
    k, d = _shape(jac, X)
    n_rows = len(X) * n_directions  # point i's directions are rows i*n .. i*n + n - 1
    step = max(1, CHUNK_ELEMENTS // max(1, k * d, 2 * d))  # rows of X + r u per chunk
    sums = np.zeros(len(radii))
    for start in range(0, n_rows, step):
        X0 = X[np.arange(start, min(start + step, n_rows)) // n_directions]
        U = rng.normal(size=X0.shape)  # drawn in order: the same directions for any step
        U /= np.linalg.norm(U, axis=1, keepdims=True)
        H0 = None
        for i, r in enumerate(radii):
            if r == 0:
                norms = np.linalg.norm(np.einsum("nkd,nd->nk", jac(X0), U), axis=1)
            else:
                if H0 is None:
                    H0 = encode(X0).astype(np.float64)
                norms = np.linalg.norm(encode(X0 + r * U).astype(np.float64) - H0, axis=1) / r
            sums[i] += norms.sum()
    ratios = sums / n_rows
    for r, ratio in zip(radii, ratios):
        if not np.isfinite(ratio):
            raise ValueError(
                f"the contraction ratio at radius {r:g} is not finite: the codes of X or of "
                "X + r u are not finite (a radius too large for the network's float32 input?)"
            )
    return ratios


def _check_radii(radii: Any) -> np.ndarray:
    """A non-empty 1-D float64 array of finite radii in ``[0, FLOAT32_MAX]`` (a scalar is
    one radius)."""
    msg = (f"radii={radii!r} must be a non-empty 1-D sequence of finite numbers >= 0 "
           f"(and at most {FLOAT32_MAX:.3g}, float32's largest)")
    try:
        arr = np.asarray(radii)
    except (TypeError, ValueError) as exc:
        raise ValueError(msg) from exc
    if arr.dtype.kind not in "iuf" or arr.ndim > 1 or arr.size == 0:
        raise ValueError(msg)
    arr = arr.astype(np.float64).reshape(-1)  # a single radius is a curve of one point
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr > FLOAT32_MAX):
        raise ValueError(msg)
    return arr


def _check_rng(random_state: Any) -> np.random.Generator | np.random.RandomState:
    """A generator for ``random_state`` (see ``contraction_curve``): None, an integer >= 0,
    a ``SeedSequence`` or ``BitGenerator`` seed ``default_rng`` as before; a ``Generator``
    or ``RandomState`` is used as is."""
    if isinstance(random_state, (np.random.Generator, np.random.RandomState)):
        return random_state
    if not isinstance(random_state, bool):
        try:
            return np.random.default_rng(random_state)
        except (TypeError, ValueError):
            pass
    raise ValueError(
        f"random_state of type {type(random_state).__name__} ({str(random_state)[:40]!r}) must "
        "be None, an integer >= 0, a numpy SeedSequence, BitGenerator, Generator or RandomState"
    )


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
