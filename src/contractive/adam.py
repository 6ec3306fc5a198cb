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
torch does, and shared by its pieces. Cutting costs the host about 100 us a step, so the
trainer uses it only while capturing a CUDA graph (paid once), where ``splits``.
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
        return max(max(numels, default=1), 1)
    return max(math.ceil(math.ceil(sum(numels) / spare) / _ALIGN), 1) * _ALIGN


def splits(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``step`` can cut this optimizer's update into pieces: ``torch.optim.Adam``
    with ``fused=True`` and ``capturable`` where its parameters are on CUDA, no
    ``amsgrad``, float learning rates, no gradient scaler attached, and in each group one
    device and dtype and contiguous parameters and moments, with each step count on its
    parameter's device (as the fused kernel reads it). Check it again after
    ``load_state_dict``: a state saved by another optimizer brings its own flags."""
    if type(optimizer) is not torch.optim.Adam or not hasattr(torch, "_fused_adam_") \
            or getattr(optimizer, "grad_scale", None) is not None \
            or getattr(optimizer, "found_inf", None) is not None:
        return False
    for g in optimizer.param_groups:
        params = g["params"]
        if not g.get("fused") or g.get("amsgrad") or g.get("differentiable") \
                or g.get("decoupled_weight_decay") or isinstance(g["lr"], Tensor) \
                or any(isinstance(b, Tensor) for b in g["betas"]) \
                or len({(p.device, p.dtype) for p in params}) > 1 \
                or (any(p.is_cuda for p in params) and not g.get("capturable")):
            return False
        for p in params:
            state = optimizer.state.get(p, {})
            if not p.is_contiguous() or any(
                    not state[k].is_contiguous() for k in ("exp_avg", "exp_avg_sq") if k in state):
                return False
            if "step" in state and state["step"].device != p.device:
                return False
    return True


@torch.no_grad()
def step(optimizer: torch.optim.Adam) -> None:
    """``optimizer.step()`` for an Adam that ``splits``, through torch's fused kernel with
    every parameter (and its gradient and moments) cut into pieces of ``piece_size``.
    Step hooks registered on the optimizer are not called. A gradient scaler attached
    since (``grad_scale`` / ``found_inf``) hands the step to ``optimizer.step()``."""
    if getattr(optimizer, "grad_scale", None) is not None \
            or getattr(optimizer, "found_inf", None) is not None:
        optimizer.step()
        return
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
        lists: tuple[list[Tensor], ...] = ([], [], [], [], [])
        for p, g, m, v, count in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
            # views of the parameter and its moments (contiguous: ``splits``), so the kernel
            # updates them in place; the gradient is only read, and may be a copy
            pieces = [t.view(-1).split(size) for t in (p, g.contiguous(), m, v)]
            for out, cut in zip(lists, pieces):
                out.extend(cut)
            lists[4].extend([count] * len(pieces[0]))
        beta1, beta2 = group["betas"]
        torch._fused_adam_(
            *lists[:4], [], lists[4],
            lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
            eps=group["eps"], amsgrad=False, maximize=group["maximize"],
        )
