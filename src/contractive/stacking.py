"""Greedy layer-wise stacking (the paper's CAE-2): each layer a CAE on the previous codes.

    h_1 = f_1(x),  h_2 = f_2(h_1), ...        f_l trained alone, on the codes of f_{l-1}
    transform(x) = f_L(... f_1(x))            inverse_transform: g_1(... g_L(h))

Every layer is a ``ContractiveAutoencoder``: a clone of ``base`` with ``n_components`` set to
the layer's size and per-layer overrides from ``layer_params``. The stack initialises a deep
classifier through ``classifier.FineTunedClassifier(encoder=stack)``.

A fitted stack is saved as a folder: ``layer-1/`` ... ``layer-L/``, each a
``ContractiveAutoencoder.save`` folder, and ``stack.json`` (the stack's parameters and the
SHA-256 of each layer's config), written last. Loading checks every layer against those
digests, so a save cut short, or a layer folder replaced, is refused rather than mixed in.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import io
from .estimator import ContractiveAutoencoder

STACK_NAME = "stack.json"
STACK_FORMAT = "contractive.stack"
STACK_FORMAT_VERSION = 1


class StackedContractiveAutoencoder(TransformerMixin, BaseEstimator):
    """A stack of CAEs trained greedily, layer by layer.

    Parameters
    ----------
    layer_sizes : tuple of int, default=(1000, 1000)
        Code sizes, first layer first.
    base : ContractiveAutoencoder or None
        The template of every layer (``None``: the default ``ContractiveAutoencoder``).
    layer_params : list of dict or None
        Per-layer parameter overrides, e.g. ``[{}, {"contractive_weight": 0.1}]``.
    random_state : int, RandomState or None
        Seeds every layer (each gets its own seed drawn from it).

    Attributes
    ----------
    encoders_ : list of fitted ContractiveAutoencoder
    """

    def __init__(self, layer_sizes: tuple[int, ...] = (1000, 1000), base: Any = None,
                 layer_params: list[dict] | None = None, random_state: Any = None) -> None:
        self.layer_sizes = layer_sizes
        self.base = base
        self.layer_params = layer_params
        self.random_state = random_state

    def _layers(self) -> list[ContractiveAutoencoder]:
        sizes = self.layer_sizes
        if isinstance(sizes, np.ndarray) and sizes.ndim == 1:
            sizes = tuple(sizes.tolist())
        if isinstance(sizes, (numbers.Integral, str, bytes, dict)) or not sizes or any(
            isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in sizes
        ):
            raise ValueError(f"layer_sizes={sizes!r} must be a non-empty tuple of integers >= 1")
        params = self.layer_params if self.layer_params is not None else [{}] * len(sizes)
        if not isinstance(params, (list, tuple)) or len(params) != len(sizes) or not all(
            isinstance(p, dict) for p in params
        ):
            raise ValueError(
                f"layer_params must be a list of {len(sizes)} dicts (one per layer), "
                f"got {params!r}"
            )
        base = ContractiveAutoencoder() if self.base is None else self.base
        if not isinstance(base, ContractiveAutoencoder):
            raise TypeError(f"base must be a ContractiveAutoencoder, not {type(base).__name__}")
        try:
            rng = check_random_state(self.random_state)
        except ValueError:
            raise ValueError(f"random_state={self.random_state!r} must be None, an integer or a "
                             "numpy RandomState") from None
        layers = []
        for i, (size, extra) in enumerate(zip(sizes, params), 1):
            try:
                layer = clone(base).set_params(**extra)
            except ValueError as exc:  # a name the CAE does not have
                raise ValueError(f"layer_params[{i - 1}]: {exc}") from None
            layer.set_params(n_components=int(size),
                             random_state=int(rng.randint(np.iinfo(np.int32).max)))
            layers.append(layer)
        return layers

    @classmethod
    def from_encoders(cls, encoders: Sequence[ContractiveAutoencoder]
                      ) -> StackedContractiveAutoencoder:
        """A fitted stack of CAEs trained one on the codes of the other elsewhere (for
        example runs of ``contractive train`` on the output of ``contractive encode``)."""
        encoders = list(encoders)
        if not encoders:
            raise ValueError("from_encoders needs at least one fitted ContractiveAutoencoder")
        for i, enc in enumerate(encoders):
            if not isinstance(enc, ContractiveAutoencoder):
                raise TypeError(f"layer {i + 1} must be a ContractiveAutoencoder, not "
                                f"{type(enc).__name__}")
            check_is_fitted(enc)
            if i and enc.n_features_in_ != encoders[i - 1].n_components:
                raise ValueError(
                    f"layer {i + 1} takes {enc.n_features_in_} features but layer {i} gives "
                    f"{encoders[i - 1].n_components} codes"
                )
        stack = cls(layer_sizes=tuple(int(e.n_components) for e in encoders),
                    base=clone(encoders[0]))
        stack.encoders_ = encoders
        stack._set_input_attributes()
        return stack

    def _set_input_attributes(self) -> None:
        first = self.encoders_[0]
        self.n_features_in_ = first.n_features_in_
        if hasattr(first, "feature_names_in_"):
            self.feature_names_in_ = first.feature_names_in_

    def fit(self, X: Any, y: Any = None) -> StackedContractiveAutoencoder:
        """Train layer 1 on ``X``, layer 2 on layer 1's codes, and so on; ``y`` is ignored."""
        layers = self._layers()
        H = X
        self.encoders_ = []
        for layer in layers:
            H = layer.fit(H).transform(H)
            self.encoders_.append(layer)
        self._set_input_attributes()
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Codes of the last layer, ``(n, layer_sizes[-1])``."""
        check_is_fitted(self)
        for layer in self.encoders_:
            X = layer.transform(X)
        return X

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Back through every decoder, last layer first: ``(n, n_features)``."""
        check_is_fitted(self)
        for layer in reversed(self.encoders_):
            X = layer.inverse_transform(X)
        return X

    def score(self, X: Any, y: Any = None) -> float:
        """Negative mean squared error of ``X`` reconstructed through the whole stack (in the
        units of ``X``; higher is better, as scikit-learn's model selection expects)."""
        check_is_fitted(self)
        rec = self.inverse_transform(self.transform(X)).astype(np.float64)  # X as given: its
        return -float(np.mean((rec - self.encoders_[0]._check_X(X)) ** 2))  # names checked

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        return self.encoders_[-1].get_feature_names_out()

    # -- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> str:
        """Write the fitted stack to the folder ``path`` (see the module docstring); returns
        it. Layer folders of an earlier, deeper stack saved there are left but not listed."""
        check_is_fitted(self)
        folder = io._model_dir(path)
        if folder.name == STACK_NAME:  # the stack's own file named: its folder, as in load
            folder = folder.parent
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder}: exists and is not a folder; a stack is saved as a "
                             "folder")
        params = {
            "layer_sizes": [int(s) for s in self.layer_sizes],
            "layer_params": None if self.layer_params is None else [
                io.storable_params(p) for p in self.layer_params],
            "random_state": io.storable_params({"random_state": self.random_state})["random_state"],
            "base": None if self.base is None else io.storable_params(self.base.get_params()),
        }
        json.dumps(params, allow_nan=False, default=io._jsonable)  # refuse before writing
        fitted = tuple(int(e.n_components) for e in self.encoders_)
        if tuple(params["layer_sizes"]) != fitted:  # set_params after fit: load would refuse
            raise ValueError(f"layer_sizes={tuple(params['layer_sizes'])} is not the fitted "
                             f"layers' {fitted}: fit again, or set layer_sizes back")
        self._layers()  # the parameters, checked as load will check them
        layers = []
        for i, enc in enumerate(self.encoders_, 1):
            name = f"layer-{i}"
            enc.save(folder / name)
            digest = json.loads((folder / name / io.CONFIG_NAME).read_text())["config_sha256"]
            layers.append({"folder": name, "config_sha256": digest})
        meta = {**io.format_header(STACK_FORMAT, STACK_FORMAT_VERSION), "layers": layers,
                "params": params}
        meta["config_sha256"] = io._config_digest(meta)
        text = json.dumps(meta, indent=1, allow_nan=False, default=io._jsonable)
        io.atomic_write_bytes(folder / STACK_NAME, (text + "\n").encode())
        return str(folder)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto"
             ) -> StackedContractiveAutoencoder:
        """Read a stack written by ``save`` onto ``device``; never unpickles. A missing,
        damaged or inconsistent folder raises ``ValueError`` naming the file."""
        folder = io._model_dir(path)
        if folder.name == STACK_NAME:
            folder = folder.parent
        meta_path = folder / STACK_NAME
        if not meta_path.is_file():
            raise ValueError(f"{folder}: no stack here (expected {STACK_NAME}, written by "
                             "StackedContractiveAutoencoder.save)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{meta_path}: unreadable stack file ({exc})") from None
        io.check_format(meta, meta_path, STACK_FORMAT, STACK_FORMAT_VERSION,
                        "contractive stack")
        if meta.get("config_sha256") != io._config_digest(meta):
            raise ValueError(f"{meta_path}: checksum mismatch: the stack file is corrupted or "
                             "was edited")
        try:
            entries = meta["layers"]
            if not isinstance(entries, list) or not entries:
                raise ValueError("'layers' must be a non-empty list")
            encoders = []
            for i, entry in enumerate(entries, 1):
                name = entry["folder"]
                if not isinstance(name, str) or Path(name).name != name or name in ("", ".",
                                                                                    ".."):
                    raise ValueError(f"layer {i}: folder {name!r} must be a plain name")
                layer_cfg = folder / name / io.CONFIG_NAME
                try:
                    digest = json.loads(layer_cfg.read_text()).get("config_sha256")
                except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                    digest = None  # ContractiveAutoencoder.load words what is wrong
                if digest is not None and digest != entry["config_sha256"]:
                    raise ValueError(f"{layer_cfg} is not the layer {i} this stack saved "
                                     "(a save cut short, or the folder replaced); save the "
                                     "stack again")
                encoders.append(ContractiveAutoencoder.load(folder / name, device=device))
            stack = cls.from_encoders(encoders)
            params = meta["params"]
            stack.set_params(
                layer_sizes=tuple(params["layer_sizes"]),
                layer_params=[io.params_from_json(p) for p in params["layer_params"]]
                if isinstance(params["layer_params"], list)
                and all(isinstance(p, dict) for p in params["layer_params"])
                else params["layer_params"],  # (None, or wrong: _layers says so below)
                random_state=params["random_state"],
                base=None if params["base"] is None else ContractiveAutoencoder(
                    **io.params_from_json(params["base"])),
            )
            if stack.layer_sizes != tuple(int(e.n_components) for e in encoders):
                raise ValueError("its layer_sizes do not match the layers' code sizes")
            stack._layers()  # the parameters, checked as fit checks them
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{meta_path}: not a valid contractive stack ({exc!r})") from None
        except ValueError as exc:
            msg = str(exc)
            raise ValueError(msg if str(folder) in msg else f"{folder}: {msg}") from None
        return stack
