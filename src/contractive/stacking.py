"""Greedy layer-wise stacking (the paper's CAE-2): each layer a CAE on the previous codes.

    h_1 = f_1(x),  h_2 = f_2(h_1), ...        f_l trained alone, on the codes of f_{l-1}
    transform(x) = f_L(... f_1(x))            inverse_transform: g_1(... g_L(h))

Every layer is a ``ContractiveAutoencoder``: a clone of ``base`` with ``n_components`` set to
the layer's size and per-layer overrides from ``layer_params``. The stack initialises a deep
classifier through ``classifier.FineTunedClassifier(encoder=stack)``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .estimator import ContractiveAutoencoder


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
        if isinstance(sizes, numbers.Integral) or not sizes or any(
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
        rng = check_random_state(self.random_state)
        layers = []
        for size, extra in zip(sizes, params):
            layer = clone(base).set_params(**extra)
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

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        return self.encoders_[-1].get_feature_names_out()
