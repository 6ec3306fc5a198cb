"""Model files: save/load round trips, every way a model folder can be broken, no pickle,
and the atomic writes underneath."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import re
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import contractive
from contractive import ContractiveAutoencoder
from contractive import io as cio
from contractive.training import resolve_device

CONFIGS = {
    "one-layer": {},
    "one-layer-tied": {"tied_weights": True},
    "two-layer": {"hidden_layer_sizes": (5,)},
    "two-layer-tied": {"hidden_layer_sizes": (5,), "tied_weights": True},
    "standard-scaling": {"scaling": "standard"},
    "two-layer-tanh-standard": {
        "hidden_layer_sizes": (5,), "activation": "tanh", "scaling": "standard",
    },
}


def _X(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((50, 6))


def _fit(**kw) -> ContractiveAutoencoder:
    params = {"n_components": 3, "max_epochs": 3, "random_state": 0, **kw}
    return ContractiveAutoencoder(**params).fit(_X())


@pytest.fixture(scope="module")
def fitted() -> dict[str, ContractiveAutoencoder]:
    return {name: _fit(**kw) for name, kw in CONFIGS.items()}


@pytest.fixture
def saved(tmp_path: Path, fitted) -> Path:
    """A one-layer model saved to ``tmp_path / "model"``."""
    folder = tmp_path / "model"
    fitted["one-layer"].save(folder)
    return folder


def _assert_same_outputs(a: ContractiveAutoencoder, b: ContractiveAutoencoder, X) -> None:
    X = np.asarray(X)
    codes = a.transform(X)
    np.testing.assert_array_equal(codes, b.transform(X))
    np.testing.assert_array_equal(a.inverse_transform(codes), b.inverse_transform(codes))
    np.testing.assert_array_equal(a.reconstruct(X), b.reconstruct(X))
    np.testing.assert_array_equal(a.jacobian(X[:7]), b.jacobian(X[:7]))
    np.testing.assert_array_equal(a.penalty(X), b.penalty(X))
    assert a.score(X) == b.score(X)


def _assert_same_fitted(a: ContractiveAutoencoder, b: ContractiveAutoencoder) -> None:
    assert b.n_features_in_ == a.n_features_in_
    assert b.penalty_method_ == a.penalty_method_
    assert b.n_epochs_ == a.n_epochs_
    assert b.stopped_early_ == a.stopped_early_
    assert b.history_ == a.history_
    assert b.fit_time_ == a.fit_time_
    np.testing.assert_array_equal(b.scale_offset_, a.scale_offset_)
    np.testing.assert_array_equal(b.scale_factor_, a.scale_factor_)
    assert b.module_.config == a.module_.config
    assert not b.module_.training
    sa, sb = a.module_.state_dict(), b.module_.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k].cpu(), sb[k].cpu()), k


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("loader", ["classmethod", "contractive.load"])
def test_round_trip_identical_outputs(tmp_path, fitted, name, loader):
    est = fitted[name]
    returned = est.save(tmp_path / "m")
    assert Path(returned) == tmp_path / "m"
    assert sorted(os.listdir(tmp_path / "m")) == ["model.json", "model.safetensors"]
    if loader == "classmethod":
        loaded = ContractiveAutoencoder.load(tmp_path / "m")  # device "auto", as est's
        assert loaded.device_ == str(resolve_device("auto"))
    else:
        loaded = contractive.load(str(tmp_path / "m"), device=est.device_)
        assert loaded.device_ == est.device_
    assert isinstance(loaded, ContractiveAutoencoder)
    _assert_same_fitted(est, loaded)
    _assert_same_outputs(est, loaded, _X(1))
    # float32 in, float32 out, on both
    X32 = _X(2).astype(np.float32)
    assert loaded.transform(X32).dtype == np.float32
    np.testing.assert_array_equal(est.transform(X32), loaded.transform(X32))


@pytest.mark.parametrize("name", ["one-layer", "two-layer-tied"])
def test_round_trip_get_params(tmp_path, fitted, name):
    """get_params() after load equals the original's, values and types (a tuple stays a
    tuple: ``hidden_layer_sizes=(5,)`` must not come back as ``[5]``)."""
    est = fitted[name]
    est.save(tmp_path / "m")
    loaded = contractive.load(tmp_path / "m")
    p, q = est.get_params(), loaded.get_params()
    assert q.keys() == p.keys()
    for k in p:
        assert q[k] == p[k] and type(q[k]) is type(p[k]), (k, p[k], q[k])


def test_round_trip_params_values(tmp_path):
    """Non-default parameters survive (compared modulo tuple/list for hidden sizes)."""
    est = _fit(hidden_layer_sizes=(4,), activation="softplus", contractive_weight=0.05,
               batch_size=16, learning_rate=1e-2, penalty_method="exact", scaling="minmax")
    est.save(tmp_path / "m")
    loaded = ContractiveAutoencoder.load(tmp_path / "m")
    p, q = est.get_params(), loaded.get_params()
    assert tuple(q.pop("hidden_layer_sizes")) == tuple(p.pop("hidden_layer_sizes"))
    assert q == p
    _assert_same_outputs(est, loaded, _X(3))


def test_random_state_instance_is_saved_as_none(tmp_path):
    est = ContractiveAutoencoder(
        n_components=3, max_epochs=2, random_state=np.random.RandomState(0)
    ).fit(_X())
    est.save(tmp_path / "m")
    loaded = contractive.load(tmp_path / "m")
    assert loaded.random_state is None
    _assert_same_outputs(est, loaded, _X(1))


def test_round_trip_dataframe_feature_names(tmp_path):
    pd = pytest.importorskip("pandas")
    cols = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
    df = pd.DataFrame(_X(), columns=cols)
    est = ContractiveAutoencoder(n_components=3, max_epochs=3, random_state=0).fit(df)
    est.save(tmp_path / "m")
    loaded = contractive.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.feature_names_in_, est.feature_names_in_)
    assert list(loaded.feature_names_in_) == cols
    assert loaded.feature_names_in_.dtype == object
    np.testing.assert_array_equal(loaded.get_feature_names_out(), est.get_feature_names_out())
    df1 = pd.DataFrame(_X(1), columns=cols)
    np.testing.assert_array_equal(est.transform(df1), loaded.transform(df1))
    # feature-name checks behave the same after loading
    for model in (est, loaded):
        with pytest.raises(ValueError, match="feature names"):
            model.transform(df1[cols[::-1]])
        with pytest.warns(UserWarning, match="feature names"):
            model.transform(_X(1))


def test_no_feature_names_when_fit_on_arrays(tmp_path, saved):
    loaded = contractive.load(saved)
    assert not hasattr(loaded, "feature_names_in_")


@pytest.mark.parametrize("target", ["folder", "model.json", "model.safetensors", "str"])
def test_load_accepts_folder_or_either_file(saved, fitted, target):
    path = {
        "folder": saved,
        "model.json": saved / "model.json",
        "model.safetensors": saved / "model.safetensors",
        "str": str(saved) + os.sep,
    }[target]
    loaded = contractive.load(path)
    _assert_same_outputs(fitted["one-layer"], loaded, _X(1))


def test_save_overwrites_previous_model(tmp_path, fitted):
    fitted["one-layer"].save(tmp_path / "m")
    fitted["two-layer"].save(tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["model.json", "model.safetensors"]
    loaded = contractive.load(tmp_path / "m")
    assert loaded.module_.config.hidden_layer_sizes == (5,)
    _assert_same_outputs(fitted["two-layer"], loaded, _X(1))


def test_save_creates_parents(tmp_path, fitted):
    fitted["one-layer"].save(tmp_path / "a" / "b" / "m")
    contractive.load(tmp_path / "a" / "b" / "m")


def test_save_to_existing_regular_file_raises(tmp_path, fitted):
    f = tmp_path / "taken"
    f.write_bytes(b"precious")
    with pytest.raises(ValueError, match=re.escape(str(f))):
        fitted["one-layer"].save(f)
    assert f.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["taken"]


def test_model_json_contents(saved):
    cfg = json.loads((saved / "model.json").read_text())
    assert cfg["format"] == cio.FORMAT
    assert cfg["format_version"] == cio.FORMAT_VERSION
    assert cfg["library_version"] == contractive.__version__
    blob = (saved / "model.safetensors").read_bytes()
    assert cfg["weights_sha256"] == hashlib.sha256(blob).hexdigest()
    assert cfg["module_config"]["in_features"] == 6
    assert cfg["module_config"]["n_components"] == 3
    assert set(cfg["metadata"]) == {"params", "fitted"}


# -- broken model folders -----------------------------------------------------------------


def _rewrite_config(folder: Path, *, keep_digest: bool = False, **changes) -> None:
    """Edit model.json; the config's own checksum is recomputed unless ``keep_digest``, so
    the checks behind it are reached."""
    cfg = json.loads((folder / "model.json").read_text())
    cfg.update(changes)
    if not keep_digest:
        cfg["config_sha256"] = cio._config_digest(cfg)
    (folder / "model.json").write_text(json.dumps(cfg))


def test_edited_config_is_detected_by_its_checksum(saved):
    cfg = json.loads((saved / "model.json").read_text())
    _rewrite_config(saved, keep_digest=True,
                    module_config={**cfg["module_config"], "activation": "tanh"})
    with _raises_naming(saved / "model.json", "checksum mismatch"):
        contractive.load(saved)


@pytest.mark.parametrize("key,value", [("n_components", 7), ("activation", "tanh"),
                                       ("hidden_layer_sizes", [5])])
def test_params_that_disagree_with_the_module_are_refused(saved, key, value):
    cfg = json.loads((saved / "model.json").read_text())
    meta = cfg["metadata"]
    meta["params"][key] = value
    _rewrite_config(saved, metadata=meta)
    with _raises_naming(saved, key):
        contractive.load(saved)


@pytest.mark.parametrize("version", [0, -1, True, "1", 1.0])
def test_bad_format_versions(saved, version):
    _rewrite_config(saved, format_version=version)
    with _raises_naming(saved / "model.json", "format_version"):
        contractive.load(saved)


def test_numpy_scalar_parameters_save(tmp_path):
    X = np.random.default_rng(0).random((30, 5))
    est = ContractiveAutoencoder(n_components=np.int64(2), batch_size=np.int64(10),
                                 hidden_layer_sizes=(np.int64(3),), tied_weights=np.True_,
                                 max_epochs=2, random_state=0).fit(X)
    est.save(tmp_path / "m")
    np.testing.assert_array_equal(contractive.load(tmp_path / "m").transform(X), est.transform(X))


def _set_weights(folder: Path, blob: bytes) -> None:
    """Replace the weights and rewrite the checksum so that it matches them."""
    (folder / "model.safetensors").write_bytes(blob)
    _rewrite_config(folder, weights_sha256=hashlib.sha256(blob).hexdigest())


def _raises_naming(path: Path, *more: str):
    pattern = re.escape(str(path)) + "".join(f".*{m}" for m in more)
    return pytest.raises(ValueError, match=pattern)


@pytest.mark.parametrize("loader", [contractive.load, ContractiveAutoencoder.load])
def test_missing_folder(tmp_path, loader):
    with _raises_naming(tmp_path / "nope"):
        loader(tmp_path / "nope")
    assert os.listdir(tmp_path) == []  # loading creates nothing


def test_missing_model_json(saved):
    (saved / "model.json").unlink()
    with _raises_naming(saved, "model.json"):
        contractive.load(saved)


def test_model_json_is_a_folder(saved):
    (saved / "model.json").unlink()
    (saved / "model.json").mkdir()
    with _raises_naming(saved, "model.json"):
        contractive.load(saved)


def test_missing_weights(saved):
    (saved / "model.safetensors").unlink()
    with _raises_naming(saved / "model.safetensors", "missing"):
        contractive.load(saved)


def test_model_json_not_json(saved):
    (saved / "model.json").write_text("{this is not json")
    with _raises_naming(saved / "model.json", "JSON"):
        contractive.load(saved)


def test_model_json_not_utf8(saved):
    (saved / "model.json").write_bytes(b"\xff\xfe\x00garbage\x80")
    with _raises_naming(saved / "model.json"):
        contractive.load(saved)


@pytest.mark.parametrize("content", [
    {"format": "something.else", "format_version": 1},
    {"format_version": 1},
    ["contractive.model"],
    "contractive.model",
    None,
])
def test_model_json_of_another_format(saved, content):
    (saved / "model.json").write_text(json.dumps(content))
    with _raises_naming(saved / "model.json", "format"):
        contractive.load(saved)


@pytest.mark.parametrize("version", [cio.FORMAT_VERSION + 1, 99, "1", None])
def test_unsupported_format_version(saved, version):
    _rewrite_config(saved, format_version=version)
    with _raises_naming(saved / "model.json", "format_version"):
        contractive.load(saved)


def test_truncated_weights(saved):
    w = saved / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-17])
    with _raises_naming(w, "checksum"):
        contractive.load(saved)


@pytest.mark.parametrize("where", [0, 9, "middle", -1])
def test_flipped_byte_in_weights(saved, where):
    w = saved / "model.safetensors"
    blob = bytearray(w.read_bytes())
    i = len(blob) // 2 if where == "middle" else where
    blob[i] ^= 0x01
    w.write_bytes(bytes(blob))
    with _raises_naming(w, "checksum"):
        contractive.load(saved)


def test_truncated_weights_with_matching_checksum(saved):
    w = saved / "model.safetensors"
    _set_weights(saved, w.read_bytes()[:40])
    with _raises_naming(w):
        contractive.load(saved)


def test_garbage_weights_with_matching_checksum(saved):
    _set_weights(saved, b"\x00" * 64)
    with _raises_naming(saved / "model.safetensors"):
        contractive.load(saved)


@pytest.mark.parametrize("tensors", [
    {"foo": torch.zeros(3)},
    {"module.encoder.weight": torch.zeros(3, 6)},
])
def test_foreign_safetensors_with_correct_checksum(saved, tensors):
    _set_weights(saved, st_save(tensors))
    with _raises_naming(saved, "do not match"):
        contractive.load(saved)


def test_weights_of_wrong_shape_with_correct_checksum(tmp_path, fitted):
    """The weights of another architecture under this model's config."""
    fitted["two-layer"].save(tmp_path / "other")
    fitted["one-layer"].save(tmp_path / "m")
    _set_weights(tmp_path / "m", (tmp_path / "other" / "model.safetensors").read_bytes())
    with _raises_naming(tmp_path / "m", "do not match"):
        contractive.load(tmp_path / "m")


