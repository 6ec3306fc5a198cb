"""The contractive penalty ||J_f(x)||_F^2 and the CAE+H term, against brute force in float64.

References used here, all independent of ``penalty.py``'s structured code:
- ``torch.autograd.functional.jacobian`` of the encoder, one sample at a time;
- central finite differences of the encoder output with respect to the input;
- central finite differences of the penalty with respect to single weights, and gradcheck.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contractive import penalty as P
from contractive.activations import ACTIVATIONS, get_activation
from contractive.models import CAEConfig, ContractiveAutoencoderModule, MLPEncoder

DT = torch.float64
ACTS = sorted(ACTIVATIONS)
SMOOTH = ["elu", "gelu", "sigmoid", "silu", "softplus", "tanh"]
B, D, K, HID = 5, 6, 4, 7

SOURCES = ["module", "module_tied", "callable_module", "callable_stack"]

TIGHT = dict(rtol=1e-10, atol=1e-12)  # two exact computations of the same quantity
FD_TOL = dict(rtol=1e-6, atol=1e-8)  # against central finite differences



# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=gen(seed), dtype=DT)


def module_encoder(activation: str, hidden=(), *, tied=False, seed=0) -> MLPEncoder:
    """The encoder of a float64 ``ContractiveAutoencoderModule``, with non-zero biases."""
    cfg = CAEConfig(
        D, K, hidden_layer_sizes=hidden, activation=activation, tied_weights=tied,
        penalty_method="exact" if hidden else "closed_form",
    )
    module = ContractiveAutoencoderModule(cfg, seed=seed).double()
    g = gen(1000 + seed)
    with torch.no_grad():
        for layer in module.encoder.layers:
            layer.weight.mul_(1.5)
            layer.bias.copy_(0.5 * torch.randn(layer.bias.shape, generator=g, dtype=DT))
    return module.encoder


def linear_stack(activation: str, hidden=(), *, seed=0):
    """A plain list of float64 ``nn.Linear`` layers and an encode function (not MLPLike)."""
    g = gen(2000 + seed)
    sizes = [D, *hidden, K]
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        lin = nn.Linear(a, b, dtype=DT)
        with torch.no_grad():
            lin.weight.copy_(1.3 * torch.randn(b, a, generator=g, dtype=DT) / math.sqrt(a))
            lin.bias.copy_(0.5 * torch.randn(b, generator=g, dtype=DT))
        layers.append(lin)
    fn = get_activation(activation).fn

    def encode(x):
        for lin in layers:
            x = fn(lin(x))
        return x

    return encode, layers


def make_source(source: str, activation: str, hidden=(), seed=0):
    """(encoder passed to penalty.py, list of nn.Linear layers, plain encode function)."""
    if source in ("module", "module_tied", "callable_module"):
        enc = module_encoder(activation, hidden, tied=source == "module_tied", seed=seed)
        if source == "callable_module":
            return (lambda x: enc(x)), list(enc.layers), enc
        return enc, list(enc.layers), enc
    encode, layers = linear_stack(activation, hidden, seed=seed)
    return encode, layers, encode


def pre_activations(layers, activation: str, x: torch.Tensor) -> list[torch.Tensor]:
    fn = get_activation(activation).fn
    zs = []
    with torch.no_grad():
        for lin in layers:
            z = lin(x)
            zs.append(z)
            x = fn(z)
    return zs


def assert_away_from_kinks(layers, activation, x, margin=1e-4):
    """Finite differences are meaningless across a ReLU kink: make sure none is near."""
    for z in pre_activations(layers, activation, x):
        assert z.abs().min() > margin, "test input too close to a kink; pick another seed"


def brute_jacobian(f, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """(B, k, d): autograd Jacobian of f, one sample at a time."""
    return torch.stack([
        torch.autograd.functional.jacobian(
            lambda xi: f(xi.unsqueeze(0)).squeeze(0), xb, create_graph=create_graph
        )
        for xb in x
    ])


def fd_jacobian(f, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, k, d): central differences of f with respect to each input coordinate."""
    cols = []
    with torch.no_grad():
        for i in range(x.shape[1]):
            e = torch.zeros_like(x)
            e[:, i] = eps
            cols.append((f(x + e) - f(x - e)) / (2 * eps))
    return torch.stack(cols, dim=2)


def fro2(J: torch.Tensor) -> torch.Tensor:
    return J.pow(2).flatten(1).sum(1)


def raw_rademacher(seed_gen: torch.Generator, batch: int, m: int, k: int) -> torch.Tensor:
    """Independent re-draw of the implementation's probes: +-1/sqrt(m) from randint(0, 2)."""
    bits = torch.randint(0, 2, (batch, m, k), generator=seed_gen)
    return (2 * bits - 1).to(DT) / math.sqrt(m)


def fd_param(loss_fn, param: torch.Tensor, index, eps: float = 1e-6) -> float:
    """Central difference of loss_fn() in one entry of param (evaluated with grad enabled)."""
    old = param[index].item()
    values = []
    for value in (old + eps, old - eps):
        with torch.no_grad():
            param[index] = value
        values.append(loss_fn().item())
    with torch.no_grad():
        param[index] = old
    return (values[0] - values[1]) / (2 * eps)


class FunctionalMLP:
    """An ``MLPLike`` built from bare tensors (not a Module): lets gradcheck vary W."""

    def __init__(self, weights, biases, activation):
        self._weights = list(weights)
        self.biases = list(biases)
        self.act = get_activation(activation)

    @property
    def weights(self):
        return self._weights

    def __call__(self, x):
        for w, b in zip(self._weights, self.biases):
            x = self.act.fn(F.linear(x, w, b))
        return x

    def derivatives(self, x):
        derivs = []
        for w, b in zip(self._weights, self.biases):
            z = F.linear(x, w, b)
            x = self.act.fn(z)
            derivs.append(self.act.derivative(z, x))
        return x, derivs


