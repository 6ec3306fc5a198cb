"""Fine-tuning: an MLP initialised from trained encoders (classifier.py)."""

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score

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
    with pytest.raises(ValueError, match=r"y_val of shape \(\d+, 2\) must be 1-D"):
        clf.fit(digits.X_train, digits.y_train, digits.X_test, np.c_[digits.y_test, digits.y_test])
    mixed = np.array([None] + [1] * (len(digits.X_test) - 1), dtype=object)
    with pytest.raises(ValueError, match="y_val of dtype object cannot be compared"):
        clf.fit(digits.X_train, digits.y_train, digits.X_test, mixed)
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
    out, none = _dropout(h, 0.3, torch.Generator().manual_seed(2))
    assert none is None  # no directional derivatives given, none returned
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


@pytest.fixture(scope="module")
def small(digits):
    """200 digits rows and a CAE fitted on them in one epoch: quick fits."""
    X, y = digits.X_train[:200], digits.y_train[:200]
    return X, y, _cae(n_components=8, max_epochs=1).fit(X)


def test_frozen_encoder_survives_clone_cross_validation_and_grid_search(small):
    X, y, cae = small
    before = {k: v.clone() for k, v in cae.module_.state_dict().items()}
    epochs, history = cae.n_epochs_, list(cae.history_)
    clf = FineTunedClassifier(FrozenEstimator(cae), max_epochs=1, batch_size=50,
                              random_state=0, device="cpu")
    assert clone(clf).encoder.estimator is cae
    scores = cross_val_score(clf, X, y, cv=2, error_score="raise")
    assert scores.shape == (2,) and np.all(np.isfinite(scores))
    search = GridSearchCV(clf, {"dropout": [0.0, 0.2]}, cv=2, error_score="raise").fit(X, y)
    assert search.best_estimator_.encoder.estimator is cae
    fitted = search.best_estimator_.module_
    assert [layer.weight.shape for layer in fitted.layers] == [(8, 64)]
    # the encoder was neither refitted nor modified
    assert cae.n_epochs_ == epochs and cae.history_ == history
    for k, v in cae.module_.state_dict().items():
        assert torch.equal(v, before[k])


def test_frozen_stack_is_read_like_the_stack(digits):
    stack = StackedContractiveAutoencoder((12, 6), base=_cae(max_epochs=1),
                                          random_state=0).fit(digits.X_train[:200])
    plain, frozen = encoder_layers(stack), encoder_layers(FrozenEstimator(stack))
    for a, b in zip(plain.weights + plain.biases, frozen.weights + frozen.biases, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("encoder", [
    _cae(), StackedContractiveAutoencoder((8, 4)),
], ids=["cae", "stack"])
def test_unfitted_encoder_says_so_and_suggests_frozen_estimator(small, encoder):
    X, y, _ = small
    with pytest.raises(ValueError, match=r"^encoder \w+ is not fitted: fit it first; .*"
                                         r"cross_val_score.*FrozenEstimator\(encoder\)"):
        FineTunedClassifier(encoder, max_epochs=1, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="not fitted: fit it before wrapping it in Frozen"):
        FineTunedClassifier(FrozenEstimator(encoder), max_epochs=1, device="cpu").fit(X, y)


def test_cloned_plain_encoder_is_refused_with_the_hint(small):
    X, y, cae = small
    with pytest.raises(ValueError, match=r"not fitted.*FrozenEstimator\(encoder\)"):
        clone(FineTunedClassifier(cae, max_epochs=1, device="cpu")).fit(X, y)
    with pytest.raises(TypeError, match=r"not FrozenEstimator\(LogisticRegression\)"):
        FineTunedClassifier(FrozenEstimator(LogisticRegression()), device="cpu").fit(X, y)


@pytest.mark.parametrize("params, match", [
    ({"momentum": 1.5}, r"momentum=1.5 must be a finite number >= 0 and < 1"),
    ({"momentum": 1.0}, "momentum=1.0"),
    ({"momentum": -0.1}, "momentum=-0.1"),
    ({"activation": "foo"}, "activation='foo'"),
    ({"activation": None}, "activation=None"),
    ({"learning_rate": 1e300}, "learning_rate=1e[+]300"),
    ({"weight_decay": 1e300}, "weight_decay=1e[+]300"),
    ({"momentum": 1e300}, "momentum=1e[+]300"),
])
def test_bad_parameters_with_an_encoder(small, params, match):
    X, y, cae = small
    clf = FineTunedClassifier(cae, **{"max_epochs": 1, "device": "cpu", **params})
    with pytest.raises(ValueError, match=match):
        clf._preflight(len(X))
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)