def test_module_config_with_unknown_key(saved):
    cfg = json.loads((saved / "model.json").read_text())
    _rewrite_config(saved, module_config={**cfg["module_config"], "bogus": 1})
    with _raises_naming(saved):
        contractive.load(saved)


def test_module_config_missing(saved):
    cfg = json.loads((saved / "model.json").read_text())
    del cfg["module_config"]
    (saved / "model.json").write_text(json.dumps(cfg))
    with _raises_naming(saved):
        contractive.load(saved)


def test_module_config_invalid_value(saved):
    cfg = json.loads((saved / "model.json").read_text())
    _rewrite_config(saved, module_config={**cfg["module_config"], "activation": "bogus"})
    with _raises_naming(saved):
        contractive.load(saved)


def test_metadata_without_params(saved):
    _rewrite_config(saved, metadata={})
    with _raises_naming(saved):
        contractive.load(saved)


def test_metadata_with_unknown_param(saved):
    cfg = json.loads((saved / "model.json").read_text())
    meta = cfg["metadata"]
    meta["params"]["bogus"] = 1
    _rewrite_config(saved, metadata=meta)
    with _raises_naming(saved):
        contractive.load(saved)


def test_missing_scaling_tensors(saved):
    module_only = {k: v for k, v in cio.load_module(saved)[0].state_dict().items()}
    _set_weights(saved, st_save({f"module.{k}": v.contiguous() for k, v in module_only.items()}))
    with _raises_naming(saved):
        contractive.load(saved)


