"""Greedy layer-wise stacking (stacking.py)."""

import numpy as np
import pytest

from contractive import ContractiveAutoencoder, StackedContractiveAutoencoder
from contractive.data import load_digits


@pytest.fixture(scope="module")
def X():
    return load_digits().X_train


def _digest(meta: dict) -> str:
    from contractive import io

    return io._config_digest(meta)


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


@pytest.fixture(scope="module")
def stack(X):
    return StackedContractiveAutoencoder(
        (12, 6), base=_base(scaling="minmax"), layer_params=[{}, {"activation": "tanh"}],
        random_state=3,
    ).fit(X)


def test_save_load_round_trip(stack, X, tmp_path):
    import contractive

    folder = stack.save(tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "layer-1", "layer-2", "stack.json"]
    for loaded in (StackedContractiveAutoencoder.load(folder, device="cpu"),
                   contractive.load(tmp_path / "s" / "stack.json", device="cpu")):
        assert isinstance(loaded, StackedContractiveAutoencoder)
        np.testing.assert_array_equal(loaded.transform(X), stack.transform(X))
        H = stack.transform(X[:5])
        np.testing.assert_array_equal(loaded.inverse_transform(H), stack.inverse_transform(H))
        assert loaded.layer_sizes == (12, 6) and loaded.random_state == 3
        assert loaded.layer_params == [{}, {"activation": "tanh"}]
        assert loaded.base.get_params() == stack.base.get_params()
        assert loaded.n_features_in_ == 64
    # the loaded stack refits to the same layers: its parameters came back whole
    refit = StackedContractiveAutoencoder.load(folder, device="cpu").fit(X)
    np.testing.assert_allclose(refit.transform(X), stack.transform(X), atol=1e-6)
    # a plain model still loads through contractive.load
    single = stack.encoders_[0].save(tmp_path / "one")
    assert isinstance(contractive.load(single, device="cpu"), ContractiveAutoencoder)


def test_load_refuses_a_stack_mixed_with_another_save(stack, X, tmp_path):
    stack.save(tmp_path / "s")
    other = _base(n_components=6, activation="tanh", random_state=9).fit(
        stack.encoders_[0].transform(X))
    other.save(tmp_path / "s" / "layer-2")  # as a save of another stack cut short would
    with pytest.raises(ValueError, match=r"layer-2.*is not the layer 2 this stack saved"):
        StackedContractiveAutoencoder.load(tmp_path / "s")


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "stack.json").unlink(), "no stack here"),
    (lambda d: (d / "stack.json").write_text("{not json"), "unreadable stack file"),
    (lambda d: (d / "stack.json").write_text('{"format": "x"}'), "not a contractive stack"),
    (lambda d: (d / "layer-1" / "model.safetensors").write_bytes(b"xx"), "checksum mismatch"),
    (lambda d: __import__("shutil").rmtree(d / "layer-2"), "no model here"),
])
def test_load_refuses_a_damaged_stack(stack, tmp_path, damage, words):
    stack.save(tmp_path / "s")
    damage(tmp_path / "s")
    with pytest.raises(ValueError, match=words):
        StackedContractiveAutoencoder.load(tmp_path / "s")