# ---------------------------------------------------------------------------------------
# exact and closed form against brute force
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("hidden", [(), (HID,)], ids=["1layer", "2layers"])
@pytest.mark.parametrize("activation", ACTS)
def test_exact_penalty_matches_autograd_and_fd(activation, hidden, source):
    encoder, layers, plain = make_source(source, activation, hidden, seed=ACTS.index(activation))
    x = randn(B, D, seed=11)
    assert_away_from_kinks(layers, activation, x)
    got = P.contractive_penalty(encoder, x, "exact")
    assert got.shape == (B,) and got.dtype == DT
    want = fro2(brute_jacobian(plain, x))
    assert (want > 0).sum() >= 3  # (a ReLU sample may have every unit off: J = 0)
    torch.testing.assert_close(got, want, **TIGHT)
    torch.testing.assert_close(got, fro2(fd_jacobian(plain, x)), **FD_TOL)


@pytest.mark.parametrize("source", ["module", "module_tied", "functional"])
@pytest.mark.parametrize("activation", ACTS)
def test_closed_form_matches_autograd_and_fd(activation, source):
    if source == "functional":
        _, layers = linear_stack(activation, seed=3)
        encoder = FunctionalMLP([layers[0].weight], [layers[0].bias], activation)
    else:
        encoder = module_encoder(activation, tied=source == "module_tied", seed=3)
        layers = list(encoder.layers)
    x = randn(B, D, seed=12)
    assert_away_from_kinks(layers, activation, x)
    got = P.contractive_penalty(encoder, x, "closed_form")
    want = fro2(brute_jacobian(encoder, x))
    assert (want > 0).sum() >= 3
    torch.testing.assert_close(got, want, **TIGHT)
    torch.testing.assert_close(got, fro2(fd_jacobian(encoder, x)), **FD_TOL)
    # auto picks the closed form for one layer: same value
    torch.testing.assert_close(P.contractive_penalty(encoder, x), got, rtol=0, atol=0)
    # and the closed form agrees with the exact structured Jacobian
    torch.testing.assert_close(P.contractive_penalty(encoder, x, "exact"), got, **TIGHT)


@pytest.mark.parametrize("hidden", [(), (HID,), (HID, 5)], ids=["1layer", "2layers", "3layers"])
@pytest.mark.parametrize("activation", ACTS)
def test_mlp_jacobian_matches_autograd_and_fd(activation, hidden):
    enc = module_encoder(activation, hidden, seed=5)
    x = randn(B, D, seed=13)
    assert_away_from_kinks(enc.layers, activation, x)
    h, derivs = enc.derivatives(x)
    torch.testing.assert_close(h, enc(x), rtol=0, atol=0)
    assert len(derivs) == len(hidden) + 1
    J = P.mlp_jacobian(enc.weights, derivs)
    assert J.shape == (B, K, D)
    torch.testing.assert_close(J, brute_jacobian(enc, x), **TIGHT)
    torch.testing.assert_close(J, fd_jacobian(enc, x), **FD_TOL)


@pytest.mark.parametrize("hidden", [(), (HID,)], ids=["1layer", "2layers"])
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "gelu"])
def test_func_jacobian_matches_autograd_and_fd(activation, hidden):
    encode, layers = linear_stack(activation, hidden, seed=6)
    x = randn(B, D, seed=14)
    assert_away_from_kinks(layers, activation, x)
    J = P.func_jacobian(encode, x)
    assert J.shape == (B, K, D)
    torch.testing.assert_close(J, brute_jacobian(encode, x), **TIGHT)
    torch.testing.assert_close(J, fd_jacobian(encode, x), **FD_TOL)


@pytest.mark.parametrize("chunk_elements", [1, K * HID, 2 * K * HID, 3 * K * HID + 1])
def test_mlp_jacobian_chunked_equals_unchunked(chunk_elements):
    enc = module_encoder("tanh", (HID,), seed=7)
    x = randn(B, D, seed=15)  # B=5: chunks of 1, 2 (uneven tail) and 3 samples
    _, derivs = enc.derivatives(x)
    full = P.mlp_jacobian(enc.weights, derivs)
    chunked = P.mlp_jacobian(enc.weights, derivs, chunk_elements=chunk_elements)
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-15)
    torch.testing.assert_close(chunked, brute_jacobian(enc, x), **TIGHT)
    # chunked result keeps the graph to the weights
    g = torch.autograd.grad(chunked.pow(2).sum(), enc.layers[0].weight, retain_graph=True)[0]
    g_full = torch.autograd.grad(full.pow(2).sum(), enc.layers[0].weight)[0]
    torch.testing.assert_close(g, g_full, **TIGHT)


@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_func_jacobian_chunked_equals_default(chunk_size):
    encode, _ = linear_stack("softplus", (HID,), seed=8)
    x = randn(B, D, seed=16)
    torch.testing.assert_close(
        P.func_jacobian(encode, x, chunk_size=chunk_size), P.func_jacobian(encode, x), **TIGHT
    )


