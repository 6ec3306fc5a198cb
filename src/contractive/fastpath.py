r"""The one-layer CAE's training step with its gradient written out (no autograd graph).

For the classic CAE, ``h = s(W x + b)``, ``r = s_out(V h + c)`` (``V = W^T`` when tied),

    loss = mean_b [ L(x_b, r_b) ] + lambda * mean_b sum_j s'(z_bj)^2 ||W_j||^2,

every gradient has a closed form. With ``g = dloss/d(logits)`` (``(B, d)``; for the mean
squared error ``2 (r - x) / (B d)``, times ``r (1 - r)`` after a sigmoid; for the
cross-entropy on logits ``(sigmoid(logits) - x) / (B d)``) and ``w_j = ||W_j||^2``:

    dV = g^T h                      dc = sum_b g
    dz = (g V) * s' + (2 lambda / B) * w * s'^2 * (s'' / s')
    dW = dz^T x + 2 lambda * (mean_b s'^2)_j W_j   (+ dV^T when tied)
    db = sum_b dz

This is about half the operations of the autograd step (the same GEMMs, far fewer small
kernels), which is what bounds a batch-100 step on a CPU or a GPU: on a GPU each kernel
costs 2-3 us however small, so the step is written to launch few (about 23 for the seed
configuration: scales folded into ``g``, ``addcmul`` for products of three factors, the
penalty from the column means ``mean_b s'^2`` that ``dW`` needs anyway). It applies to
one-layer encoders with an activation whose ``s'' / s'`` is listed in ``CURVATURES`` and no
CAE+H term; ``applies`` says when, and the module falls back to autograd otherwise.
``tests/test_fastpath.py`` checks it against autograd for every case it covers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

#: ``s''(z) / s'(z)`` from ``(z, h, s'(z))``, for the activations the fast path covers
#: (``None`` where ``s'' = 0``: the penalty's gradient then has no curvature term).
CURVATURES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor] | None] = {
    "sigmoid": lambda z, h, d1: torch.rsub(h, 1.0, alpha=2.0),  # s'' = s' (1 - 2h)
    "tanh": lambda z, h, d1: h * -2.0,  # s'' = -2 h s'
    "softplus": lambda z, h, d1: torch.rsub(d1, 1.0),  # s' = sigmoid(z), s'' = s' (1 - s')
    "elu": lambda z, h, d1: (z <= 0).to(z.dtype),  # s'' = s' = e^z for z <= 0, else 0
    "relu": None,
    "leaky_relu": None,
    "identity": None,
}


def applies(config) -> bool:
    """Whether ``one_layer_step`` computes this configuration's gradient."""
    return (not config.hidden_layer_sizes and config.higher_order_weight == 0
            and config.penalty_method == "closed_form" and config.activation in CURVATURES)


def _squared_row_norms(W: Tensor) -> Tensor:
    """``||W_j||^2`` for each row, ``(k, d) -> (k,)``: one batched GEMV on a GPU (one kernel
    instead of two), a norm on a CPU (where the batched GEMV costs about 9x more)."""
    if W.is_cuda:
        return torch.bmm(W.unsqueeze(1), W.unsqueeze(2)).view(-1)
    return torch.linalg.vector_norm(W, dim=1).square_()


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
        # g carries the 1 / (B d) of the mean, so no GEMM's result needs rescaling
        inv = 1.0 / (batch * d)
        if cfg.loss == "bce":
            rec = F.binary_cross_entropy_with_logits(logits, x)
            g = torch.sigmoid(logits).sub_(x).mul_(inv)
        elif cfg.output_activation == "sigmoid":
            out = torch.sigmoid(logits)
            err = out.sub(x)
            rec = torch.dot(err.view(-1), err.view(-1)).mul_(inv)
            g = err.mul_(torch.addcmul(out, out, out, value=-1.0)).mul_(2.0 * inv)
        else:
            err = logits.sub_(x)
            rec = torch.dot(err.view(-1), err.view(-1)).mul_(inv)
            g = err.mul_(2.0 * inv)
        w = _squared_row_norms(W).to(d1.dtype)  # (k,); bfloat16 under autocast, as d1
        d1_sq = d1 * d1  # (B, k)
        d1_sq_mean = d1_sq.mean(0)  # (k,)
        pen = torch.dot(d1_sq_mean, w)
        grad_V = g.T @ h  # (d, k)
        dz = torch.mm(g, V).mul_(d1)  # (B, k)
        curvature = CURVATURES[cfg.activation]
        if lam and curvature is not None:
            dz.addcmul_(d1_sq, curvature(z, h, d1).mul_(w), value=2 * lam / batch)
        grad_W = dz.T @ x  # (k, d)
        if lam:
            grad_W.addcmul_(W, d1_sq_mean.unsqueeze(1), value=2 * lam)
        if cfg.tied_weights:
            grad_W.add_(grad_V.T)
        else:
            _accumulate(module.decoder.weights[0], grad_V)
        _accumulate(W, grad_W)
        _accumulate(b, dz.sum(0))
        _accumulate(c, g.sum(0))
    return {"reconstruction": rec, "penalty": pen, "loss": torch.add(rec, pen, alpha=lam)}
