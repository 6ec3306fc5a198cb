r"""The one-layer CAE's training step with its gradient written out (no autograd graph).

For the classic CAE, ``h = s(W x + b)``, ``r = s_out(V h + c)`` (``V = W^T`` when tied),

    loss = mean_b [ L(x_b, r_b) ] + lambda * mean_b sum_j s'(z_bj)^2 ||W_j||^2,

every gradient has a closed form. With ``g = dloss/d(logits)`` (``(B, d)``; for the mean
squared error ``2 (r - x) / (B d)``, times ``r (1 - r)`` after a sigmoid; for the
cross-entropy on logits ``(sigmoid(logits) - x) / (B d)``) and ``w_j = ||W_j||^2``:

    dV = g^T h                      dc = sum_b g
    dz = (g V) * s' + (2 lambda / B) * w * s' * s''
    dW = dz^T x + (2 lambda / B) * (sum_b s'^2)_j W_j   (+ dV^T when tied)
    db = sum_b dz

This is about half the operations of the autograd step (the same GEMMs, far fewer small
kernels), which is what bounds a batch-100 step on a CPU or a GPU. It applies to one-layer
encoders with an activation whose second derivative is listed in ``SECOND_DERIVATIVES``
and no CAE+H term; ``applies`` says when, and the module falls back to autograd otherwise.
``tests/test_fastpath.py`` checks it against autograd for every case it covers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

#: ``s''(z)`` from ``(z, h, s'(z))``, for the activations the fast path covers.
SECOND_DERIVATIVES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "sigmoid": lambda z, h, d1: d1 * (1 - 2 * h),
    "tanh": lambda z, h, d1: -2 * h * d1,
    "softplus": lambda z, h, d1: d1 * (1 - d1),  # s' = sigmoid(z)
    "elu": lambda z, h, d1: torch.where(z > 0, torch.zeros_like(z), d1),
    "relu": lambda z, h, d1: torch.zeros_like(z),
    "leaky_relu": lambda z, h, d1: torch.zeros_like(z),
    "identity": lambda z, h, d1: torch.zeros_like(z),
}


def applies(config) -> bool:
    """Whether ``one_layer_step`` computes this configuration's gradient."""
    return (not config.hidden_layer_sizes and config.higher_order_weight == 0
            and config.penalty_method == "closed_form" and config.activation in SECOND_DERIVATIVES)


def _accumulate(param: Tensor, grad: Tensor) -> None:
    grad = grad.to(param.dtype)  # bfloat16 under autocast; gradients stay in the weights' dtype
    if param.grad is None:
        param.grad = grad
    else:
        param.grad.add_(grad)


def one_layer_step(module, x: Tensor) -> dict[str, Tensor]:
    """Loss terms of batch ``x`` ``(B, d)`` (detached scalars), with the loss's gradient
    accumulated into every parameter's ``.grad``, as ``loss.backward()`` would."""
    cfg = module.config
    layer = module.encoder.layers[0]
    W, b = layer.weight, layer.bias  # (k, d), (k,)
    c = module.decoder.biases[0]  # (d,)
    V = W.T if cfg.tied_weights else module.decoder.weights[0]  # (d, k)
    act = module.encoder.act
    batch, d = x.shape
    lam = cfg.contractive_weight
    with torch.no_grad():
        z = torch.addmm(b, x, W.T)  # (B, k)
        h = act.fn(z)
        d1 = act.derivative(z, h)
        logits = torch.addmm(c, h, V.T)  # (B, d)
        # g is kept unscaled (one pass less over the (B, d) tensor); its factor ``scale``
        # goes into the GEMMs' alpha and the small results instead
        scale = 1.0 / (batch * d)
        if cfg.loss == "bce":
            rec = F.binary_cross_entropy_with_logits(logits, x)
            g = torch.sigmoid(logits).sub_(x)
        elif cfg.output_activation == "sigmoid":
            out = torch.sigmoid(logits)
            err = out - x
            rec = torch.dot(err.view(-1), err.view(-1)) * scale
            g = err.mul_(out * (1 - out))
            scale *= 2.0
        else:
            err = logits.sub_(x)
            rec = torch.dot(err.view(-1), err.view(-1)) * scale
            g = err
            scale *= 2.0
        w = torch.linalg.vector_norm(W, dim=1).square_()  # (k,) squared row norms
        d1_sq = d1 * d1
        pen = (d1_sq @ w).mean()
        grad_V = torch.mm(g.T, h).mul_(scale)  # (d, k)
        dz = torch.mm(g, V).mul_(d1).mul_(scale)  # (B, k)
        if lam:
            second = SECOND_DERIVATIVES[cfg.activation](z, h, d1)
            dz.add_(d1 * second * w, alpha=2 * lam / batch)
        grad_W = dz.T @ x  # (k, d)
        if lam:
            grad_W.addcmul_(W, d1_sq.sum(0).unsqueeze(1), value=2 * lam / batch)
        if cfg.tied_weights:
            grad_W.add_(grad_V.T)
        else:
            _accumulate(module.decoder.weights[0], grad_V)
        _accumulate(W, grad_W)
        _accumulate(b, dz.sum(0))
        _accumulate(c, g.sum(0).mul_(scale))
    return {"reconstruction": rec, "penalty": pen, "loss": rec + lam * pen}