@pytest.mark.parametrize("hidden", [(), (HID,)], ids=["1layer", "2layers"])
def test_probe_products_equal_probes_times_jacobian(hidden):
    enc = module_encoder("silu", hidden, seed=9)
    x = randn(B, D, seed=17)
    probes = randn(B, 3, K, seed=18)
    J = brute_jacobian(enc, x)
    want = torch.einsum("bmk,bkd->bmd", probes, J)
    _, derivs = enc.derivatives(x)
    torch.testing.assert_close(P.mlp_probe_products(enc.weights, derivs, probes), want, **TIGHT)
    got_func = P.func_probe_products(lambda t: enc(t), x, probes)
    torch.testing.assert_close(got_func, want, **TIGHT)
    assert got_func.requires_grad  # built with create_graph


@pytest.mark.parametrize(
    "method,source", [("closed_form", "module"), ("exact", "module"), ("exact", "callable_module")]
)
def test_samples_do_not_interact(method, source):
    # per-sample values of a batch == values computed one sample at a time (no leaks)
    encoder, _, _ = make_source(source, "tanh", (), seed=10)
    x = randn(B, D, seed=19)
    batch = P.contractive_penalty(encoder, x, method)
    single = torch.cat([P.contractive_penalty(encoder, x[i : i + 1], method) for i in range(B)])
    torch.testing.assert_close(batch, single, **TIGHT)
    assert batch.std() > 1e-4


@pytest.mark.parametrize("method", ["exact", "hutchinson"])
@pytest.mark.parametrize("source", ["module", "callable_module"])
def test_penalty_under_no_grad_equals_penalty_with_grad(source, method):
    # evaluation / logging code computes the penalty under torch.no_grad(); the value must
    # not depend on the grad mode (the exact generic path and the MLP paths already honour it)
    encoder, _, _ = make_source(source, "tanh", (HID,), seed=11)
    x = randn(B, D, seed=20)
    want = P.contractive_penalty(encoder, x, method, n_probes=3, generator=gen(4)).detach()
    error = None
    try:
        with torch.no_grad():
            got = P.contractive_penalty(encoder, x, method, n_probes=3, generator=gen(4))
    except RuntimeError as err:  # func_probe_products: autograd.grad on a graph-less h
        error = err
    assert error is None, (
        f"BUG (penalty.py, func_probe_products): contractive_penalty(<callable>, x, {method!r}) "
        f"raises under torch.no_grad(): {error}"
    )
    torch.testing.assert_close(got, want, **TIGHT)


# ---------------------------------------------------------------------------------------
# gradients with respect to the weights
# ---------------------------------------------------------------------------------------

GRAD_CASES = [
    ("closed_form", (), "module"),
    ("exact", (), "module"),
    ("exact", (HID,), "module"),
    ("exact", (HID,), "callable_stack"),
    ("hutchinson", (HID,), "module"),
    ("hutchinson", (HID,), "callable_module"),
]


@pytest.mark.parametrize(
    "method,hidden,source", GRAD_CASES, ids=[f"{m}-{len(h) + 1}L-{s}" for m, h, s in GRAD_CASES]
)
@pytest.mark.parametrize("activation", SMOOTH)
def test_penalty_gradient_matches_fd(activation, method, hidden, source):
    encoder, layers, _ = make_source(source, activation, hidden, seed=20)
    x = randn(B, D, seed=21)
    assert_away_from_kinks(layers, activation, x)
    W, b = layers[0].weight, layers[0].bias

    def mean_penalty():
        # a fresh, identically seeded generator: the same probes at every evaluation
        return P.contractive_penalty(encoder, x, method, n_probes=3, generator=gen(5)).mean()

    gW, gb = torch.autograd.grad(mean_penalty(), [W, b])
    assert gW.abs().max() > 1e-4 and gb.abs().max() > 1e-6, "no gradient reaches W / b"
    pick = torch.Generator().manual_seed(22)
    rows = torch.randint(0, W.shape[0], (4,), generator=pick).tolist()
    cols = torch.randint(0, W.shape[1], (4,), generator=pick).tolist()
    for i, j in zip(rows, cols):
        fd = fd_param(mean_penalty, W, (i, j))
        assert gW[i, j].item() == pytest.approx(fd, rel=1e-5, abs=1e-8), (i, j)
    for i in range(min(2, b.shape[0])):
        fd = fd_param(mean_penalty, b, (i,))
        assert gb[i].item() == pytest.approx(fd, rel=1e-5, abs=1e-8), i


GRADCHECK_CASES = [
    "closed_form-mlp", "exact-mlp", "hutchinson-mlp", "exact-func", "hutchinson-func"
]


