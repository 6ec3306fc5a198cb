"""The seed's central claim against known geometry: the CAE's leading Jacobian directions
are the tangent plane of the data manifold (issue 4's targets), through the public API."""

import numpy as np
import pytest

from contractive import ContractiveAutoencoder
from contractive.analysis import principal_angles
from contractive.manifolds import make_manifold

ENCODER = dict(n_components=8, hidden_layer_sizes=(64,), activation="sigmoid",
               scaling="standard", max_epochs=200, random_state=0)


def _sphere(noise):
    """2,000 noisy training points on a unit sphere linearly embedded in R^100, and 300
    held-out clean points with their true tangent planes."""
    m = make_manifold("sphere", 2300, ambient_dim=100, noise=noise, random_state=0)
    return m.X[:2000], m.X_clean[2000:], m.tangents[2000:]


def _angles(est, X, T):
    return principal_angles(est.tangents(X, 2), T)


@pytest.fixture(scope="module")
def noisy():
    X, X_test, T = _sphere(0.05)
    cae = ContractiveAutoencoder(contractive_weight=10.0, **ENCODER).fit(X)
    plain = ContractiveAutoencoder(contractive_weight=0.0, **ENCODER).fit(X)
    return _angles(cae, X_test, T), _angles(plain, X_test, T)


def test_tangent_recovery_at_noise_0_05(noisy):
    cae, plain = noisy
    assert cae.mean() <= 12 and np.percentile(cae, 90) <= 15, (cae.mean(), np.percentile(cae, 90))
    # a penalty without effect would leave the plain auto-encoder's angles
    assert cae.mean() <= 0.75 * plain.mean(), (cae.mean(), plain.mean())


def test_tangent_recovery_and_local_dimension_at_noise_0_01():
    X, X_test, T = _sphere(0.01)
    cae = ContractiveAutoencoder(contractive_weight=10.0, **ENCODER).fit(X)
    angles = _angles(cae, X_test, T)
    assert angles.mean() <= 7, angles.mean()
    assert np.mean(cae.local_dimension(X_test) == 2) >= 0.9