def test_a_valid_activation_is_ignored_with_an_encoder(small):
    X, y, cae = small
    clf = FineTunedClassifier(cae, activation="tanh", max_epochs=1, device="cpu").fit(X, y)
    assert clf.module_.activation == cae.module_.config.activation == "sigmoid"


@pytest.mark.parametrize("sizes", [(0,), (), [], "10", (16, -1)])
def test_hidden_layer_sizes_message_matches_what_is_allowed(small, sizes):
    X, y, _ = small
    clf = FineTunedClassifier(None, hidden_layer_sizes=sizes, max_epochs=1, device="cpu")
    for call in (lambda: clf._preflight(len(X)), lambda: clf.fit(X, y)):
        with pytest.raises(ValueError, match="must be a non-empty tuple of integers >= 1") as err:
            call()
        assert "()" not in str(err.value).split("must be")[1]


def test_column_vector_y_val_is_read_as_y_is(digits):
    from sklearn.exceptions import DataConversionWarning

    clf = FineTunedClassifier(hidden_layer_sizes=(8,), max_epochs=1, device="cpu",
                              random_state=0)
    with pytest.warns(DataConversionWarning):
        clf.fit(digits.X_train[:300], digits.y_train[:300], digits.X_test[:100],
                digits.y_test[:100, None])
    assert clf.n_epochs_ == 1


# -- persistence ----------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [
    lambda y: y,                                              # integers
    lambda y: np.array([f"d{v}" for v in y]),                 # strings
    lambda y: np.array([f"d{v}" for v in y], dtype=object),   # strings, as pandas gives
    lambda y: y.astype(float) * 2,                            # floats
])
def test_save_load_round_trip(small, tmp_path, labels):
    import contractive

    X, y, cae = small
    y = labels(y)
    clf = FineTunedClassifier(cae, max_epochs=2, dropout=0.2, random_state=0,
                              device="cpu").fit(X, y)
    folder = clf.save(tmp_path / "clf")
    for loaded in (FineTunedClassifier.load(folder, device="cpu"),
                   contractive.load(tmp_path / "clf", device="cpu"),
                   contractive.load(tmp_path / "clf" / "classifier.safetensors", device="cpu")):
        assert isinstance(loaded, FineTunedClassifier)
        np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
        np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
        assert loaded.classes_.dtype == clf.classes_.dtype
        assert loaded.score(X, y) == clf.score(X, y)
        assert loaded.encoder is None and loaded.hidden_layer_sizes == (8,)
        assert loaded.dropout == 0.2 and loaded.history_ == clf.history_
        assert loaded.best_epoch_ == clf.best_epoch_ and loaded.n_features_in_ == 64
    # a fit of the loaded parameters trains the same MLP from random weights
    assert FineTunedClassifier.load(folder).set_params(max_epochs=1, device="cpu").fit(X, y)


