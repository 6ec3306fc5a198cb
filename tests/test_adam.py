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


def test_trainer_with_the_split_step_trains_as_with_the_stock_step():
    data = torch.rand(300, 20, generator=torch.Generator().manual_seed(0))
    weights = []
    for split in (True, False):
        module = ContractiveAutoencoderModule(
            CAEConfig(in_features=20, n_components=5, contractive_weight=0.1), seed=0)
        trainer = Trainer(module, TrainConfig(batch_size=32, max_epochs=2), "cpu")
        assert not trainer.split_adam  # on a CPU the stock step (no gain there)
        trainer.split_adam = split
        trainer.fit(data)
        weights.append([p.detach().clone() for p in module.parameters()])
    for a, b in zip(*weights):
        assert torch.equal(a, b)
