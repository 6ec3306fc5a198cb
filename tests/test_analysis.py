"""Manifold analysis: spectra, tangents, local dimension, contraction, against references."""

import warnings

import numpy as np
import pytest

from contractive import ContractiveAutoencoder
from contractive import analysis as A
from contractive.manifolds import make_manifold


def _random_jacobians(rng, n=7, k=4, d=6):
    J = rng.normal(size=(n, k, d))
    return J, (lambda X: J[: len(X)] if len(X) == n else _lookup(J, X))


def _lookup(J, X):
    # X rows carry their own index in column 0 (a test device to slice J)
    return J[X[:, 0].astype(int)]


@pytest.fixture
def jac_fn(rng):
    J = rng.normal(size=(9, 4, 6))
    X = np.column_stack([np.arange(9), rng.normal(size=(9, 5))])
    return J, X, lambda Xq: J[np.asarray(Xq)[:, 0].astype(int)]


def test_singular_values_and_tangents_match_numpy(jac_fn, monkeypatch):
    J, X, jac = jac_fn
    monkeypatch.setattr(A, "CHUNK_ELEMENTS", 30)  # force several chunks
    s = A.singular_values(jac, X)
    np.testing.assert_allclose(s, np.linalg.svd(J, compute_uv=False))
    T = A.tangents(jac, X, 3)
    assert T.shape == (9, 3, 6)
    np.testing.assert_allclose(T @ np.swapaxes(T, 1, 2), np.broadcast_to(np.eye(3), (9, 3, 3)),
                               atol=1e-12)
    _, _, vh = np.linalg.svd(J, full_matrices=False)
    # same subspaces as numpy's leading right singular vectors
    np.testing.assert_allclose(A.principal_angles(T, vh[:, :3]), 0, atol=1e-5)


def test_tangents_rejects_bad_counts(jac_fn):
    _, X, jac = jac_fn
    for bad in (0, 5, 2.5):
        with pytest.raises(ValueError, match="n_tangents"):
            A.tangents(jac, X, bad)


def test_local_dimension_gap_and_energy():
    s = np.array([[10, 9, 0.1, 0.09], [5, 0.5, 0.4, 0.3], [1, 1, 1, 1e-6]])
    np.testing.assert_array_equal(A.local_dimension(s), [2, 1, 3])
    np.testing.assert_array_equal(A.local_dimension(s, method="gap"), [2, 1, 3])
    np.testing.assert_array_equal(A.local_dimension(s, method="energy", energy=0.99), [2, 2, 3])
    # a normal direction half-contracted (inside the data's span) between the tangent
    # values and the rest: the log gap counts the span, the energy the manifold
    saddle = np.array([[1.0, 0.92, 0.29, 0.06, 0.05]])
    assert A.local_dimension(saddle, method="gap")[0] == 3
    assert A.local_dimension(saddle)[0] == 2
    # the documented limit: d equal values read d while (d - 1) / d < energy
    for d in (1, 2, 3, 4, 6, 7):  # (5: on the boundary)
        flat = np.array([[1.0] * d + [1e-3] * 3])
        assert A.local_dimension(flat)[0] == (d if (d - 1) / d < 0.8 else d - 1)
        assert A.local_dimension(flat, method="energy", energy=0.9)[0] == d
        assert A.local_dimension(flat, method="gap")[0] == d
    with pytest.raises(ValueError, match="method='bogus'"):
        A.local_dimension(s, method="bogus")
    with pytest.raises(ValueError, match="energy"):
        A.local_dimension(s, method="energy", energy=0)