def test_save_load_keeps_feature_names(small, tmp_path):
    pd = pytest.importorskip("pandas")
    X, y, _ = small
    frame = pd.DataFrame(X, columns=[f"p{i}" for i in range(64)])
    clf = FineTunedClassifier(hidden_layer_sizes=(6,), max_epochs=1, device="cpu",
                              random_state=0).fit(frame, y)
    loaded = FineTunedClassifier.load(clf.save(tmp_path / "c"))
    assert list(loaded.feature_names_in_) == list(frame.columns)
    np.testing.assert_array_equal(loaded.predict(frame), clf.predict(frame))
    with pytest.raises(ValueError, match="feature names"):
        loaded.predict(frame.rename(columns={"p0": "q0"}))


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "classifier.json").unlink(), "no model here"),
    (lambda d: (d / "classifier.safetensors").write_bytes(b"xx"), "checksum mismatch"),
    (lambda d: (d / "classifier.json").write_text("{"), "invalid JSON"),
])
def test_load_refuses_damaged_files(small, tmp_path, damage, words):
    X, y, _ = small
    clf = FineTunedClassifier(hidden_layer_sizes=(4,), max_epochs=1, device="cpu").fit(X, y)
    clf.save(tmp_path / "c")
    damage(tmp_path / "c")
    with pytest.raises(ValueError, match=words):
        FineTunedClassifier.load(tmp_path / "c")


def test_load_refuses_an_inconsistent_config(small, tmp_path):
    """A config edited consistently (its checksum recomputed) but wrong is still refused."""
    import json

    from contractive import io as cio

    X, y, _ = small
    clf = FineTunedClassifier(hidden_layer_sizes=(4,), max_epochs=1, device="cpu").fit(X, y)
    clf.save(tmp_path / "c")
    path = tmp_path / "c" / "classifier.json"
    for edit, words in ((lambda c: c["classes"]["values"].pop(), "labels for 10 outputs"),
                        (lambda c: c["architecture"]["sizes"].append(3), "shape|Missing"),
                        (lambda c: c["fitted"].update(n_features_in_=5), "n_features_in_=5")):
        config = json.loads(path.read_text())
        edit(config)
        config["config_sha256"] = cio._config_digest(config)
        bad = tmp_path / "bad"
        bad.mkdir(exist_ok=True)
        (bad / "classifier.safetensors").write_bytes(
            (tmp_path / "c" / "classifier.safetensors").read_bytes())
        (bad / "classifier.json").write_text(json.dumps(config))
        with pytest.raises(ValueError, match=words):
            FineTunedClassifier.load(bad)


def test_save_refuses_unfitted_and_unstorable_labels(small, tmp_path):
    from sklearn.exceptions import NotFittedError

    X, y, _ = small
    with pytest.raises(NotFittedError):
        FineTunedClassifier().save(tmp_path / "u")
    clf = FineTunedClassifier(hidden_layer_sizes=(4,), max_epochs=1, device="cpu")
    clf.fit(X, np.array([f"s{v}" for v in y], dtype=object))
    clf.classes_ = np.array([object()] * 10, dtype=object)  # labels JSON cannot hold
    with pytest.raises(ValueError, match="cannot be saved"):
        clf.save(tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_data_far_from_zero_keeps_the_encoders_codes():
    """The encoder's offset is subtracted in float64: for x near 1e6 (float32 spacing 0.06)
    the MLP's first layer still gives the encoder's codes, and the fit sees the same
    inputs as for the data moved to 0."""
    rng = np.random.default_rng(0)
    X0 = rng.random((200, 4)) * 0.1
    y = (X0[:, 0] > 0.05).astype(int)
    outs = []
    for shift in (0.0, 1e6):
        X = X0 + shift
        cae = _cae(n_components=3, scaling="standard", max_epochs=5).fit(X)
        clf = FineTunedClassifier(cae, learning_rate=1e-12, max_epochs=1, device="cpu",
                                  random_state=0).fit(X, y)
        h = (clf._shifted(X) - clf.module_.input_offset) / clf.module_.input_scale
        h = torch.sigmoid(clf.module_.layers[0](h)).detach().double().numpy()
        np.testing.assert_allclose(h, cae.transform(X), atol=1e-5)
        outs.append(clf.predict_proba(X))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-4)


def test_reversed_and_read_only_arrays_are_taken(small):
    X, y, cae = small
    clf = FineTunedClassifier(cae, max_epochs=1, device="cpu", random_state=0)
    clf.fit(X[::-1], y[::-1])
    frozen = X.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(clf.predict(X[::-1]), clf.predict(X)[::-1])
    np.testing.assert_array_equal(clf.predict(frozen), clf.predict(X))


