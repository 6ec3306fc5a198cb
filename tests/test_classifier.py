"""Fine-tuning: an MLP initialised from trained encoders (classifier.py)."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

from contractive import ContractiveAutoencoder, FineTunedClassifier, StackedContractiveAutoencoder
from contractive.classifier import ClassifierModule, encoder_layers
from contractive.data import load_digits


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _cae(**kw):
    params = dict(n_components=24, max_epochs=5, device="cpu", random_state=0)
    params.update(kw)
    return ContractiveAutoencoder(**params)


def _hidden(module: ClassifierModule, X: np.ndarray) -> np.ndarray:
    h = (torch.as_tensor(X, dtype=torch.float32) - module.input_offset) / module.input_scale
    for layer in module.layers:
        h = torch.sigmoid(layer(h))
    return h.detach().double().numpy()


@pytest.mark.parametrize("scaling", ["none", "standard"])
def test_loaded_encoder_computes_the_encoders_codes(digits, scaling):
    cae = _cae(scaling=scaling, hidden_layer_sizes=(32,)).fit(digits.X_train)
    layers = encoder_layers(cae)
    module = ClassifierModule([64, 32, 24], 10, "sigmoid")
    module.load_encoder(layers)
    np.testing.assert_allclose(_hidden(module, digits.X_test), cae.transform(digits.X_test),
                               atol=1e-5)


def test_stack_scaling_is_folded_exactly(digits):
    base = _cae(max_epochs=3)
    stack = StackedContractiveAutoencoder(
        (20, 12), base=base, layer_params=[{}, {"scaling": "standard"}], random_state=0,
    ).fit(digits.X_train)
    layers = encoder_layers(stack)
    assert [w.shape for w in layers.weights] == [(20, 64), (12, 20)]
    module = ClassifierModule([64, 20, 12], 10, "sigmoid")
    module.load_encoder(layers)
    np.testing.assert_allclose(_hidden(module, digits.X_test), stack.transform(digits.X_test),
                               atol=1e-5)


def test_fine_tuning_learns_and_does_not_touch_the_encoder(digits):
    cae = _cae(max_epochs=10).fit(digits.X_train)
    before = {k: v.clone() for k, v in cae.module_.state_dict().items()}
    clf = FineTunedClassifier(cae, max_epochs=30, learning_rate=0.1, random_state=0,
                              device="cpu").fit(digits.X_train, digits.y_train)
    assert clf.score(digits.X_test, digits.y_test) > 0.9
    assert clf.error(digits.X_test, digits.y_test) == pytest.approx(
        1 - np.mean(clf.predict(digits.X_test) == digits.y_test))
    for k, v in cae.module_.state_dict().items():
        assert torch.equal(v, before[k])
    # the weights moved away from the encoder's
    assert not torch.equal(clf.module_.layers[0].weight, cae.module_.encoder.layers[0].weight)
    p = clf.predict_proba(digits.X_test[:5])
    assert p.shape == (5, 10) and np.allclose(p.sum(1), 1)
    assert clf.best_epoch_ <= clf.n_epochs_
    assert clf.best_validation_error_ == min(h["val_error"] for h in clf.history_)


def test_pretrained_start_beats_random_start_early(digits):
    cae = _cae(n_components=32, max_epochs=30, contractive_weight=0.01).fit(digits.X_train)
    common = dict(max_epochs=3, learning_rate=0.05, random_state=0, device="cpu")
    pre = FineTunedClassifier(cae, **common).fit(digits.X_train, digits.y_train)
    rand = FineTunedClassifier(None, hidden_layer_sizes=(32,), **common).fit(
        digits.X_train, digits.y_train)
    assert pre.error(digits.X_test, digits.y_test) < rand.error(digits.X_test, digits.y_test)


def test_string_labels_explicit_validation_and_determinism(digits):
    y = np.array([f"d{v}" for v in digits.y_train])
    yv = np.array([f"d{v}" for v in digits.y_test])
    kw = dict(hidden_layer_sizes=(16,), max_epochs=4, random_state=3, device="cpu")
    a = FineTunedClassifier(**kw).fit(digits.X_train, y, digits.X_test, yv)
    b = FineTunedClassifier(**kw).fit(digits.X_train, y, digits.X_test, yv)
    assert set(a.predict(digits.X_test)) <= set(a.classes_)
    assert a.best_validation_error_ == pytest.approx(1 - a.score(digits.X_test, yv))
    assert np.array_equal(a.predict_proba(digits.X_test), b.predict_proba(digits.X_test))


def test_works_with_sklearn_model_selection(digits):
    clf = FineTunedClassifier(hidden_layer_sizes=(16,), max_epochs=10, learning_rate=0.3,
                              random_state=0, device="cpu")
    assert clone(clf).get_params()["hidden_layer_sizes"] == (16,)
    scores = cross_val_score(clf, digits.X_train, digits.y_train, cv=2)
    assert scores.shape == (2,) and np.all(scores > 0.7)


@pytest.mark.parametrize("params, match", [
    ({"learning_rate": 0}, "learning_rate=0"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"optimizer": "rmsprop"}, "optimizer='rmsprop'"),
    ({"lr_schedule": "cosine"}, "lr_schedule='cosine'"),
    ({"hidden_layer_sizes": ()}, "hidden_layer_sizes"),
    ({"activation": "swish"}, "activation='swish'"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"dropout": 1.0}, "dropout=1.0"),
    ({"input_dropout": -0.1}, "input_dropout=-0.1"),
    ({"encoder": "model.safetensors"}, "encoder must be a fitted"),
])
def test_bad_parameters_raise_one_clear_error(digits, params, match):
    with pytest.raises((ValueError, TypeError), match=match):
        FineTunedClassifier(**{"max_epochs": 1, "device": "cpu", **params}).fit(
            digits.X_train, digits.y_train)


def test_bad_inputs(digits):
    clf = FineTunedClassifier(max_epochs=1, device="cpu")
    with pytest.raises(ValueError, match="at least 2"):
        clf.fit(digits.X_train, np.zeros(len(digits.X_train)))
    with pytest.raises(ValueError, match="both X_val and y_val"):
        clf.fit(digits.X_train, digits.y_train, digits.X_test)
    with pytest.raises(ValueError, match="labels not in y"):
        clf.fit(digits.X_train, digits.y_train, digits.X_test, digits.y_test + 100)
    cae = _cae(max_epochs=1).fit(digits.X_train[:, :10])
    with pytest.raises(ValueError, match="10"):
        FineTunedClassifier(cae, max_epochs=1, device="cpu").fit(digits.X_train, digits.y_train)


def test_dropout_masks_in_training_only_and_keeps_the_expectation():
    torch.manual_seed(0)
    module = ClassifierModule([20, 50], 3, "sigmoid", seed=0, dropout=0.5, input_dropout=0.2)
    assert module.draws_random and not ClassifierModule([20, 50], 3, "sigmoid").draws_random
    assert module.graph_safe  # masks come from the generator given, which graphs register
    x = torch.rand(4, 20)
    gen = torch.Generator().manual_seed(1)
    module.eval()
    plain = ClassifierModule([20, 50], 3, "sigmoid", seed=0).eval()
    torch.testing.assert_close(module.logits(x, gen), plain.logits(x))  # eval: the whole net
    # training: inverted dropout, units zeroed at the given rate and E[out] = in
    h = torch.ones(2000, 500)
    from contractive.classifier import _dropout
    out = _dropout(h, 0.3, torch.Generator().manual_seed(2))
    assert abs(float((out == 0).float().mean()) - 0.3) < 0.01
    assert abs(float(out.mean()) - 1.0) < 0.01
    values = torch.unique(out).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.7)
    # the masks come from the generator: same generator state, same logits
    module.train()
    a = module.logits(x, torch.Generator().manual_seed(3))
    b = module.logits(x, torch.Generator().manual_seed(3))
    c = module.logits(x, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_dropout_fit_is_deterministic_and_differs_from_no_dropout(digits):
    X, y = digits.X_train, digits.y_train
    kw = dict(hidden_layer_sizes=(32,), max_epochs=3, random_state=0, device="cpu")
    p1 = FineTunedClassifier(dropout=0.3, input_dropout=0.1, **kw).fit(X, y).predict_proba(X)
    p2 = FineTunedClassifier(dropout=0.3, input_dropout=0.1, **kw).fit(X, y).predict_proba(X)
    p0 = FineTunedClassifier(**kw).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)
    assert not np.allclose(p1, p0)
