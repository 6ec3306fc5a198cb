"""The contractive auto-encoder as a PyTorch module: MLP encoder, mirrored or tied decoder.

    encoder  h = f(x) = s(W_L ... s(W_1 x + b_1) ... + b_L)        x: (B, d) -> h: (B, k)
    decoder  r = g(h) = s_out(W'_1 s(... s(W'_L h + c_L) ...) + c_1)  h: (B, k) -> r: (B, d)

With ``tied_weights`` the decoder reuses the encoder's matrices transposed (``W'_l = W_l^T``)
and owns only its biases. The forward pass returns the loss terms by name:

    reconstruction = mean_b L(x_b, r_b)          L: mse (mean over features) or bce
    penalty        = mean_b ||J_f(x_b)||_F^2     (penalty.py for the convention; estimated
                                                  when the method is hutchinson, and for a
                                                  deep plain auto-encoder, lambda = gamma = 0)
    higher_order   = mean_b E ||J_f(x_b) - J_f(x_b + eps)||_F^2      (CAE+H, when gamma > 0)
    loss           = reconstruction + lambda * penalty + gamma * higher_order
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import fastpath
from . import penalty as P
from .activations import ACTIVATIONS, Activation, get_activation

Tensor = torch.Tensor

OUTPUT_ACTIVATIONS = ("linear", "sigmoid")
LOSSES = ("mse", "bce")


@dataclass
class CAEConfig:
    """Everything needed to rebuild a ``ContractiveAutoencoderModule`` (stored with models).

    ``penalty_method`` is concrete here (``closed_form``, ``exact`` or ``hutchinson``):
    ``penalty.resolve_method`` turns ``auto`` into one of them before a module is built.
    """

    in_features: int
    n_components: int
    hidden_layer_sizes: tuple[int, ...] = ()
    activation: str = "sigmoid"
    output_activation: str = "linear"
    tied_weights: bool = False
    loss: str = "mse"
    contractive_weight: float = 1e-3
    penalty_method: str = "closed_form"
    n_probes: int = 1
    higher_order_weight: float = 0.0
    higher_order_sigma: float = 0.1
    higher_order_copies: int = 1

    def __post_init__(self) -> None:
        self.hidden_layer_sizes = tuple(int(s) for s in self.hidden_layer_sizes)
        for name in ("in_features", "n_components", "n_probes", "higher_order_copies"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if any(s < 1 for s in self.hidden_layer_sizes):
            raise ValueError(f"hidden_layer_sizes={self.hidden_layer_sizes!r} must be >= 1")
        for name in ("contractive_weight", "higher_order_weight", "higher_order_sigma"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}={value!r} must be a finite number >= 0")
        if self.higher_order_sigma <= 0:
            raise ValueError(f"higher_order_sigma={self.higher_order_sigma!r} must be > 0")
        get_activation(self.activation)
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation={self.output_activation!r} is not known; "
                f"valid: {', '.join(OUTPUT_ACTIVATIONS)}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} is not known; valid: {', '.join(LOSSES)}")
        if self.loss == "bce" and self.output_activation != "sigmoid":
            raise ValueError("loss='bce' needs output_activation='sigmoid' (outputs in (0, 1))")
        if self.penalty_method not in ("closed_form", "exact", "hutchinson"):
            raise ValueError(
                f"penalty_method={self.penalty_method!r} must be concrete: closed_form, exact or "
                "hutchinson"
            )
        if self.penalty_method == "closed_form" and self.hidden_layer_sizes:
            raise ValueError("penalty_method='closed_form' needs hidden_layer_sizes=() (one layer)")

    @property
    def sizes(self) -> list[int]:
        """Widths of the encoder, input to code: ``[d, *hidden, k]``."""
        return [self.in_features, *self.hidden_layer_sizes, self.n_components]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden_layer_sizes"] = list(self.hidden_layer_sizes)
        return d


def glorot_init_(module: nn.Module, seed: int) -> None:
    """Every matrix Glorot-uniform, every vector zero, drawn on the CPU from ``seed`` (so a
    seed gives the same weights on every device), in the order of ``module.parameters()``."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 2:
                nn.init.xavier_uniform_(p, generator=gen)
            else:
                p.zero_()