def test_columns_other_than_the_encoders_are_refused(small):
    pd = pytest.importorskip("pandas")
    X, y, _ = small
    frame = pd.DataFrame(X, columns=[f"p{i}" for i in range(64)])
    cae = _cae(n_components=4, max_epochs=1).fit(frame)
    swapped = frame[["p1", "p0", *frame.columns[2:]]]
    with pytest.raises(ValueError, match="X's column 1 is 'p1' where the encoder was fitted on "
                                         "'p0'"):
        FineTunedClassifier(cae, max_epochs=1, device="cpu").fit(swapped, y)
    FineTunedClassifier(cae, max_epochs=1, device="cpu").fit(frame, y)  # the same columns
    FineTunedClassifier(cae, max_epochs=1, device="cpu").fit(X, y)      # no names to check


def test_a_failed_refit_leaves_the_fitted_classifier_as_it_was(small):
    X, y, _ = small
    cae = _cae(n_components=4, scaling="standard", max_epochs=1).fit(X + 100)
    clf = FineTunedClassifier(cae, max_epochs=1, device="cpu", random_state=0).fit(X + 100, y)
    before = clf.predict_proba(X + 100)
    clf.set_params(encoder=None, hidden_layer_sizes=(4,), validation_fraction=2.0)
    with pytest.raises(ValueError, match="validation_fraction"):
        clf.fit(X + 100, y)
    np.testing.assert_array_equal(clf.predict_proba(X + 100), before)


def test_pickling_does_not_touch_the_live_classifier(small, monkeypatch):
    """__getstate__ copies the state: on Python >= 3.11 sklearn hands out __dict__ itself."""
    import pickle

    X, y, cae = small
    clf = FineTunedClassifier(cae, max_epochs=1, device="cpu").fit(X, y)
    module = clf.module_
    monkeypatch.setattr(torch.Tensor, "device", property(lambda t: torch.device("meta")))
    state = clf.__getstate__()  # as for a model on a GPU: the copy gets a CPU module
    monkeypatch.undo()
    assert state["module_"] is not module and clf.module_ is module
    assert pickle.loads(pickle.dumps(clf)).predict(X[:5]).shape == (5,)


def test_unpickled_classifier_goes_to_the_device_it_was_on_where_there_is_one(small):
    # a pickle made on a GPU names its device: back onto it where this machine has CUDA,
    # else onto the CPU; the name is not left among the attributes
    X, y, cae = small
    clf = FineTunedClassifier(cae, max_epochs=1, device="cpu").fit(X, y)
    proba = clf.predict_proba(X)
    state = copy.deepcopy(clf.__getstate__())  # (a CPU model's state holds its module)
    state["_module_device"] = "cuda:0"
    again = FineTunedClassifier.__new__(FineTunedClassifier)
    again.__setstate__(state)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(again.module_.parameters()).device.type == expected
    assert "_module_device" not in again.__dict__ and "_module_device" in state
    np.testing.assert_allclose(again.predict_proba(X), proba, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pickle_of_a_gpu_classifier_predicts_the_same_on_the_gpu(small):
    import pickle

    X, y, cae = small
    clf = FineTunedClassifier(cae, max_epochs=1, device="cuda").fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    assert next(again.module_.parameters()).device == next(clf.module_.parameters()).device
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


def test_save_of_a_classifier_pickled_by_an_older_version(small, tmp_path):
    """Before, the module held the encoder's offset and there was no input_offset_."""
    X, y, _ = small
    cae = _cae(n_components=4, scaling="standard", max_epochs=1).fit(X + 50)
    clf = FineTunedClassifier(cae, max_epochs=1, device="cpu", random_state=0).fit(X + 50, y)
    expected = clf.predict_proba(X + 50)
    with torch.no_grad():
        clf.module_.input_offset.copy_(torch.as_tensor(clf.input_offset_))
    del clf.input_offset_  # the state an older version pickled
    np.testing.assert_allclose(clf.predict_proba(X + 50), expected, atol=1e-5)
    loaded = FineTunedClassifier.load(clf.save(tmp_path / "c"))
    np.testing.assert_allclose(loaded.predict_proba(X + 50), expected, atol=1e-5)
    assert loaded.module_.input_offset.abs().max() == 0


def test_contractive_load_of_a_folder_without_a_model(tmp_path):
    import contractive

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no model here .expected model.json, stack.json, "
                                         "classifier.json"):
        contractive.load(tmp_path / "empty")


