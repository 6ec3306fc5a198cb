"""The one-layer CAE's hand-derived gradient equals autograd's, for every case it covers."""

import pytest
import torch

from contractive import fastpath
from contractive.models import CAEConfig, ContractiveAutoencoderModule

CASES = [
    dict(activation=a) for a in sorted(fastpath.CURVATURES)
] + [
    dict(tied_weights=True),
    dict(output_activation="sigmoid"),
    dict(output_activation="sigmoid", loss="bce"),
    dict(output_activation="sigmoid", loss="bce", tied_weights=True, activation="tanh"),
    dict(contractive_weight=0.0),
]


def _module(**kw):
    cfg = dict(in_features=7, n_components=4, contractive_weight=0.3)
    cfg.update(kw)
    m = ContractiveAutoencoderModule(CAEConfig(**cfg), seed=1).double()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    return m


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_fast_step_equals_autograd(kw):
    fast, slow = _module(**kw), _module(**kw)
    assert fastpath.applies(fast.config)
    x = torch.rand(6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if kw.get("activation") == "elu":  # both branches of its curvature are exercised
        z = x @ fast.encoder.layers[0].weight.T + fast.encoder.layers[0].bias
        assert (z > 0).any() and (z <= 0).any()
    terms = fast.forward_backward(x)
    ref = slow(x)
    ref["loss"].backward()
    for name in ("reconstruction", "penalty", "loss"):
        torch.testing.assert_close(terms[name], ref[name].detach(), rtol=1e-12, atol=1e-14)
    for (name, p), q in zip(fast.named_parameters(), slow.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-13, msg=name)


def test_gradients_accumulate_like_backward():
    m = _module()
    x = torch.rand(5, 7, dtype=torch.float64)
    m.forward_backward(x)
    once = [p.grad.clone() for p in m.parameters()]
    m.forward_backward(x)
    for p, g in zip(m.parameters(), once):
        torch.testing.assert_close(p.grad, 2 * g)


@pytest.mark.parametrize("kw", [dict(hidden_layer_sizes=(5,), penalty_method="exact"),
                                dict(higher_order_weight=0.1), dict(activation="gelu")])
def test_other_configurations_use_autograd(kw):
    m = _module(**kw)
    assert not fastpath.applies(m.config)
    x = torch.rand(5, 7, dtype=torch.float64)
    terms = m.forward_backward(x)
    assert all(p.grad is not None for p in m.parameters())
    assert not terms["loss"].requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kw", [{}, dict(output_activation="sigmoid", loss="bce",
                                         tied_weights=True)])
def test_fast_step_equals_autograd_on_cuda(kw):
    # the GPU computes the squared row norms by a batched GEMV, the CPU by a norm
    fast, slow = _module(**kw).cuda(), _module(**kw).cuda()
    x = torch.rand(6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).cuda()
    terms = fast.forward_backward(x)
    ref = slow(x)
    ref["loss"].backward()
    torch.testing.assert_close(terms["loss"], ref["loss"].detach(), rtol=1e-12, atol=1e-14)
    for p, q in zip(fast.parameters(), slow.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-13)