@pytest.mark.parametrize("case", GRADCHECK_CASES)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus"])
def test_penalty_gradcheck_in_W(activation, case):
    method, path = case.split("-")
    g = gen(30)
    d, hid, k, batch = 4, 3, 3, 3
    W1 = (torch.randn(hid if method != "closed_form" else k, d, generator=g, dtype=DT)
          .requires_grad_(True))
    b1 = 0.3 * torch.randn(W1.shape[0], generator=g, dtype=DT)
    W2 = torch.randn(k, hid, generator=g, dtype=DT)
    b2 = 0.3 * torch.randn(k, generator=g, dtype=DT)
    x = torch.randn(batch, d, generator=g, dtype=DT)

    def f(w1):
        if method == "closed_form":
            enc = FunctionalMLP([w1], [b1], activation)
        else:
            enc = FunctionalMLP([w1, W2], [b1, b2], activation)
        target = enc if path == "mlp" else (lambda t: enc(t))
        return P.contractive_penalty(target, x, method, n_probes=2, generator=gen(1))

    assert torch.autograd.gradcheck(f, (W1,), eps=1e-6, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------------------------------
# the Hutchinson estimate
# ---------------------------------------------------------------------------------------


def test_rademacher_probes_shape_values_and_errors():
    for m in (1, 3, 8):
        p = P.rademacher_probes(B, m, K, generator=gen(0), dtype=DT)
        assert p.shape == (B, m, K) and p.dtype == DT
        assert torch.equal(p.abs(), torch.full_like(p, 1 / math.sqrt(m)))
        # E[P^T P] = I: its diagonal is exactly 1 for every draw
        ptp = p.transpose(1, 2) @ p
        torch.testing.assert_close(torch.diagonal(ptp, dim1=1, dim2=2), torch.ones(B, K, dtype=DT))
    big = P.rademacher_probes(20, 50, K, generator=gen(1))
    assert big.dtype == torch.float32
    assert abs((big > 0).double().mean().item() - 0.5) < 0.03  # both signs, balanced
    # seeded: same generator seed, same probes; another seed, other probes
    assert torch.equal(P.rademacher_probes(B, 4, K, generator=gen(2)),
                       P.rademacher_probes(B, 4, K, generator=gen(2)))
    assert not torch.equal(P.rademacher_probes(B, 4, K, generator=gen(2)),
                           P.rademacher_probes(B, 4, K, generator=gen(3)))
    for bad in (0, -1):
        with pytest.raises(ValueError, match="n_probes"):
            P.rademacher_probes(B, bad, K)


@pytest.mark.parametrize("source", ["module", "callable_module", "callable_stack"])
@pytest.mark.parametrize("hidden", [(), (HID,)], ids=["1layer", "2layers"])
def test_hutchinson_equals_sketch_with_the_drawn_probes(hidden, source):
    encoder, _, plain = make_source(source, "tanh", hidden, seed=40)
    x = randn(B, D, seed=41)
    m = 3
    got = P.contractive_penalty(encoder, x, "hutchinson", n_probes=m, generator=gen(42))
    probes = raw_rademacher(gen(42), B, m, K)
    want = fro2(torch.einsum("bmk,bkd->bmd", probes, brute_jacobian(plain, x)))
    torch.testing.assert_close(got, want, **TIGHT)


@pytest.mark.parametrize("source", ["module", "callable_stack"])
@pytest.mark.parametrize("hidden", [(), (HID,)], ids=["1layer", "2layers"])
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_hutchinson_is_unbiased(activation, hidden, source):
    encoder, layers, plain = make_source(source, activation, hidden, seed=50)
    x = randn(B, D, seed=51)
    exact = fro2(brute_jacobian(plain, x))
    # 50 independent calls of 40 probes each: 2000 probes per sample
    reps = torch.stack([
        P.contractive_penalty(encoder, x, "hutchinson", n_probes=40, generator=gen(1000 + r))
        for r in range(50)
    ])  # (50, B)
    se = reps.std(0) / math.sqrt(reps.shape[0])
    # (zero variance where J has at most one non-zero row, e.g. ReLU units off: then exact)
    assert (se > 0).any(), "the estimate should be random"
    assert ((reps.mean(0) - exact).abs() <= 5 * se + 1e-12 * (1 + exact)).all(), (
        reps.mean(0), exact, se)
    # and it is not the exact value by construction: single draws spread around it
    assert (reps - exact).abs().max() > 1e-6


# ---------------------------------------------------------------------------------------
# the higher-order (CAE+H) term
# ---------------------------------------------------------------------------------------


def brute_higher_order(plain, x, noise, sigma, n_copies, probes=None):
    """mean_c ||P (J(x) - J(x + sigma eps_c))||^2, P = identity when probes is None."""
    J0 = brute_jacobian(plain, x)
    out = []
    for c in range(n_copies):
        diff = J0 - brute_jacobian(plain, x + sigma * noise[c * x.shape[0] : (c + 1) * x.shape[0]])
        if probes is not None:
            diff = torch.einsum("bmk,bkd->bmd", probes, diff)
        out.append(fro2(diff))
    return torch.stack(out).mean(0)


HO_CASES = [  # (hidden, source, method); the closed form only for one-layer MLPs
    (h, s, m)
    for h in [(), (HID,)]
    for s in ["module", "callable_stack"]
    for m in ["exact", "closed_form", "auto"]
    if m != "closed_form" or (not h and s == "module")
]


@pytest.mark.parametrize(
    "hidden,source,method", HO_CASES, ids=[f"{len(h) + 1}L-{s}-{m}" for h, s, m in HO_CASES]
)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus", "gelu"])
def test_higher_order_matches_bruteforce_with_same_noise(activation, hidden, source, method):
    encoder, _, plain = make_source(source, activation, hidden, seed=60)
    x = randn(B, D, seed=61)
    sigma, copies = 0.4, 3
    got = P.higher_order_penalty(encoder, x, sigma, copies, method, generator=gen(62))
    # the implementation draws only the noise (no probes) for deterministic methods
    noise = torch.randn((copies * B, D), generator=gen(62), dtype=DT)
    want = brute_higher_order(plain, x, noise, sigma, copies)
    assert got.shape == (B,) and (want > 0).all()
    torch.testing.assert_close(got, want, **TIGHT)


@pytest.mark.parametrize("source", ["module", "callable_module"])
@pytest.mark.parametrize("hidden", [(), (HID,)], ids=["1layer", "2layers"])
def test_higher_order_hutchinson_same_noise_and_unbiased(hidden, source):
    encoder, _, plain = make_source(source, "tanh", hidden, seed=70)
    x = randn(B, D, seed=71)
    sigma, copies = 0.5, 2
    # deterministic: probes first, then noise, from the same generator
    m = 4
    got = P.higher_order_penalty(
        encoder, x, sigma, copies, "hutchinson", n_probes=m, generator=gen(72)
    )
    g = gen(72)
    probes = raw_rademacher(g, B, m, K)
    noise = torch.randn((copies * B, D), generator=g, dtype=DT)
    torch.testing.assert_close(
        got, brute_higher_order(plain, x, noise, sigma, copies, probes), **TIGHT
    )
    # statistical: many probes converge to the exact value for that same noise
    m = 2000
    got = P.higher_order_penalty(
        encoder, x, sigma, copies, "hutchinson", n_probes=m, generator=gen(73)
    )
    g = gen(73)
    probes = raw_rademacher(g, B, m, K) * math.sqrt(m)  # raw +-1 probes
    noise = torch.randn((copies * B, D), generator=g, dtype=DT)
    exact = brute_higher_order(plain, x, noise, sigma, copies)
    J0 = brute_jacobian(plain, x)
    diffs = [J0 - brute_jacobian(plain, x + sigma * noise[c * B : (c + 1) * B])
             for c in range(copies)]
    per_probe = torch.stack([
        torch.einsum("bmk,bkd->bmd", probes, diff).pow(2).sum(2) for diff in diffs
    ]).mean(0)  # (B, m): one estimate per raw probe
    se = per_probe.std(1) / math.sqrt(m)
    assert (se > 0).all()
    assert ((got - exact).abs() <= 5 * se).all(), (got, exact, se)


def test_higher_order_argument_errors():
    enc = module_encoder("sigmoid")
    x = randn(B, D, seed=80)
    for sigma in (0.0, -1.0):
        with pytest.raises(ValueError, match="sigma"):
            P.higher_order_penalty(enc, x, sigma)
    with pytest.raises(ValueError, match="n_copies"):
        P.higher_order_penalty(enc, x, 0.1, n_copies=0)
    # not a finite number > 0: refused, not a NaN penalty or a comparison error
    for sigma in (math.inf, -math.inf, math.nan, "a", None, True):
        with pytest.raises(ValueError, match=r"sigma=.* must be a finite number > 0"):
            P.higher_order_penalty(enc, x, sigma)
    # not an integer >= 1: refused, not torch.randn's signature dump
    for n_copies in (1.5, "2", None, True, -1):
        with pytest.raises(ValueError, match=r"n_copies=.* must be an integer >= 1"):
            P.higher_order_penalty(enc, x, 0.1, n_copies=n_copies)
    for n_probes in (0, 1.5, "2"):
        with pytest.raises(ValueError, match=r"n_probes=.* must be an integer >= 1"):
            P.higher_order_penalty(enc, x, 0.1, method="hutchinson", n_probes=n_probes)
    # numpy scalars are numbers
    got = P.higher_order_penalty(enc, x, np.float64(0.1), np.int64(2), generator=gen(1))
    want = P.higher_order_penalty(enc, x, 0.1, 2, generator=gen(1))
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_higher_order_is_differentiable_and_vanishes_for_linear_encoders():
    enc = module_encoder("tanh", (HID,), seed=81)
    x = randn(B, D, seed=82)
    ho = P.higher_order_penalty(enc, x, 0.3, 2, "exact", generator=gen(1)).mean()
    gW = torch.autograd.grad(ho, enc.layers[0].weight)[0]
    assert gW.abs().max() > 1e-6
    # an affine encoder has a constant Jacobian: no curvature, zero higher-order term
    lin = module_encoder("identity", (HID,), seed=81)
    assert P.higher_order_penalty(lin, x, 0.3, 2, "exact", generator=gen(1)).abs().max() < 1e-12


# ---------------------------------------------------------------------------------------
# method registry
# ---------------------------------------------------------------------------------------


def test_resolve_method_registry():
    cap = P.AUTO_EXACT_MAX_COMPONENTS
    assert P.resolve_method("auto", n_layers=1, n_components=5) == "closed_form"
    assert P.resolve_method("auto", n_layers=1, n_components=10 * cap) == "closed_form"
    assert P.resolve_method("auto", n_layers=2, n_components=cap) == "exact"
    assert P.resolve_method("auto", n_layers=3, n_components=1) == "exact"
    assert P.resolve_method("auto", n_layers=2, n_components=cap + 1) == "hutchinson"
    for m in ("closed_form", "exact", "hutchinson"):
        assert P.resolve_method(m, n_layers=1, n_components=cap + 1) == m
    for m in ("exact", "hutchinson"):
        assert P.resolve_method(m, n_layers=3, n_components=2) == m
    with pytest.raises(ValueError, match=r"closed_form.*one-layer.*2 layers"):
        P.resolve_method("closed_form", n_layers=2, n_components=3)
    for bad in ("Exact", "closed-form", "sampled", ""):
        with pytest.raises(ValueError, match=r"not known; valid: ") as info:
            P.resolve_method(bad, n_layers=1, n_components=3)
        for m in P.METHODS:
            assert m in str(info.value)


def test_penalty_entry_points_apply_the_registry():
    x = randn(B, D, seed=90)
    deep = module_encoder("tanh", (HID,), seed=91)
    with pytest.raises(ValueError, match="one-layer"):
        P.contractive_penalty(deep, x, "closed_form")
    with pytest.raises(ValueError, match="valid"):
        P.contractive_penalty(deep, x, "nope")
    # a generic callable has no closed form, whatever its depth
    shallow = module_encoder("tanh", seed=91)
    with pytest.raises(ValueError):
        P.contractive_penalty(lambda t: shallow(t), x, "closed_form")
    # auto on a deep small code: exact
    want = fro2(brute_jacobian(deep, x))
    torch.testing.assert_close(P.contractive_penalty(deep, x), want, **TIGHT)
    # auto on a deep wide code (> AUTO_EXACT_MAX_COMPONENTS): the seeded estimate
    wide = MLPEncoder([D, 3, P.AUTO_EXACT_MAX_COMPONENTS + 1], "tanh").double()
    auto = P.contractive_penalty(wide, x, generator=gen(3))
    hutch = P.contractive_penalty(wide, x, "hutchinson", generator=gen(3))
    torch.testing.assert_close(auto, hutch, rtol=0, atol=0)
    assert not torch.allclose(auto, P.contractive_penalty(wide, x, "exact"))


BAD_X = {  # name: (x from a good float64 batch, error type, message)
    "1-D": (lambda x: x[0], ValueError, r"x of shape \(6,\) must be 2-D"),
    "3-D": (lambda x: x.unsqueeze(0), ValueError, r"x of shape \(1, 5, 6\) must be 2-D"),
    "empty": (lambda x: x[:0], ValueError, r"x of shape \(0, 6\) must hold at least 1 sample"),
    "int64": (lambda x: x.long(), TypeError, r"x must be a floating tensor, got dtype torch.int64"),
    "bool": (lambda x: x > 0, TypeError, r"x must be a floating tensor"),
    "numpy": (lambda x: x.numpy(), TypeError, r"x must be a torch.Tensor.*got ndarray"),
}


@pytest.mark.parametrize("entry", ["penalty", "higher_order"])
@pytest.mark.parametrize("source", ["module", "callable_module"])
@pytest.mark.parametrize("case", sorted(BAD_X))
def test_penalty_rejects_bad_x(case, source, entry):
    encoder, _, _ = make_source(source, "tanh", (HID,), seed=95)
    make, error, message = BAD_X[case]
    bad = make(randn(B, D, seed=96))
    for method in ("auto", "exact", "hutchinson"):
        with pytest.raises(error, match=message):
            if entry == "penalty":
                P.contractive_penalty(encoder, bad, method)
            else:
                P.higher_order_penalty(encoder, bad, 0.1, method=method)


@pytest.mark.parametrize("entry", ["penalty", "higher_order"])
@pytest.mark.parametrize("hidden", [(), (HID,)], ids=["1layer", "2layers"])
def test_penalty_rejects_x_the_encoder_cannot_take(hidden, entry):
    """Another number of features or another dtype than the encoder's: a ValueError naming
    x's shape and dtype, from the MLP's weights or from the generic callable's first call
    (chained to torch's RuntimeError), never torch's RuntimeError itself."""
    enc = module_encoder("tanh", hidden, seed=97)  # float64

    def call(encoder, x, method):
        if entry == "penalty":
            return P.contractive_penalty(encoder, x, method)
        return P.higher_order_penalty(encoder, x, 0.1, method=method)

    narrow, single = randn(B, D - 2, seed=98), randn(B, D, seed=98).float()
    for method in ("auto", "exact", "hutchinson"):
        with pytest.raises(ValueError, match=r"x of shape \(5, 4\) has 4 features, .* takes 6"):
            call(enc, narrow, method)
        with pytest.raises(ValueError, match=r"x has dtype torch.float32 but the encoder's "
                                             r"weights are torch.float64"):
            call(enc, single, method)
        for bad, what in ((narrow, r"shape \(5, 4\) and dtype torch.float64"),
                          (single, r"shape \(5, 6\) and dtype torch.float32")):
            with pytest.raises(ValueError, match="the encoder cannot take x of " + what) as info:
                call(lambda t: enc(t), bad, method)
            assert isinstance(info.value.__cause__, RuntimeError)
    # a callable that does not return (batch, n_components) codes
    x = randn(B, D, seed=99)
    for wrong, got in ((lambda t: (enc(t),), "tuple"), (lambda t: enc(t)[:, 0], r"\(1,\)")):
        with pytest.raises(ValueError, match="codes of shape .*it returned " + got):
            call(wrong, x, "exact")
    # the same encoder in float32 takes float32 x
    enc32 = module_encoder("tanh", hidden, seed=97).float()
    assert call(enc32, single, "exact").dtype == torch.float32
    assert call(lambda t: enc32(t), single, "exact").dtype == torch.float32


def test_penalty_rejects_bad_n_probes():
    enc = module_encoder("tanh", (HID,), seed=94)
    x = randn(B, D, seed=94)
    for method in ("exact", "hutchinson"):
        for bad in (0, 1.5, "2", None):
            with pytest.raises(ValueError, match=r"n_probes=.* must be an integer >= 1"):
                P.contractive_penalty(enc, x, method, n_probes=bad)
    for bad in (1.5, "2"):  # the per-step helper: a TypeError from Python or torch
        with pytest.raises(TypeError):
            P.rademacher_probes(B, bad, K)
    with pytest.raises(ValueError, match="n_probes"):
        P.rademacher_probes(B, 0, K)


def test_mlp_sketch_errors():
    enc = module_encoder("tanh", (HID,), seed=92)
    _, derivs = enc.derivatives(randn(B, D, seed=93))
    with pytest.raises(ValueError, match="one layer"):
        P.mlp_sketch("closed_form", enc.weights, derivs)
    with pytest.raises(ValueError, match="probes"):
        P.mlp_sketch("hutchinson", enc.weights, derivs)
    with pytest.raises(ValueError, match="not concrete"):
        P.mlp_sketch("auto", enc.weights, derivs)


# ---------------------------------------------------------------------------------------
# regressions: the mistakes of REFERENCE.md section 4
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["identity", "sigmoid", "tanh"])
def test_bug1_frozen_weights(activation):
    enc = module_encoder(activation, seed=100)
    act = get_activation(activation)
    W, b = enc.layers[0].weight, enc.layers[0].bias
    x = randn(B, D, seed=101)
    W_frozen = W.detach().clone()  # get_weights() / state_dict() / .data copy

    # (a) the seed's code: h from the live layer, ||W_j||^2 from the frozen copy
    def seed_style():
        z = enc.layers[0](x)
        d = act.derivative(z, act.fn(z))
        return (d.pow(2) * W_frozen.pow(2).sum(1)).sum(1).mean()

    # (b) everything from a frozen copy: no path to W at all
    z_f = F.linear(x, W_frozen, b.detach())
    fully_frozen = (act.derivative(z_f, act.fn(z_f)).pow(2) * W_frozen.pow(2).sum(1)).sum(1).mean()
    assert not fully_frozen.requires_grad

    def ours():
        return P.contractive_penalty(enc, x, "closed_form").mean()

    # same forward value ...
    torch.testing.assert_close(ours(), seed_style(), **TIGHT)
    torch.testing.assert_close(ours(), fully_frozen, **TIGHT)
    # ... but only ours has the right gradient in W
    g_ours = torch.autograd.grad(ours(), W)[0]
    bug = seed_style()
    g_bug = torch.autograd.grad(bug, W)[0] if bug.requires_grad else torch.zeros_like(W)
    fd = torch.tensor([[fd_param(ours, W, (i, j)) for j in range(D)] for i in range(K)], dtype=DT)
    torch.testing.assert_close(g_ours, fd, rtol=1e-5, atol=1e-8)
    assert g_ours.abs().max() > 1e-3
    assert (g_bug - fd).abs().max() > 1e-2 * fd.abs().max(), "frozen-W gradient should be wrong"
    if activation == "identity":  # s' = 1: the frozen-W penalty has no gradient in W at all
        assert torch.equal(g_bug, torch.zeros_like(W))


