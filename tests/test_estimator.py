"""The scikit-learn estimator: outputs, units, parameters, model selection, pickling."""

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from contractive import ContractiveAutoencoder, NonFiniteLossError


def _small(**kw) -> ContractiveAutoencoder:
    params = dict(n_components=3, max_epochs=5, batch_size=16, random_state=0)
    params.update(kw)
    return ContractiveAutoencoder(**params)


@pytest.fixture
def X(rng):
    return rng.random((60, 7))


def test_shapes_and_feature_names(X):
    cae = _small().fit(X)
    assert cae.transform(X).shape == (60, 3)
    assert cae.inverse_transform(cae.transform(X)).shape == (60, 7)
    assert cae.jacobian(X[:4]).shape == (4, 3, 7)
    assert cae.penalty(X).shape == (60,)
    assert list(cae.get_feature_names_out()) == [f"contractiveautoencoder{i}" for i in range(3)]
    assert cae.n_features_in_ == 7 and cae.n_epochs_ == 5 and len(cae.history_) == 5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_dtype_follows_input(X, dtype):
    cae = _small().fit(X.astype(dtype))
    Xd = X.astype(dtype)
    for out in (cae.transform(Xd), cae.inverse_transform(cae.transform(Xd)), cae.jacobian(Xd),
                cae.penalty(Xd), cae.reconstruct(Xd)):
        assert out.dtype == dtype


def test_pandas_dataframe_keeps_feature_names(X):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(7)])
    cae = _small().fit(df)
    assert list(cae.feature_names_in_) == list(df.columns)
    with pytest.warns(UserWarning, match="feature names"):
        plain = cae.transform(X)
    np.testing.assert_array_equal(cae.transform(df), plain)