def test_load_refuses_edited_layer_list(stack, tmp_path):
    import json

    stack.save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "stack.json").read_text())
    meta["layers"][0]["folder"] = "../elsewhere"
    meta["config_sha256"] = _digest(meta)  # edited consistently: still checked
    (tmp_path / "s" / "stack.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="must be a plain name"):
        StackedContractiveAutoencoder.load(tmp_path / "s")
    meta["params"]["layer_sizes"] = [12, 7]
    meta["layers"][0]["folder"] = "layer-1"
    meta["config_sha256"] = _digest(meta)
    (tmp_path / "s" / "stack.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="layer_sizes do not match"):
        StackedContractiveAutoencoder.load(tmp_path / "s")


def test_save_refuses_unfitted_and_bad_paths(stack, tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        StackedContractiveAutoencoder().save(tmp_path / "u")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        stack.save(tmp_path / "f")
    with pytest.raises(ValueError, match="path is empty"):
        stack.save("")


def test_contractive_load_refuses_a_folder_holding_both(stack, tmp_path):
    import contractive

    stack.save(tmp_path / "s")
    stack.encoders_[0].save(tmp_path / "s")
    with pytest.raises(ValueError, match="holds more than one model .model.json, stack.json"):
        contractive.load(tmp_path / "s")


def test_score_and_grid_search_without_a_scoring(X):
    from sklearn.model_selection import GridSearchCV

    stack = StackedContractiveAutoencoder((8, 4), base=_base(), random_state=0).fit(X)
    rec = stack.inverse_transform(stack.transform(X))
    assert stack.score(X) == pytest.approx(-np.mean((rec - X) ** 2))
    search = GridSearchCV(StackedContractiveAutoencoder((8, 4), base=_base()),
                          {"layer_sizes": [(8, 4), (6, 3)]}, cv=2).fit(X[:200])
    assert search.best_params_["layer_sizes"] in [(8, 4), (6, 3)]


@pytest.mark.parametrize("kw, match", [
    ({"layer_sizes": np.array([3, 2])}, None),
    ({"random_state": "x"}, "random_state='x' must be None, an integer"),
    ({"layer_params": [{"n_component": 3}, {}]}, r"layer_params\[0\]: Invalid parameter"),
    ({"layer_sizes": "12"}, "layer_sizes"),
])
def test_parameters_are_checked_with_clear_messages(X, kw, match):
    stack = StackedContractiveAutoencoder(**{"layer_sizes": (4, 2), "base": _base(), **kw})
    if match is None:
        assert stack.fit(X[:50]).transform(X[:3]).shape == (3, 2)
    else:
        with pytest.raises(ValueError, match=match):
            stack.fit(X[:50])


def test_save_to_a_path_naming_stack_json_loads_back(stack, X, tmp_path):
    import contractive

    stack.save(tmp_path / "d" / "stack.json")
    assert (tmp_path / "d" / "stack.json").is_file()
    np.testing.assert_array_equal(
        contractive.load(tmp_path / "d" / "stack.json", device="cpu").transform(X[:5]),
        stack.transform(X[:5]))


def test_load_checks_the_stored_parameters(stack, tmp_path):
    import json

    stack.save(tmp_path / "s")
    path = tmp_path / "s" / "stack.json"
    meta = json.loads(path.read_text())
    for key, value, words in (("random_state", "abc", "random_state='abc'"),
                              ("layer_params", {"a": 1}, "layer_params must be a list"),
                              ("layer_params", [{"bogus": 1}, {}], "Invalid parameter")):
        edited = {**meta, "params": {**meta["params"], key: value}}
        edited["config_sha256"] = _digest(edited)
        path.write_text(json.dumps(edited))
        with pytest.raises(ValueError, match=words):
            StackedContractiveAutoencoder.load(tmp_path / "s")


def test_a_random_state_object_is_stored_as_none_everywhere(X, tmp_path):
    rs = np.random.RandomState(0)
    stack = StackedContractiveAutoencoder(
        (4, 2), base=_base(random_state=rs), layer_params=[{"random_state": rs}, {}],
        random_state=rs).fit(X[:50])
    loaded = StackedContractiveAutoencoder.load(stack.save(tmp_path / "s"))
    assert loaded.random_state is None and loaded.base.random_state is None
    assert loaded.layer_params == [{"random_state": None}, {}]


def test_an_edited_stack_file_is_refused(stack, tmp_path):
    import json

    stack.save(tmp_path / "s")
    path = tmp_path / "s" / "stack.json"
    meta = json.loads(path.read_text())
    meta["params"]["random_state"] = 4
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="stack.json: checksum mismatch"):
        StackedContractiveAutoencoder.load(tmp_path / "s")


def test_save_refuses_parameters_changed_after_fit(stack, tmp_path):
    from sklearn.base import clone

    changed = clone(stack)
    changed.encoders_ = stack.encoders_
    changed.set_params(layer_sizes=(4, 4, 4))
    with pytest.raises(ValueError, match=r"layer_sizes=\(4, 4, 4\) is not the fitted layers"):
        changed.save(tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_score_of_a_dataframe_does_not_warn(X):
    import warnings

    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X[:100], columns=[f"p{i}" for i in range(64)])
    stack = StackedContractiveAutoencoder((6, 3), base=_base(), random_state=0).fit(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score = stack.score(frame)
    rec = stack.inverse_transform(stack.transform(frame))
    assert score == pytest.approx(-np.mean((rec - X[:100]) ** 2))
