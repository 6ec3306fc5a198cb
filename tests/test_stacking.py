"""Greedy layer-wise stacking (stacking.py)."""

import numpy as np
import pytest

from contractive import ContractiveAutoencoder, StackedContractiveAutoencoder
from contractive.data import load_digits


@pytest.fixture(scope="module")
def X():
    return load_digits().X_train


def _base(**kw):
    return ContractiveAutoencoder(max_epochs=3, device="cpu", **kw)


def test_each_layer_is_trained_on_the_previous_codes(X):
    stack = StackedContractiveAutoencoder((16, 8), base=_base(), random_state=0).fit(X)
    first, second = stack.encoders_
    assert (first.n_components, second.n_components) == (16, 8)
    assert second.n_features_in_ == 16
    np.testing.assert_allclose(stack.transform(X), second.transform(first.transform(X)))
    # layer 2 equals a CAE trained by hand on layer 1's codes with the same seed
    alone = _base(n_components=8, random_state=second.random_state).fit(first.transform(X))
    np.testing.assert_allclose(alone.transform(first.transform(X)), stack.transform(X),
                               atol=1e-6)
    assert stack.inverse_transform(stack.transform(X[:4])).shape == (4, 64)
    assert list(stack.get_feature_names_out())[:2] == ["contractiveautoencoder0",
                                                       "contractiveautoencoder1"]


def test_layer_params_override_the_base(X):
    stack = StackedContractiveAutoencoder(
        (12, 6), base=_base(contractive_weight=0.5),
        layer_params=[{}, {"contractive_weight": 0.0, "activation": "tanh"}], random_state=0,
    ).fit(X)
    assert stack.encoders_[0].contractive_weight == 0.5
    assert stack.encoders_[1].contractive_weight == 0.0


@pytest.mark.parametrize("kw, match", [
    ({"layer_sizes": ()}, "layer_sizes"),
    ({"layer_sizes": (4, 0)}, "layer_sizes"),
    ({"layer_params": [{}]}, "layer_params must be a list of 2"),
    ({"base": "cae"}, "base must be a ContractiveAutoencoder"),
])
def test_bad_parameters(X, kw, match):
    params = {"layer_sizes": (4, 2), "base": _base(), **kw}
    with pytest.raises((ValueError, TypeError), match=match):
        StackedContractiveAutoencoder(**params).fit(X)


def test_from_encoders_stacks_cae_trained_apart(X):
    first = _base(n_components=16, random_state=0).fit(X)
    second = _base(n_components=8, random_state=1).fit(first.transform(X))
    stack = StackedContractiveAutoencoder.from_encoders([first, second])
    assert stack.layer_sizes == (16, 8) and stack.n_features_in_ == 64
    np.testing.assert_array_equal(stack.transform(X), second.transform(first.transform(X)))
    with pytest.raises(ValueError, match="layer 2 takes 64 features but layer 1 gives 16"):
        StackedContractiveAutoencoder.from_encoders([first, first])
    with pytest.raises(ValueError, match="at least one"):
        StackedContractiveAutoencoder.from_encoders([])
    with pytest.raises(TypeError, match="layer 2 must be a ContractiveAutoencoder"):
        StackedContractiveAutoencoder.from_encoders([first, "model"])
