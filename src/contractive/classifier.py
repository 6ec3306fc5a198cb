"""Supervised fine-tuning: an MLP classifier initialised from trained encoders.

    z     = (x - offset) / scale                                  the first encoder's scaling
    h     = s(W_L ... s(W_1 z + b_1) ... + b_L)                   copied from the encoder(s)
    p(y|x) = softmax(V h + c)                                     a new softmax layer

Optional dropout in training (Srivastava et al., 2014): each unit of the input (rate
``input_dropout``) and of every hidden layer (rate ``dropout``) is zeroed with that
probability and the rest scaled by ``1 / (1 - rate)``, so evaluation uses the whole net as is.

Every weight (encoder layers included) is trained on the labels by cross-entropy; the
validation error picks the epoch (early stopping) and drives the learning-rate schedule.
With ``encoder=None`` the same MLP starts from random (Glorot) weights: the paper's
"random initialisation" baseline.

A fitted classifier is saved as a folder (``save`` / ``load``): ``classifier.safetensors``
(the MLP's weights, the encoder's among them) and ``classifier.json`` (the architecture, the
labels, the parameters and fitted attributes, with checksums), as ``contractive.io`` writes
models.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.frozen import FrozenEstimator  # scikit-learn >= 1.6, the minimum supported
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
from torch import nn

from . import io
from .activations import ACTIVATIONS
from .estimator import ContractiveAutoencoder
from .models import glorot_init_
from .stacking import StackedContractiveAutoencoder
from .tangentprop import directional_derivatives, leading_tangents
from .training import OPTIMIZERS, SCHEDULES, TrainConfig, Trainer, move_unpickled, resolve_device
from .validation import check_choice, check_float, check_hidden, check_int

Tensor = torch.Tensor

#: parameters added after classifiers were first pickled, with the values that keep an older
#: pickle's behaviour (filled in on unpickling, for the estimator and its module)
_ADDED_PARAMS = {"adversarial_weight": 0.0, "adversarial_epsilon": 0.1,
                 "adversarial_norm": "inf"}
CLASSIFIER_FORMAT = "contractive.classifier"
CLASSIFIER_FORMAT_VERSION = 1
CLASSIFIER_WEIGHTS = "classifier.safetensors"
CLASSIFIER_CONFIG = "classifier.json"
#: what ``save`` records of a fit, when the fit set it
_FITTED = ("n_features_in_", "n_epochs_", "fit_time_", "history_", "best_epoch_",
           "best_validation_error_", "tangents_time_")


@dataclass
class EncoderLayers:
    """An encoder as plain arrays: ``h = s(W_L ... s(W_1 (x - offset) / scale + b_1) ...)``.

    weights[l]: ``(n_l, n_{l-1})``; biases[l]: ``(n_l,)``; offset, scale: ``(d,)``.
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    activation: str
    offset: np.ndarray
    scale: np.ndarray


def _encoder_parts(encoder: Any) -> list[Any]:
    """The fitted ``ContractiveAutoencoder`` layers of ``encoder`` (one, or a stack's), with a
    ``FrozenEstimator`` unwrapped; one clear error when it is none of those, or unfitted."""
    frozen = isinstance(encoder, FrozenEstimator)
    inner = encoder.estimator if frozen else encoder
    parts = getattr(inner, "encoders_", None)
    if parts is None and hasattr(inner, "module_"):
        parts = [inner]
    if parts:
        return list(parts)
    name = type(inner).__name__
    if isinstance(inner, (ContractiveAutoencoder, StackedContractiveAutoencoder)):
        hint = ("fit it before wrapping it in FrozenEstimator" if frozen else
                "fit it first; for clone, cross_val_score or GridSearchCV (which replace it "
                "with an unfitted copy), pass FrozenEstimator(encoder), from sklearn.frozen")
        raise ValueError(f"encoder {name} is not fitted: {hint}")
    shown = f"FrozenEstimator({name})" if frozen else name
    raise TypeError(
        "encoder must be a fitted ContractiveAutoencoder or StackedContractiveAutoencoder "
        f"(optionally wrapped in sklearn.frozen.FrozenEstimator) or None, not {shown}"
    )


def encoder_layers(encoder: Any) -> EncoderLayers:
    """The layers of a fitted ``ContractiveAutoencoder`` or ``StackedContractiveAutoencoder``,
    or of one wrapped in ``sklearn.frozen.FrozenEstimator``.

    In a stack, the scaling of every layer after the first is folded into its weights:
    ``W (h - o) / s + b = (W / s) h + (b - W (o / s))``, exact.
    """
    parts = _encoder_parts(encoder)
    weights: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    activations = {p.module_.config.activation for p in parts}
    if len(activations) != 1:
        raise ValueError(f"the stacked encoders use different activations: {sorted(activations)}")
    for i, part in enumerate(parts):
        check_is_fitted(part)
        layers = part.module_.encoder.layers
        for j, layer in enumerate(layers):
            W = layer.weight.detach().cpu().double().numpy()
            b = layer.bias.detach().cpu().double().numpy()
            if i > 0 and j == 0:
                W, b = W / part.scale_factor_, b - W @ (part.scale_offset_ / part.scale_factor_)
            weights.append(W)
            biases.append(b)
    first = parts[0]
    return EncoderLayers(weights, biases, activations.pop(), first.scale_offset_.copy(),
                         first.scale_factor_.copy())


