r"""Tangent propagation along an encoder's tangent planes: the Manifold Tangent Classifier.

Rifai, Dauphin, Vincent, Bengio and Muller (NIPS 2011). A contractive encoder

    h(x) = s(W_L ... s(W_1 (x - o) / c + b_1) ... + b_L),   J(x) = D_L W_L ... D_1 W_1 C^-1

(``D_l = diag s'(z_l)``, ``C = diag c``) keeps a few large singular values of its Jacobian;
the leading right singular vectors span the tangent plane of the data manifold at ``x``.
``u_1 .. u_m`` below is an orthonormal basis of that plane in the input's units. The
Manifold Tangent Classifier fine-tunes a classifier with outputs ``p(x)`` (softmax
probabilities) under

    loss = cross-entropy + beta * mean_b sum_i ||(dp/dx)(x_b) u_i(x_b)||^2          (MTC eq. 6)

so that moving along the manifold does not change the prediction.

``leading_tangents`` computes ``u_1 .. u_m`` for many points by randomized subspace iteration
(Halko, Martinsson and Tropp 2011, algorithm 4.4) on ``J^T J`` (``J`` with respect to the
scaled input; see its docstring for the input's units), through products with ``J``
and ``J^T`` only: ``r = m + oversample`` directions per point, ``n_iter`` power steps, then a
Rayleigh-Ritz step (the eigenvectors of the ``r x r`` matrix ``Q J^T J Q^T``). A product
costs ``r`` times the encoder's forward pass, so no ``(k, d)`` Jacobian is ever formed and the
``d x d`` eigenproblem is never solved. The error in the subspace shrinks like
``(sigma_{r+1} / sigma_m)^(2 n_iter)`` (``tests/test_tangentprop.py`` checks the result,
with many steps, against a float64 SVD of the brute-force Jacobian). On the MNIST
reproduction's 784-1000 CAEs, 15 tangents at 100 validation images, the default 6 steps
leave the plane 0.7 degrees (lambda 0.1) and 0.2 degrees (lambda 0.3) from the SVD's, as
the mean principal angle; the largest angle averages 5.6 and 1.6 degrees (4 steps: 16.9
and 6.1; 8 steps: 2.0 and 0.5). Their spectra fall slowly there: sigma_15 / sigma_1 is
about 0.6.

``directional_derivatives`` is the term's inner part: ``(dp/dx) v`` for a batch of
directions, from the logits and their forward-mode derivative ``dl = (dl/dx) v``:
``dp = p * (dl - <p, dl>)`` (the softmax's Jacobian ``diag(p) - p p^T`` applied to ``dl``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from .activations import get_activation

Tensor = torch.Tensor


def _cholesky_qr2(Y: Tensor) -> Tensor | None:
    """``(n, r, d) -> (n, r, d)``: CholeskyQR2 (Fukaya et al. 2014), ``Y <- L^-1 Y`` with
    ``L L^T = Y Y^T``, twice, in float64: a few batched GEMMs and ``r x r`` factorisations.
    The second pass restores the orthogonality the first loses to rounding (good up to a
    condition number of about 1e8 in float64). None where a factorisation fails or a row
    collapses (``Y``'s rows nearly dependent): the caller falls back to Householder QR."""
    Q = Y.double()
    for _ in range(2):
        L, info = torch.linalg.cholesky_ex(Q @ Q.mT)
        if bool((info != 0).any()):
            return None
        Q = torch.linalg.solve_triangular(L, Q, upper=False)
    if not bool(torch.isfinite(Q).all()):
        return None
    return Q.to(Y.dtype)


def _orthonormal_rows(Y: Tensor, cholesky: bool | None = None) -> Tensor:
    """``(n, r, d) -> (n, r, d)``: orthonormal rows, the first ``j`` of each ``Y[i]`` spanning
    what its first ``j`` rows span. Householder QR (LAPACK) on a CPU; on a GPU (``cholesky``
    None: where ``Y`` is), where a batch of QRs runs one small factorisation after another
    (56 s for 50,000 MNIST points on an H200), CholeskyQR2, with QR where it fails."""
    if Y.is_cuda if cholesky is None else cholesky:
        Q = _cholesky_qr2(Y)
        if Q is not None:
            return Q
    return torch.linalg.qr(Y.mT).Q.mT


def _jac(T: Tensor, weights: Sequence[Tensor], derivs: list[Tensor]) -> Tensor:
    """Rows times ``J^T`` (``J`` with respect to the scaled input ``z``): ``(c, r, d) ->
    (c, r, k_L)``, ``derivs[l]`` ``(c, 1, k_l)``."""
    for W, s in zip(weights, derivs, strict=True):
        T = (T @ W.T) * s
    return T


def _jac_t(U: Tensor, weights: Sequence[Tensor], derivs: list[Tensor]) -> Tensor:
    """Rows times ``J``: ``(c, r, k_L) -> (c, r, d)``."""
    for W, s in zip(reversed(weights), reversed(derivs), strict=True):
        U = (U * s) @ W
    return U


def leading_tangents(
    weights: Sequence[Tensor], biases: Sequence[Tensor], activation: str, offset: Tensor,
    scale: Tensor, X: Tensor, n_tangents: int, *, n_iter: int = 6, oversample: int = 10,
    chunk: int = 512, generator: torch.Generator | None = None,
) -> Tensor:
    """An orthonormal basis of the encoder's tangent plane at each row of ``X``: its Jacobian's
    leading ``n_tangents`` right singular vectors, as ``ContractiveAutoencoder.tangents`` reads
    them (``contractive.analysis.tangents``).

    weights[l] ``(k_l, k_{l-1})``, biases[l] ``(k_l,)``, offset and scale ``(d,)``: the encoder
    as in the module docstring; X ``(n, d)``. The singular vectors are those of the Jacobian
    with respect to the scaled input ``z = (x - offset) / scale`` (the input the network
    sees), pushed forward to ``x`` (``v_x = scale * v_z``) and orthonormalised there: the
    singular vectors with respect to ``x`` itself would span ``diag(scale)^-2`` times the
    plane. Returns ``(n, n_tangents, d)`` in the weights' dtype and on their device, the first
    ``j`` rows spanning the leading ``j`` singular vectors' plane (with ``scale`` 1, row ``j``
    is the ``j``-th singular vector, up to its sign). The output is allocated whole
    (``n * n_tangents * d`` numbers); the work goes ``chunk`` points at a time. Where the
    Jacobian is zero (every unit saturated or off) the rows are arbitrary, and one
    ``RuntimeWarning`` says at how many points.
    """
    act = get_activation(activation)
    dev, dtype = weights[0].device, weights[0].dtype
    d = weights[0].shape[1]
    rank = min(d, *(W.shape[0] for W in weights))
    if not 1 <= n_tangents <= rank:
        raise ValueError(f"n_tangents={n_tangents} must be between 1 and {rank}, the smaller of "
                         "the input's features and the encoder's narrowest layer")
    r = min(n_tangents + oversample, rank)
    offset, scale = offset.to(dev, dtype), scale.to(dev, dtype)
    out = torch.empty((X.shape[0], n_tangents, d), dtype=dtype, device=dev)
    n_flat = 0
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
            Q = _orthonormal_rows(_jac_t(_jac(Q, weights, derivs), weights, derivs))
        Z = _jac(Q, weights, derivs)  # (c, r, k_L)
        evals, V = torch.linalg.eigh(Z @ Z.mT)  # ascending eigenvalues of Q J^T J Q^T
        n_flat += int((evals[:, -1] <= 0).sum())
        top = V[:, :, -n_tangents:].flip(-1)  # (c, r, m), largest first
        out[start : start + x.shape[0]] = _orthonormal_rows((top.mT @ Q) * scale)
    if n_flat:
        warnings.warn(
            f"the encoder's Jacobian is zero at {n_flat} of {X.shape[0]} points (a locally "
            "constant encoder, e.g. saturated or dead units): their tangent rows are arbitrary",
            RuntimeWarning, stacklevel=2,
        )
    return out


def directional_derivatives(logits: Tensor, dlogits: Tensor) -> Tensor:
    """``(dp/dx) v`` for softmax outputs ``p``: logits ``(B, C)`` and their derivatives along
    ``P`` directions per row ``(B, P, C)`` give ``(B, P, C)``."""
    p = torch.softmax(logits, dim=-1).unsqueeze(1)  # (B, 1, C)
    return p * (dlogits - (p * dlogits).sum(-1, keepdim=True))