@pytest.mark.parametrize(
    "activation", ["tanh", "relu", "softplus", "leaky_relu", "elu", "silu", "gelu", "identity"]
)
def test_bug2_sigmoid_derivative_with_other_activations(activation):
    enc = module_encoder(activation, seed=110)
    x = randn(B, D, seed=111)
    W = enc.layers[0].weight
    h = enc(x)
    buggy = ((h * (1 - h)).pow(2) * W.pow(2).sum(1)).sum(1)
    want = fro2(brute_jacobian(enc, x))
    ours = P.contractive_penalty(enc, x, "closed_form")
    torch.testing.assert_close(ours, want, **TIGHT)
    assert not torch.allclose(buggy, want, rtol=1e-3), "the sigmoid formula should be wrong here"


@pytest.mark.parametrize("method", ["closed_form", "exact", "exact-func"])
@pytest.mark.parametrize("activation", ["tanh", "identity"])
def test_bug3_grad_with_ones_is_not_the_frobenius_norm(activation, method):
    # units in opposite pairs: h_2 = s(-w.x) = -s(w.x) for odd s, so the rows of J cancel
    enc = MLPEncoder([D, 4], activation).double()
    g = gen(120)
    w = torch.randn(2, D, generator=g, dtype=DT)
    with torch.no_grad():
        enc.layers[0].weight.copy_(torch.stack([w[0], -w[0], w[1], -w[1]]))
        enc.layers[0].bias.zero_()
    x = randn(B, D, seed=121)
    xr = x.clone().requires_grad_(True)
    (jt1,) = torch.autograd.grad(enc(xr), xr, grad_outputs=torch.ones(B, 4, dtype=DT))
    buggy = jt1.pow(2).sum(1)  # ||J^T 1||^2
    assert buggy.abs().max() < 1e-20
    if method == "exact-func":
        ours = P.contractive_penalty(lambda t: enc(t), x, "exact")
    else:
        ours = P.contractive_penalty(enc, x, method)
    want = fro2(brute_jacobian(enc, x))
    assert (ours > 1e-3).all()
    torch.testing.assert_close(ours, want, **TIGHT)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_bug4_sum_then_square(activation):
    enc = module_encoder(activation, seed=130)
    act = get_activation(activation)
    x = randn(B, D, seed=131)
    W, b = enc.layers[0].weight, enc.layers[0].bias
    z = F.linear(x, W, b)
    d = act.derivative(z, act.fn(z))
    buggy = (d.pow(2) * W.sum(1).pow(2)).sum(1)  # (sum_i W_ji)^2
    want = fro2(brute_jacobian(enc, x))
    torch.testing.assert_close(P.contractive_penalty(enc, x, "closed_form"), want, **TIGHT)
    torch.testing.assert_close(P.contractive_penalty(enc, x, "exact"), want, **TIGHT)
    assert not torch.allclose(buggy, want, rtol=1e-2)


