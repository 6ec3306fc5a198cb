r"""Adam whose fused update keeps a GPU busy on small models.

``torch.optim.Adam(fused=True)`` updates every parameter in one kernel launch
(``torch._fused_adam_``), but that kernel gives each thread block one chunk of 65,536
elements of one tensor. The seed configuration's 101,200 parameters sit in four tensors
(``W`` and ``V``, 50,176 each, and two biases), so its whole update ran on 4 thread blocks of
an H200's 132 multiprocessors: 22 us of a 108 us training step, latency-bound.

``step(optimizer)`` does what ``optimizer.step()`` does for such an Adam (its state, so
``state_dict``, resuming and schedulers are untouched) but hands the same kernel each
parameter cut into contiguous pieces (views: ``p.view(-1).split(piece)``, with its gradient
and moments cut alike), so the update spreads over up to ``MAX_PIECES`` blocks in one launch.
Adam's update is elementwise, so the result is the same, bit for bit (``tests/test_adam.py``
checks it against ``optimizer.step()``). Each parameter's step count is advanced once, as
torch does, and shared by its pieces. The trainer uses it on CUDA, where ``splits``.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

#: Tensors one launch of torch's fused Adam kernel takes (``depth_to_max_tensors`` for four
#: lists: parameters, gradients and both moments); more pieces would mean more launches.
MAX_PIECES = 36
#: Pieces start at multiples of this many elements, so the kernel's vector loads stay aligned.
_ALIGN = 1024


def piece_size(numels: list[int]) -> int:
    """Elements per piece so that ``numels`` (one entry per parameter) cut into pieces of at
    most that size give at most ``MAX_PIECES`` tensors: ``ceil(total / (MAX_PIECES - n))``
    rounded up to a multiple of 1,024 (each parameter adds at most one partial piece)."""
    spare = MAX_PIECES - len(numels)
    if spare <= 0:
        return max(numels, default=1)
    return math.ceil(math.ceil(sum(numels) / spare) / _ALIGN) * _ALIGN


def _pieces(tensors: list[Tensor], size: int) -> list[Tensor]:
    return [piece for t in tensors for piece in t.view(-1).split(size)]


def splits(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``step`` can cut this optimizer's update into pieces: ``torch.optim.Adam``
    with ``fused=True``, no ``amsgrad``, float learning rates, contiguous parameters."""
    return (type(optimizer) is torch.optim.Adam and hasattr(torch, "_fused_adam_")
            and getattr(optimizer, "grad_scale", None) is None
            and getattr(optimizer, "found_inf", None) is None
            and all(g.get("fused") and not g.get("amsgrad") and not g.get("differentiable")
                    and not g.get("decoupled_weight_decay")
                    and not isinstance(g["lr"], Tensor)
                    and all(p.is_contiguous() for p in g["params"])
                    for g in optimizer.param_groups))


@torch.no_grad()
def step(optimizer: torch.optim.Adam) -> None:
    """``optimizer.step()`` for an Adam that ``splits``, through torch's fused kernel with
    every parameter (and its gradient and moments) cut into pieces of ``piece_size``.
    Step hooks registered on the optimizer are not called."""
    for group in optimizer.param_groups:
        params: list[Tensor] = []
        grads: list[Tensor] = []
        exp_avgs: list[Tensor] = []
        exp_avg_sqs: list[Tensor] = []
        steps: list[Tensor] = []
        optimizer._init_group(group, params, grads, exp_avgs, exp_avg_sqs, [], steps)
        if not params:
            continue
        torch._foreach_add_(steps, 1)  # once per parameter, shared by its pieces
        size = piece_size([p.numel() for p in params])
        counts = [math.ceil(p.numel() / size) for p in params]
        beta1, beta2 = group["betas"]
        torch._fused_adam_(
            _pieces(params, size), _pieces([g.contiguous() for g in grads], size),
            _pieces(exp_avgs, size), _pieces(exp_avg_sqs, size), [],
            [s for s, k in zip(steps, counts) for _ in range(k)],
            lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
            eps=group["eps"], amsgrad=False, maximize=group["maximize"],
        )