# -- no pickle ----------------------------------------------------------------------------


def test_loading_never_unpickles(saved, fitted, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("loading a model must not unpickle")

    class ForbiddenUnpickler:
        def __init__(self, *args, **kwargs):
            forbidden()

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", ForbiddenUnpickler)
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    for loader in (contractive.load, ContractiveAutoencoder.load):
        loaded = loader(saved)
        _assert_same_outputs(fitted["one-layer"], loaded, _X(1))


def test_weights_file_is_plain_safetensors(saved):
    blob = (saved / "model.safetensors").read_bytes()
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    assert header["__metadata__"]["format"] == cio.FORMAT
    names = {k for k in header if k != "__metadata__"}
    assert {"extra.scale_offset", "extra.scale_factor"} <= names
    assert all(n.startswith(("module.", "extra.")) for n in names)
    assert b"\x80\x04" not in blob[:2]  # not a pickle protocol header


def test_pickle_still_works_for_the_estimator(fitted):
    """pickle is supported for scikit-learn's sake (it is only loading model files that
    never unpickles)."""
    est = fitted["one-layer"]
    clone = pickle.loads(pickle.dumps(est))
    _assert_same_outputs(est, clone, _X(1))


# -- atomic writes ------------------------------------------------------------------------


def test_atomic_write_bytes_writes_and_leaves_no_temp(tmp_path):
    p = tmp_path / "file.bin"
    cio.atomic_write_bytes(p, b"first")
    assert p.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["file.bin"]
    cio.atomic_write_bytes(str(p), b"second, longer")
    assert p.read_bytes() == b"second, longer"
    cio.atomic_write_bytes(p, b"")
    assert p.read_bytes() == b""
    assert os.listdir(tmp_path) == ["file.bin"]


def test_atomic_write_bytes_failed_rename_keeps_original(tmp_path, monkeypatch):
    p = tmp_path / "file.bin"
    p.write_bytes(b"original")

    def boom(*args, **kwargs):
        raise OSError("simulated failure")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        cio.atomic_write_bytes(p, b"new content")
    assert p.read_bytes() == b"original"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_atomic_write_bytes_failed_fsync_keeps_original(tmp_path, monkeypatch):
    p = tmp_path / "file.bin"
    p.write_bytes(b"original")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        cio.atomic_write_bytes(p, b"new content")
    assert p.read_bytes() == b"original"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_atomic_write_bytes_failure_on_new_file_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("simulated failure")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        cio.atomic_write_bytes(tmp_path / "new.bin", b"data")
    assert os.listdir(tmp_path) == []


def test_atomic_write_bytes_respects_umask(tmp_path):
    """The file gets the mode a plain ``open(path, "wb")`` would give (0o666 & ~umask), not
    mkstemp's private 0o600: a saved model must be as readable as any other file."""
    umask = os.umask(0o022)
    try:
        cio.atomic_write_bytes(tmp_path / "atomic.bin", b"x")
        with open(tmp_path / "plain.bin", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(umask)
    mode = stat.S_IMODE(os.stat(tmp_path / "atomic.bin").st_mode)
    expected = stat.S_IMODE(os.stat(tmp_path / "plain.bin").st_mode)
    assert oct(mode) == oct(expected)


def test_failed_save_never_loads_as_a_mixed_model(tmp_path, fitted, monkeypatch):
    """If a save dies between its two renames, the folder loads as the old model or raises;
    it never gives the new weights under the old config."""
    folder = tmp_path / "m"
    fitted["one-layer"].save(folder)
    real_replace = os.replace
    calls = []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("crash between the two renames")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(OSError):
        fitted["one-layer-tied"].save(folder)
    monkeypatch.undo()
    assert sorted(os.listdir(folder)) == ["model.json", "model.safetensors"]
    try:
        loaded = contractive.load(folder)
    except ValueError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_same_outputs(fitted["one-layer"], loaded, _X(1))


# -- a digest that was recomputed after an edit: the content is still checked ------------


def _tensors(folder: Path) -> dict:
    return st_load((folder / "model.safetensors").read_bytes())


def _save_tensors(folder: Path, tensors: dict) -> None:
    _set_weights(folder, st_save(tensors, metadata={"format": cio.FORMAT}))


@pytest.mark.parametrize("edit, words", [
    (lambda t: t["module.encoder.layers.0.weight"].fill_(float("nan")), "NaN or infinite"),
    (lambda t: t.__setitem__("extra.scale_factor", torch.zeros_like(t["extra.scale_factor"])),
     "positive factors"),
    (lambda t: t.__setitem__("module.encoder.layers.0.bias",
                             t["module.encoder.layers.0.bias"].to(torch.int64)),
     "must be floating point .it is int64"),
    (lambda t: t.__setitem__("module.encoder.layers.0.bias",
                             t["module.encoder.layers.0.bias"][:-1].clone()), "shape"),
])
def test_edited_weights_with_a_matching_digest_are_refused(saved, edit, words):
    tensors = {k: v.clone() for k, v in _tensors(saved).items()}
    edit(tensors)
    _save_tensors(saved, tensors)
    with _raises_naming(saved, words):
        contractive.load(saved)


@pytest.mark.parametrize("section, key, value, words", [
    ("params", "scaling", "bogus", "scaling"),
    ("params", "learning_rate", -1, "learning_rate"),
    ("params", "penalty_method", "zzz", "penalty_method"),
    ("fitted", "penalty_method_", "zzz", "penalty_method_"),
    ("fitted", "history_", "x", "history_"),
    ("fitted", "feature_names_in_", ["a", "b"], "feature_names_in_"),
])
def test_edited_metadata_with_a_matching_digest_is_refused(saved, section, key, value, words):
    cfg = json.loads((saved / "model.json").read_text())
    cfg["metadata"][section][key] = value
    _rewrite_config(saved, metadata=cfg["metadata"])
    with _raises_naming(saved, "not a valid contractive model file", words):
        contractive.load(saved)


@pytest.mark.parametrize("path, error, words", [
    ("", ValueError, "empty"), (3, TypeError, "str or os.PathLike"),
])
def test_save_refuses_bad_paths(fitted, path, error, words):
    with pytest.raises(error, match=words):
        fitted["one-layer"].save(path)


def test_save_below_a_file_is_a_value_error(tmp_path, fitted):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "f" / "m")) + ".*cannot create"):
        fitted["one-layer"].save(tmp_path / "f" / "m")


def test_atomic_write_into_a_missing_folder_names_the_file(tmp_path):
    target = tmp_path / "no" / "x.npy"
    with pytest.raises(OSError) as info:
        cio.atomic_write_bytes(target, b"x")
    assert info.value.filename == str(target)


def test_a_float64_module_saves_and_loads(tmp_path, fitted):
    est = copy.deepcopy(fitted["one-layer"])
    est.module_.double()
    est.save(tmp_path / "m64")
    loaded = contractive.load(tmp_path / "m64")
    assert next(loaded.module_.parameters()).dtype == torch.float32
    np.testing.assert_allclose(loaded.transform(_X()), fitted["one-layer"].transform(_X()),
                               rtol=1e-6)