@pytest.mark.parametrize("hidden", [(), (HID,)], ids=["1layer", "2layers"])
def test_bug5_unsquared_norm_or_mean_of_jacobian(hidden):
    enc = module_encoder("tanh", hidden, seed=140)
    with torch.no_grad():
        for layer in enc.layers:
            layer.weight.mul_(2.0)  # keep ||J||_F^2 well away from 1
    x = randn(B, D, seed=141, scale=0.2)
    J = brute_jacobian(enc, x)
    want = fro2(J)
    assert ((want - 1).abs() > 0.2).all()
    ours = P.contractive_penalty(enc, x, "exact")
    torch.testing.assert_close(ours, want, **TIGHT)
    for buggy in (want.sqrt(), J.mean((1, 2)), J.mean((1, 2)).pow(2), J.pow(2).mean((1, 2)),
                  J.abs().sum((1, 2))):
        assert not torch.allclose(ours, buggy, rtol=1e-2)


def test_bug6_penalty_without_create_graph_has_no_gradient():
    enc = module_encoder("sigmoid", (HID,), seed=150)
    x = randn(B, D, seed=151)
    xr = x.clone().requires_grad_(True)
    h = enc(xr)
    rows = [torch.autograd.grad(h, xr, grad_outputs=torch.eye(K, dtype=DT)[j].expand(B, K),
                                retain_graph=True)[0] for j in range(K)]
    buggy = torch.stack(rows, 1).pow(2).sum((1, 2))
    assert not buggy.requires_grad
    for target, method in ((enc, "exact"), (lambda t: enc(t), "exact"),
                           (lambda t: enc(t), "hutchinson")):
        ours = P.contractive_penalty(target, x, method, n_probes=2, generator=gen(0))
        assert ours.requires_grad
        gW = torch.autograd.grad(ours.mean(), enc.layers[0].weight)[0]
        assert gW.abs().max() > 1e-6
    torch.testing.assert_close(P.contractive_penalty(enc, x, "exact"), buggy.detach(), **TIGHT)


