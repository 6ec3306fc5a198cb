"""``adam.step``: torch's fused Adam with parameters cut into pieces, bit for bit as
``optimizer.step()``."""

import math

import pytest
import torch

from contractive import adam
from contractive.models import CAEConfig, ContractiveAutoencoderModule
from contractive.training import TrainConfig, Trainer

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _params(shapes, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(device)) for s in shapes]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shapes", [
    [(64, 784), (784, 64), (64,), (784,)],  # the seed configuration: 28 pieces of 4,096
    [(5, 3), (7,)],  # smaller than one piece
    [(333, 333), (0,), (3,)],  # odd sizes (the kernel's scalar and vector paths); empty
    [(300, 70)] * 40,  # more tensors than one launch takes: not cut
])
@pytest.mark.parametrize("options", [
    dict(lr=1e-3),
    dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01, maximize=True),
])
def test_split_step_equals_the_fused_step_bit_for_bit(device, shapes, options):
    a, b = _params(shapes, device), _params(shapes, device)
    capturable = device == "cuda"
    ref = torch.optim.Adam(a, fused=True, capturable=capturable, **options)
    ours = torch.optim.Adam(b, fused=True, capturable=capturable, **options)
    assert adam.splits(ours)
    gen = torch.Generator().manual_seed(1)
    for it in range(4):
        for pa, pb in zip(a, b):
            g = torch.randn(pa.shape, generator=gen).to(device)
            # a parameter without a gradient in one step is skipped, as torch does
            pa.grad = None if (it == 1 and pa is a[0]) else g.clone()
            pb.grad = None if (it == 1 and pb is b[0]) else g.clone()
        ref.step()
        adam.step(ours)
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)
        for key, value in ref.state[pa].items():
            assert torch.equal(value, ours.state[pb][key]), key
    # the state loads into a stock optimizer: it is torch's own
    torch.optim.Adam(_params(shapes, device), fused=True).load_state_dict(ours.state_dict())


def test_split_step_cuts_the_seed_configuration_into_28_pieces(monkeypatch):
    shapes = [(64, 784), (784, 64), (64,), (784,)]
    params = _params(shapes, "cpu")
    opt = torch.optim.Adam(params, fused=True)
    for p in params:
        p.grad = torch.ones_like(p)
    calls = []
    kernel = torch._fused_adam_

    def counting(params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps, **kw):
        calls.append([len(params), len(grads), len(exp_avgs), len(exp_avg_sqs), len(steps)])
        assert max(t.numel() for t in params) == 4096
        return kernel(params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps, **kw)

    monkeypatch.setattr(torch, "_fused_adam_", counting)
    adam.step(opt)
    assert calls == [[28] * 5]  # 13 + 13 + 1 + 1, in one launch
    assert all(float(opt.state[p]["step"]) == 1 for p in params)  # advanced once each


def test_split_step_follows_each_param_group_settings():
    shapes = [(40, 30), (30,), (50, 20)]
    a, b = _params(shapes, "cpu"), _params(shapes, "cpu")

    def groups(ps):
        return [dict(params=ps[:2], lr=1e-2, weight_decay=0.1),
                dict(params=ps[2:], lr=1e-3, betas=(0.5, 0.9), maximize=True)]

    ref = torch.optim.Adam(groups(a), fused=True)
    ours = torch.optim.Adam(groups(b), fused=True)
    for _ in range(3):
        for pa, pb in zip(a, b):
            pa.grad = torch.randn_like(pa)
            pb.grad = pa.grad.clone()
        ref.step()
        adam.step(ours)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a, b))


def test_piece_size_keeps_one_launch_and_aligned_pieces():
    for numels in ([50176, 50176, 64, 784], [10], [401408, 65536, 4096, 512, 32, 128] * 2):
        size = adam.piece_size(numels)
        assert size % 1024 == 0
        assert sum(math.ceil(n / size) for n in numels) <= adam.MAX_PIECES
    assert adam.piece_size([10] * 40) == 10  # too many tensors already: one piece each


def test_splits_only_the_fused_adam_it_reproduces():
    p = _params([(3, 2)], "cpu")
    assert adam.splits(torch.optim.Adam(p, fused=True))
    assert not adam.splits(torch.optim.Adam(p))  # not fused
    assert not adam.splits(torch.optim.Adam(p, fused=True, amsgrad=True))
    assert not adam.splits(torch.optim.AdamW(p, fused=True))
    assert not adam.splits(torch.optim.SGD(p, lr=0.1))
    assert not adam.splits(torch.optim.Adam(p, fused=True, lr=torch.tensor(1e-3)))
    q = torch.nn.Parameter(torch.zeros(4, 3).T)  # not contiguous
    assert not adam.splits(torch.optim.Adam([q], fused=True))
    mixed = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3).double())]
    assert not adam.splits(torch.optim.Adam(mixed, fused=True))  # one dtype per launch
    # a state saved by an Adam that was not fused brings its flags along
    fused = torch.optim.Adam(p, fused=True)
    fused.load_state_dict(torch.optim.Adam(p).state_dict())
    assert not adam.splits(fused)


def test_trainer_with_the_split_step_trains_as_with_the_stock_step(monkeypatch):
    data = torch.rand(300, 20, generator=torch.Generator().manual_seed(0))
    calls = []
    split_step = adam.step
    monkeypatch.setattr(adam, "step", lambda opt: calls.append(1) or split_step(opt))
    weights = []
    for split in (True, False):
        module = ContractiveAutoencoderModule(
            CAEConfig(in_features=20, n_components=5, contractive_weight=0.1), seed=0)
        trainer = Trainer(module, TrainConfig(batch_size=32, max_epochs=2), "cpu")
        assert not trainer.split_adam  # on a CPU the stock step (no gain there)
        # the split step runs inside CUDA graph capture only; here, as if capturing
        trainer._split_step = split
        trainer.fit(data)
        weights.append([p.detach().clone() for p in module.parameters()])
    assert len(calls) == 2 * 10  # every step of the first fit, none of the second
    for a, b in zip(*weights):
        assert torch.equal(a, b)


def test_a_foreign_optimizer_state_loads_with_the_trainer_own_flags():
    # a run resumed on another device: the saved groups' fused / capturable / foreach must
    # not replace this trainer's (a CPU state resumed on CUDA could not be graph-captured)
    module = ContractiveAutoencoderModule(
        CAEConfig(in_features=6, n_components=3, contractive_weight=0.1), seed=0)
    trainer = Trainer(module, TrainConfig(), "cpu")
    x = torch.rand(64, 6, generator=torch.Generator().manual_seed(0))
    other = torch.optim.Adam(module.parameters(), lr=0.5, foreach=False)  # not fused
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    other.step()
    trainer._load_optimizer(other.state_dict())
    group = trainer.optimizer.param_groups[0]
    assert group["fused"] and not group["capturable"] and group["lr"] == 0.5  # lr: saved
    assert adam.splits(trainer.optimizer)
    assert all(s["step"].dtype == torch.float32 for s in trainer.optimizer.state.values())
    trainer.fit(x)  # and trains on