class MLPEncoder(nn.Module):
    """``x -> s(W_L ... s(W_1 x + b_1) ... + b_L)`` with one activation ``s`` throughout.

    Implements ``penalty.MLPLike``: ``derivatives(x)`` returns the code and every layer's
    ``s'(z_l)``, from which ``penalty.py`` builds the Jacobian without autograd.
    """

    def __init__(self, sizes: list[int], activation: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = get_activation(activation).name

    @property
    def act(self) -> Activation:
        return ACTIVATIONS[self.activation]  # looked up, so the module pickles

    @property
    def weights(self) -> list[Tensor]:
        return [layer.weight for layer in self.layers]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = self.act.fn(layer(x))
        return x

    def derivatives(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        derivs = []
        for layer in self.layers:
            z = layer(x)  # (B, n_l)
            x = self.act.fn(z)
            derivs.append(self.act.derivative(z, x))
        return x, derivs


class MLPDecoder(nn.Module):
    """``h -> logits`` through layers of widths ``sizes`` (code to input).

    When ``tied``, it owns only biases and takes the encoder's weights, transposed, at call
    time; the output activation is applied by the caller (so ``bce`` can use the logits).
    """

    def __init__(self, sizes: list[int], activation: str, tied: bool) -> None:
        super().__init__()
        self.activation = get_activation(activation).name
        self.tied = tied
        pairs = list(zip(sizes[:-1], sizes[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(b)) for _, b in pairs)
        self.weights = None if tied else nn.ParameterList(
            nn.Parameter(torch.empty(b, a)) for a, b in pairs
        )

    @property
    def act(self) -> Activation:
        return ACTIVATIONS[self.activation]

    def logits(self, h: Tensor, encoder_weights: list[Tensor]) -> Tensor:
        if self.tied:
            weights = [w.T for w in reversed(encoder_weights)]
        else:
            weights = list(self.weights)
        last = len(weights) - 1
        for i, (w, b) in enumerate(zip(weights, self.biases)):
            h = F.linear(h, w, b)
            if i < last:
                h = self.act.fn(h)
        return h


class ContractiveAutoencoderModule(nn.Module):
    """The CAE of ``config``; ``forward(x)`` returns the loss terms by name.

    Weights are Glorot-uniform (as Keras, which the seed used), biases zero, drawn on the
    CPU from ``seed`` so the same seed gives the same model on every device.
    """

    def __init__(self, config: CAEConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        sizes = config.sizes
        self.encoder = MLPEncoder(sizes, config.activation)
        self.decoder = MLPDecoder(sizes[::-1], config.activation, config.tied_weights)
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int) -> None:
        glorot_init_(self, seed)

    @property
    def graph_safe(self) -> bool:
        """Whether a training step can be captured as a CUDA graph (``training.py``): it never
        syncs with the host, and draws random numbers (see ``draws_random``) only from the
        generator it is given. True of every configuration."""
        return True

    @property
    def draws_random(self) -> bool:
        """Whether a training step draws random numbers: the estimate's probes
        (``hutchinson``), the CAE+H noise, or the one-probe estimate logged for a plain deep
        auto-encoder. Not the exact penalty (closed form or the Gram-matrix route) without
        CAE+H, nor a plain one-layer auto-encoder (its logged penalty is the closed form). A
        CUDA graph captures such draws only where torch can register the trainer's
        generator with it."""
        cfg = self.config
        if cfg.penalty_method == "hutchinson" or cfg.higher_order_weight > 0:
            return True
        return cfg.contractive_weight == 0 and bool(cfg.hidden_layer_sizes)

    # -- inference ----------------------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:
        """Codes ``h = f(x)``, ``(B, d) -> (B, k)``."""
        return self.encoder(x)

    def decode(self, h: Tensor) -> Tensor:
        """Reconstructions ``g(h)``, ``(B, k) -> (B, d)``, output activation applied."""
        out = self.decoder.logits(h, self.encoder.weights)
        return torch.sigmoid(out) if self.config.output_activation == "sigmoid" else out

    def _weights_for(self, input_scale: Tensor | None) -> list[Tensor]:
        weights = self.encoder.weights
        if input_scale is None:
            return weights
        return [weights[0] / input_scale, *weights[1:]]  # chain rule through x / scale

    def jacobian(self, x: Tensor, input_scale: Tensor | None = None) -> Tensor:
        """Per-sample encoder Jacobians ``dh/dx``, shape ``(B, k, d)`` (exact, chunked).

        With ``input_scale`` (``(d,)``) the encoder sees ``x / input_scale`` and the
        Jacobian is taken with respect to the unscaled input: ``J diag(1 / input_scale)``.
        """
        _, derivs = self.encoder.derivatives(x)
        return P.mlp_jacobian(self._weights_for(input_scale), derivs)

    def penalty(self, x: Tensor, input_scale: Tensor | None = None) -> Tensor:
        """Exact per-sample ``||J_f(x)||_F^2``, shape ``(B,)``, whatever the training method.

        ``input_scale`` as in ``jacobian``.
        """
        _, derivs = self.encoder.derivatives(x)
        return P.mlp_exact_squared_norm(self._weights_for(input_scale), derivs)

    def reconstruction_error(self, x: Tensor, logits: Tensor) -> Tensor:
        """Per-sample reconstruction loss (mean over features), shape ``(B,)``."""
        if self.config.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, x, reduction="none").mean(1)
        out = torch.sigmoid(logits) if self.config.output_activation == "sigmoid" else logits
        return (out - x).pow(2).mean(1)

    # -- training objective -------------------------------------------------------------

    def _sketch(self, derivs: list[Tensor], probes: Tensor | None) -> Tensor:
        return P.mlp_sketch(self.config.penalty_method, self.encoder.weights, derivs, probes)

    def _logged_sketch(self, derivs, probes, generator) -> Tensor:
        """Closed form for one layer, else a one-probe estimate: about one backward pass."""
        if len(derivs) == 1:
            return P.closed_form_sketch(derivs[0], self.encoder.weights[0])
        if probes is None:
            probes = P.rademacher_probes(
                derivs[0].shape[0], 1, self.config.n_components, generator=generator,
                device=derivs[0].device, dtype=derivs[0].dtype,
            )
        return P.mlp_probe_products(self.encoder.weights, derivs, probes)

    def forward_backward(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """``forward`` then ``loss.backward()``: the loss terms (detached), with gradients
        accumulated into ``.grad``. The one-layer CAE takes the hand-derived gradient of
        ``fastpath.py`` (same values, half the kernels); everything else autograd."""
        if fastpath.applies(self.config):
            return fastpath.one_layer_step(self, x)
        terms = self(x, generator)
        terms["loss"].backward()
        return {k: v.detach() for k, v in terms.items()}

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Loss terms of a batch ``x`` ``(B, d)``: scalars named as in the module docstring.

        ``generator`` draws the estimate's probes and the CAE+H corruption noise.
        """
        cfg = self.config
        h, derivs = self.encoder.derivatives(x)
        logits = self.decoder.logits(h, self.encoder.weights)
        recon = self.reconstruction_error(x, logits).mean()
        probes = None
        if cfg.penalty_method == "hutchinson":
            probes = P.rademacher_probes(
                x.shape[0], cfg.n_probes, cfg.n_components, generator=generator,
                device=x.device, dtype=x.dtype,
            )
        sketch = None
        if cfg.higher_order_weight > 0:
            sketch = self._sketch(derivs, probes)
            pen = P.squared_norm(sketch).mean()
        elif cfg.contractive_weight > 0:
            if cfg.penalty_method == "exact":  # no need to form J: the Gram-matrix route
                pen = P.mlp_exact_squared_norm(self.encoder.weights, derivs).mean()
            else:
                pen = P.squared_norm(self._sketch(derivs, probes)).mean()
        else:  # a plain auto-encoder: the penalty is only logged, so estimate it cheaply
            with torch.no_grad():
                logged = self._logged_sketch([d.detach() for d in derivs], probes, generator)
                pen = P.squared_norm(logged).mean()
        terms = {"reconstruction": recon, "penalty": pen}
        loss = recon + cfg.contractive_weight * pen
        if cfg.higher_order_weight > 0:
            c = cfg.higher_order_copies
            noise = torch.randn(
                (c * x.shape[0], x.shape[1]), generator=generator, device=x.device, dtype=x.dtype
            )
            noisy = x.repeat(c, 1) + cfg.higher_order_sigma * noise  # (c B, d), copy-major
            _, noisy_derivs = self.encoder.derivatives(noisy)
            noisy_probes = None if probes is None else probes.repeat(c, 1, 1)
            higher = P.copies_distance(sketch, self._sketch(noisy_derivs, noisy_probes)).mean()
            terms["higher_order"] = higher
            loss = loss + cfg.higher_order_weight * higher
        terms["loss"] = loss
        return terms