@pytest.mark.parametrize("hidden", [(), (HID,)], ids=["1layer", "2layers"])
def test_bug7_penalty_depends_on_x(hidden):
    enc = module_encoder("sigmoid", hidden, seed=160)
    x1 = randn(B, D, seed=161)
    x2 = randn(B, D, seed=162)
    p1 = P.contractive_penalty(enc, x1, "exact")
    p2 = P.contractive_penalty(enc, x2, "exact")
    torch.testing.assert_close(p1, fro2(brute_jacobian(enc, x1)), **TIGHT)
    torch.testing.assert_close(p2, fro2(brute_jacobian(enc, x2)), **TIGHT)
    assert (p1 - p2).abs().min() > 1e-6
    assert p1.std() > 1e-4  # differs from sample to sample within a batch
    # and its gradient in x is non-zero (weight decay's would be 0)
    xr = x1.clone().requires_grad_(True)
    gx = torch.autograd.grad(P.contractive_penalty(enc, xr, "exact").sum(), xr)[0]
    assert gx.abs().max() > 1e-4


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_bug8_only_last_layer_or_per_layer(activation):
    enc = module_encoder(activation, (HID,), seed=170)
    x = randn(B, D, seed=171)
    _, derivs = enc.derivatives(x)
    W1, W2 = enc.weights
    last_only = (derivs[1].pow(2) * W2.pow(2).sum(1)).sum(1)
    per_layer = last_only + (derivs[0].pow(2) * W1.pow(2).sum(1)).sum(1)
    want = fro2(brute_jacobian(enc, x))
    torch.testing.assert_close(P.contractive_penalty(enc, x, "exact"), want, **TIGHT)
    assert not torch.allclose(last_only, want, rtol=1e-2)
    assert not torch.allclose(per_layer, want, rtol=1e-2)


