r"""The contractive penalty ``||J_f(x)||_F^2`` and the higher-order term of CAE+H.

Conventions
-----------
``J_f(x) = dh/dx`` is the encoder's Jacobian at one sample, shape ``(k, d)`` for a code of
``k`` units and an input of ``d`` features. The penalty of a sample is the sum of its
squared entries,

    ||J_f(x)||_F^2 = sum_{j,i} (d h_j / d x_i)^2,

and over a batch the **mean** over samples, so the CAE loss of a batch is
``reconstruction + lambda * mean_b ||J_f(x_b)||_F^2`` (+ the higher-order term below).

Every function here returns one value per sample, shape ``(B,)``, and every value is
differentiable with respect to the encoder's weights and biases (no frozen copies of W:
REFERENCE.md section 4, bug 1).

Jacobian sketches
-----------------
All methods go through a *sketch* ``S(x)``: a tensor that is linear in ``J(x)`` and whose
squared norm is ``||J(x)||_F^2`` (exactly, or in expectation):

===============  =========================================  ==============================
method           sketch, per sample                         applies to
===============  =========================================  ==============================
``closed_form``  ``s'(z_j) ||W_j||``, shape ``(k,)``          one affine layer ``s(Wx + b)``
``exact``        ``J`` itself, shape ``(k, d)``               any encoder
``hutchinson``   ``U J / sqrt(m)``, shape ``(m, d)``          any encoder
===============  =========================================  ==============================

For the estimate, ``U`` holds ``m`` Rademacher probes ``u`` (entries +-1, so
``E[u u^T] = I`` and ``E ||u^T J||^2 = ||J||_F^2``), drawn in the code space where one
vector-Jacobian product per probe gives ``u^T J``. Because a sketch is linear in ``J`` for
fixed weights and probes, ``||S(x) - S(x')||^2`` is ``||J(x) - J(x')||_F^2`` (or an
unbiased estimate of it), which is what the CAE+H term needs:

    gamma * E_{eps ~ N(0, sigma^2 I)} ||J(x) - J(x + eps)||_F^2,

estimated with ``n_copies`` corrupted copies of each sample.

For an MLP encoder ``h = s_L(W_L s_{L-1}(... s_1(W_1 x + b_1) ...) + b_L)`` the Jacobian is
``J = D_L W_L D_{L-1} ... D_1 W_1`` with ``D_l = diag(s_l'(z_l))``; the ``mlp_*``
functions use that structure directly (no autograd), which is much faster than generic
vector-Jacobian products. Any other encoder (a callable ``(B, d) -> (B, k)`` whose samples
do not interact: no BatchNorm in training mode, REFERENCE.md bug 9) goes through
``torch.func`` (exact) or autograd (estimate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

from .validation import check_float, check_int

Tensor = torch.Tensor

METHODS = ("auto", "closed_form", "exact", "hutchinson")
#: ``auto`` picks the exact method up to this many code units, the estimate beyond.
AUTO_EXACT_MAX_COMPONENTS = 32
#: Budget, in tensor elements, of one chunk of per-sample Jacobians (bounds memory).
DEFAULT_CHUNK_ELEMENTS = 1 << 24


@runtime_checkable
class MLPLike(Protocol):
    """An encoder that exposes its affine layers and activation derivatives.

    ``derivatives(x)`` returns ``(h, derivs)``: the code ``h`` of shape ``(B, k)`` and the
    list of ``s_l'(z_l)``, one ``(B, width_l)`` tensor per layer; ``weights`` lists the
    ``(width_l, width_{l-1})`` matrices in the same order.
    """

    def derivatives(self, x: Tensor) -> tuple[Tensor, list[Tensor]]: ...

    @property
    def weights(self) -> list[Tensor]: ...


def resolve_method(method: str, *, n_layers: int, n_components: int) -> str:
    """Turn ``method`` (possibly ``"auto"``) into a concrete method name.

    ``auto``: ``closed_form`` for a one-layer encoder, ``exact`` for codes of at most
    ``AUTO_EXACT_MAX_COMPONENTS`` units, ``hutchinson`` beyond.
    """
    if method not in METHODS:
        raise ValueError(f"penalty_method={method!r} is not known; valid: {', '.join(METHODS)}")
    if method == "closed_form" and n_layers != 1:
        raise ValueError(
            f"penalty_method='closed_form' needs a one-layer encoder, this one has {n_layers} "
            "layers; use 'exact', 'hutchinson' or 'auto'"
        )
    if method != "auto":
        return method
    if n_layers == 1:
        return "closed_form"
    return "exact" if n_components <= AUTO_EXACT_MAX_COMPONENTS else "hutchinson"


# ---------------------------------------------------------------------------------------
# sketches of the Jacobian
# ---------------------------------------------------------------------------------------


def closed_form_sketch(deriv: Tensor, weight: Tensor) -> Tensor:
    """Sketch of one layer ``h = s(W x + b)``: ``s'(z_j) ||W_j||``.

    deriv: ``(B, k)`` values of ``s'(z)``; weight: ``(k, d)``. Returns ``(B, k)``, whose
    squared row norms are ``sum_j s'(z_j)^2 ||W_j||^2 = ||diag(s'(z)) W||_F^2``.
    """
    return deriv * torch.linalg.vector_norm(weight, dim=1)  # (B, k)


def mlp_probe_products(
    weights: Sequence[Tensor], derivs: Sequence[Tensor], probes: Tensor | None = None
) -> Tensor:
    """Rows of ``P J`` for ``J = D_L W_L ... D_1 W_1``, by a hand-written backward pass.

    weights: ``W_l`` of shape ``(n_l, n_{l-1})``; derivs: ``s_l'(z_l)`` of shape ``(B, n_l)``;
    probes ``P``: ``(B, m, k)``, or ``None`` for the identity (then the result is ``J``).
    Returns ``(B, m, d)`` (``(B, k, d)`` for the identity).
    """
    if probes is None:
        out = derivs[-1].unsqueeze(2) * weights[-1]  # (B, k, n_{L-1})
    else:
        out = (probes * derivs[-1].unsqueeze(1)) @ weights[-1]  # (B, m, n_{L-1})
    for weight, deriv in zip(reversed(weights[:-1]), reversed(derivs[:-1])):
        out = (out * deriv.unsqueeze(1)) @ weight  # (B, r, n_{l-1})
    return out


def mlp_jacobian(
    weights: Sequence[Tensor], derivs: Sequence[Tensor],
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Tensor:
    """Per-sample Jacobians ``J = D_L W_L ... D_1 W_1`` of an MLP, shape ``(B, k, d)``.

    Computed in batch chunks of at most ``chunk_elements`` elements per intermediate.
    """
    batch = derivs[0].shape[0]
    k = weights[-1].shape[0]
    widest = max(w.shape[1] for w in weights)
    step = max(1, chunk_elements // max(1, k * widest))
    if step >= batch:
        return mlp_probe_products(weights, derivs)
    parts = [
        mlp_probe_products(weights, [d[i : i + step] for d in derivs])
        for i in range(0, batch, step)
    ]
    return torch.cat(parts)


class _GramTrace(torch.autograd.Function):
    """Per-sample ``tr(A_b G A_b^T)`` for ``A`` ``(B, r, h)`` and a symmetric ``G`` ``(h, h)``.

    Hand-written backward: ``d/dA = 2 A G`` reuses the forward's product, and
    ``d/dG = sum_b g_b A_b^T A_b`` is one GEMM; autograd would spend a third GEMM.
    """

    @staticmethod
    def forward(ctx, A: Tensor, G: Tensor) -> Tensor:
        AG = A @ G  # (B, r, h)
        ctx.save_for_backward(A, AG)
        return (AG * A).sum((1, 2))  # (B,)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        A, AG = ctx.saved_tensors
        g = grad.view(-1, 1, 1)
        grad_A = 2 * g * AG
        flat = A.flatten(0, 1)  # (B r, h)
        grad_G = (g * A).flatten(0, 1).T @ flat
        return grad_A, grad_G


def mlp_exact_squared_norm(weights: Sequence[Tensor], derivs: Sequence[Tensor]) -> Tensor:
    """Exact per-sample ``||J||_F^2`` of an MLP, shape ``(B,)``, without forming ``J``.

    With ``J = A W_1`` where ``A = D_L W_L ... D_2 W_2 D_1`` (``(B, k, n_1)``) and the Gram
    matrix ``G = W_1 W_1^T`` computed once per batch, ``||J||_F^2 = tr(A G A^T)``: the
    largest product is ``(B k, n_1) x (n_1, n_1)`` instead of ``(B k, n_1) x (n_1, d)``, and
    the backward pass reuses it (``_GramTrace``). When ``n_1 >= d`` the Jacobian is formed
    directly instead. Differentiable once (first derivatives) in every weight.
    """
    if len(weights) == 1:
        return squared_norm(closed_form_sketch(derivs[0], weights[0]))
    first = weights[0]  # (n_1, d)
    if first.shape[0] >= first.shape[1]:
        return squared_norm(mlp_jacobian(weights, derivs))
    A = mlp_probe_products(weights[1:], derivs[1:]) * derivs[0].unsqueeze(1)  # (B, k, n_1)
    return _GramTrace.apply(A, first @ first.T)


def rademacher_probes(
    batch: int, n_probes: int, n_components: int, *, generator: torch.Generator | None = None,
    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Probes ``U / sqrt(m)`` with ``U`` of +-1 entries, shape ``(batch, m, k)``.

    With these, ``||P J||^2`` averages to ``||J||_F^2``: ``E[P^T P] = I`` per sample.
    """
    if n_probes < 1:  # (the public entry points check the type; this runs every step)
        raise ValueError(f"n_probes={n_probes!r} must be a positive integer")
    bits = torch.randint(0, 2, (batch, n_probes, n_components), generator=generator, device=device)
    return (2 * bits - 1).to(dtype) / math.sqrt(n_probes)


