"""Tangent propagation (tangentprop.py) and the classifier's tangent term (classifier.py),
against float64 brute force: SVDs of autograd Jacobians, finite differences."""

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from contractive import ContractiveAutoencoder, FineTunedClassifier
from contractive.classifier import ClassifierModule, encoder_layers
from contractive.data import load_digits
from contractive.tangentprop import directional_derivatives, leading_tangents


def _encoder(sizes, activation, seed):
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(b, a, generator=g, dtype=torch.float64) / a**0.5
               for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [0.5 * torch.randn(b, generator=g, dtype=torch.float64) for b in sizes[1:]]
    offset = torch.randn(sizes[0], generator=g, dtype=torch.float64)
    scale = 0.5 + torch.rand(sizes[0], generator=g, dtype=torch.float64)
    return weights, biases, activation, offset, scale


def _encode(enc, x):
    from contractive.activations import ACTIVATIONS

    weights, biases, activation, offset, scale = enc
    h = (x - offset) / scale
    for W, b in zip(weights, biases):
        h = ACTIVATIONS[activation].fn(h @ W.T + b)
    return h


def _max_angle_deg(A, B):
    """Largest principal angle between the row spaces of A and B (orthonormal rows)."""
    cos = np.linalg.svd(A @ B.T, compute_uv=False)
    return np.degrees(np.arccos(np.clip(cos.min(), -1, 1)))


def _encode_scaled(enc, z):
    """The encoder on its scaled input ``z = (x - offset) / scale``."""
    weights, biases, activation, _, _ = enc
    return _encode((weights, biases, activation, torch.zeros_like(z), torch.ones_like(z)), z)


def _reference_tangents(enc, x, m):
    """Brute force: the SVD of the Jacobian with respect to the scaled input, its leading
    right singular vectors pushed forward to x (times scale) and orthonormalised there, as
    ``analysis.tangents`` reads them; and the singular values."""
    _, _, _, offset, scale = enc
    J = jacobian(lambda z: _encode_scaled(enc, z), (x - offset) / scale).numpy()
    _, sv, vh = np.linalg.svd(J)
    q, _ = np.linalg.qr((vh[:m] * scale.numpy()).T)
    return q.T, sv, J