def _dropout(h: Tensor, rate: float, generator: torch.Generator | None,
             t: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Zero each entry of ``h`` ``(B, k)`` with probability ``rate`` (drawn from ``generator``)
    and scale the rest by ``1 / (1 - rate)``: ``E[out] = h``. Directional derivatives ``t``
    ``(B, P, k)``, when given, get the same mask (the derivative of the thinned net)."""
    if rate == 0.0:
        return h, t
    keep = torch.rand(h.shape, generator=generator, device=h.device, dtype=h.dtype) >= rate
    if t is not None:
        t = t * keep.unsqueeze(1) / (1.0 - rate)
    return h * keep / (1.0 - rate), t


class ClassifierModule(nn.Module):
    """MLP with a softmax head; ``forward(x, y)`` returns ``loss`` (mean cross-entropy) and
    ``error`` (the share of misclassified rows), both scalars. In training mode, dropout at
    rates ``input_dropout`` (on ``x``) and ``dropout`` (on each hidden layer's output).

    ``forward(x, y, tangents)`` in training mode with ``tangent_weight`` beta > 0 adds the
    Manifold Tangent Classifier's term (``contractive.tangentprop``), reported as ``tangent``:
    ``beta * mean_b sum_i ||(dp/dx) u_i||^2`` over the rows ``u_i`` of ``tangents[b]``
    ``(B, m, d)``; with ``tangent_probes`` P > 0, estimated without bias from P random
    combinations ``v = a^T tangents[b]``, ``a ~ N(0, I_m)``, per row (``mean_P ||(dp/dx) v||^2``;
    each direction, a probe or a tangent, costs about one forward pass of the net more).

    With ``adversarial_weight`` w > 0, in training mode, adversarial training (Goodfellow et
    al., 2015): the cross-entropy becomes ``(1 - w) CE(x) + w CE(x + s * r)``, ``s`` the input
    scale and ``r`` the fast-gradient step of size ``adversarial_epsilon`` eps in the scaled
    input ``z = (x - offset) / s``: ``r = eps * sign(g)`` (``adversarial_norm="inf"``) or
    ``r = eps * g / ||g||_2`` (``"l2"``), ``g = dCE(x)/dz`` per row, held constant (no
    gradient flows through ``r``). ``CE(x + s * r)`` is reported as ``adversarial``. ``g`` is
    taken through the step's dropout masks (so with input dropout, the zeroed inputs get no
    sign step); the second pass draws masks of its own. A step costs about 2.2x one without
    the term on a CPU (one more forward pass, and two more backward passes: the input's
    gradient, then the second pass's).
    """

    def __init__(self, sizes: list[int], n_classes: int, activation: str, seed: int = 0,
                 dropout: float = 0.0, input_dropout: float = 0.0, tangent_weight: float = 0.0,
                 tangent_probes: int = 0, adversarial_weight: float = 0.0,
                 adversarial_epsilon: float = 0.0, adversarial_norm: str = "inf") -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], n_classes)
        self.activation = activation
        self.dropout = float(dropout)
        self.input_dropout = float(input_dropout)
        self.tangent_weight = float(tangent_weight)
        self.tangent_probes = int(tangent_probes)
        self.adversarial_weight = float(adversarial_weight)
        self.adversarial_epsilon = float(adversarial_epsilon)
        self.adversarial_norm = check_choice("adversarial_norm", adversarial_norm, ("inf", "l2"))
        self.register_buffer("input_offset", torch.zeros(sizes[0]))
        self.register_buffer("input_scale", torch.ones(sizes[0]))
        glorot_init_(self, seed)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for name, default in _ADDED_PARAMS.items():  # pickled before they existed
            self.__dict__.setdefault(name, default)

    def load_encoder(self, layers: EncoderLayers, *, offset: bool = True) -> None:
        """Copy an encoder's weights, biases and input scaling into the hidden layers
        (``offset=False``: all but the offset, which the caller subtracts from ``x``)."""
        with torch.no_grad():
            for layer, W, b in zip(self.layers, layers.weights, layers.biases, strict=True):
                layer.weight.copy_(torch.as_tensor(W))
                layer.bias.copy_(torch.as_tensor(b))
            self.input_offset.copy_(torch.as_tensor(layers.offset if offset else
                                                    np.zeros_like(layers.offset)))
            self.input_scale.copy_(torch.as_tensor(layers.scale))

    @property
    def graph_safe(self) -> bool:
        """No host syncs, and random draws only from the generator given: CUDA graphs may
        capture a step (with dropout, where torch can register that generator). Adversarial
        training's inner gradient (``torch.autograd.grad``, then elementwise ops) is captured
        with the rest of the step; where a capture fails, the trainer warns and steps
        eagerly."""
        return True

    @property
    def draws_random(self) -> bool:
        """Whether a training step draws dropout masks (or tangent probes)."""
        return (self.dropout > 0.0 or self.input_dropout > 0.0
                or (self.tangent_weight > 0.0 and self.tangent_probes > 0))

    def logits(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(B, d) -> (B, n_classes)``; dropout (from ``generator``) in training mode."""
        return self._propagate(x, None, generator)[0]

    def _propagate(self, x: Tensor, v: Tensor | None, generator: torch.Generator | None
                   ) -> tuple[Tensor, Tensor | None]:
        """Logits ``(B, C)`` and, with directions ``v`` ``(B, P, d)``, their derivatives along
        them ``(B, P, C)`` (forward mode: ``t <- s'(z) * (t W^T)`` layer by layer)."""
        act = ACTIVATIONS[self.activation]
        drop = self.training
        h = (x - self.input_offset) / self.input_scale
        t = None if v is None else v / self.input_scale
        if drop:
            h, t = _dropout(h, self.input_dropout, generator, t)
        for layer in self.layers:
            z = layer(h)
            h = act.fn(z)
            if t is not None:
                t = (t @ layer.weight.T) * act.derivative(z, h).unsqueeze(1)
            if drop:
                h, t = _dropout(h, self.dropout, generator, t)
        return self.head(h), (None if t is None else t @ self.head.weight.T)

    def forward(self, x: Tensor, y: Tensor, tangents: Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        if isinstance(tangents, torch.Generator):  # forward(x, y, generator) before tangents
            raise TypeError("ClassifierModule.forward: pass the generator by keyword "
                            "(generator=...); the third argument is the tangents")
        adversarial = self.training and self.adversarial_weight > 0.0
        if adversarial:  # a leaf of its own: the fast-gradient step needs dCE/dx
            x = x.detach().requires_grad_(True)
        if tangents is None or self.tangent_weight == 0.0 or not self.training:
            logits = self.logits(x, generator)
            terms = {"loss": F.cross_entropy(logits, y)}
        else:
            v = tangents
            if self.tangent_probes:
                a = torch.randn((x.shape[0], self.tangent_probes, tangents.shape[1]),
                                generator=generator, device=x.device, dtype=x.dtype)
                v = a @ tangents  # (B, P, d)
            logits, dlogits = self._propagate(x, v, generator)
            sq = directional_derivatives(logits, dlogits).square().sum(-1)  # (B, P)
            tangent = (sq.mean(1) if self.tangent_probes else sq.sum(1)).mean()
            terms = {"loss": F.cross_entropy(logits, y) + self.tangent_weight * tangent,
                     "tangent": tangent}
        if adversarial:
            terms.update(self._adversarial(x, y, logits, terms["loss"], generator))
        terms["error"] = (logits.argmax(1) != y).float().mean()
        return terms

    def forward_backward(self, x: Tensor, y: Tensor, tangents: Tensor | None = None,
                         generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``forward`` then the loss's gradient accumulated into the parameters' ``.grad``
        (the terms, detached). Only into the parameters: with adversarial training ``x`` is a
        leaf that requires grad, and a plain ``backward()`` would also form its gradient, one
        ``(B, n_1) x (n_1, d)`` product a step that nothing reads (15% of a 784-1000-10 step
        with dropout on one CPU thread, ``benchmarks/finetune_steps.py``; the parameters'
        gradients are the same). The backward runs outside any autocast the trainer opened
        for the forward pass."""
        terms = self(x, y, tangents, generator=generator)
        params = [p for p in self.parameters() if p.requires_grad]
        if params:  # all frozen: nothing to train
            with torch.autocast(x.device.type, enabled=False):
                terms["loss"].backward(inputs=params)
        return {k: v.detach() for k, v in terms.items()}

    def _adversarial(self, x: Tensor, y: Tensor, logits: Tensor, loss: Tensor,
                     generator: torch.Generator | None) -> dict[str, Tensor]:
        """``loss`` with its cross-entropy on ``x`` ``(B, d)`` (a leaf that requires grad)
        mixed with the cross-entropy at the fast-gradient step from ``x`` (see the class)."""
        ce = F.cross_entropy(logits, y)
        (g,) = torch.autograd.grad(ce, x, retain_graph=True)
        g = g * self.input_scale  # dCE/dz, z = (x - offset) / scale
        if self.adversarial_norm == "inf":
            r = torch.sign(g)
        else:  # each row over its largest entry first: squares of tiny entries underflow
            top = g.abs().amax(1, keepdim=True)
            g = torch.where(top > 0, g / torch.where(top > 0, top, 1.0), 0.0)
            r = g / torch.linalg.vector_norm(g, dim=1, keepdim=True).clamp_min(1e-30)
        x_adv = x.detach() + (self.adversarial_epsilon * self.input_scale) * r
        adv = F.cross_entropy(self.logits(x_adv, generator), y)
        w = self.adversarial_weight
        return {"loss": loss + w * (adv - ce), "adversarial": adv}


class FineTunedClassifier(ClassifierMixin, BaseEstimator):
    """MLP classifier initialised from a trained (stacked) encoder, fine-tuned on labels.

    Parameters
    ----------
    encoder : fitted ContractiveAutoencoder or StackedContractiveAutoencoder, or None
        Its layers (and input scaling) initialise the hidden layers; ``None`` draws them at
        random with ``hidden_layer_sizes`` and ``activation``. The encoder is not modified.
        May be wrapped in ``sklearn.frozen.FrozenEstimator``, which ``clone`` (and so
        ``cross_val_score``, ``GridSearchCV``) keeps as is: a plain encoder is cloned into an
        unfitted copy there, which ``fit`` refuses (see the example below).
    hidden_layer_sizes : tuple of int >= 1, default=(1000,)
        The hidden layers (at least one) when ``encoder`` is None; ignored with an encoder,
        whose layers are used.
    activation : str, default="sigmoid"
        The hidden layers' activation (a name in ``contractive.activations.ACTIVATIONS``) when
        ``encoder`` is None. Always checked to be a known name, but ignored with an encoder,
        whose activation is used.
    dropout : float in [0, 1), default=0.0
        Dropout rate on every hidden layer's output during training (0: none).
    input_dropout : float in [0, 1), default=0.0
        Dropout rate on the input during training.
    tangent_weight : float >= 0, default=0.0
        beta of the Manifold Tangent Classifier (``contractive.tangentprop``): the loss gains
        ``beta * mean_b sum_i ||(dp/dx)(x_b) u_i(x_b)||^2``, ``p`` the softmax outputs and
        ``u_1 .. u_m`` the leading right singular vectors of the *encoder's* Jacobian at each
        training row (its tangent plane, computed once before training). Needs an encoder.
    n_tangents : int >= 1, default=15
        m, the tangents per training row when ``tangent_weight > 0``: at most the number of
        features and the encoder's narrowest layer. They are held for the whole fit (``n * m *
        d`` floats on the device: 2.35 GB for 50,000 MNIST rows and m = 15).
    tangent_probes : int >= 0, default=0
        0: the term exactly, over all m tangents (each costs about one forward pass of the
        net per step, and its backward); P > 0: an unbiased estimate from P random
        combinations of them per row.
    adversarial_weight : float in [0, 1], default=0.0
        w of adversarial training (Goodfellow et al., 2015): the cross-entropy on each batch
        becomes ``(1 - w) CE(x) + w CE(x + r)``, ``r`` a fast-gradient step that raises the
        cross-entropy (0: off). Each step costs about 2.2x one without it.
    adversarial_epsilon : float > 0, default=0.1
        The step's size, in the units of the input as the net takes it (after the encoder's
        scaling; for MNIST pixels in [0, 1] with no scaling, pixel units).
    adversarial_norm : {"inf", "l2"}, default="inf"
        ``"inf"``: ``r = eps * sign(g)`` (the fast gradient sign method); ``"l2"``:
        ``r = eps * g / ||g||_2``; ``g`` the cross-entropy's gradient at the row.
    optimizer : {"sgd", "adam"}, default="sgd"
        SGD with (Nesterov) ``momentum``, as is usual for fine-tuning.
    learning_rate, momentum, nesterov, weight_decay, batch_size, max_epochs
    lr_schedule : {"plateau", "constant"}, default="plateau"
        ``plateau`` halves the learning rate after ``lr_patience`` epochs without a lower
        validation error (down to 1e-5).
    n_iter_no_change : int, default=10
        Early stopping: training ends after this many epochs without a lower validation
        error, and the weights of the best epoch are kept.
    validation_fraction : float, default=0.1
        Share of ``X`` held out for validation when ``fit`` gets no ``X_val``.
    device, random_state, verbose : as ``ContractiveAutoencoder``.

    Examples
    --------
    Model selection clones the classifier and every parameter, so a fitted encoder would be
    replaced by an unfitted copy: wrap it in ``FrozenEstimator``, which is kept (never
    refitted) through ``clone``, ``cross_val_score`` and ``GridSearchCV``.

    >>> import numpy as np
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn.model_selection import GridSearchCV
    >>> from contractive import ContractiveAutoencoder, FineTunedClassifier
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.random((60, 8)), np.arange(60) % 2
    >>> cae = ContractiveAutoencoder(n_components=4, max_epochs=2, random_state=0,
    ...                              device="cpu").fit(X)
    >>> clf = FineTunedClassifier(FrozenEstimator(cae), max_epochs=2, device="cpu")
    >>> search = GridSearchCV(clf, {"dropout": [0.0, 0.2]}, cv=2).fit(X, y)
    >>> search.best_estimator_.encoder.estimator is cae
    True
    """

    def __init__(
        self, encoder: Any = None, *, hidden_layer_sizes: tuple[int, ...] = (1000,),
        activation: str = "sigmoid", dropout: float = 0.0, input_dropout: float = 0.0,
        tangent_weight: float = 0.0, n_tangents: int = 15, tangent_probes: int = 0,
        adversarial_weight: float = 0.0, adversarial_epsilon: float = 0.1,
        adversarial_norm: str = "inf", optimizer: str = "sgd", learning_rate: float = 0.05,
        momentum: float = 0.9, nesterov: bool = True, weight_decay: float = 0.0,
        batch_size: int = 100, max_epochs: int = 100, lr_schedule: str = "plateau",
        lr_patience: int = 3, n_iter_no_change: int = 10, validation_fraction: float = 0.1,
        device: str = "auto", random_state: Any = None, verbose: bool = False,
    ) -> None:
        self.encoder = encoder
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.input_dropout = input_dropout
        self.tangent_weight = tangent_weight
        self.n_tangents = n_tangents
        self.tangent_probes = tangent_probes
        self.adversarial_weight = adversarial_weight
        self.adversarial_epsilon = adversarial_epsilon
        self.adversarial_norm = adversarial_norm
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.lr_schedule = lr_schedule
        self.lr_patience = lr_patience
        self.n_iter_no_change = n_iter_no_change
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _hidden_sizes(self) -> tuple[int, ...]:
        """``hidden_layer_sizes`` checked: at least one layer (without an encoder, the net's
        only hidden layers)."""
        try:
            sizes = check_hidden(self.hidden_layer_sizes)
        except ValueError:
            sizes = ()
        if not sizes:
            raise ValueError(f"hidden_layer_sizes={self.hidden_layer_sizes!r} must be a "
                             "non-empty tuple of integers >= 1, e.g. (1000,) or (256, 64)")
        return sizes

    def _check_architecture(self) -> None:
        """``activation`` is always checked (even when the encoder's is used);
        ``hidden_layer_sizes`` only without an encoder, and the encoder is checked to be a
        fitted one."""
        check_choice("activation", self.activation, tuple(sorted(ACTIVATIONS)))
        if self.encoder is None:
            self._hidden_sizes()
        else:
            _encoder_parts(self.encoder)

    def _layers(self, n_features: int) -> tuple[list[int], str, EncoderLayers | None]:
        self._check_architecture()
        if self.encoder is None:
            return [n_features, *self._hidden_sizes()], self.activation, None
        layers = encoder_layers(self.encoder)
        d = layers.weights[0].shape[1]
        if d != n_features:
            raise ValueError(f"X has {n_features} features but the encoder was fitted on {d}")
        trained = getattr(_encoder_parts(self.encoder)[0], "feature_names_in_", None)
        names = getattr(self, "feature_names_in_", None)  # set by fit from a DataFrame
        if trained is not None and names is not None and list(trained) != list(names):
            i = next(i for i, (a, b) in enumerate(zip(names, trained)) if a != b)
            raise ValueError(f"X's column {i + 1} is {names[i]!r} where the encoder was fitted "
                             f"on {trained[i]!r}: give X the encoder's columns, in its order")
        sizes = [d, *(W.shape[0] for W in layers.weights)]
        return sizes, layers.activation, layers

    def _train_config(self, n_train: int, seed: int, early: bool) -> TrainConfig:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("lr_schedule", self.lr_schedule, SCHEDULES)
        for name in ("nesterov", "verbose"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")
        return TrainConfig(
            batch_size=min(check_int("batch_size", self.batch_size, 1), n_train),
            max_epochs=check_int("max_epochs", self.max_epochs, 1),
            learning_rate=check_float("learning_rate", self.learning_rate, 0, low_open=True),
            optimizer=self.optimizer,
            momentum=check_float("momentum", self.momentum, 0, 1),
            nesterov=bool(self.nesterov) and self.optimizer == "sgd",
            weight_decay=check_float("weight_decay", self.weight_decay, 0),
            early_stopping=early,
            n_iter_no_change=check_int("n_iter_no_change", self.n_iter_no_change, 1),
            tol=0.0,
            monitor="error",
            lr_schedule=self.lr_schedule if early else "constant",
            lr_patience=check_int("lr_patience", self.lr_patience, 0),
            seed=seed,
            verbose=bool(self.verbose),
        )

    def _preflight(self, n_train: int) -> None:
        """Every parameter check ``fit`` makes, without training (for the CLI)."""
        self._check_architecture()
        self._train_config(n_train, 0, early=True)
        self._dropout_rates()
        self._tangent_settings()
        self._adversarial_settings()

    def _dropout_rates(self) -> dict[str, float]:
        return {name: check_float(name, getattr(self, name), 0, 1)
                for name in ("dropout", "input_dropout")}

    def _adversarial_settings(self) -> dict[str, Any]:
        weight = check_float("adversarial_weight", self.adversarial_weight, 0, 1,
                             high_closed=True)
        norm = check_choice("adversarial_norm", self.adversarial_norm, ("inf", "l2"))
        eps = check_float("adversarial_epsilon", self.adversarial_epsilon, 0,
                          low_open=weight > 0)
        return {"adversarial_weight": weight, "adversarial_epsilon": eps,
                "adversarial_norm": norm}

    def _tangent_settings(self) -> dict[str, float]:
        settings = {"tangent_weight": check_float("tangent_weight", self.tangent_weight, 0),
                    "tangent_probes": check_int("tangent_probes", self.tangent_probes, 0)}
        m = check_int("n_tangents", self.n_tangents, 1)
        if settings["tangent_weight"] > 0:
            if self.encoder is None:
                raise ValueError(f"tangent_weight={self.tangent_weight!r} needs an encoder, "
                                 "whose Jacobian gives the tangents; use tangent_weight=0 "
                                 "without one")
            layers = [lay for part in _encoder_parts(self.encoder)
                      for lay in part.module_.encoder.layers]
            narrowest = min(layers[0].weight.shape[1], *(lay.weight.shape[0] for lay in layers))
            if m > narrowest:
                raise ValueError(f"n_tangents={m} must be between 1 and {narrowest}, the "
                                 "smaller of the input's features and the encoder's narrowest "
                                 "layer; give a smaller n_tangents (--n-tangents)")
        return settings

    def _tangents(self, layers: EncoderLayers, x: Tensor, device: torch.device, seed: int
                  ) -> Tensor:
        """The encoder's leading ``n_tangents`` tangents at each row of ``x`` (rows shifted by
        ``input_offset_`` already), ``(n, m, d)``."""
        start = time.perf_counter()
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        # a stream of its own, apart from the trainer's (seed + 1 + epoch on resuming)
        own = int(np.random.SeedSequence([seed, 3]).generate_state(1)[0])
        gen = torch.Generator(device=device).manual_seed(own)
        tangents = leading_tangents(
            [as_t(W) for W in layers.weights], [as_t(b) for b in layers.biases],
            layers.activation, as_t(np.zeros_like(layers.offset)), as_t(layers.scale), x,
            self.n_tangents, generator=gen)
        self.tangents_time_ = time.perf_counter() - start
        return tangents

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> FineTunedClassifier:
        """Fine-tune on ``X`` ``(n, d)`` with labels ``y`` ``(n,)``; validate on
        ``(X_val, y_val)`` when given, else on ``validation_fraction`` of ``X``."""
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has {len(self.classes_)} class; a classifier needs at least 2")
        sizes, activation, layers = self._layers(X.shape[1])
        rng = self._rng()
        seed = int(rng.randint(np.iinfo(np.int32).max))
        # the encoder's offset is subtracted here, in float64: in float32 it would swallow
        # the digits of data far from 0 (x near 1e6 keeps 0.06 of resolution)
        offset = (np.zeros(X.shape[1]) if layers is None
                  else np.asarray(layers.offset, dtype=np.float64))
        x = self._shifted(X, offset)
        t = torch.tensor(codes, dtype=torch.int64)
        if (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val, or neither")
        if X_val is not None:
            X_val = validate_data(self, X_val, reset=False, dtype=[np.float32, np.float64])
            y_val = np.asarray(y_val)
            if y_val.ndim == 2 and y_val.shape[1] == 1:
                y_val = column_or_1d(y_val, warn=True)  # as validate_data treats y
            if y_val.ndim != 1:
                raise ValueError(f"y_val of shape {y_val.shape} must be 1-D: one label per row "
                                 "of X_val")
            if len(y_val) != len(X_val):
                raise ValueError(f"X_val has {len(X_val)} rows but y_val has {len(y_val)}")
            try:
                unknown = np.setdiff1d(y_val, self.classes_)
            except TypeError:  # labels of another kind (None among numbers, say)
                raise ValueError(f"y_val of dtype {y_val.dtype} cannot be compared with the "
                                 f"labels of y ({self.classes_.dtype})") from None
            if len(unknown):
                raise ValueError(f"y_val has labels not in y: {unknown[:5].tolist()}")
            train = (x, t)
            val = (self._shifted(X_val, offset),
                   torch.as_tensor(np.searchsorted(self.classes_, y_val), dtype=torch.int64))
        else:
            frac = check_float("validation_fraction", self.validation_fraction, 0, 1)
            n_val = int(round(frac * len(x)))
            if n_val and len(x) - n_val < 1:
                raise ValueError(f"validation_fraction={frac:g} leaves no training row")
            perm = torch.as_tensor(rng.permutation(len(x)))
            train = (x[perm[n_val:]], t[perm[n_val:]])
            val = (x[perm[:n_val]], t[perm[:n_val]]) if n_val else None
        config = self._train_config(len(train[0]), seed, early=val is not None)
        rates = self._dropout_rates()
        tangent = self._tangent_settings()
        adversarial = self._adversarial_settings()
        device = resolve_device(self.device)
        self.input_offset_ = offset  # set with module_: a fit that fails before leaves both
        self.module_ = ClassifierModule(sizes, len(self.classes_), activation, seed=seed,
                                        **rates, **tangent, **adversarial)
        if layers is not None:
            self.module_.load_encoder(layers, offset=False)
        self.__dict__.pop("tangents_time_", None)  # from an earlier fit with tangents
        if tangent["tangent_weight"] > 0:
            train = (*train, self._tangents(layers, train[0], device, seed))
        trainer = Trainer(self.module_, config, device)
        start = time.perf_counter()
        try:
            trainer.fit(train, val)
        finally:
            self.module_.eval()
            self.history_ = trainer.history
            self.n_epochs_ = trainer.epoch
            self.fit_time_ = time.perf_counter() - start
        if val is not None:
            errors = [h["val_error"] for h in self.history_]
            self.best_epoch_ = int(np.argmin(errors)) + 1
            self.best_validation_error_ = float(min(errors))
        return self

    def _shifted(self, X: np.ndarray, offset: np.ndarray | None = None) -> Tensor:
        """``x - offset`` (default ``input_offset_``), computed in float64, as the float32
        rows the MLP takes (a new, contiguous array: any strides of ``X`` will do)."""
        if offset is None:  # none: pickled by an older version, whose module holds it
            offset = getattr(self, "input_offset_", 0.0)
        X = np.asarray(X)
        out = np.empty(X.shape, dtype=np.float32)
        # computed in float64 buffer by buffer, stored as float32: no float64 copy of X
        np.subtract(X, offset, out=out, dtype=np.float64, casting="unsafe")
        return torch.from_numpy(out)

    def _rng(self) -> np.random.RandomState:
        try:
            return check_random_state(self.random_state)
        except ValueError:
            raise ValueError(f"random_state={self.random_state!r} must be None, an integer or "
                             "a numpy RandomState") from None

    @torch.no_grad()
    def _logits(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        dev = next(self.module_.parameters()).device
        x = self._shifted(X)
        parts = [self.module_.logits(x[i : i + 8192].to(dev)).cpu()
                 for i in range(0, max(len(x), 1), 8192)]
        return torch.cat(parts).double().numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, ``(n, n_classes)``, columns in the order of ``classes_``."""
        logits = self._logits(X)
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, ``(n,)``."""
        logits = self._logits(X)  # checks that the model is fitted first
        return self.classes_[logits.argmax(1)]

    def error(self, X: Any, y: Any) -> float:
        """Share of misclassified rows: ``1 - score(X, y)``."""
        return 1.0 - self.score(X, y)

    # -- persistence ----------------------------------------------------------------------

    def __getstate__(self) -> dict:
        """The state with the MLP on the CPU, so that the pickle loads without a GPU, and
        the device it was on under ``_module_device`` (``__setstate__`` takes it out)."""
        state = dict(super().__getstate__())  # (on Python >= 3.11, __dict__ itself)
        module = state.get("module_")
        if module is not None and next(module.parameters()).device.type != "cpu":
            arch = _architecture(module)
            cpu = ClassifierModule(arch.pop("sizes"), arch.pop("n_classes"), **arch)
            cpu.load_state_dict({k: v.cpu() for k, v in module.state_dict().items()})
            state["module_"] = cpu.eval()
            state["_module_device"] = str(next(module.parameters()).device)
        return state

    def __setstate__(self, state: dict) -> None:
        """Back onto the device it was pickled from where this machine has it, else the
        CPU (``training.move_unpickled``)."""
        state = dict(state)
        device = state.pop("_module_device", None)
        for name, default in _ADDED_PARAMS.items():  # pickled before they existed
            state.setdefault(name, default)
        super().__setstate__(state)
        if device is not None:
            move_unpickled(self.module_, device)

    def save(self, path: str | os.PathLike) -> str:
        """Write the fitted classifier to the folder ``path`` (safetensors + JSON); returns it.

        The encoder is not saved apart: its fine-tuned weights are the MLP's hidden layers.
        So the loaded classifier has ``encoder=None`` and ``hidden_layer_sizes`` /
        ``activation`` set to its layers': it predicts as this one does, and ``fit`` on it
        would train the same MLP from random weights (with ``tangent_weight=0``: the
        tangent term needs the encoder).
        """
        check_is_fitted(self)
        classes = np.asarray(self.classes_)
        if classes.dtype.kind not in "biuU" and not (
                classes.dtype.kind == "O" and all(isinstance(c, str) for c in classes)) and not (
                classes.dtype.kind == "f" and np.all(np.isfinite(classes))):
            raise ValueError(f"labels of dtype {classes.dtype} cannot be saved: use integer, "
                             "string or boolean labels")
        module = self.module_
        params = io.storable_params(self.get_params(deep=False))
        params.update(encoder=None, hidden_layer_sizes=[lay.out_features for lay in
                                                         module.layers],
                      activation=module.activation)
        fitted = {name: getattr(self, name) for name in _FITTED if hasattr(self, name)}
        if hasattr(self, "feature_names_in_"):
            fitted["feature_names_in_"] = [str(n) for n in self.feature_names_in_]
        fields = {
            "architecture": _architecture(module),
            "classes": {"values": classes.tolist(), "dtype": classes.dtype.str
                        if classes.dtype.kind != "O" else "object"},
            "initialised_from_encoder": self.encoder is not None,
            "params": params,
            "fitted": fitted,
        }
        tensors = {f"module.{k}": v for k, v in module.state_dict().items()}
        offset = getattr(self, "input_offset_", None)
        if offset is None:  # pickled by an older version: the module holds the offset
            offset = module.input_offset.detach().cpu().double().numpy()
            tensors["module.input_offset"] = torch.zeros_like(module.input_offset)
        tensors["extra.input_offset"] = torch.as_tensor(offset, dtype=torch.float64)
        return io.write_tensor_folder(
            path, tensors, fields, fmt=CLASSIFIER_FORMAT,
            version=CLASSIFIER_FORMAT_VERSION, weights_name=CLASSIFIER_WEIGHTS,
            config_name=CLASSIFIER_CONFIG)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> FineTunedClassifier:
        """Read a classifier written by ``save`` onto ``device``; never unpickles. A missing,
        truncated, corrupted or foreign file raises ``ValueError`` naming it."""
        folder = io._model_dir(path)
        if folder.name in (CLASSIFIER_CONFIG, CLASSIFIER_WEIGHTS):
            folder = folder.parent
        config, tensors = io.read_tensor_folder(
            folder, fmt=CLASSIFIER_FORMAT, version=CLASSIFIER_FORMAT_VERSION,
            weights_name=CLASSIFIER_WEIGHTS, config_name=CLASSIFIER_CONFIG)
        try:
            arch = config["architecture"]
            module = ClassifierModule(
                [int(n) for n in arch["sizes"]], int(arch["n_classes"]),
                **{k: v for k, v in arch.items() if k not in ("sizes", "n_classes")})
            io.load_state(module, {k[len("module."):]: v for k, v in tensors.items()
                                   if k.startswith("module.")}, "module.")
            offset = tensors["extra.input_offset"].double().numpy()
            if offset.shape != (module.layers[0].in_features,):
                raise ValueError(f"extra.input_offset has shape {offset.shape}")
            params = io.params_from_json(config["params"])
            est = cls(**params)
            for name, value in config["fitted"].items():
                if name not in (*_FITTED, "feature_names_in_"):
                    raise ValueError(f"unknown fitted attribute {name!r}")
                setattr(est, name, value)
            if "feature_names_in_" in config["fitted"]:
                est.feature_names_in_ = np.asarray(est.feature_names_in_, dtype=object)
            labels = config["classes"]
            est.classes_ = np.asarray(labels["values"], dtype=np.dtype(labels["dtype"]))
            if (est.classes_.ndim != 1 or len(est.classes_) != module.head.out_features
                    or len(np.unique(est.classes_)) != len(est.classes_)):
                raise ValueError(f"{len(est.classes_)} labels for {module.head.out_features} "
                                 "outputs, or repeated labels")
            if est.n_features_in_ != module.layers[0].in_features:
                raise ValueError(f"n_features_in_={est.n_features_in_} but the first layer "
                                 f"takes {module.layers[0].in_features}")
            check_choice("activation", module.activation, tuple(sorted(ACTIVATIONS)))
            est.input_offset_ = offset
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else repr(exc)
            raise ValueError(f"{folder / CLASSIFIER_CONFIG}: not a valid contractive "
                             f"classifier ({msg})") from None
        est.module_ = module.to(resolve_device(device)).eval()
        return est


def _architecture(module: ClassifierModule) -> dict[str, Any]:
    """What rebuilds ``module``: ``ClassifierModule(sizes, n_classes, **the rest)``."""
    return {"sizes": [module.layers[0].in_features, *(lay.out_features for lay in module.layers)],
            "n_classes": module.head.out_features, "activation": module.activation,
            "dropout": module.dropout, "input_dropout": module.input_dropout,
            "tangent_weight": module.tangent_weight, "tangent_probes": module.tangent_probes,
            "adversarial_weight": module.adversarial_weight,
            "adversarial_epsilon": module.adversarial_epsilon,
            "adversarial_norm": module.adversarial_norm}