# -- adversarial training ----------------------------------------------------------------

def _adv_module(norm="inf", **kw):
    torch.manual_seed(0)
    module = ClassifierModule([6, 9, 5], 4, "tanh", seed=3, adversarial_weight=0.3,
                              adversarial_epsilon=0.05, adversarial_norm=norm, **kw).double()
    module.input_scale.copy_(torch.linspace(0.5, 2.0, 6, dtype=torch.float64))
    return module


def _reference_adversarial_loss(module, x, y, w, eps, norm):
    """Brute force, float64: the gradient in z by central differences, the step in z."""
    def ce_of_z(z):
        return torch.nn.functional.cross_entropy(module.logits(z * module.input_scale), y,
                                                 reduction="sum")
    z = x / module.input_scale
    g = torch.zeros_like(z)
    h = 1e-6
    with torch.no_grad():  # the step is a constant
        for b in range(z.shape[0]):
            for j in range(z.shape[1]):
                e = torch.zeros_like(z)
                e[b, j] = h
                g[b, j] = (ce_of_z(z + e) - ce_of_z(z - e)) / (2 * h)
    r = torch.sign(g) if norm == "inf" else g / g.norm(dim=1, keepdim=True)
    x_adv = (z + eps * r) * module.input_scale
    ce = torch.nn.functional.cross_entropy(module.logits(x), y)
    adv = torch.nn.functional.cross_entropy(module.logits(x_adv), y)
    return (1 - w) * ce + w * adv, adv


@pytest.mark.parametrize("norm", ["inf", "l2"])
def test_adversarial_loss_and_gradients_match_brute_force(norm):
    module = _adv_module(norm).train()
    x = torch.rand(7, 6, dtype=torch.float64) * 2 - 0.5
    y = torch.arange(7) % 4
    terms = module(x, y)
    want, adv = _reference_adversarial_loss(module, x, y, 0.3, 0.05, norm)
    torch.testing.assert_close(terms["loss"], want, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(terms["adversarial"], adv, rtol=1e-8, atol=1e-10)
    ce = torch.nn.functional.cross_entropy(module.logits(x), y)
    assert terms["adversarial"] > ce  # the step raises the cross-entropy
    # the step is held constant: the gradient is that of the reference at fixed x_adv
    grads = torch.autograd.grad(terms["loss"], list(module.parameters()))
    want_grads = torch.autograd.grad(want, list(module.parameters()))
    for g1, g2 in zip(grads, want_grads):
        torch.testing.assert_close(g1, g2, rtol=1e-7, atol=1e-10)


def test_adversarial_term_in_training_only_and_with_tangents():
    module = _adv_module()
    x, y = torch.rand(5, 6, dtype=torch.float64), torch.arange(5) % 4
    assert module.graph_safe  # CUDA graphs capture the inner gradient too
    assert set(module.eval()(x, y)) == {"loss", "error"}
    module.train()
    assert set(module(x, y)) == {"loss", "adversarial", "error"}
    both = _adv_module(tangent_weight=0.5)
    T = torch.linalg.qr(torch.randn(5, 6, 2, dtype=torch.float64))[0].transpose(1, 2)
    terms = both.train()(x, y, T)
    plain = ClassifierModule([6, 9, 5], 4, "tanh", seed=3, tangent_weight=0.5).double()
    plain.input_scale.copy_(both.input_scale)
    tangent = plain.train()(x, y, T)["tangent"]
    torch.testing.assert_close(terms["tangent"], tangent)
    ce = torch.nn.functional.cross_entropy(both.logits(x), y)
    torch.testing.assert_close(terms["loss"], 0.7 * ce + 0.3 * terms["adversarial"]
                               + 0.5 * tangent)


def test_adversarial_fine_tuning_resists_the_attack_it_trains_on(digits):
    """Trained against steps of 0.3 (in standardised units), the classifier's error at such
    steps is lower than a plain one's, and its fit is deterministic."""
    X, y = digits.X_train, digits.y_train
    cae = _cae(scaling="standard", max_epochs=3).fit(X)
    kw = dict(max_epochs=15, random_state=0, device="cpu", learning_rate=0.1)
    plain = FineTunedClassifier(cae, **kw).fit(X, y)
    adv = FineTunedClassifier(cae, adversarial_weight=0.5, adversarial_epsilon=0.3,
                              **kw).fit(X, y)
    again = FineTunedClassifier(cae, adversarial_weight=0.5, adversarial_epsilon=0.3,
                                **kw).fit(X, y)
    np.testing.assert_array_equal(adv.predict_proba(X), again.predict_proba(X))
    assert "adversarial" in adv.history_[0] and "adversarial" not in plain.history_[0]

    def attacked_error(clf):
        m = clf.module_
        x = clf._shifted(digits.X_test).requires_grad_(True)
        t = torch.as_tensor(np.searchsorted(clf.classes_, digits.y_test))
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(m.logits(x), t), x)
        x_adv = x + 0.3 * m.input_scale * torch.sign(g)
        return float((m.logits(x_adv).argmax(1) != t).float().mean())

    assert attacked_error(adv) < attacked_error(plain) - 0.05
    assert adv.error(digits.X_test, digits.y_test) < 0.1