def test_same_random_state_same_model_different_state_different_model(X):
    a, b, c = (_small(random_state=s).fit(X).transform(X) for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def _brute_jacobian(cae, X):
    """Autograd Jacobian of x -> f((x - offset) / factor) in float64, per sample."""
    module = copy.deepcopy(cae.module_).double().cpu()
    off = torch.as_tensor(cae.scale_offset_)
    fac = torch.as_tensor(cae.scale_factor_)
    out = []
    for x in torch.as_tensor(X, dtype=torch.float64):
        out.append(torch.autograd.functional.jacobian(
            lambda v: module.encode(((v - off) / fac).unsqueeze(0)).squeeze(0), x))
    return torch.stack(out).numpy()


@pytest.mark.parametrize("scaling", ["none", "minmax", "standard"])
@pytest.mark.parametrize("hidden", [(), (5,)])
def test_jacobian_and_penalty_in_input_units(rng, scaling, hidden):
    X = rng.normal(3.0, 4.0, size=(40, 6))  # far from unit scale, so scaling matters
    cae = _small(scaling=scaling, hidden_layer_sizes=hidden, activation="tanh").fit(X)
    J = cae.jacobian(X[:5])
    ref = _brute_jacobian(cae, X[:5])
    np.testing.assert_allclose(J, ref, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(cae.penalty(X[:5]), (ref**2).sum((1, 2)), rtol=2e-4, atol=1e-7)


def test_jacobian_matches_finite_differences_of_transform(rng):
    X = rng.random((3, 5))
    cae = _small(n_components=2, scaling="standard").fit(rng.random((50, 5)))
    eps = 1e-2
    for i in range(5):
        e = np.zeros(5)
        e[i] = eps
        fd = (cae.transform(X + e) - cae.transform(X - e)) / (2 * eps)
        np.testing.assert_allclose(cae.jacobian(X)[:, :, i], fd, rtol=2e-2, atol=2e-4)


def test_score_and_inverse_transform_are_consistent(X):
    cae = _small(scaling="standard").fit(X)
    rec = cae.inverse_transform(cae.transform(X))
    np.testing.assert_allclose(rec, cae.reconstruct(X), rtol=1e-6, atol=1e-7)
    assert cae.score(X) == pytest.approx(-np.mean((rec - X) ** 2), rel=1e-6)


def test_training_reduces_the_reconstruction_error(X):
    before = _small(max_epochs=1, learning_rate=1e-5).fit(X).score(X)
    after = _small(max_epochs=60, learning_rate=1e-2).fit(X).score(X)
    assert after > before


@pytest.mark.parametrize(
    "hidden,k,method",
    [((), 3, "closed_form"), ((6,), 4, "exact"), ((6,), 40, "hutchinson")],
)
def test_auto_penalty_method_is_resolved_and_recorded(X, hidden, k, method):
    cae = _small(hidden_layer_sizes=hidden, n_components=k, max_epochs=1).fit(X)
    assert cae.penalty_method_ == method == cae.module_.config.penalty_method


@pytest.mark.parametrize("method", ["closed_form", "exact", "hutchinson"])
def test_contractive_weight_makes_the_encoder_contract(rng, method):
    """The penalty's gradient reaches the weights: a strong lambda shrinks ||J||^2 a lot
    (a frozen-W or detached penalty would leave it near the plain auto-encoder's)."""
    X = rng.random((128, 8))
    kw = dict(n_components=4, max_epochs=40, learning_rate=1e-2, penalty_method=method)
    if method != "closed_form":
        kw["hidden_layer_sizes"] = (6,)
    plain = _small(contractive_weight=0.0, **kw).fit(X).penalty(X).mean()
    cae = _small(contractive_weight=1.0, **kw).fit(X).penalty(X).mean()
    assert cae < 0.3 * plain


def test_higher_order_term_is_logged_and_trains(X):
    cae = _small(higher_order_weight=0.5, higher_order_copies=2, higher_order_sigma=0.2).fit(X)
    assert all("higher_order" in h and np.isfinite(h["higher_order"]) for h in cae.history_)


def test_early_stopping_holds_out_validation(X):
    cae = _small(early_stopping=True, validation_fraction=0.25, n_iter_no_change=2, tol=1e9,
                 max_epochs=50).fit(X)
    assert cae.stopped_early_ and cae.n_epochs_ == 3
    assert "val_loss" in cae.history_[0]


def test_non_finite_loss_raises_and_keeps_a_usable_model():
    X = np.full((20, 4), 1e30)  # squares overflow float32: the first epoch's loss is inf
    cae = _small()
    with pytest.raises(NonFiniteLossError, match="epoch 1.*learning_rate"):
        cae.fit(X)
    assert cae.n_epochs_ == 0
    assert all(torch.isfinite(p).all() for p in cae.module_.parameters())


def test_bce_needs_data_in_unit_range(rng):
    X = rng.normal(size=(30, 4))
    bce = dict(loss="bce", output_activation="sigmoid")
    with pytest.raises(ValueError, match=r"loss='bce' needs data in \[0, 1\]"):
        _small(**bce).fit(X)
    cae = _small(scaling="minmax", **bce).fit(X)
    assert np.isfinite(cae.score(X))


@pytest.mark.parametrize(
    "params,match",
    [
        ({"n_components": 0}, "n_components=0 must be an integer >= 1"),
        ({"n_components": 2.5}, "n_components=2.5"),
        ({"hidden_layer_sizes": (4, 0)}, "hidden_layer_sizes"),
        ({"hidden_layer_sizes": "64"}, "hidden_layer_sizes"),
        ({"activation": "bogus"}, "activation='bogus'.*sigmoid"),
        ({"output_activation": "tanh"}, "output_activation='tanh'.*linear, sigmoid"),
        ({"loss": "l1"}, "loss='l1'.*mse, bce"),
        ({"loss": "bce"}, "output_activation='sigmoid'"),
        ({"penalty_method": "fast"}, "penalty_method='fast'.*auto"),
        ({"penalty_method": "closed_form", "hidden_layer_sizes": (4,)}, "one-layer"),
        ({"contractive_weight": -1.0}, "contractive_weight=-1.0"),
        ({"contractive_weight": float("nan")}, "contractive_weight=nan"),
        ({"learning_rate": 0.0}, "learning_rate=0.0 must be"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"max_epochs": 0}, "max_epochs=0"),
        ({"n_probes": 0}, "n_probes=0"),
        ({"higher_order_sigma": 0.0}, "higher_order_sigma=0.0"),
        ({"scaling": "robust"}, "scaling='robust'.*none, minmax, standard"),
        ({"optimizer": "rmsprop"}, "optimizer='rmsprop'"),
        ({"device": "tpu9"}, "device='tpu9'"),
        ({"early_stopping": True, "validation_fraction": 1.5}, "validation_fraction=1.5"),
        ({"tied_weights": "yes"}, "tied_weights='yes'"),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(X, params, match):
    with pytest.raises(ValueError, match=match):
        _small(**params).fit(X)


def test_wrong_shapes_at_inference(X):
    cae = _small().fit(X)
    with pytest.raises(ValueError, match="7 features"):
        cae.transform(X[:, :5])
    with pytest.raises(ValueError, match="n_components=3"):
        cae.inverse_transform(np.zeros((2, 4)))


def test_values_beyond_float32_are_refused_not_turned_into_nan(X):
    huge = X.astype(np.float64).copy()
    huge[2, 4] = 1e39
    with pytest.raises(ValueError, match="1e\\+39 at row 2, column 4.*float32"):
        _small().fit(huge)
    cae = _small().fit(X)
    for method in (cae.transform, cae.reconstruct, cae.jacobian, cae.penalty,
                   cae.singular_values):
        with pytest.raises(ValueError, match="float32"):
            method(huge)
    codes = cae.transform(X[:3]).astype(np.float64)
    codes[1, 0] = -1e300
    with pytest.raises(ValueError, match="codes.*row 1, column 0.*float32"):
        cae.inverse_transform(codes)
    # per-feature scaling brings such data into range: then it is fine
    scaled = _small(scaling="standard").fit(X * 1e38 * 10)
    assert np.isfinite(scaled.transform(X * 1e38 * 10)).all()


def test_tied_weights_have_no_decoder_matrices(X):
    cae = _small(tied_weights=True, hidden_layer_sizes=(5,)).fit(X)
    names = [n for n, _ in cae.module_.named_parameters()]
    assert not any(n.startswith("decoder.weights") for n in names)


def test_clone_and_pickle(X):
    cae = _small().fit(X)
    fresh = clone(cae)
    assert fresh.get_params() == cae.get_params() and not hasattr(fresh, "module_")
    again = pickle.loads(pickle.dumps(cae))
    np.testing.assert_array_equal(again.transform(X), cae.transform(X))
    np.testing.assert_array_equal(again.jacobian(X[:3]), cae.jacobian(X[:3]))
    assert again.device_ == cae.device_


def test_unpickled_model_goes_to_the_device_named_where_there_is_one(X):
    # the state of a pickle made on a GPU (its module on the CPU, the device named): back
    # onto it where this machine has CUDA, else onto the CPU, with device_ saying which
    cae = _small(device="cpu").fit(X)
    codes = cae.transform(X)
    state = copy.deepcopy(cae.__getstate__())  # (a CPU model's state holds its module)
    state.update(device_="cuda", _module_device="cuda:0")
    again = ContractiveAutoencoder.__new__(ContractiveAutoencoder)
    again.__setstate__(state)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert again.device_ == expected and again._device().type == expected
    assert "_module_device" not in again.__dict__
    np.testing.assert_allclose(again.transform(X), codes, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pickle_of_a_gpu_model_computes_the_same_on_the_gpu(X):
    cae = _small(device="cuda").fit(X)
    blob = pickle.dumps(cae)
    assert cae._device().type == "cuda"  # pickling left the original where it was
    again = pickle.loads(blob)
    assert again.device_ == cae.device_ and again._device() == cae._device()
    np.testing.assert_array_equal(again.transform(X), cae.transform(X))


def test_grid_search_in_a_pipeline(rng):
    X = rng.random((80, 6))
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    pipe = Pipeline([
        ("scale", StandardScaler()),
        ("cae", _small(n_components=2, max_epochs=3)),
        ("clf", LogisticRegression()),
    ])
    search = GridSearchCV(pipe, {"cae__contractive_weight": [0.0, 1e-2]}, cv=2).fit(X, y)
    assert search.best_params_["cae__contractive_weight"] in (0.0, 1e-2)
    assert search.predict(X).shape == (80,)
    # unsupervised: the CAE's own score drives the search
    search = GridSearchCV(_small(max_epochs=3), {"n_components": [1, 3]}, cv=2).fit(X)
    assert search.best_params_["n_components"] in (1, 3)


def test_verbose_shows_a_progress_bar(X, capsys):
    _small(verbose=True, max_epochs=2).fit(X)
    assert "training" in capsys.readouterr().err


def test_fitted_scaling_not_the_parameter_sets_jacobian_units(rng):
    X = rng.normal(2.0, 5.0, size=(40, 4))
    cae = _small(scaling="standard").fit(X)
    J = cae.jacobian(X[:3])
    cae.set_params(scaling="none")  # a parameter change after fit must not change the model
    np.testing.assert_array_equal(cae.jacobian(X[:3]), J)


def test_score_on_a_dataframe_does_not_warn(X):
    pd = pytest.importorskip("pandas")

    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(7)])
    cae = _small().fit(df)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cae.score(df)


def test_inverse_transform_takes_reversed_and_read_only_codes():
    X = np.random.default_rng(0).random((20, 5))
    cae = ContractiveAutoencoder(n_components=3, max_epochs=1, device="cpu").fit(X)
    H = cae.transform(X).astype(np.float32)
    frozen = H.copy()
    frozen.flags.writeable = False

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "not writable" warning included
        np.testing.assert_array_equal(cae.inverse_transform(H[::-1]),
                                      cae.inverse_transform(H)[::-1])
        np.testing.assert_array_equal(cae.inverse_transform(frozen), cae.inverse_transform(H))


@pytest.mark.parametrize("unit", [1e-30, 1e30])
@pytest.mark.parametrize("hidden", [(), (5,)])
def test_jacobian_and_penalty_in_units_far_from_one(unit, hidden):
    """Scaling makes the network see the same numbers whatever the unit, so dh/dx is the
    unit-1 model's divided by the unit, and stays finite (1 / 1e-30 is infinite in float32:
    taken in float64 there)."""
    X = np.random.default_rng(0).random((80, 6))
    kw = dict(n_components=3, hidden_layer_sizes=hidden, scaling="minmax", max_epochs=2,
              device="cpu", random_state=0)
    ref = ContractiveAutoencoder(**kw).fit(X)
    cae = ContractiveAutoencoder(**kw).fit(X * unit)
    J = cae.jacobian(X[:5] * unit)
    np.testing.assert_allclose(J * unit, ref.jacobian(X[:5]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(cae.penalty(X[:5] * unit) * unit**2, ref.penalty(X[:5]),
                               rtol=1e-5)


def test_float32_input_gets_float64_output_where_float32_overflows():
    """Data in units of 1e-20 as float32: ||J||^2 is about 1e40, past float32's 3.4e38. The
    result stays float64 (warned) and equals the float64 input's; float32 input whose
    results fit keeps float32."""
    X = np.random.default_rng(0).random((60, 5))
    kw = dict(n_components=3, scaling="minmax", max_epochs=2, device="cpu", random_state=0)
    cae = ContractiveAutoencoder(**kw).fit(X * 1e-20)
    small = (X[:4] * 1e-20).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="exceed float32's range"):
        P = cae.penalty(small)
    assert P.dtype == np.float64 and np.all(np.isfinite(P)) and P.min() > 1e38
    np.testing.assert_allclose(P, cae.penalty(small.astype(np.float64)), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cae.jacobian(small).dtype == np.float32  # entries near 1e20 fit
        assert cae.transform(small).dtype == np.float32


def test_float64_work_runs_on_the_cpu_where_the_device_has_no_float64(monkeypatch):
    """Apple's MPS has no float64: the float64 copies (contraction curve, extreme scales)
    go to the CPU there, and stay on the model's device elsewhere."""
    cae = ContractiveAutoencoder(n_components=2, max_epochs=1, device="cpu").fit(
        np.random.default_rng(0).random((20, 4)))
    assert cae._device64() == torch.device("cpu")
    monkeypatch.setattr(cae, "_device", lambda: torch.device("mps"))
    assert cae._device64() == torch.device("cpu")
    module = cae._float64_module()
    assert {(p.device.type, p.dtype) for p in module.parameters()} == {("cpu", torch.float64)}