def test_local_dimension_rejects_bad_energy_and_spectra():
    s = np.array([[3.0, 2.0, 1.0]])
    for bad in ("0.8", None, 0, -0.1, 1.5, np.nan, np.inf, True, [0.8]):
        with pytest.raises(ValueError, match=r"energy=.* must be a number in \(0, 1\]"):
            A.local_dimension(s, energy=bad)
    assert A.local_dimension(s, energy=1)[0] == 3  # 1 is allowed
    assert A.local_dimension(s, energy=np.float32(0.5))[0] == 1
    for bad in (None, ["gap"], "Energy"):
        with pytest.raises(ValueError, match="method=.*valid: energy, gap"):
            A.local_dimension(s, method=bad)
    for bad in ([[1.0, np.nan]], [[1.0, -1.0]], [[np.inf, 1.0]]):
        with pytest.raises(ValueError, match="finite singular values >= 0"):
            A.local_dimension(bad)
    with pytest.raises(ValueError, match="spectrum must be an array of numbers"):
        A.local_dimension([["a", "b"]])
    with pytest.raises(ValueError, match=r"spectrum of shape \(3,\)"):
        A.local_dimension([3.0, 2.0, 1.0])


def _dead_relu_jacobians(rng):
    """Jacobians of 8 points; at points 2 and 5 every unit is off: J = 0."""
    J = rng.normal(size=(8, 4, 6))
    J[[2, 5]] = 0.0
    X = np.column_stack([np.arange(8), rng.normal(size=(8, 5))])
    return J, X, lambda Xq: J[np.asarray(Xq)[:, 0].astype(int)]


