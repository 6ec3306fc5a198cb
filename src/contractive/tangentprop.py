r"""Tangent propagation along an encoder's tangent planes: the Manifold Tangent Classifier.

Rifai, Dauphin, Vincent, Bengio and Muller (NIPS 2011). A contractive encoder

    h(x) = s(W_L ... s(W_1 (x - o) / c + b_1) ... + b_L),   J(x) = D_L W_L ... D_1 W_1 C^-1

(``D_l = diag s'(z_l)``, ``C = diag c``) keeps a few large singular values of its Jacobian;
the leading right singular vectors ``u_1 .. u_m`` of ``J(x)`` (unit rows in the input's
units) span the tangent plane of the data manifold at ``x``. The Manifold Tangent Classifier
fine-tunes a classifier with outputs ``p(x)`` (softmax probabilities) under

    loss = cross-entropy + beta * mean_b sum_i ||(dp/dx)(x_b) u_i(x_b)||^2          (MTC eq. 6)

so that moving along the manifold does not change the prediction.

``leading_tangents`` computes ``u_1 .. u_m`` for many points by randomized subspace iteration
(Halko, Martinsson and Tropp 2011, algorithm 4.4) on ``J^T J``, through products with ``J``
and ``J^T`` only: ``r = m + oversample`` directions per point, ``n_iter`` power steps, then a
Rayleigh-Ritz step (the eigenvectors of the ``r x r`` matrix ``Q J^T J Q^T``). A product
costs ``r`` times the encoder's forward pass, so no ``(k, d)`` Jacobian is ever formed and the
``d x d`` eigenproblem is never solved. The error in the subspace shrinks like
``(sigma_{r+1} / sigma_m)^(2 n_iter)``; a CAE's spectrum falls fast, so a few steps suffice
(``tests/test_tangentprop.py`` checks the result against a float64 SVD of the brute-force
Jacobian).

``directional_derivatives`` is the term's inner part: ``(dp/dx) v`` for a batch of
directions, from the logits and their forward-mode derivative ``dl = (dl/dx) v``:
``dp = p * (dl - <p, dl>)`` (the softmax's Jacobian ``diag(p) - p p^T`` applied to ``dl``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .activations import get_activation

Tensor = torch.Tensor


def _cholesky_qr2(Y: Tensor) -> Tensor:
    """``(n, r, d) -> (n, r, d)``: CholeskyQR2 (Fukaya et al. 2014), ``Y <- L^-1 Y`` with
    ``L L^T = Y Y^T``, twice: a few batched GEMMs and ``r x r`` factorisations. The second
    pass restores the orthogonality the first loses to rounding; a ridge of ``eps`` times
    ``tr(Y Y^T)`` keeps the factorisation defined when rows are nearly dependent."""
    eye = torch.eye(Y.shape[1], dtype=Y.dtype, device=Y.device)
    for _ in range(2):
        G = Y @ Y.mT
        ridge = torch.finfo(Y.dtype).eps * G.diagonal(dim1=-2, dim2=-1).sum(-1)
        L = torch.linalg.cholesky(G + ridge[:, None, None] * eye)
        Y = torch.linalg.solve_triangular(L, Y, upper=False)
    return Y


def _orthonormal_rows(Y: Tensor) -> Tensor:
    """``(n, r, d) -> (n, r, d)``: orthonormal rows spanning each ``Y[i]``'s rows. Householder
    QR (LAPACK) on a CPU; CholeskyQR2 on a GPU, where a batch of QRs runs one small
    factorisation after another (56 s for 50,000 MNIST points on an H200)."""
    return _cholesky_qr2(Y) if Y.is_cuda else torch.linalg.qr(Y.mT).Q.mT


def _jac(T: Tensor, weights: Sequence[Tensor], derivs: list[Tensor], scale: Tensor) -> Tensor:
    """Rows times ``J^T``: ``(c, r, d) -> (c, r, k_L)``, ``derivs[l]`` ``(c, 1, k_l)``."""
    T = T / scale
    for W, s in zip(weights, derivs, strict=True):
        T = (T @ W.T) * s
    return T


def _jac_t(U: Tensor, weights: Sequence[Tensor], derivs: list[Tensor], scale: Tensor) -> Tensor:
    """Rows times ``J``: ``(c, r, k_L) -> (c, r, d)``."""
    for W, s in zip(reversed(weights), reversed(derivs), strict=True):
        U = (U * s) @ W
    return U / scale


def leading_tangents(
    weights: Sequence[Tensor], biases: Sequence[Tensor], activation: str, offset: Tensor,
    scale: Tensor, X: Tensor, n_tangents: int, *, n_iter: int = 6, oversample: int = 10,
    chunk: int = 512, generator: torch.Generator | None = None,
) -> Tensor:
    """The leading ``n_tangents`` right singular vectors of the encoder's Jacobian at each row
    of ``X``.

    weights[l] ``(k_l, k_{l-1})``, biases[l] ``(k_l,)``, offset and scale ``(d,)``: the encoder
    as in the module docstring; X ``(n, d)``. Returns ``(n, n_tangents, d)``, orthonormal rows
    in the input's units, in decreasing order of singular value (each row's sign arbitrary),
    in the weights' dtype and on their device. Memory is bounded by ``chunk`` points at a time.
    """
    act = get_activation(activation)
    dev, dtype = weights[0].device, weights[0].dtype
    d = weights[0].shape[1]
    if not 1 <= n_tangents <= d:
        raise ValueError(f"n_tangents={n_tangents} must be between 1 and the {d} input features")
    r = min(n_tangents + oversample, d)
    out = torch.empty((X.shape[0], n_tangents, d), dtype=dtype, device=dev)
    for start in range(0, X.shape[0], chunk):
        x = X[start : start + chunk].to(dev, dtype)
        derivs = []
        h = (x - offset) / scale
        for W, b in zip(weights, biases, strict=True):
            z = h @ W.T + b
            h = act.fn(z)
            derivs.append(act.derivative(z, h).unsqueeze(1))  # (c, 1, k_l)

        Q = torch.randn((x.shape[0], r, d), generator=generator, dtype=dtype,
                        device=generator.device if generator is not None else dev).to(dev)
        Q = _orthonormal_rows(Q)
        for _ in range(n_iter):
            Q = _orthonormal_rows(_jac_t(_jac(Q, weights, derivs, scale), weights, derivs, scale))
        Z = _jac(Q, weights, derivs, scale)  # (c, r, k_L)
        _, V = torch.linalg.eigh(Z @ Z.mT)  # ascending eigenvalues of Q J^T J Q^T
        top = V[:, :, -n_tangents:].flip(-1)  # (c, r, m), largest first
        out[start : start + x.shape[0]] = top.mT @ Q
    return out


def directional_derivatives(logits: Tensor, dlogits: Tensor) -> Tensor:
    """``(dp/dx) v`` for softmax outputs ``p``: logits ``(B, C)`` and their derivatives along
    ``P`` directions per row ``(B, P, C)`` give ``(B, P, C)``."""
    p = torch.softmax(logits, dim=-1).unsqueeze(1)  # (B, 1, C)
    return p * (dlogits - (p * dlogits).sum(-1, keepdim=True))
