"""ContractiveAutoencoderModule and CAEConfig, against hand-written float64 computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contractive.activations import ACTIVATIONS, get_activation
from contractive.models import CAEConfig, ContractiveAutoencoderModule

DT = torch.float64
ACTS = sorted(ACTIVATIONS)
B, D, K = 5, 7, 4
HIDDEN = [(), (6,), (6, 5)]
HIDDEN_IDS = ["1layer", "2layers", "3layers"]
TIGHT = dict(rtol=1e-10, atol=1e-12)
FD_TOL = dict(rtol=1e-6, atol=1e-8)



def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=gen(seed), dtype=DT)


def make_module(hidden=(), activation="sigmoid", *, seed=0, random_biases=True, **kw):
    kw.setdefault("penalty_method", "exact" if hidden else "closed_form")
    cfg = CAEConfig(D, K, hidden_layer_sizes=hidden, activation=activation, **kw)
    module = ContractiveAutoencoderModule(cfg, seed=seed).double()
    if random_biases:  # biases start at zero; make them generic
        g = gen(500 + seed)
        with torch.no_grad():
            for p in module.parameters():
                if p.dim() == 1:
                    p.copy_(0.4 * torch.randn(p.shape, generator=g, dtype=DT))
    return module


def brute_jacobian(f, x, create_graph=False):
    return torch.stack([
        torch.autograd.functional.jacobian(
            lambda xi: f(xi.unsqueeze(0)).squeeze(0), xb, create_graph=create_graph
        )
        for xb in x
    ])


def fd_jacobian(f, x, eps=1e-6):
    cols = []
    with torch.no_grad():
        for i in range(x.shape[1]):
            e = torch.zeros_like(x)
            e[:, i] = eps
            cols.append((f(x + e) - f(x - e)) / (2 * eps))
    return torch.stack(cols, dim=2)


def fro2(J):
    return J.pow(2).flatten(1).sum(1)


def manual_encode(module, x):
    act = get_activation(module.config.activation).fn
    for layer in module.encoder.layers:
        x = act(x @ layer.weight.T + layer.bias)
    return x


def manual_decode(module, h):
    """The decoder written out: mirrored layers, W^T when tied, output activation last."""
    cfg = module.config
    act = get_activation(cfg.activation).fn
    enc_w = [layer.weight for layer in module.encoder.layers]
    biases = list(module.decoder.biases)
    n = len(enc_w)
    for i in range(n):
        if cfg.tied_weights:
            h = h @ enc_w[n - 1 - i] + biases[i]  # W_l^T h, W_l of shape (n_l, n_{l-1})
        else:
            h = h @ module.decoder.weights[i].T + biases[i]
        if i < n - 1:
            h = act(h)
    return torch.sigmoid(h) if cfg.output_activation == "sigmoid" else h


# ---------------------------------------------------------------------------------------
# encoder Jacobian and penalty
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", HIDDEN, ids=HIDDEN_IDS)
@pytest.mark.parametrize("activation", ACTS)
def test_jacobian_and_penalty_match_bruteforce(activation, hidden):
    m = make_module(hidden, activation, seed=ACTS.index(activation))
    x = randn(B, D, seed=1)
    with torch.no_grad():
        zs, t = [], x
        for layer in m.encoder.layers:
            zs.append(layer(t))
            t = m.encoder.act.fn(zs[-1])
    assert min(z.abs().min() for z in zs) > 1e-4, "too close to a kink for finite differences"
    torch.testing.assert_close(m.encode(x), manual_encode(m, x), **TIGHT)
    J = m.jacobian(x)
    assert J.shape == (B, K, D)
    J_ref = brute_jacobian(m.encode, x)
    torch.testing.assert_close(J, J_ref, **TIGHT)
    torch.testing.assert_close(J, fd_jacobian(m.encode, x), **FD_TOL)
    pen = m.penalty(x)
    assert pen.shape == (B,)
    torch.testing.assert_close(pen, fro2(J_ref), **TIGHT)
    assert (pen > 0).sum() >= 3


# ---------------------------------------------------------------------------------------
# forward: the loss terms
# ---------------------------------------------------------------------------------------

FORWARD_CASES = [
    # hidden, tied, method, output, loss, gamma
    ((), False, "closed_form", "linear", "mse", 0.0),
    ((), True, "closed_form", "sigmoid", "bce", 0.0),
    ((), True, "closed_form", "linear", "mse", 0.5),
    ((), False, "exact", "sigmoid", "mse", 0.0),
    ((6,), False, "exact", "linear", "mse", 0.0),
    ((6,), True, "exact", "sigmoid", "bce", 0.7),
    ((6, 5), False, "exact", "linear", "mse", 0.3),
    ((6,), False, "hutchinson", "linear", "mse", 0.0),
    ((6,), True, "hutchinson", "sigmoid", "bce", 0.4),
    ((), False, "hutchinson", "linear", "mse", 0.2),
]


def _case_id(c):
    hidden, tied, method, out, loss, gamma = c
    return f"{len(hidden) + 1}L-{'tied' if tied else 'untied'}-{method}-{out}-{loss}-g{gamma}"


@pytest.mark.parametrize("case", FORWARD_CASES, ids=[_case_id(c) for c in FORWARD_CASES])
@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_forward_terms_match_manual_computation(activation, case):
    hidden, tied, method, out, loss, gamma = case
    lam, sigma, copies, m_probes = 0.37, 0.3, 2, 3
    m = make_module(
        hidden, activation, seed=3, tied_weights=tied, penalty_method=method,
        output_activation=out, loss=loss, contractive_weight=lam, n_probes=m_probes,
        higher_order_weight=gamma, higher_order_sigma=sigma, higher_order_copies=copies,
    )
    x = torch.rand(B, D, generator=gen(4), dtype=DT) if loss == "bce" else randn(B, D, seed=4)
    terms = m(x, generator=gen(5))
    expected_keys = {"reconstruction", "penalty", "loss"} | ({"higher_order"} if gamma else set())
    assert set(terms) == expected_keys
    for v in terms.values():
        assert v.shape == () and v.dtype == DT

    # reconstruction, written out
    r = manual_decode(m, manual_encode(m, x))
    torch.testing.assert_close(m.decode(m.encode(x)), r, **TIGHT)
    if loss == "bce":
        recon = F.binary_cross_entropy(r, x)
    else:
        recon = (r - x).pow(2).mean(1).mean()
    torch.testing.assert_close(terms["reconstruction"], recon, **TIGHT)

    # the random draws, reproduced: probes (hutchinson) first, then the CAE+H noise
    g = gen(5)
    probes = None
    if method == "hutchinson":
        bits = torch.randint(0, 2, (B, m_probes, K), generator=g)
        probes = (2 * bits - 1).to(DT) / math.sqrt(m_probes)
    J = brute_jacobian(m.encode, x)

    def sketch_norm2(diff):
        if probes is not None:
            diff = torch.einsum("bmk,bkd->bmd", probes, diff)
        return fro2(diff)

    torch.testing.assert_close(terms["penalty"], sketch_norm2(J).mean(), **TIGHT)
    want_loss = recon + lam * terms["penalty"]
    if gamma:
        noise = torch.randn((copies * B, D), generator=g, dtype=DT)
        ho = torch.stack([
            sketch_norm2(J - brute_jacobian(m.encode, x + sigma * noise[c * B : (c + 1) * B]))
            for c in range(copies)
        ]).mean(0).mean()
        assert ho > 0
        torch.testing.assert_close(terms["higher_order"], ho, **TIGHT)
        want_loss = want_loss + gamma * ho
    torch.testing.assert_close(terms["loss"], want_loss, **TIGHT)
    torch.testing.assert_close(
        terms["loss"],
        terms["reconstruction"] + lam * terms["penalty"] + gamma * terms.get("higher_order", 0.0),
        rtol=1e-14, atol=1e-14,
    )


@pytest.mark.parametrize("hidden", [(), (6,)])
def test_forward_without_contractive_weight_logs_penalty_only(hidden):
    """A plain auto-encoder logs the penalty without training on it: exactly for one layer
    (closed form), as an unbiased one-probe estimate for a deep encoder."""
    method = "exact" if hidden else "closed_form"
    m = make_module(hidden, "sigmoid", seed=6, contractive_weight=0.0, penalty_method=method)
    x = randn(B, D, seed=7)
    terms = m(x)
    assert set(terms) == {"reconstruction", "penalty", "loss"}
    assert not terms["penalty"].requires_grad
    torch.testing.assert_close(terms["loss"], terms["reconstruction"], rtol=0, atol=0)
    exact = fro2(brute_jacobian(m.encode, x)).mean()
    if not hidden:
        torch.testing.assert_close(terms["penalty"], exact, **TIGHT)
        return
    g = gen(11)
    draws = torch.stack([m(x, generator=g)["penalty"] for _ in range(3000)])
    assert abs(draws.mean() - exact) < 5 * draws.std() / math.sqrt(len(draws))


@pytest.mark.parametrize("tied", [False, True])
def test_bce_equals_binary_cross_entropy_on_sigmoid_outputs(tied):
    m = make_module((6,), "tanh", seed=8, output_activation="sigmoid", loss="bce",
                    tied_weights=tied)
    x = torch.rand(B, D, generator=gen(9), dtype=DT)
    h = m.encode(x)
    logits = m.decoder.logits(h, m.encoder.weights)
    out = m.decode(h)
    torch.testing.assert_close(out, torch.sigmoid(logits), **TIGHT)
    per_sample = F.binary_cross_entropy(out, x, reduction="none").mean(1)
    torch.testing.assert_close(m.reconstruction_error(x, logits), per_sample, **TIGHT)
    # by hand: -[x log r + (1 - x) log(1 - r)], mean over features
    by_hand = -(x * out.log() + (1 - x) * (1 - out).log()).mean(1)
    torch.testing.assert_close(per_sample, by_hand, **TIGHT)
    torch.testing.assert_close(m(x)["reconstruction"], F.binary_cross_entropy(out, x), **TIGHT)
    # and it is not the MSE
    assert not torch.allclose(per_sample, (out - x).pow(2).mean(1), rtol=1e-2)


# ---------------------------------------------------------------------------------------
# decoder: tied and untied
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("out", ["linear", "sigmoid"])
@pytest.mark.parametrize("hidden", HIDDEN, ids=HIDDEN_IDS)
def test_tied_decoder_uses_encoder_weights_transposed(hidden, out):
    m = make_module(hidden, "tanh", seed=10, tied_weights=True, output_activation=out)
    names = dict(m.named_parameters())
    assert not any(n.startswith("decoder") and "weight" in n for n in names), sorted(names)
    n_layers = len(hidden) + 1
    assert sum(p.dim() == 2 for p in m.parameters()) == n_layers  # only the encoder's W
    assert m.decoder.weights is None
    h = randn(B, K, seed=11)
    got = m.decode(h)
    torch.testing.assert_close(got, manual_decode(m, h), **TIGHT)
    if n_layers == 1:  # the textbook formula, r = s_out(h W + c)
        W = m.encoder.layers[0].weight
        c = m.decoder.biases[0]
        want = h @ W + c
        torch.testing.assert_close(got, torch.sigmoid(want) if out == "sigmoid" else want, **TIGHT)
    # shared, not copied: changing W changes the decoder
    with torch.no_grad():
        m.encoder.layers[0].weight.mul_(1.5)
    assert not torch.allclose(m.decode(h), got)
    torch.testing.assert_close(m.decode(h), manual_decode(m, h), **TIGHT)


@pytest.mark.parametrize("hidden", HIDDEN, ids=HIDDEN_IDS)
def test_untied_decoder_owns_mirrored_weights(hidden):
    m = make_module(hidden, "sigmoid", seed=12, tied_weights=False)
    sizes = [D, *hidden, K]
    dec_shapes = [tuple(w.shape) for w in m.decoder.weights]
    assert dec_shapes == [(a, b) for a, b in zip(sizes[::-1][1:], sizes[::-1][:-1])]
    assert [tuple(b.shape) for b in m.decoder.biases] == [(s,) for s in sizes[::-1][1:]]
    h = randn(B, K, seed=13)
    torch.testing.assert_close(m.decode(h), manual_decode(m, h), **TIGHT)
    # not tied: the decoder does not follow the encoder's weights
    before = m.decode(h)
    with torch.no_grad():
        m.encoder.layers[0].weight.mul_(1.5)
    torch.testing.assert_close(m.decode(h), before, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------

BAD_CONFIGS = [
    (dict(loss="l1"), r"loss='l1' is not known; valid: mse, bce"),
    (dict(output_activation="tanh"), r"output_activation='tanh' is not known; valid: linear"),
    (dict(loss="bce"), r"loss='bce' needs output_activation='sigmoid'"),
    (dict(loss="bce", output_activation="linear"), r"needs output_activation='sigmoid'"),
    (dict(hidden_layer_sizes=(5,), penalty_method="closed_form"), r"closed_form.*one layer"),
    (dict(penalty_method="auto"), r"penalty_method='auto' must be concrete"),
    (dict(penalty_method="sampled"), r"must be concrete: closed_form, exact or hutchinson"),
    (dict(activation="sigmod"), r"activation='sigmod' is not a known activation; valid: .*tanh"),
]


@pytest.mark.parametrize("kwargs,match", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CAEConfig(D, K, **kwargs)


def test_config_valid_and_roundtrip():
    cfg = CAEConfig(D, K, hidden_layer_sizes=[6, 5], activation="relu", loss="bce",
                    output_activation="sigmoid", penalty_method="hutchinson")
    assert cfg.hidden_layer_sizes == (6, 5)
    assert cfg.sizes == [D, 6, 5, K]
    d = cfg.to_dict()
    assert d["hidden_layer_sizes"] == [6, 5]
    assert CAEConfig(**d) == cfg


# ---------------------------------------------------------------------------------------
# initialisation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_same_seed_same_parameters_other_seed_other(tied):
    cfg = CAEConfig(D, K, hidden_layer_sizes=(6,), tied_weights=tied, penalty_method="exact")
    a = ContractiveAutoencoderModule(cfg, seed=3)
    torch.manual_seed(123)  # the global RNG must not matter
    b = ContractiveAutoencoderModule(cfg, seed=3)
    c = ContractiveAutoencoderModule(cfg, seed=4)
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert pa.keys() == pb.keys() == pc.keys()
    for name in pa:
        assert torch.equal(pa[name], pb[name]), name
        if pa[name].dim() == 2:
            assert not torch.equal(pa[name], pc[name]), name
            fan_out, fan_in = pa[name].shape
            bound = math.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform
            assert pa[name].abs().max() <= bound
            assert pa[name].abs().max() > 0.5 * bound
        else:
            assert torch.equal(pa[name], torch.zeros_like(pa[name])), name
    # reset_parameters(seed) reproduces the construction
    with torch.no_grad():
        for p in c.parameters():
            p.add_(1.0)
    c.reset_parameters(3)
    for name, p in c.named_parameters():
        assert torch.equal(p, pa[name]), name


# ---------------------------------------------------------------------------------------
# gradients of the training loss
# ---------------------------------------------------------------------------------------

GRAD_CASES = [((), False, "closed_form"), ((), True, "closed_form"), ((6,), False, "exact"),
              ((6,), True, "exact"), ((6, 5), False, "exact")]


@pytest.mark.parametrize(
    "hidden,tied,method", GRAD_CASES,
    ids=[f"{len(h) + 1}L-{'tied' if t else 'untied'}-{m}" for h, t, m in GRAD_CASES],
)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus"])
def test_loss_gradients_reach_every_parameter_through_the_penalty(activation, hidden, tied, method):
    lam = 0.8
    x = randn(B, D, seed=20)

    def grads(weight):
        m = make_module(hidden, activation, seed=21, tied_weights=tied, penalty_method=method,
                        contractive_weight=weight)
        names = [n for n, _ in m.named_parameters()]
        params = list(m.parameters())
        return m, names, torch.autograd.grad(m(x)["loss"], params)

    m, names, g_pen = grads(lam)
    _, _, g_plain = grads(0.0)
    for name, g in zip(names, g_pen):
        assert g.abs().max() > 1e-8, f"no gradient reaches {name}"
    # the same gradients from a loss written out by hand: MSE of manual_decode (which uses
    # the encoder's W in the tied decoder) + lam * mean ||J||_F^2 by autograd brute force
    params = list(m.parameters())
    recon = (manual_decode(m, manual_encode(m, x)) - x).pow(2).mean()
    g_recon = torch.autograd.grad(recon, params, retain_graph=True)
    brute = fro2(brute_jacobian(m.encode, x, create_graph=True)).mean()
    g_brute = torch.autograd.grad(brute, params, allow_unused=True)
    for name, gp, g0, gr, gb in zip(names, g_pen, g_plain, g_recon, g_brute):
        gb = torch.zeros_like(gp) if gb is None else gb
        torch.testing.assert_close(g0, gr, rtol=1e-9, atol=1e-12, msg=name)
        torch.testing.assert_close(gp, gr + lam * gb, rtol=1e-8, atol=1e-11, msg=name)
        torch.testing.assert_close(gp - g0, lam * gb, rtol=1e-8, atol=1e-11, msg=name)
        if name.startswith("encoder") and name.endswith("weight"):
            assert (gp - g0).abs().max() > 1e-6, f"the penalty does not reach {name}"
        if name.startswith("decoder"):
            torch.testing.assert_close(gp, g0, rtol=0, atol=1e-14, msg=name)


def test_hutchinson_and_higher_order_gradients_reach_encoder():
    x = randn(B, D, seed=30)
    grads = {}
    for lam, gamma in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5)):
        m = make_module((6,), "tanh", seed=31, penalty_method="hutchinson", n_probes=2,
                        contractive_weight=lam, higher_order_weight=gamma)
        loss = m(x, generator=gen(32))["loss"]
        grads[lam, gamma] = torch.autograd.grad(loss, m.encoder.layers[0].weight)[0]
    assert (grads[0.5, 0.0] - grads[0.0, 0.0]).abs().max() > 1e-4
    assert (grads[0.0, 0.5] - grads[0.0, 0.0]).abs().max() > 1e-4


@pytest.mark.parametrize("kw, draws", [
    ({}, False),  # the hand-derived one-layer step
    ({"hidden_layer_sizes": (5,), "penalty_method": "exact"}, False),
    ({"hidden_layer_sizes": (5,), "penalty_method": "hutchinson"}, True),  # probes
    ({"hidden_layer_sizes": (5,), "penalty_method": "exact", "contractive_weight": 0.0},
     True),  # the logged penalty of a plain deep auto-encoder is an estimate
    ({"higher_order_weight": 0.1}, True),  # CAE+H draws noise
    ({"penalty_method": "hutchinson"}, True),  # one layer, estimated: probes
    ({"activation": "gelu", "contractive_weight": 0.0}, False),  # autograd, closed form logged
])
def test_draws_random_only_for_probes_and_noise(kw, draws):
    cfg = dict(in_features=8, n_components=3, contractive_weight=0.1)
    cfg.update(kw)
    module = ContractiveAutoencoderModule(CAEConfig(**cfg), seed=0)
    assert module.graph_safe and module.draws_random is draws
    if not draws:  # a step without draws leaves the generator where it was (any path)
        gen = torch.Generator().manual_seed(0)
        module.forward_backward(torch.rand(4, 8), generator=gen)
        assert torch.equal(gen.get_state(), torch.Generator().manual_seed(0).get_state())