@pytest.mark.parametrize("sizes, activation, m, unit_scale", [
    ((12, 9), "sigmoid", 3, True),
    ((12, 9), "sigmoid", 3, False),
    ((20, 16, 7), "tanh", 4, False),
    ((15, 30, 10), "softplus", 10, False),  # every nonzero singular value
])
def test_leading_tangents_match_the_svd_of_the_brute_force_jacobian(sizes, activation, m,
                                                                    unit_scale):
    enc = _encoder(sizes, activation, seed=len(sizes) + m)
    if unit_scale:
        enc = (*enc[:4], torch.ones(sizes[0], dtype=torch.float64))
    X = torch.randn(23, sizes[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = leading_tangents(*enc, X, m, n_iter=40, oversample=3, chunk=10,
                           generator=torch.Generator().manual_seed(2))
    assert got.shape == (23, m, sizes[0]) and got.dtype == torch.float64
    for x, T in zip(X, got.numpy()):
        want, sv, J = _reference_tangents(enc, x, m)
        np.testing.assert_allclose(T @ T.T, np.eye(m), atol=1e-10)
        assert sv[m - 1] > 1.01 * (sv[m] if m < len(sv) else 0.0)  # a gap: the space is unique
        assert _max_angle_deg(T, want) < 1e-4
        if unit_scale:  # then the rows are the singular vectors, largest first
            np.testing.assert_allclose(np.linalg.norm(J @ T.T, axis=0), sv[:m], rtol=1e-6)


def test_tangents_of_a_standardising_cae_are_the_estimators():
    """The fine-tuning's tangents are ``ContractiveAutoencoder.tangents``'s plane, also with
    an input scaling that differs between features."""
    ds = load_digits()
    cae = ContractiveAutoencoder(n_components=12, max_epochs=3, scaling="standard",
                                 device="cpu", random_state=0).fit(ds.X_train)
    x = ds.X_test[:20]
    clf = FineTunedClassifier(cae, tangent_weight=1.0, n_tangents=4)
    shifted = torch.tensor(x - cae.scale_offset_, dtype=torch.float32)  # as fit passes rows
    got = clf._tangents(encoder_layers(cae), shifted, torch.device("cpu"), 0).double().numpy()
    want = cae.tangents(x, 4)
    angles = [_max_angle_deg(a, b) for a, b in zip(got, want)]
    assert np.median(angles) < 1.0, angles


def test_cholesky_qr2_used_on_gpus_matches_householder_qr_or_falls_back(monkeypatch):
    from contractive import tangentprop

    g = torch.Generator().manual_seed(0)
    # rows of condition number 1e4, in float32 as on a GPU
    U = torch.linalg.qr(torch.randn(4, 30, 6, generator=g, dtype=torch.float64)).Q.mT
    Y = (torch.logspace(0, -4, 6, dtype=torch.float64)[:, None] * U).float()
    Q = tangentprop._orthonormal_rows(Y, cholesky=True)
    torch.testing.assert_close(Q @ Q.mT, torch.eye(6).expand(4, 6, 6), atol=1e-5, rtol=0)
    R = tangentprop._orthonormal_rows(Y, cholesky=False)
    torch.testing.assert_close(Q.mT @ Q, R.mT @ R, atol=1e-4, rtol=0)  # the same row space
    # dependent rows: CholeskyQR2 gives up and Householder QR takes over
    Y[:, 5] = Y[:, 0]
    assert tangentprop._cholesky_qr2(Y.double()) is None
    assert torch.isfinite(tangentprop._orthonormal_rows(Y, cholesky=True)).all()


@pytest.mark.parametrize("sizes, activation, m", [
    ((30, 16), "sigmoid", 15),  # r capped at the layer's 16 units
    ((30, 32), "relu", 15),  # dead units: rank below r
])
def test_gpu_orthonormalisation_on_rank_deficient_float32_jacobians(monkeypatch, sizes,
                                                                    activation, m):
    from contractive import tangentprop

    orig = tangentprop._orthonormal_rows
    monkeypatch.setattr(tangentprop, "_orthonormal_rows",
                        lambda Y, cholesky=None: orig(Y, cholesky=True))
    weights, biases, _, offset, scale = _encoder(sizes, activation, 1)
    weights, biases = [W.float() for W in weights], [b.float() for b in biases]
    X = torch.randn(40, sizes[0], generator=torch.Generator().manual_seed(3))
    got = leading_tangents(weights, biases, activation, offset.float(), scale.float(), X, m,
                           generator=torch.Generator().manual_seed(4))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got @ got.mT, torch.eye(m).expand(40, m, m), atol=1e-4, rtol=0)


def test_a_zero_jacobian_is_reported():
    weights, biases, _, offset, scale = _encoder((6, 5), "relu", 0)
    biases = [b - 100.0 for b in biases]  # every unit off everywhere
    with pytest.warns(RuntimeWarning, match="zero at 3 of 3 points"):
        got = leading_tangents(weights, biases, "relu", offset, scale,
                               torch.zeros(3, 6, dtype=torch.float64), 2)
    assert torch.isfinite(got).all()


def test_leading_tangents_refuse_more_tangents_than_the_narrowest_layer():
    enc = _encoder((6, 5), "sigmoid", 0)
    with pytest.raises(ValueError, match="n_tangents=6 must be between 1 and 5"):
        leading_tangents(*enc, torch.zeros(2, 6, dtype=torch.float64), 6)


def test_directional_derivatives_of_the_softmax_match_forward_mode():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=g, dtype=torch.float64)
    dl = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    got = directional_derivatives(logits, dl)
    for p in range(3):
        _, want = torch.func.jvp(lambda z: torch.softmax(z, -1), (logits,), (dl[:, p],))
        torch.testing.assert_close(got[:, p], want)


def _module(dropout=0.0, input_dropout=0.0, probes=0, weight=1.0):
    torch.manual_seed(0)
    m = ClassifierModule([8, 7, 6], 3, "tanh", seed=3, dropout=dropout,
                         input_dropout=input_dropout, tangent_weight=weight,
                         tangent_probes=probes).double()
    with torch.no_grad():
        m.input_offset.copy_(torch.linspace(-1, 1, 8))
        m.input_scale.copy_(torch.linspace(0.5, 2, 8))
    return m.train()


def _batch(n=6, m=3, d=8):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % 3
    T = torch.linalg.qr(torch.randn(n, d, m, generator=g, dtype=torch.float64)).Q.mT
    return x, y, T


def test_exact_tangent_term_and_its_gradients_match_brute_force():
    module = _module()
    x, y, T = _batch()
    terms = module(x, y, T)

    def probs(v):
        return torch.softmax(module.logits(v.unsqueeze(0)), -1)[0]

    want = torch.stack([(jacobian(probs, xi, create_graph=True) @ Ti.T).square().sum()
                        for xi, Ti in zip(x, T)]).mean()
    torch.testing.assert_close(terms["tangent"], want)
    ce = torch.nn.functional.cross_entropy(module.logits(x), y)
    torch.testing.assert_close(terms["loss"], ce + 1.0 * want)
    grads = torch.autograd.grad(terms["loss"], list(module.parameters()))
    want_grads = torch.autograd.grad(ce + want, list(module.parameters()))
    for g1, g2 in zip(grads, want_grads):
        torch.testing.assert_close(g1, g2)