def test_local_dimension_of_a_zero_jacobian_is_zero_without_numpy_warnings(rng):
    J, X, jac = _dead_relu_jacobians(rng)
    live = np.array([0, 1, 3, 4, 6, 7])
    s = A.singular_values(jac, X)
    assert np.all(s[[2, 5]] == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide / invalid-value RuntimeWarning
        for kw in ({}, {"method": "gap"}, {"method": "energy", "energy": 1.0}):
            dims = A.local_dimension(s, **kw)
            np.testing.assert_array_equal(dims[[2, 5]], [0, 0])
            # every other point reads exactly what it reads without the dead ones
            np.testing.assert_array_equal(dims[live], A.local_dimension(s[live], **kw))
            assert np.all(dims[live] >= 1)
        # a single value, and values whose squares under- or overflow: no warning either
        np.testing.assert_array_equal(A.local_dimension(np.array([[0.0], [2.0]])), [0, 1])
        np.testing.assert_array_equal(A.local_dimension(np.array([[0.0], [2.0]]), method="gap"),
                                      [0, 1])
        tiny_big = np.array([[1e-200, 1e-201, 0.0], [1e200, 1e200, 1.0]])
        np.testing.assert_array_equal(A.local_dimension(tiny_big), [1, 2])


def test_tangents_warn_once_about_zero_jacobians(rng):
    J, X, jac = _dead_relu_jacobians(rng)
    live = np.array([0, 1, 3, 4, 6, 7])
    with pytest.warns(RuntimeWarning, match=r"zero at 2 of 8 points.*arbitrary") as record:
        T = A.tangents(jac, X, 2)
    assert len(record) == 1
    assert T.shape == (8, 2, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the live points alone: no warning
        T_live = A.tangents(jac, X[live], 2)
    np.testing.assert_array_equal(T[live], T_live)  # unchanged, bit for bit


def test_principal_angles_known_cases():
    e = np.eye(4)
    A_ = np.stack([e[[0, 1]], e[[0, 1]], e[[0, 1]]])
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    B_ = np.stack([e[[1, 0]], np.array([e[0], c * e[1] + s * e[2]]), e[[2, 3]]])
    np.testing.assert_allclose(A.principal_angles(A_, B_), [0, 30, 90], atol=1e-6)
    with pytest.raises(ValueError, match="do not pair up"):
        A.principal_angles(A_, B_[:2])


def test_contraction_curve_of_a_linear_map_is_its_mean_stretch(rng):
    """For f(x) = M x the ratio is ||M u|| at every radius, and at r = 0 too."""
    M = rng.normal(size=(3, 5))
    X = rng.normal(size=(40, 5))
    encode = lambda Z: Z @ M.T  # noqa: E731
    jac = lambda Z: np.broadcast_to(M, (len(Z), 3, 5))  # noqa: E731
    curve = A.contraction_curve(encode, jac, X, [0.0, 0.5, 3.0], n_directions=5, random_state=1)
    np.testing.assert_allclose(curve, curve[0], rtol=1e-10)
    # the mean of ||M u|| over uniform u, by Monte Carlo
    U = rng.normal(size=(200000, 5))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    assert curve[0] == pytest.approx(np.linalg.norm(U @ M.T, axis=1).mean(), rel=0.05)
    with pytest.raises(ValueError, match="radii"):
        A.contraction_curve(encode, jac, X, [-1.0])


def test_contraction_curve_in_chunks_equals_one_pass(rng, monkeypatch):
    """Memory is bounded by chunks of points x directions; the chunking changes nothing:
    the same directions are drawn, and the ratios agree with a brute-force pass."""
    W = rng.normal(size=(3, 4))
    X = rng.normal(size=(9, 4))
    encode = lambda Z: np.tanh(Z @ W.T)  # noqa: E731

    def jac(Z):
        return (1 - np.tanh(Z @ W.T) ** 2)[:, :, None] * W[None]

    radii = [0.0, 0.3, 2.0]
    whole = A.contraction_curve(encode, jac, X, radii, n_directions=7, random_state=5)
    # brute force: every point repeated 7 times, the directions drawn at once
    X0 = np.repeat(X, 7, axis=0)
    U = np.random.default_rng(5).normal(size=X0.shape)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    expected = [np.linalg.norm(np.einsum("nkd,nd->nk", jac(X0), U), axis=1).mean()] + [
        (np.linalg.norm(encode(X0 + r * U) - encode(X0), axis=1) / r).mean() for r in radii[1:]]
    np.testing.assert_allclose(whole, expected, rtol=1e-12)
    sizes = []
    monkeypatch.setattr(A, "CHUNK_ELEMENTS", 5 * 3 * 4)  # 5 rows of X + r u at a time
    counted = lambda Z: (sizes.append(len(Z)), encode(Z))[1]  # noqa: E731
    chunked = A.contraction_curve(counted, jac, X, radii, n_directions=7, random_state=5)
    np.testing.assert_allclose(chunked, whole, rtol=1e-12)
    assert max(sizes) == 5 and sum(sizes) == 3 * 63  # f(x), then f(x + r u) for 2 radii


def test_contraction_curve_rejects_bad_arguments(rng):
    M = rng.normal(size=(3, 5))
    X = rng.normal(size=(10, 5))
    encode = lambda Z: Z @ M.T  # noqa: E731
    jac = lambda Z: np.broadcast_to(M, (len(Z), 3, 5))  # noqa: E731
    for bad in (0, -1, 2.5, "2", None, True):
        with pytest.raises(ValueError, match=r"n_directions=.* must be an integer >= 1"):
            A.contraction_curve(encode, jac, X, [0.5], n_directions=bad)
    # strings, nested lists, empty, non-finite, negative, beyond float32
    for bad in ("a", ["1"], [None], [[0.5, 1.0]], [], [np.nan], [np.inf], [-1.0],
                [1e300], [0.5, 1e39]):
        with pytest.raises(ValueError, match=r"radii=.* must be a non-empty 1-D sequence of "
                                             r"finite numbers >= 0"):
            A.contraction_curve(encode, jac, X, bad)
    for bad in (-1, "a", 2.5, True):
        with pytest.raises(ValueError, match=r"random_state .* must be None, an integer"):
            A.contraction_curve(encode, jac, X, [0.5], random_state=bad)
    for bad in (X[:0], X[0]):
        with pytest.raises(ValueError, match=r"X of shape .* at least 1 point"):
            A.contraction_curve(encode, jac, bad, [0.5])
    # accepted: 0 (the limit), numpy integers, tuples, arrays, float32's largest value,
    # every seed check_random_state takes (and a Generator); integer seeds as before
    curve = A.contraction_curve(encode, jac, X, np.array([0, 1]), n_directions=np.int64(2),
                                random_state=3)
    U = np.random.default_rng(3).normal(size=(20, 5))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    np.testing.assert_allclose(curve, np.linalg.norm(U @ M.T, axis=1).mean(), rtol=1e-12)
    assert np.isfinite(A.contraction_curve(encode, jac, X, (0.0, 3.4e38))).all()
    for seed in (None, 2**40, np.random.RandomState(0), np.random.default_rng(0),
                 np.random.SeedSequence(1), np.random.PCG64(1)):
        assert A.contraction_curve(encode, jac, X, [0.5], random_state=seed).shape == (1,)
    assert A.contraction_curve(encode, jac, X, 0.5).shape == (1,)  # one radius


def test_contraction_curve_refuses_a_non_finite_ratio(rng):
    """An encoder whose codes overflow (as float32 does past 3.4e38): an error, not inf."""
    X = rng.normal(size=(6, 3))

    def encode(Z):
        with np.errstate(over="ignore"):
            return (Z * 1e10).astype(np.float32)

    jac = lambda Z: np.broadcast_to(1e10 * np.eye(3), (len(Z), 3, 3))  # noqa: E731
    assert np.isfinite(A.contraction_curve(encode, jac, X, [0.0, 1.0])).all()
    with pytest.raises(ValueError, match=r"ratio at radius 1e\+30 is not finite"):
        A.contraction_curve(encode, jac, X, [1e30])


def test_contraction_ratio_of_a_saturating_map_falls_with_radius(rng):
    X = rng.normal(size=(50, 4)) * 0.1
    encode = lambda Z: np.tanh(3 * Z)  # noqa: E731
    jac = lambda Z: 3 * (1 - np.tanh(3 * Z) ** 2)[:, :, None] * np.eye(4)  # noqa: E731
    curve = A.contraction_curve(encode, jac, X, [0.0, 0.01, 1.0, 10.0])
    assert curve[0] == pytest.approx(curve[1], rel=0.05)
    assert curve[0] > curve[2] > curve[3]


def test_pairwise_distances_saturation_and_summary():
    X = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    d = A.pairwise_distance_summary(X)
    assert d == {"min": 1.0, "median": pytest.approx(np.sqrt(18)), "max": 5.0}
    assert A.saturation(np.array([[0.01, 0.5], [0.97, 0.2]]), "sigmoid") == 0.5
    assert A.saturation(np.array([[0.95, 0.0]]), "tanh") == 0.5
    assert A.saturation(np.zeros((2, 2)), "relu") is None
    assert A.jacobian_summary(np.array([2.0, 4.0]), 3, 2) == {
        "mean_jacobian_frobenius_sq": 3.0, "mean_squared_jacobian_entry": 0.5}


@pytest.mark.parametrize("scaling, shift", [("none", 0.0), ("standard", 1000.0)])
def test_contraction_ratio_at_tiny_radii_tends_to_its_limit(rng, scaling, shift):
    """The difference quotient is taken in float64: down to radii far below float32's
    resolution of the input (6e-8 of 1, 6e-5 of 1000) it approaches the r = 0 limit."""
    X = rng.random((40, 6)) + shift
    cae = ContractiveAutoencoder(n_components=3, hidden_layer_sizes=(5,), scaling=scaling,
                                 max_epochs=2, random_state=0, device="cpu").fit(X)
    radii = [0.0, 1e-4, 1e-6, 1e-8, 1e-10]
    curve = cae.contraction_curve(X[:10], radii, n_directions=3)
    np.testing.assert_allclose(curve[1:], curve[0], rtol=1e-3)


def test_estimator_methods_agree_with_the_analysis_functions(rng):
    X = rng.random((60, 6))
    cae = ContractiveAutoencoder(n_components=3, hidden_layer_sizes=(5,), max_epochs=3,
                                 random_state=0).fit(X)
    s = cae.singular_values(X[:5])
    np.testing.assert_allclose(s, np.linalg.svd(cae.jacobian(X[:5]).astype(float),
                                                compute_uv=False), rtol=1e-6)
    assert cae.tangents(X[:5], 2).shape == (5, 2, 6)
    assert cae.local_dimension(X[:5]).shape == (5,)
    curve = cae.contraction_curve(X[:10], [0.0, 1e-3, 0.5])
    assert curve.shape == (3,) and curve[0] == pytest.approx(curve[1], rel=1e-2)
    # the estimator forwards its arguments to the checks above
    with pytest.raises(ValueError, match="n_directions"):
        cae.contraction_curve(X[:10], [0.5], n_directions=0)
    with pytest.raises(ValueError, match="radii"):
        cae.contraction_curve(X[:10], [1e300])
    with pytest.raises(ValueError, match="random_state"):
        cae.contraction_curve(X[:10], [0.5], random_state=-1)
    with pytest.raises(ValueError, match="energy"):
        cae.local_dimension(X[:5], energy="0.8")


def test_tangents_of_a_cae_on_a_circle_follow_the_circle():
    """A smoke test of the geometry on the easiest manifold: a noiseless circle in R^5."""
    test = make_manifold("circle", 700, ambient_dim=5, noise=0.0, random_state=0)
    cae = ContractiveAutoencoder(n_components=2, hidden_layer_sizes=(16,), activation="tanh",
                                 contractive_weight=1e-2, max_epochs=150, scaling="standard",
                                 random_state=0).fit(test.X[:600])
    angles = A.principal_angles(cae.tangents(test.X_clean[600:], 1), test.tangents[600:])
    assert np.median(angles) < 25


@pytest.mark.parametrize("exponent", [-300, -162, 0, 150])
def test_local_dimension_energy_share_is_scale_free(exponent):
    """The energy share does not depend on a row's scale: rows near 1e-162 square to
    subnormals, which lose digits unless the row is rescaled first (it read 2 for 4)."""
    rng = np.random.default_rng(0)
    s = np.sort(rng.random((2000, 6)), 1)[:, ::-1]
    scaled = s * 10.0 ** (exponent + rng.uniform(-3, 3, (2000, 1)))
    for energy in (0.8, 0.95):
        np.testing.assert_array_equal(A.local_dimension(scaled, energy=energy),
                                      A.local_dimension(s, energy=energy))
    row = np.array([[1.84622904e-162, 1.83387781e-162, 1.56063944e-162, 1.15811612e-162,
                     3.75704850e-163, 7.18352392e-164]])
    assert A.local_dimension(row, energy=0.95)[0] == 4


def _brute_residual(X, T, ref, k, exclude_self):
    """Loops over points and neighbours, float64, projection matrices built explicitly."""
    out = []
    for i, x in enumerate(X):
        dist = np.linalg.norm(ref - x, axis=1)
        order = [j for j in np.argsort(dist, kind="stable") if not (exclude_self and j == i)]
        P = np.eye(X.shape[1]) - T[i].T @ T[i]
        off = sum(np.sum((P @ (ref[j] - x)) ** 2) for j in order[:k])
        tot = sum(np.sum((ref[j] - x) ** 2) for j in order[:k])
        out.append(off / tot if tot > 0 else 0.0)
    return np.array(out)


def _random_planes(rng, n, p, d):
    q, _ = np.linalg.qr(rng.normal(size=(n, d, p)))
    return np.swapaxes(q, 1, 2)


@pytest.mark.parametrize("with_reference", [False, True])
def test_tangent_residual_matches_brute_force(rng, monkeypatch, with_reference):
    monkeypatch.setattr(A, "CHUNK_ELEMENTS", 120)  # chunks of 4 rows, the last of 2
    X = rng.normal(size=(30, 5))
    X[7] = X[3]  # a duplicate among the others: one of the pair is the other's neighbour
    ref = rng.normal(size=(40, 5)) if with_reference else None
    T = _random_planes(rng, 30, 2, 5)
    got = A.tangent_residual(X, T, ref, n_neighbors=6)
    want = _brute_residual(X, T, X if ref is None else ref, 6, exclude_self=ref is None)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.all((got >= 0) & (got <= 1))


def test_tangent_residual_reads_planes():
    """Points on a plane in R^6: the plane's own basis leaves nothing off it (0), a basis
    orthogonal to it everything (1), and on a noisy circle the true tangents leave less than
    random directions."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(6, 2)))[0].T  # (2, 6)
    X = rng.normal(size=(50, 2)) @ basis
    on = np.broadcast_to(basis, (50, 2, 6))
    np.testing.assert_allclose(A.tangent_residual(X, on), 0, atol=1e-12)
    normal = np.linalg.qr(np.column_stack([basis.T, rng.normal(size=(6, 2))]))[0][:, 2:].T
    np.testing.assert_allclose(A.tangent_residual(X, np.broadcast_to(normal, (50, 2, 6))), 1)
    m = make_manifold("circle", 400, ambient_dim=10, noise=0.005, random_state=0)
    true = A.tangent_residual(m.X, m.tangents).mean()  # 20 neighbours
    wrong = A.tangent_residual(m.X, _random_planes(rng, 400, 1, 10)).mean()
    assert true < 0.2 < 0.7 < wrong


def test_tangent_residual_is_unchanged_by_a_shift_and_a_scale(rng):
    """Points far from 0 against their spacing (the neighbour search must not lose them),
    and units near 1e160 or 1e-170 (whose squares overflow or vanish in float64)."""
    Z = rng.normal(size=(200, 30))
    T = _random_planes(rng, 200, 2, 30)
    ref = A.tangent_residual(Z, T, n_neighbors=10)
    np.testing.assert_allclose(ref, _brute_residual(Z, T, Z, 10, exclude_self=True),
                               rtol=1e-10)
    for X in (1e3 + 1e-3 * Z, 1e6 + Z, 1e160 * Z, 1e-170 * Z):
        np.testing.assert_allclose(A.tangent_residual(X, T, n_neighbors=10), ref, rtol=1e-7,
                                   atol=1e-10)


def test_tangent_residual_of_coincident_points_is_zero():
    X = np.zeros((4, 3))
    T = np.broadcast_to(np.eye(3)[:1], (4, 1, 3))
    np.testing.assert_array_equal(A.tangent_residual(X, T, n_neighbors=2), 0)


@pytest.mark.parametrize("call, match", [
    (lambda X, T: A.tangent_residual(X, T[:, :, :3]), "must be .n_points"),
    (lambda X, T: A.tangent_residual(X, 2 * T), "orthonormal"),
    (lambda X, T: A.tangent_residual(X, T, n_neighbors=10), "exceeds the 9 reference"),
    (lambda X, T: A.tangent_residual(X, T, X[:3], n_neighbors=4), "exceeds the 3 reference"),
    (lambda X, T: A.tangent_residual(X, T, X[:, :3]), "reference of shape"),
    (lambda X, T: A.tangent_residual(X, T, n_neighbors=0), "n_neighbors=0"),
    (lambda X, T: A.tangent_residual(np.where(X > 0, np.nan, X), T), "finite"),
    (lambda X, T: A.tangent_scorer(0), "n_tangents=0"),
])
def test_tangent_residual_refuses_bad_input(rng, call, match):
    X, T = rng.normal(size=(10, 4)), _random_planes(rng, 10, 2, 4)
    with pytest.raises(ValueError, match=match):
        call(X, T)
    with pytest.raises(TypeError, match="X must hold real numbers"):
        A.tangent_residual(X.astype(str), T)
    with pytest.raises(TypeError, match="tangents must hold real numbers"):
        A.tangent_residual(X, T.astype(complex))
    with pytest.raises(ValueError, match=r"1 <= p <= 4"):
        A.tangent_residual(X, np.broadcast_to(np.eye(5)[None, :, :4], (10, 5, 4)))


@pytest.mark.parametrize("name, ambient", [("circle", 10), ("sphere", 12)])
def test_tangent_scorer_ranks_as_the_true_tangents_do(name, ambient):
    """GridSearchCV over the contractive weight with the scorer, which sees no true tangents,
    ranks the candidates in the order of their principal angles to the true tangent planes
    on the same folds (measured: circle 15.7, 7.8, 20.4, 39.7 degrees for weights 0, 0.3,
    3, 30); and the estimator's tangent_residual is the analysis function on its tangents."""
    from sklearn.model_selection import GridSearchCV, KFold

    m = make_manifold(name, 600, ambient_dim=ambient, noise=0.01, random_state=0)
    d = m.tangents.shape[1]
    kw = dict(n_components=4, hidden_layer_sizes=(32,), scaling="standard", max_epochs=60,
              device="cpu", random_state=0)
    weights = [0.0, 0.3, 3.0, 30.0]
    search = GridSearchCV(ContractiveAutoencoder(**kw), {"contractive_weight": weights},
                          cv=KFold(2), scoring=A.tangent_scorer(d)).fit(m.X)
    angles = []
    for w in weights:
        per_fold = []
        for train, test in KFold(2).split(m.X):
            est = ContractiveAutoencoder(contractive_weight=w, **kw).fit(m.X[train])
            per_fold.append(A.principal_angles(est.tangents(m.X_clean[test], d),
                                               m.tangents[test]).mean())
        angles.append(np.mean(per_fold))
    assert max(angles) - min(angles) > 10  # the candidates differ, so the order means something
    np.testing.assert_array_equal(np.argsort(-search.cv_results_["mean_test_score"]),
                                  np.argsort(angles))
    np.testing.assert_allclose(est.tangent_residual(m.X[:50], d, reference=m.X, n_neighbors=5),
                               A.tangent_residual(m.X[:50], est.tangents(m.X[:50], d), m.X,
                                                  n_neighbors=5))
    with pytest.raises(TypeError, match="needs an estimator with tangents"):
        A.tangent_scorer(1)(object(), m.X)


def test_tangent_residual_and_scorer_on_dataframes():
    """An estimator fitted on a DataFrame takes DataFrames (nullable dtypes too) without
    feature-name warnings, and the scorer pickles with a fitted search."""
    import pickle
    import warnings

    pd = pytest.importorskip("pandas")
    from sklearn.model_selection import GridSearchCV

    m = make_manifold("circle", 200, ambient_dim=4, noise=0.01, random_state=0)
    df = pd.DataFrame(m.X, columns=[f"f{i}" for i in range(4)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        search = GridSearchCV(ContractiveAutoencoder(n_components=2, max_epochs=3,
                                                     device="cpu", random_state=0),
                              {"contractive_weight": [0.0, 0.1]}, cv=2,
                              scoring=A.tangent_scorer(1, n_neighbors=5)).fit(df)
        est = search.best_estimator_
        got = est.tangent_residual(df, 1, n_neighbors=5)
        np.testing.assert_allclose(est.tangent_residual(df.astype("Float64"), 1,
                                                        n_neighbors=5), got)
    np.testing.assert_allclose(got, A.tangent_residual(m.X, est.tangents(df, 1),
                                                       n_neighbors=5))
    assert repr(A.tangent_scorer(1, n_neighbors=5)) == "tangent_scorer(1, n_neighbors=5)"
    assert pickle.loads(pickle.dumps(search)).best_params_ == search.best_params_
