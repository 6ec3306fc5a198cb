"""Elementwise activations and their derivatives, by name.

The closed-form penalty of one layer ``h = s(z)``, ``z = W x + b`` is
``||J||_F^2 = sum_j s'(z_j)^2 ||W_j||^2``, so every activation the models accept comes
with its derivative. The derivative takes both ``z`` and ``h = s(z)`` because for several
activations it is cheapest from the output (sigmoid: ``h (1 - h)``; tanh: ``1 - h^2``).

Each derivative is written out by hand here and tested against autograd in
``tests/test_activations.py``; using the sigmoid's ``h (1 - h)`` for another activation is
one of the classic CAE bugs (REFERENCE.md section 4, bug 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

_LEAKY_SLOPE = 0.01
_SQRT_2PI = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation ``s`` with its derivative ``s'(z)`` given ``(z, s(z))``."""

    name: str
    fn: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor, Tensor], Tensor]


def _silu_derivative(z: Tensor, h: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


def _gelu_derivative(z: Tensor, h: Tensor) -> Tensor:
    # exact (erf) GELU: d/dz [z Phi(z)] = Phi(z) + z phi(z)
    phi = torch.exp(-0.5 * z * z) / _SQRT_2PI
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0))) + z * phi


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", lambda z: z, lambda z, h: torch.ones_like(z)),
        Activation("sigmoid", torch.sigmoid, lambda z, h: torch.addcmul(h, h, h, value=-1.0)),
        Activation("tanh", torch.tanh, lambda z, h: 1.0 - h * h),
        Activation("relu", F.relu, lambda z, h: (z > 0).to(z.dtype)),
        Activation(
            "leaky_relu",
            lambda z: F.leaky_relu(z, _LEAKY_SLOPE),
            lambda z, h: torch.where(z > 0, torch.ones_like(z), torch.full_like(z, _LEAKY_SLOPE)),
        ),
        Activation("softplus", F.softplus, lambda z, h: torch.sigmoid(z)),
        Activation("elu", F.elu, lambda z, h: torch.where(z > 0, torch.ones_like(z), h + 1.0)),
        Activation("silu", F.silu, _silu_derivative),
        Activation("gelu", F.gelu, _gelu_derivative),
    )
}


def get_activation(name: str, *, param: str = "activation") -> Activation:
    """Look up an activation by name; a ``ValueError`` lists the valid names."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"{param}={name!r} is not a known activation; valid: {', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[name]