def test_tangent_term_follows_the_dropout_masks():
    """With dropout, the term differentiates the thinned net that the step trains: central
    differences of the probabilities under the same masks (the generator reseeded)."""
    module = _module(dropout=0.3, input_dropout=0.2)
    x, y, T = _batch()

    def probs(v):
        gen = torch.Generator().manual_seed(11)
        return torch.softmax(module.logits(v, gen), -1)

    got = module(x, y, T, generator=torch.Generator().manual_seed(11))["tangent"]
    eps = 1e-6
    fd = torch.stack([(probs(x + eps * T[:, i]) - probs(x - eps * T[:, i])) / (2 * eps)
                      for i in range(T.shape[1])], 1)
    torch.testing.assert_close(got, fd.square().sum(-1).sum(1).mean(), rtol=1e-6, atol=1e-9)


def test_probe_estimate_is_unbiased():
    x, y, T = _batch(n=4)
    exact = _module()(x, y, T)["tangent"]
    gen = torch.Generator().manual_seed(0)
    est = torch.stack([_module(probes=50)(x, y, T, generator=gen)["tangent"]
                       for _ in range(200)])  # 10,000 probes a row
    assert abs(est.mean() / exact - 1) < 0.03
    assert est.std() > 0  # an estimate, not the exact term


def test_no_tangent_term_in_evaluation_or_without_tangents():
    module = _module()
    x, y, T = _batch()
    assert set(module(x, y)) == {"loss", "error"}
    assert set(module.eval()(x, y, T)) == {"loss", "error"}


@pytest.fixture(scope="module")
def small():
    ds = load_digits()
    cae = ContractiveAutoencoder(n_components=16, max_epochs=5, device="cpu",
                                 random_state=0).fit(ds.X_train)
    return ds, cae


def test_fine_tuning_with_the_tangent_term_lowers_it(small):
    """The term has an effect: a strong beta leaves a classifier far flatter along the
    encoder's tangents than the same fine-tuning without it."""
    ds, cae = small
    params = dict(max_epochs=15, learning_rate=0.1, random_state=0, device="cpu")
    plain = FineTunedClassifier(cae, **params).fit(ds.X_train, ds.y_train)
    mtc = FineTunedClassifier(cae, tangent_weight=30.0, n_tangents=5, **params).fit(
        ds.X_train, ds.y_train)
    assert mtc.tangents_time_ > 0 and "tangent" in mtc.history_[-1]
    x = torch.tensor(ds.X_test, dtype=torch.float32)
    y = torch.as_tensor(np.searchsorted(plain.classes_, ds.y_test))
    T = mtc._tangents(encoder_layers(cae), x, torch.device("cpu"), 0)

    def term(clf):
        clf.module_.train()
        clf.module_.dropout = clf.module_.input_dropout = 0.0
        clf.module_.tangent_weight = 1.0
        clf.module_.tangent_probes = 0
        with torch.no_grad():
            return float(clf.module_(x, y, T)["tangent"])

    assert term(mtc) < 0.5 * term(plain)
    assert mtc.error(ds.X_test, ds.y_test) < 0.2


@pytest.mark.parametrize("params, match", [
    ({"tangent_weight": -1.0}, "tangent_weight=-1.0"),
    ({"tangent_weight": 1.0, "n_tangents": 0}, "n_tangents=0"),
    ({"tangent_weight": 1.0, "tangent_probes": -1}, "tangent_probes=-1"),
    ({"tangent_weight": 1.0, "n_tangents": 17}, "n_tangents=17 must be between 1 and 16"),
])
def test_bad_tangent_parameters(small, params, match):
    ds, cae = small
    with pytest.raises(ValueError, match=match):
        FineTunedClassifier(cae, max_epochs=1, device="cpu", **params).fit(
            ds.X_train[:100], ds.y_train[:100])


def test_generator_given_where_the_tangents_go_is_refused():
    x, y, _ = _batch()
    with pytest.raises(TypeError, match="pass the generator by keyword"):
        _module()(x, y, torch.Generator())


def test_tangent_term_needs_an_encoder(small):
    ds, _ = small
    clf = FineTunedClassifier(tangent_weight=1.0, max_epochs=1, device="cpu")
    with pytest.raises(ValueError, match="tangent_weight=1.0 needs an encoder"):
        clf._preflight(100)
    with pytest.raises(ValueError, match="needs an encoder"):
        clf.fit(ds.X_train[:100], ds.y_train[:100])