@pytest.mark.parametrize("sizes", [(9, 4, 3), (9, 5, 4, 2), (4, 6, 3)])
def test_mlp_exact_squared_norm_gram_route_matches_bruteforce(sizes):
    """The Gram-matrix route (n_1 < d) and the direct route (n_1 >= d): values against
    autograd Jacobians, gradients against gradcheck, in float64."""
    torch.manual_seed(0)
    enc = MLPEncoder(list(sizes), "tanh").double()
    x = torch.randn(5, sizes[0], dtype=torch.float64)
    _, derivs = enc.derivatives(x)
    got = P.mlp_exact_squared_norm(enc.weights, derivs)
    J = torch.stack([torch.autograd.functional.jacobian(
        lambda v: enc(v.unsqueeze(0)).squeeze(0), xb) for xb in x])
    torch.testing.assert_close(got, J.pow(2).sum((1, 2)), rtol=1e-10, atol=1e-12)
    assert torch.equal(P.contractive_penalty(enc, x, "exact"), got)

    def pen(*ws):
        h, ds = x, []
        for w, layer in zip(ws, enc.layers):
            z = h @ w.T + layer.bias
            h = torch.tanh(z)
            ds.append(1 - h * h)
        return P.mlp_exact_squared_norm(list(ws), ds).sum()

    ws = [w.detach().clone().requires_grad_(True) for w in enc.weights]
    assert torch.autograd.gradcheck(pen, ws)


def test_penalty_takes_low_precision_x_under_autocast():
    enc = module_encoder("sigmoid", (), seed=95)
    x = randn(B, D, seed=95).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = P.contractive_penalty(enc.float(), x.bfloat16())
    assert p.shape == (B,) and torch.isfinite(p).all()


@pytest.mark.parametrize("error", P._DEVICE_ERRORS)
def test_generic_encoder_device_errors_pass_through(error):
    """Out of memory or a failed kernel is the device's trouble: raised as is, not relabelled
    as a bad x (a ValueError)."""
    def encoder(x):
        raise error("device trouble")

    with pytest.raises(error, match="device trouble"):
        P.contractive_penalty(encoder, torch.ones(3, 4))


def test_generic_encoder_bad_input_is_a_value_error():
    enc = torch.nn.Linear(5, 2)
    with pytest.raises(ValueError, match="cannot take x of shape"):
        P.contractive_penalty(enc, torch.ones(3, 4))