@pytest.mark.parametrize("params, match", [
    ({"adversarial_weight": 1.5}, r"adversarial_weight=1.5 must be a finite number in \[0, 1\]"),
    ({"adversarial_weight": -0.1}, "adversarial_weight=-0.1"),
    ({"adversarial_weight": 0.5, "adversarial_epsilon": 0.0}, "adversarial_epsilon=0.0 must"),
    ({"adversarial_epsilon": float("nan")}, "adversarial_epsilon=nan"),
    ({"adversarial_norm": "l1"}, "adversarial_norm='l1' is not valid; valid: inf, l2"),
])
def test_bad_adversarial_parameters(digits, params, match):
    with pytest.raises(ValueError, match=match):
        FineTunedClassifier(**{"max_epochs": 1, "device": "cpu", **params}).fit(
            digits.X_train, digits.y_train)


def test_adversarial_settings_survive_save_and_load(small, tmp_path):
    X, y, cae = small
    clf = FineTunedClassifier(cae, adversarial_weight=0.4, adversarial_epsilon=0.2,
                              adversarial_norm="l2", max_epochs=2, device="cpu",
                              random_state=0).fit(X, y)
    back = FineTunedClassifier.load(clf.save(tmp_path / "clf"), device="cpu")
    assert (back.module_.adversarial_weight, back.module_.adversarial_epsilon,
            back.module_.adversarial_norm) == (0.4, 0.2, "l2")
    assert back.get_params()["adversarial_norm"] == "l2"
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


@pytest.mark.parametrize("kw", [{}, {"dropout": 0.5}, {"tangent_weight": 0.5},
                                {"adversarial_weight": 0.0}])