def func_jacobian(
    func: Callable[[Tensor], Tensor], x: Tensor, *, chunk_size: int | None = None
) -> Tensor:
    """Per-sample Jacobians of any batched map ``func: (B, d) -> (B, k)``, shape ``(B, k, d)``.

    Batched reverse-mode (``torch.func.vmap`` of ``torch.func.jacrev``) over samples, in
    chunks of ``chunk_size`` samples (default: as many as fit
    ``DEFAULT_CHUNK_ELEMENTS``). Differentiable with respect to the tensors ``func``
    closes over (its parameters).
    """

    def single(xi: Tensor) -> Tensor:
        return func(xi.unsqueeze(0)).squeeze(0)

    if chunk_size is None:
        with torch.no_grad():
            k = func(x[:1]).shape[-1]
        chunk_size = max(1, DEFAULT_CHUNK_ELEMENTS // max(1, 4 * k * x.shape[1]))
    return torch.func.vmap(torch.func.jacrev(single), chunk_size=chunk_size)(x)


def func_probe_products(func: Callable[[Tensor], Tensor], x: Tensor, probes: Tensor) -> Tensor:
    """Rows ``p^T J`` for any batched map ``func``, by one autograd pass per probe.

    probes: ``(B, m, k)``. Returns ``(B, m, d)``, with a graph (``create_graph=True``) so the
    result can be differentiated again with respect to the parameters of ``func`` (not with
    respect to ``x``, which is detached).
    """
    with torch.enable_grad():  # also under no_grad: the products need a graph
        xr = x.detach().requires_grad_(True)
        h = func(xr)  # (B, k)
        rows = []
        for i in range(probes.shape[1]):
            (g,) = torch.autograd.grad(h, xr, grad_outputs=probes[:, i], create_graph=True)
            rows.append(g)  # (B, d)
    return torch.stack(rows, dim=1)


def squared_norm(sketch: Tensor) -> Tensor:
    """Per-sample squared Frobenius norm: the sum over every dimension but the first."""
    return sketch.pow(2).flatten(1).sum(1)


# ---------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------


def mlp_sketch(
    method: str, weights: Sequence[Tensor], derivs: Sequence[Tensor], probes: Tensor | None = None
) -> Tensor:
    """Sketch of an MLP's Jacobian by a concrete method (see the module's table).

    ``probes`` (``(B, m, k)``, from ``rademacher_probes``) is required for ``hutchinson``.
    """
    if method == "closed_form":
        if len(weights) != 1:
            raise ValueError(f"the closed form needs one layer, got {len(weights)}")
        return closed_form_sketch(derivs[0], weights[0])
    if method == "exact":
        return mlp_jacobian(weights, derivs)
    if method == "hutchinson":
        if probes is None:
            raise ValueError("method='hutchinson' needs probes")
        return mlp_probe_products(weights, derivs, probes)
    raise ValueError(f"method={method!r} is not concrete; valid: closed_form, exact, hutchinson")


def _sketch(
    encoder: Callable[[Tensor], Tensor], x: Tensor, method: str, probes: Tensor | None
) -> Tensor:
    if isinstance(encoder, MLPLike):
        _, derivs = encoder.derivatives(x)
        return mlp_sketch(method, encoder.weights, derivs, probes)
    if method == "exact":
        return func_jacobian(encoder, x)
    if method == "hutchinson":
        return func_probe_products(encoder, x, probes)
    raise ValueError(
        f"method={method!r} needs an MLP encoder; for any other encoder use 'exact' or 'hutchinson'"
    )


def _check_x(encoder: Callable[[Tensor], Tensor], x: Tensor) -> None:
    """``x`` must be a 2-D floating tensor with at least one sample; for an ``MLPLike``
    encoder, with the first layer's number of features, dtype and device."""
    if not isinstance(x, Tensor):
        raise TypeError(
            f"x must be a torch.Tensor of shape (batch, n_features), got {type(x).__name__}"
        )
    if x.ndim != 2:
        raise ValueError(f"x of shape {tuple(x.shape)} must be 2-D: (batch, n_features)")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
    if x.shape[0] < 1:
        raise ValueError(f"x of shape {tuple(x.shape)} must hold at least 1 sample")
    if not isinstance(encoder, MLPLike) or not encoder.weights:
        return
    first = encoder.weights[0]  # (n_1, d)
    if x.shape[1] != first.shape[1]:
        raise ValueError(
            f"x of shape {tuple(x.shape)} has {x.shape[1]} features, but the encoder takes "
            f"{first.shape[1]}"
        )
    if x.dtype != first.dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(
            f"x has dtype {x.dtype} but the encoder's weights are {first.dtype}; convert one "
            f"to the other (x.to({first.dtype}) or encoder.to({x.dtype}))"
        )
    if x.device != first.device:
        raise ValueError(
            f"x is on device {x.device} but the encoder's weights are on {first.device}"
        )


#: Errors of the device itself (``torch.cuda.OutOfMemoryError`` is ``torch.OutOfMemoryError``
#: where that exists; ``torch.AcceleratorError``, torch >= 2.8, a failed kernel or context).
_DEVICE_ERRORS: tuple[type[BaseException], ...] = (
    torch.cuda.OutOfMemoryError, *filter(None, [getattr(torch, "AcceleratorError", None)]))


def _code_width(encoder: Callable[[Tensor], Tensor], x: Tensor) -> int:
    """``k`` of a generic encoder, from one sample: the call boundary where an ``x`` the
    encoder cannot take (features, dtype, device) turns into a ``ValueError``."""
    try:
        with torch.no_grad():
            h = encoder(x[:1])
    except _DEVICE_ERRORS:  # the device's trouble, not the input's: passed on as raised
        raise
    except RuntimeError as exc:
        raise ValueError(
            f"the encoder cannot take x of shape {tuple(x.shape)} and dtype {x.dtype} "
            f"(another number of features, dtype or device?): {exc}"
        ) from exc
    if not isinstance(h, Tensor) or h.ndim != 2 or h.shape[0] != 1:
        got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
        raise ValueError(
            "the encoder must map x of shape (batch, n_features) to codes of shape "
            f"(batch, n_components); on x[:1] of shape {tuple(x[:1].shape)} it returned {got}"
        )
    return h.shape[1]


def _concrete(encoder: Callable[[Tensor], Tensor], x: Tensor, method: str) -> tuple[str, int]:
    _check_x(encoder, x)
    if isinstance(encoder, MLPLike):
        weights = encoder.weights
        return resolve_method(
            method, n_layers=len(weights), n_components=weights[-1].shape[0]
        ), weights[-1].shape[0]
    if method == "closed_form":
        raise ValueError(
            "method='closed_form' needs an MLP encoder (an MLPLike module); for any other "
            "encoder use 'exact' or 'hutchinson'"
        )
    k = _code_width(encoder, x)
    return resolve_method(method, n_layers=2, n_components=k), k


def contractive_penalty(
    encoder: Callable[[Tensor], Tensor], x: Tensor, method: str = "auto", *,
    n_probes: int = 1, generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample ``||J_f(x)||_F^2``, shape ``(B,)``, differentiable in the encoder's weights.

    encoder: an ``MLPLike`` module (fast structured path) or any callable
    ``(B, d) -> (B, k)`` whose samples do not interact; x: ``(B, d)``, a floating tensor
    with ``B >= 1`` samples, of the encoder's number of features, dtype and device.
    method: ``auto | closed_form | exact | hutchinson``; ``n_probes`` (an integer >= 1) and
    ``generator`` set the estimate's Rademacher probes.

    ``x`` is never cast: an integer ``x`` is a ``TypeError``, and a floating ``x`` whose
    dtype differs from the encoder's weights (float64 data, float32 module) is a
    ``ValueError`` that says so (convert one of them: a silent cast would change the
    precision of the penalty or of the module). A generic callable that cannot take ``x``
    (another number of features, dtype or device) is a ``ValueError`` naming ``x``'s shape
    and dtype.
    """
    n_probes = check_int("n_probes", n_probes, 1)
    method, k = _concrete(encoder, x, method)
    if method == "exact" and isinstance(encoder, MLPLike):
        _, derivs = encoder.derivatives(x)
        return mlp_exact_squared_norm(encoder.weights, derivs)
    probes = None
    if method == "hutchinson":
        probes = rademacher_probes(
            x.shape[0], n_probes, k, generator=generator, device=x.device, dtype=x.dtype
        )
    return squared_norm(_sketch(encoder, x, method, probes))


def higher_order_penalty(
    encoder: Callable[[Tensor], Tensor], x: Tensor, sigma: float, n_copies: int = 1,
    method: str = "auto", *, n_probes: int = 1, generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample ``E_eps ||J(x) - J(x + eps)||_F^2``, ``eps ~ N(0, sigma^2 I)``, shape ``(B,)``.

    The expectation is a mean over ``n_copies`` corrupted copies of each sample; with
    ``hutchinson`` the same probes sketch ``J(x)`` and ``J(x + eps)``, so the difference
    stays an unbiased estimate. ``sigma``: a finite number > 0; ``n_copies``: an integer
    >= 1; ``x`` as for ``contractive_penalty``.
    """
    sigma = check_float("sigma", sigma, 0, low_open=True)
    n_copies = check_int("n_copies", n_copies, 1)
    n_probes = check_int("n_probes", n_probes, 1)
    method, k = _concrete(encoder, x, method)
    batch = x.shape[0]
    probes = None
    if method == "hutchinson":
        probes = rademacher_probes(
            batch, n_probes, k, generator=generator, device=x.device, dtype=x.dtype
        )
    noise = torch.randn(
        (n_copies * batch, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype
    )
    x_all = torch.cat([x, x.repeat(n_copies, 1) + sigma * noise])  # ((1 + c) B, d)
    probes_all = None if probes is None else probes.repeat(n_copies + 1, 1, 1)
    sketch = _sketch(encoder, x_all, method, probes_all)
    return copies_distance(sketch[:batch], sketch[batch:])


def copies_distance(clean: Tensor, noisy: Tensor) -> Tensor:
    """Per-sample mean of ``||S(x) - S(x + eps_c)||^2`` over the corrupted copies.

    clean: sketches ``(B, ...)``; noisy: ``(c B, ...)``, copy-major (copy ``c`` of sample
    ``b`` at row ``c B + b``). Returns ``(B,)``.
    """
    batch = clean.shape[0]
    n_copies = noisy.shape[0] // batch
    diff = noisy.view(n_copies, *clean.shape) - clean  # (c, B, ...)
    return diff.pow(2).flatten(2).sum(2).mean(0)
