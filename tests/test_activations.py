"""Activations and their hand-written derivatives, checked against autograd in float64."""

from __future__ import annotations

import pytest
import torch

from contractive.activations import ACTIVATIONS, Activation, get_activation

DT = torch.float64
ACTS = sorted(ACTIVATIONS)
# activations with a kink at 0 (value or derivative not smooth there): sample away from it
KINKED = {"relu", "leaky_relu", "elu"}


def _sample_z(seed: int, n: int = 400) -> torch.Tensor:
    """Random pre-activations in about [-10, 10], none closer to 0 than 0.05."""
    g = torch.Generator().manual_seed(seed)
    z = 3.0 * torch.randn(n, generator=g, dtype=DT)
    z = z + 0.05 * torch.sign(z)
    # a few saturated points and both sides of 0 for sure
    extra = torch.tensor([-10.0, -6.0, -0.3, 0.3, 6.0, 10.0], dtype=DT)
    return torch.cat([z, extra])


def _autograd_derivative(act: Activation, z: torch.Tensor) -> torch.Tensor:
    zr = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(act.fn(zr).sum(), zr)
    return g


def test_registry_names_match_keys():
    assert len(ACTIVATIONS) >= 9
    for name, act in ACTIVATIONS.items():
        assert act.name == name
        assert get_activation(name) is act
    for expected in ("identity", "sigmoid", "tanh", "relu", "softplus"):
        assert expected in ACTIVATIONS


@pytest.mark.parametrize("name", ACTS)
def test_derivative_matches_autograd_float64(name):
    act = ACTIVATIONS[name]
    z = _sample_z(seed=ACTS.index(name))
    assert z.abs().min() >= 0.05
    h = act.fn(z)
    got = act.derivative(z, h)
    want = _autograd_derivative(act, z)
    assert got.shape == z.shape
    assert got.dtype == DT, f"{name}: derivative returned {got.dtype} for float64 input"
    # float64 in, float64-accurate derivative out: the gap must be at rounding level
    err = (got - want).abs().max().item()
    assert err <= 1e-14 + 1e-12 * want.abs().max().item(), (
        f"{name}: hand-written derivative differs from autograd by {err:.3e} in float64 "
        f"(e.g. got {got[got != want][:1].tolist()} vs {want[got != want][:1].tolist()})"
    )


@pytest.mark.parametrize("name", ACTS)
def test_derivative_matches_autograd_2d_and_float32(name):
    # the derivative is used on (B, k) tensors in float32 by default
    act = ACTIVATIONS[name]
    g = torch.Generator().manual_seed(100 + ACTS.index(name))
    z = 2.0 * torch.randn(6, 5, generator=g)
    z = z + 0.05 * torch.sign(z)
    got = act.derivative(z, act.fn(z))
    assert got.shape == z.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, _autograd_derivative(act, z), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ACTS)
def test_derivative_matches_central_differences(name):
    # an autograd-free reference: central differences of fn itself
    act = ACTIVATIONS[name]
    z = _sample_z(seed=200 + ACTS.index(name), n=100)
    eps = 1e-6
    fd = (act.fn(z + eps) - act.fn(z - eps)) / (2 * eps)
    torch.testing.assert_close(act.derivative(z, act.fn(z)), fd, rtol=1e-7, atol=1e-8)


_Z_KNOWN = [-2.0, 0.5, 3.0]
_E = 0.1353352832366127  # exp(-2)
_S = [0.11920292202211755, 0.6224593312018546, 0.9525741268224334]  # sigmoid(_Z_KNOWN)
_T = [-0.9640275800758169, 0.46211715726000974, 0.9950547536867305]  # tanh(_Z_KNOWN)
KNOWN = {
    "identity": [1.0, 1.0, 1.0],
    "sigmoid": [s * (1 - s) for s in _S],
    "tanh": [1 - t * t for t in _T],
    "relu": [0.0, 1.0, 1.0],
    "leaky_relu": [0.01, 1.0, 1.0],
    "softplus": _S,
    "elu": [_E, 1.0, 1.0],
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_derivative_values(name):
    # hand-computed values (Python floats, so exact float64 constants such as 0.01)
    act = ACTIVATIONS[name]
    z = torch.tensor(_Z_KNOWN, dtype=DT)
    got = act.derivative(z, act.fn(z))
    want = torch.tensor(KNOWN[name], dtype=DT)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bad", ["sigmod", "ReLU", "", "softmax"])
def test_get_activation_bad_name_lists_valid_names(bad):
    with pytest.raises(ValueError, match=r"not a known activation; valid: .*sigmoid") as info:
        get_activation(bad)
    msg = str(info.value)
    assert repr(bad) in msg
    for name in ACTIVATIONS:
        assert name in msg


def test_get_activation_non_string_and_param_name():
    with pytest.raises(ValueError, match=r"valid: .*tanh"):
        get_activation(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^output_activation='nope'"):
        get_activation("nope", param="output_activation")