def test_forward_backward_gives_the_gradients_of_a_plain_backward(kw):
    """The trainer's step leaves the input's gradient out; every parameter's is that of
    ``loss.backward()``, with the same dropout masks (same generator state)."""
    T = torch.linalg.qr(torch.randn(5, 6, 2, dtype=torch.float64))[0].transpose(1, 2)
    x, y = torch.rand(5, 6, dtype=torch.float64), torch.arange(5) % 4
    grads, leaves = [], []
    for fused in (False, True):
        module = _adv_module().train()
        vars(module).update(kw)  # plain float settings
        real = module._propagate

        def spy(inputs, v, generator, real=real):  # the first pass's input: forward's leaf
            leaves.append(inputs)
            return real(inputs, v, generator)

        module._propagate = spy
        gen = torch.Generator().manual_seed(5)
        before = [torch.full_like(p, 0.25) for p in module.parameters()]
        for p, g in zip(module.parameters(), before):
            p.grad = g.clone()  # gradients add onto those already there
        if fused:
            terms = module.forward_backward(x, y, T, generator=gen)
            assert all(not t.requires_grad for t in terms.values())
        else:
            terms = module(x, y, T, generator=gen)
            terms["loss"].backward()
        grads.append([p.grad - g for p, g in zip(module.parameters(), before)])
        assert terms["loss"] > 0
    adversarial = kw.get("adversarial_weight", 0.3) > 0
    plain_leaf, fused_leaf = leaves[0], leaves[len(leaves) // 2]
    assert (plain_leaf.grad is not None) == adversarial  # the input's gradient, formed ...
    assert fused_leaf.grad is None  # ... only by the plain backward
    for plain, fused in zip(*grads, strict=True):
        assert plain.abs().max() > 0
        torch.testing.assert_close(fused, plain, rtol=0, atol=0)


def test_forward_backward_with_every_parameter_frozen_does_nothing():
    module = _adv_module().train()
    module.requires_grad_(False)
    terms = module.forward_backward(torch.rand(5, 6, dtype=torch.float64), torch.arange(5) % 4)
    assert torch.isfinite(terms["loss"]) and all(p.grad is None for p in module.parameters())


@pytest.mark.parametrize("boost", [40.0, 60.0])
def test_l2_step_has_size_eps_even_where_the_gradient_is_tiny(boost):
    """Confident rows have gradients of 1e-30 to 1e-44, whose squares underflow float32: the
    step must still have norm eps (in the scaled input), not blow up."""
    torch.manual_seed(0)
    m = ClassifierModule([50, 20], 4, "sigmoid", seed=0, adversarial_weight=0.5,
                         adversarial_epsilon=1.0, adversarial_norm="l2").train()
    x = torch.rand(64, 50)
    with torch.no_grad():
        m.head.weight.mul_(boost)  # logit margins of a hundred or more
        y = m.logits(x).argmax(1)
    seen = []
    real = m.logits

    def spy(inputs, generator=None):
        seen.append(inputs.detach())
        return real(inputs, generator)

    m.logits = spy
    terms = m(x, y)
    step = (seen[1] - seen[0]).norm(dim=1)
    assert torch.isfinite(terms["loss"])
    torch.testing.assert_close(step, torch.ones(64), rtol=1e-5, atol=0)


def test_a_classifier_pickled_before_adversarial_training_works(small, tmp_path):
    """A pickle from before the adversarial parameters existed: read as weight 0."""
    import pickle

    X, y, cae = small
    clf = FineTunedClassifier(cae, max_epochs=1, device="cpu", random_state=0).fit(X, y)
    expected = clf.predict_proba(X)
    for name in ("adversarial_weight", "adversarial_epsilon", "adversarial_norm"):
        del clf.__dict__[name], clf.module_.__dict__[name]
    old = pickle.loads(pickle.dumps(clf))
    assert old.get_params()["adversarial_weight"] == 0.0 and "adversarial_norm" in repr(
        old.set_params(adversarial_norm="l2"))
    assert not old.module_.adversarial_weight and old.module_.graph_safe
    np.testing.assert_array_equal(old.predict_proba(X), expected)
    saved = FineTunedClassifier.load(old.save(tmp_path / "c"), device="cpu")
    np.testing.assert_array_equal(saved.predict_proba(X), expected)
    t = torch.as_tensor(np.searchsorted(old.classes_, y))
    assert set(old.module_.train()(clf._shifted(X), t)) == {"loss", "error"}
    old.fit(X, y)
