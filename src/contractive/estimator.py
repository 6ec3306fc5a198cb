"""``ContractiveAutoencoder``: the scikit-learn face of the library.

The estimator speaks scikit-learn (``n_components``, ``max_epochs``, ``random_state``);
``fit`` translates its parameters into a ``CAEConfig`` (the module) and a ``TrainConfig``
(the loop). All arrays in and out are NumPy, in the units of the data given to ``fit``: any
``scaling`` is applied and undone inside.
"""

from __future__ import annotations

import copy
import numbers
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    clone,
)
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from . import analysis, io
from .activations import ACTIVATIONS
from .models import LOSSES, OUTPUT_ACTIVATIONS, CAEConfig, ContractiveAutoencoderModule
from .penalty import METHODS, resolve_method
from .training import (
    OPTIMIZERS,
    PRECISIONS,
    TrainConfig,
    Trainer,
    move_unpickled,
    resolve_device,
)
from .validation import check_choice, check_float, check_float32_range, check_hidden, check_int

SCALINGS = ("none", "minmax", "standard")
#: Inference chunk: rows per chunk, and the element budget of one chunk of Jacobians.
_ROWS = 8192
#: scale factors beyond these: Jacobians in input units are taken in float64 (see
#: ``_in_input_units``); (W / 1e-12)^2 summed over a layer stays far within float32
_SAFE_SCALE = (1e-12, 1e12)
_JAC_ELEMENTS = 1 << 24


def _check_consistent(est: ContractiveAutoencoder, config: CAEConfig) -> None:
    """A loaded estimator's parameters and fitted state must describe its module."""
    pairs = {
        "n_components": (est.n_components, config.n_components),
        "hidden_layer_sizes": (check_hidden(est.hidden_layer_sizes), config.hidden_layer_sizes),
        "activation": (est.activation, config.activation),
        "output_activation": (est.output_activation, config.output_activation),
        "tied_weights": (bool(est.tied_weights), config.tied_weights),
        "loss": (est.loss, config.loss),
        "n_features_in_": (est.n_features_in_, config.in_features),
        "scale_factor": (len(est.scale_factor_), config.in_features),
        "scale_offset": (len(est.scale_offset_), config.in_features),
    }
    for name, (have, want) in pairs.items():
        if have != want:
            raise ValueError(f"{name} is {have!r} but the module has {want!r}")


def _check_loaded(est: ContractiveAutoencoder) -> None:
    """A loaded estimator's parameters pass ``fit``'s checks and its fitted state is sane
    (the file's digest only proves the file is whole, not that an editor left it valid)."""
    est._module_config(est.n_features_in_)
    est._train_config(2, 0)
    check_choice("scaling", est.scaling, SCALINGS)
    check_choice("penalty_method_", est.penalty_method_, tuple(m for m in METHODS if m != "auto"))
    check_int("n_epochs_", est.n_epochs_, 0)
    if not isinstance(est.history_, list) or not all(isinstance(h, dict) for h in est.history_):
        raise ValueError("history_ must be a list of records")
    names = getattr(est, "feature_names_in_", None)
    if names is not None and len(names) != est.n_features_in_:
        raise ValueError(f"feature_names_in_ has {len(names)} names for {est.n_features_in_} "
                         "features")
    if not (np.isfinite(est.scale_offset_).all() and np.isfinite(est.scale_factor_).all()
            and (est.scale_factor_ > 0).all()):
        raise ValueError("the scaling must be finite with positive factors")


class ContractiveAutoencoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    r"""Contractive auto-encoder (Rifai et al., ICML 2011) for non-linear dimensionality reduction.

    Minimises, over mini-batches,

    .. math::
        \frac{1}{B}\sum_b \Big[ L(x_b, g(f(x_b))) + \lambda \|J_f(x_b)\|_F^2
        + \gamma\, \mathbb{E}_\epsilon \|J_f(x_b) - J_f(x_b + \epsilon)\|_F^2 \Big]

    where ``f`` is an MLP encoder to ``n_components`` units, ``g`` a mirrored (or tied)
    decoder, ``L`` the squared error averaged over features (``mse``) or the cross-entropy
    averaged over features (``bce``), ``lambda = contractive_weight`` and
    ``gamma = higher_order_weight`` (CAE+H). ``||J||_F^2`` is summed over the Jacobian's
    entries per sample and averaged over the batch.

    Parameters
    ----------
    n_components : int, default=10
        Code size ``k``.
    hidden_layer_sizes : tuple of int, default=()
        Widths of the encoder's hidden layers (the decoder mirrors them). ``()`` gives the
        classic one-layer CAE, whose penalty has an exact closed form.
    activation : str, default="sigmoid"
        Elementwise activation of every encoder (and hidden decoder) layer: one of
        ``identity, sigmoid, tanh, relu, leaky_relu, softplus, elu, silu, gelu``.
    output_activation : {"linear", "sigmoid"}, default="linear"
        Activation of the reconstruction.
    tied_weights : bool, default=False
        Use the encoder's matrices transposed in the decoder (``W' = W^T``).
    loss : {"mse", "bce"}, default="mse"
        Reconstruction loss; ``bce`` needs ``output_activation="sigmoid"`` and data in [0, 1].
    contractive_weight : float, default=1e-3
        ``lambda``; ``0`` trains a plain auto-encoder.
    penalty_method : {"auto", "closed_form", "exact", "hutchinson"}, default="auto"
        How ``||J||_F^2`` is computed in training; ``auto`` takes the closed form for a
        one-layer encoder, the exact method for codes up to 32 units, the estimate beyond.
        The resolved choice is ``penalty_method_``.
    n_probes : int, default=4
        Rademacher probes per sample for ``hutchinson``.
    higher_order_weight : float, default=0.0
        ``gamma`` of CAE+H; ``0`` turns the term off.
    higher_order_sigma : float, default=0.1
        Standard deviation of the corruption ``eps`` (in the units the network sees).
    higher_order_copies : int, default=1
        Corrupted copies per sample in the CAE+H estimate.
    scaling : {"none", "minmax", "standard"}, default="none"
        Per-feature scaling fitted on the training data and applied inside; outputs and
        Jacobians are in the units of the input.
    optimizer : {"adam", "sgd"}, default="adam"
        ``sgd`` is stochastic gradient descent with momentum 0.9 (``torch.optim.SGD``).
    batch_size : int, default=100
    max_epochs : int, default=200
    learning_rate : float, default=3e-3
    weight_decay : float, default=0.0
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data, stop when its loss has not improved
        by ``tol`` for ``n_iter_no_change`` epochs, and keep the best weights.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
    tol : float, default=1e-4
    device : str, default="auto"
        ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    precision : {"float32", "bf16"}, default="float32"
        ``bf16`` trains under bfloat16 autocast (faster matrix products on recent GPUs);
        weights, gradients, inference and analysis stay float32.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the shuffling and the estimates; fixed, training on the
        CPU is deterministic.
    verbose : bool, default=False
        Show a progress bar.

    Attributes
    ----------
    module_ : ContractiveAutoencoderModule
    penalty_method_ : str
    history_ : list of dict
        Per epoch: ``loss``, ``reconstruction``, ``penalty`` (mean ``||J||_F^2``),
        ``higher_order`` (CAE+H), ``val_*`` with early stopping, ``time_s``.
    n_epochs_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of str, when ``X`` has feature names
    fit_time_ : float

    Examples
    --------
    >>> import numpy as np
    >>> from contractive import ContractiveAutoencoder
    >>> X = np.random.default_rng(0).random((200, 8))
    >>> cae = ContractiveAutoencoder(n_components=3, max_epochs=5, random_state=0)
    >>> cae.fit_transform(X).shape
    (200, 3)
    >>> cae.jacobian(X[:4]).shape
    (4, 3, 8)
    """

    def __init__(
        self, n_components: int = 10, *, hidden_layer_sizes: tuple[int, ...] = (),
        activation: str = "sigmoid", output_activation: str = "linear",
        tied_weights: bool = False, loss: str = "mse", contractive_weight: float = 1e-3,
        penalty_method: str = "auto", n_probes: int = 4, higher_order_weight: float = 0.0,
        higher_order_sigma: float = 0.1, higher_order_copies: int = 1, scaling: str = "none",
        optimizer: str = "adam", batch_size: int = 100, max_epochs: int = 200,
        learning_rate: float = 3e-3, weight_decay: float = 0.0, early_stopping: bool = False,
        validation_fraction: float = 0.1, n_iter_no_change: int = 10, tol: float = 1e-4,
        device: str = "auto", precision: str = "float32", random_state: Any = None,
        verbose: bool = False,
    ) -> None:
        self.n_components = n_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.output_activation = output_activation
        self.tied_weights = tied_weights
        self.loss = loss
        self.contractive_weight = contractive_weight
        self.penalty_method = penalty_method
        self.n_probes = n_probes
        self.higher_order_weight = higher_order_weight
        self.higher_order_sigma = higher_order_sigma
        self.higher_order_copies = higher_order_copies
        self.scaling = scaling
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    # -- parameter translation ------------------------------------------------------------

    def _module_config(self, n_features: int) -> CAEConfig:
        hidden = check_hidden(self.hidden_layer_sizes)
        k = check_int("n_components", self.n_components, 1)
        check_choice("activation", self.activation, tuple(sorted(ACTIVATIONS)))
        check_choice("output_activation", self.output_activation, OUTPUT_ACTIVATIONS)
        check_choice("loss", self.loss, LOSSES)
        check_choice("penalty_method", self.penalty_method, METHODS)
        if not isinstance(self.tied_weights, (bool, np.bool_)):
            raise ValueError(f"tied_weights={self.tied_weights!r} must be True or False")
        return CAEConfig(
            in_features=n_features,
            n_components=k,
            hidden_layer_sizes=hidden,
            activation=self.activation,
            output_activation=self.output_activation,
            tied_weights=bool(self.tied_weights),
            loss=self.loss,
            contractive_weight=check_float("contractive_weight", self.contractive_weight, 0),
            penalty_method=resolve_method(
                self.penalty_method, n_layers=len(hidden) + 1, n_components=k
            ),
            n_probes=check_int("n_probes", self.n_probes, 1),
            higher_order_weight=check_float("higher_order_weight", self.higher_order_weight, 0),
            higher_order_sigma=check_float(
                "higher_order_sigma", self.higher_order_sigma, 0, low_open=True
            ),
            higher_order_copies=check_int("higher_order_copies", self.higher_order_copies, 1),
        )

    def _train_config(self, n_train: int, seed: int) -> TrainConfig:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("early_stopping", "verbose"):
            if not isinstance(getattr(self, name), (bool, np.bool_, numbers.Integral)):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")
        return TrainConfig(
            batch_size=min(check_int("batch_size", self.batch_size, 1), n_train),
            max_epochs=check_int("max_epochs", self.max_epochs, 1),
            learning_rate=check_float("learning_rate", self.learning_rate, 0, low_open=True),
            optimizer=self.optimizer,
            weight_decay=check_float("weight_decay", self.weight_decay, 0),
            early_stopping=bool(self.early_stopping),
            n_iter_no_change=check_int("n_iter_no_change", self.n_iter_no_change, 1),
            tol=check_float("tol", self.tol, 0),
            precision=check_choice("precision", self.precision, PRECISIONS),
            seed=seed,
            verbose=bool(self.verbose),
        )

    # -- scaling ------------------------------------------------------------------------

    def _fit_scaling(self, X: np.ndarray) -> None:
        check_choice("scaling", self.scaling, SCALINGS)
        d = X.shape[1]
        if self.scaling == "none":
            offset, factor = np.zeros(d), np.ones(d)
        elif self.scaling == "minmax":
            offset, factor = X.min(0).astype(np.float64), np.ptp(X, 0).astype(np.float64)
        else:
            offset, factor = X.mean(0, dtype=np.float64), X.std(0, dtype=np.float64)
        factor = np.where(factor > 0, factor, 1.0)
        self.scale_offset_, self.scale_factor_ = offset, factor

    def _to_tensor(self, X: np.ndarray) -> torch.Tensor:
        scaled = (np.asarray(X, dtype=np.float64) - self.scale_offset_) / self.scale_factor_
        check_float32_range(scaled, "X" if self.scaling == "none" else "X, scaled,")
        return torch.as_tensor(scaled, dtype=torch.float32)

    @staticmethod
    def _as_out(out: np.ndarray, X: np.ndarray, *, may_overflow: bool = True) -> np.ndarray:
        """``out`` (float64) in the float dtype of ``X``; kept in float64, with a warning,
        where its values exceed float32's range (Jacobians of data in units of 1e-20, say;
        values below float32's smallest normal number are not caught: pass float64 input
        for data in units beyond 1e20). Values the float32 network computed
        (``may_overflow=False``: codes) are not scanned."""
        if X.dtype != np.float32:
            return out
        # (two reductions, no temporary: a quarter of the time of max(abs(out)))
        peak = (max(float(out.max(initial=0.0)), -float(out.min(initial=0.0)))
                if may_overflow else 0.0)
        if np.isfinite(peak) and peak > float(np.finfo(np.float32).max):
            warnings.warn(f"values up to {peak:.3g} exceed float32's range: returned in "
                          "float64 for float32 input", RuntimeWarning, stacklevel=3)
            return out
        return out.astype(np.float32)

    # -- fitting --------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> ContractiveAutoencoder:
        """Train on ``X`` of shape ``(n_samples, n_features)``; ``y`` is ignored."""
        return self._fit(X)

    def _fit(
        self, X: Any, *, callbacks: Sequence[Callable[[Trainer], None]] = (),
        resume: dict | None = None,
    ) -> ContractiveAutoencoder:
        """``fit`` with hooks: ``callbacks`` run after each epoch (checkpoints), and
        ``resume`` is a ``Trainer.state_dict()`` to continue from (same data and params)."""
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        config = self._module_config(X.shape[1])
        self._fit_scaling(X)
        x = self._to_tensor(X)
        self._check_target_range(config, x)
        rng = self._random_state()
        seed = int(rng.randint(np.iinfo(np.int32).max))
        x_train, x_val = x, None
        frac = check_float("validation_fraction", self.validation_fraction, 0, 1, low_open=True)
        if self.early_stopping:
            n_val = max(1, int(round(frac * len(x))))
            if len(x) - n_val < 1:
                raise ValueError(
                    f"validation_fraction={frac:g} leaves no training sample out of {len(x)}"
                )
            perm = torch.as_tensor(rng.permutation(len(x)))
            x_val, x_train = x[perm[:n_val]], x[perm[n_val:]]
        train_config = self._train_config(len(x_train), seed)
        device = resolve_device(self.device)

        self.module_ = ContractiveAutoencoderModule(config, seed=seed)
        self.penalty_method_ = config.penalty_method
        self.device_ = str(device)
        trainer = Trainer(self.module_, train_config, device, callbacks)
        if resume is not None:
            trainer.load_state_dict(resume)
        start = time.perf_counter()
        try:
            trainer.fit(x_train, x_val)
        finally:  # on NonFiniteLossError too: the last good weights stay usable
            self.module_.eval()
            self.history_ = trainer.history
            self.n_epochs_ = trainer.epoch
            self.stopped_early_ = trainer.stopped_early
            self.fit_time_ = time.perf_counter() - start
        return self

    def _random_state(self) -> np.random.RandomState:
        try:
            return check_random_state(self.random_state)
        except ValueError:
            raise ValueError(
                f"random_state={self.random_state!r} must be None, an integer between 0 and "
                "2**32 - 1, or a numpy RandomState"
            ) from None

    @staticmethod
    def _check_target_range(config: CAEConfig, x: torch.Tensor) -> None:
        if config.loss == "bce":
            lo, hi = float(x.min()), float(x.max())
            if lo < 0 or hi > 1:
                raise ValueError(
                    f"loss='bce' needs data in [0, 1] after scaling; X spans [{lo:g}, {hi:g}]: "
                    "use scaling='minmax' or loss='mse'"
                )

    def _preflight(self, X: Any) -> None:
        """Every check ``fit`` makes, without training or changing the estimator (so a
        command can refuse bad input before it writes anything)."""
        X = check_array(X, dtype=[np.float64, np.float32])
        config = self._module_config(X.shape[1])
        probe = clone(self)
        probe._fit_scaling(X)
        self._check_target_range(config, probe._to_tensor(X))
        self._random_state()
        check_float("validation_fraction", self.validation_fraction, 0, 1, low_open=True)
        self._train_config(len(X), 0)
        resolve_device(self.device)

    # -- inference ------------------------------------------------------------------------

    def _check_X(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32])

    def _device(self) -> torch.device:
        return next(self.module_.parameters()).device

    @torch.no_grad()
    def _map(self, x: torch.Tensor, fn, rows: int = _ROWS,
             device: torch.device | None = None) -> np.ndarray:
        dev = self._device() if device is None else device
        parts = [fn(x[i : i + rows].to(dev)).cpu() for i in range(0, max(len(x), 1), rows)]
        return torch.cat(parts).double().numpy()

    def transform(self, X: Any) -> np.ndarray:
        """Codes ``f(x)``, shape ``(n_samples, n_components)``."""
        X = self._check_X(X)
        return self._as_out(self._map(self._to_tensor(X), self.module_.encode), X,
                            may_overflow=False)

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Reconstructions ``g(h)`` from codes of shape ``(n_samples, n_components)``."""
        check_is_fitted(self)
        H = check_array(X, dtype=[np.float64, np.float32], input_name="X")
        k = self.module_.config.n_components
        if H.shape[1] != k:
            raise ValueError(
                f"X has {H.shape[1]} features, but inverse_transform expects codes of "
                f"n_components={k} features"
            )
        check_float32_range(H, "X (codes)")
        codes = torch.from_numpy(np.array(H, dtype=np.float32))  # a copy: any strides, and
        out = self._map(codes, self.module_.decode)  # read-only arrays (pandas) are taken
        return self._as_out(out * self.scale_factor_ + self.scale_offset_, H)

    def reconstruct(self, X: Any) -> np.ndarray:
        """``g(f(x))``, in the units of ``X``."""
        return self._reconstruct(self._check_X(X))

    def _reconstruct(self, X: np.ndarray) -> np.ndarray:
        out = self._map(self._to_tensor(X), lambda b: self.module_.decode(self.module_.encode(b)))
        return self._as_out(out * self.scale_factor_ + self.scale_offset_, X)

    def score(self, X: Any, y: Any = None) -> float:
        """Negative mean squared reconstruction error, over samples and features, in the
        units of ``X`` (higher is better, as scikit-learn's model selection expects)."""
        X = self._check_X(X)
        rec = self._reconstruct(X).astype(np.float64)
        return -float(np.mean((rec - X) ** 2))

    def _in_input_units(self) -> tuple[ContractiveAutoencoderModule, torch.Tensor | None,
                                       torch.dtype]:
        """The module, the scale (``None``: 1) and the dtype to differentiate with respect to
        ``x`` rather than ``z = (x - offset) / scale``: float32, or a float64 copy of the
        module where the scale is so far from 1 that ``1 / scale`` (and squares of the
        Jacobian's entries) would overflow or vanish in float32 (data in units of 1e-20,
        say)."""
        factor = self.scale_factor_
        if np.all(factor == 1.0):  # fitted state, not the scaling parameter
            return self.module_, None, torch.float32
        if factor.min() >= _SAFE_SCALE[0] and factor.max() <= _SAFE_SCALE[1]:
            scale = torch.as_tensor(factor, dtype=torch.float32, device=self._device())
            return self.module_, scale, torch.float32
        module = self._float64_module()
        scale = torch.as_tensor(factor, dtype=torch.float64, device=self._device64())
        return module, scale, torch.float64

    def _device64(self) -> torch.device:
        """Where float64 work runs: the model's device, or the CPU where that has no
        float64 (Apple's MPS)."""
        dev = self._device()
        return torch.device("cpu") if dev.type == "mps" else dev

    def _float64_module(self) -> ContractiveAutoencoderModule:
        """A float64 copy of the module on ``_device64()``, for the few computations that
        float32 cannot resolve."""
        return copy.deepcopy(self.module_).to(self._device64(), torch.float64)

    def jacobian(self, X: Any) -> np.ndarray:
        """Encoder Jacobians ``dh/dx`` at each sample, shape ``(n, n_components, n_features)``,
        with respect to the input in the units ``fit`` saw (exact)."""
        X = self._check_X(X)
        k, d = self.module_.config.n_components, X.shape[1]
        module, scale, dtype = self._in_input_units()
        rows = max(1, _JAC_ELEMENTS // (k * d))
        out = self._map(self._to_tensor(X).to(dtype), lambda b: module.jacobian(b, scale), rows,
                        device=next(module.parameters()).device)
        return self._as_out(out.reshape(len(X), k, d), X)

    def penalty(self, X: Any) -> np.ndarray:
        """Per-sample ``||J_f(x)||_F^2``, shape ``(n_samples,)``, exact whatever the training
        method, with respect to the input in the units ``fit`` saw."""
        X = self._check_X(X)
        k, d = self.module_.config.n_components, X.shape[1]
        module, scale, dtype = self._in_input_units()
        rows = max(1, _JAC_ELEMENTS // (k * d)) if self.module_.config.hidden_layer_sizes else _ROWS
        out = self._map(self._to_tensor(X).to(dtype), lambda b: module.penalty(b, scale), rows,
                        device=next(module.parameters()).device)
        return self._as_out(out, X)

    # -- manifold analysis (analysis.py) --------------------------------------------------

    def _network_jacobian(self, X: np.ndarray) -> np.ndarray:
        """Jacobians with respect to the scaled input the network sees (checked ``X``)."""
        k, d = self.module_.config.n_components, X.shape[1]
        rows = max(1, _JAC_ELEMENTS // (k * d))
        out = self._map(self._to_tensor(X), self.module_.jacobian, rows)
        return out.reshape(len(X), k, d)

    def singular_values(self, X: Any) -> np.ndarray:
        """Singular values of the encoder's Jacobian at each sample, descending:
        ``(n_samples, min(n_components, n_features))``. Taken with respect to the input the
        network sees (after ``scaling``; the input itself when ``scaling='none'``), the
        metric the penalty works in."""
        return analysis.singular_values(self._network_jacobian, self._check_X(X))

    def tangents(self, X: Any, n_tangents: int) -> np.ndarray:
        """Estimated tangent planes, ``(n_samples, n_tangents, n_features)``: the leading
        right singular vectors of the encoder's Jacobian (with respect to the input the
        network sees), as tangent vectors of the data, orthonormal rows in input units."""
        return self._tangents(self._check_X(X), n_tangents)

    def _tangents(self, X: np.ndarray, n_tangents: int) -> np.ndarray:
        """``tangents`` of a checked ``X``."""
        return analysis.tangents(self._network_jacobian, X, n_tangents, scale=self.scale_factor_)

    def local_dimension(self, X: Any, *, method: str = analysis.LOCAL_DIMENSION_METHOD,
                        energy: float = analysis.LOCAL_DIMENSION_ENERGY) -> np.ndarray:
        """Per-sample local dimension from the Jacobian's spectrum: the fewest singular
        values holding a share ``energy`` of ``sum s_i^2`` (``energy``, the default), or
        the largest gap in the log spectrum (``gap``); see ``contractive.analysis``."""
        return analysis.local_dimension(self.singular_values(X), method=method, energy=energy)

    def tangent_residual(self, X: Any, n_tangents: int, *, reference: Any = None,
                         n_neighbors: int = 20) -> np.ndarray:
        """Per sample, the share of the squared offsets to its ``n_neighbors`` nearest rows
        of ``reference`` (the other rows of ``X`` when None) that lies off
        ``tangents(X, n_tangents)``: ``(n_samples,)`` in ``[0, 1]``, lower is better. A
        check of the tangents on data whose true ones are unknown, to compare recipes at
        the same ``n_tangents``; see ``contractive.analysis.tangent_residual``."""
        X = self._check_X(X)
        if reference is not None:
            reference = self._check_X(reference)
        return analysis.tangent_residual(X, self._tangents(X, n_tangents), reference,
                                         n_neighbors=n_neighbors)

    def contraction_curve(self, X: Any, radii: Any, *, n_directions: int = 1,
                          random_state: int | None = 0) -> np.ndarray:
        """Mean contraction ratio ``||f(x + r u) - f(x)|| / r`` (``u`` uniform on the unit
        sphere, in input units) at each radius; at ``r = 0``, its limit ``E ||J u||``."""
        X = self._check_X(X)
        module64 = self._float64_module()

        def encode64(Z: np.ndarray) -> np.ndarray:
            """f in float64, so that ``f(x + r u) - f(x)`` resolves small radii (in float32
            the input's rounding, about 6e-8 of its scale, swamps ``r u`` below 1e-4 or
            so). ``_to_tensor`` still refuses inputs beyond float32's range."""
            scaled = (Z.astype(np.float64) - self.scale_offset_) / self.scale_factor_
            check_float32_range(scaled, "X" if self.scaling == "none" else "X, scaled,")
            return self._map(torch.from_numpy(scaled), module64.encode,
                             device=self._device64())

        return analysis.contraction_curve(
            encode64, self.jacobian, X, radii, n_directions=n_directions,
            random_state=random_state,
        )

    # -- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> str:
        """Write the fitted model to the folder ``path`` (safetensors + JSON); returns it."""
        check_is_fitted(self)
        params = io.storable_params(self.get_params())
        fitted = {
            "n_features_in_": int(self.n_features_in_),
            "penalty_method_": self.penalty_method_,
            "n_epochs_": int(self.n_epochs_),
            "fit_time_": float(self.fit_time_),
            "stopped_early_": bool(self.stopped_early_),
            "history_": self.history_,
        }
        if hasattr(self, "feature_names_in_"):
            fitted["feature_names_in_"] = [str(n) for n in self.feature_names_in_]
        extra = {
            "scale_offset": torch.as_tensor(self.scale_offset_),
            "scale_factor": torch.as_tensor(self.scale_factor_),
        }
        return io.save_module(path, self.module_, {"params": params, "fitted": fitted}, extra)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> ContractiveAutoencoder:
        """Read a model written by ``save`` onto ``device``; never unpickles.

        A missing, truncated, corrupted or foreign file raises ``ValueError``.
        """
        module, meta, extra = io.load_module(path)
        try:
            params = io.params_from_json(meta["params"])
            est = cls(**params)
            fitted = meta["fitted"]
            for name in ("n_features_in_", "penalty_method_", "n_epochs_", "fit_time_",
                         "stopped_early_", "history_"):
                setattr(est, name, fitted[name])
            if "feature_names_in_" in fitted:
                est.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
            est.scale_offset_ = extra["scale_offset"].double().numpy()
            est.scale_factor_ = extra["scale_factor"].double().numpy()
            _check_consistent(est, module.config)
            _check_loaded(est)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a valid contractive model file ({exc})") from None
        dev = resolve_device(device)
        est.module_ = module.to(dev).eval()
        est.device_ = str(dev)
        return est

    # -- scikit-learn plumbing ------------------------------------------------------------

    @property
    def _n_features_out(self) -> int:
        return self.module_.config.n_components

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def __getstate__(self) -> dict:
        """The state with the module on the CPU, so that the pickle loads without a GPU,
        and the device it was on under ``_module_device`` (``__setstate__`` takes it out)."""
        state = dict(super().__getstate__())  # (on Python >= 3.11, __dict__ itself)
        if "module_" in state and self._device().type != "cpu":
            module = ContractiveAutoencoderModule(self.module_.config)
            module.load_state_dict({k: v.cpu() for k, v in self.module_.state_dict().items()})
            state["module_"] = module.eval()
            state["_module_device"] = str(self._device())
        return state

    def __setstate__(self, state: dict) -> None:
        """Back onto the device it was pickled from where this machine has it, else the
        CPU, with ``device_`` saying so (``training.move_unpickled``)."""
        state = dict(state)
        device = state.pop("_module_device", None)
        super().__setstate__(state)
        if device is not None and move_unpickled(self.module_, device).type == "cpu":
            self.device_ = "cpu"
