"""What bounds one training step of the seed configuration on a GPU (a probe, not a test).

    python benchmarks/cuda_steps.py [--device cuda] [--json OUT]

Measures, in one process on one card:

* kernel launch cost: a loop of tiny eager kernels, and the same kernels replayed as one
  CUDA graph (microseconds per kernel);
* the seed configuration (784 -> 64 sigmoid -> 784 linear, MSE, Adam, batch 100, 55,000
  resident random rows) through ``training.Trainer`` epochs, in variants: the default
  (hand-derived step, ``GRAPH_STEPS`` steps per CUDA graph, the Adam update cut into
  pieces), no penalty, eager, torch's fused Adam step with whole parameters, more steps
  per graph, bf16 autocast, the autograd step instead of the hand-derived one, and the
  hand-derived step through ``torch.compile``;
* with ``torch.profiler`` (where CUPTI works), kernels per step and their summed GPU time,
  against the wall time per step.

Samples/s are medians over timed epochs after a warm-up epoch (capture and compile excluded).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from contractive import fastpath, training  # noqa: E402
from contractive.models import CAEConfig, ContractiveAutoencoderModule  # noqa: E402
from contractive.training import TrainConfig, Trainer, resolve_device  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def launch_cost(device: torch.device, n: int = 2000) -> dict:
    """Microseconds per tiny kernel: eager launches, and nodes of one replayed graph."""
    x = torch.zeros(1, device=device)
    for _ in range(100):
        x.add_(1)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        x.add_(1)
    _sync(device)
    out = {"eager_us_per_kernel": 1e6 * (time.perf_counter() - t0) / n}
    if device.type == "cuda":
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            x.add_(1)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        nodes = 500
        with torch.cuda.graph(graph):
            for _ in range(nodes):
                x.add_(1)
        graph.replay()
        _sync(device)
        t0 = time.perf_counter()
        reps = 10
        for _ in range(reps):
            graph.replay()
        _sync(device)
        out["graph_us_per_node"] = 1e6 * (time.perf_counter() - t0) / (reps * nodes)
    return out


def _module(lam: float, device: torch.device) -> ContractiveAutoencoderModule:
    cfg = CAEConfig(in_features=784, n_components=64, contractive_weight=lam)
    return ContractiveAutoencoderModule(cfg, seed=0).to(device)


def _compiled(module):
    step = torch.compile(functools.partial(fastpath.one_layer_step, module))
    return lambda x, generator=None: step(x)


VARIANTS = {
    # name: (contractive weight, GRAPH_STEPS, graphs on, precision, step override)
    "default (penalty)": (1e-3, None, True, "float32", None),
    "stock fused Adam (penalty)": (1e-3, None, True, "float32", "stock-adam"),
    "no penalty": (0.0, None, True, "float32", None),
    "eager (penalty)": (1e-3, None, False, "float32", None),
    "eager, no penalty": (0.0, None, False, "float32", None),
    "64 steps per graph (penalty)": (1e-3, 64, True, "float32", None),
    "64 steps per graph, no penalty": (0.0, 64, True, "float32", None),
    "bf16 autocast (penalty)": (1e-3, None, True, "bf16", None),
    "autograd step, graphed (penalty)": (1e-3, None, True, "float32", "autograd"),
    "torch.compile step, graphed (penalty)": (1e-3, None, True, "float32", "compile"),
    "torch.compile step, graphed, no penalty": (0.0, None, True, "float32", "compile"),
    "foreach Adam, graphed (penalty)": (1e-3, None, True, "float32", "foreach"),
    "torch.compile step, foreach Adam, graphed (penalty)": (1e-3, None, True, "float32",
                                                          "compile+foreach"),
}


def run_variant(name: str, data: torch.Tensor, device: torch.device, epochs: int,
                profile: bool) -> dict:
    lam, k, graphs, precision, override = VARIANTS[name]
    os.environ["CONTRACTIVE_CUDA_GRAPHS"] = "1" if graphs else "0"
    saved_k = training.GRAPH_STEPS
    if k is not None:
        training.GRAPH_STEPS = k
    try:
        module = _module(lam, device)
        if override == "autograd":
            module.forward_backward = None  # the Trainer then calls forward + backward
        elif override and override.startswith("compile"):
            module.forward_backward = _compiled(module)
        trainer = Trainer(module, TrainConfig(batch_size=100, precision=precision), device)
        if override and override.endswith("foreach"):
            trainer.optimizer = torch.optim.Adam(module.parameters(), lr=1e-3, foreach=True,
                                                 capturable=device.type == "cuda")
        if override and override.endswith(("foreach", "stock-adam")):
            trainer.split_adam = False  # torch's own step, its parameters whole
        t0 = time.perf_counter()
        trainer._train_epoch((data,))  # warm-up: capture / compile
        _sync(device)
        first = time.perf_counter() - t0
        times = []
        for _ in range(epochs):
            t0 = time.perf_counter()
            sums = trainer._train_epoch((data,))
            _sync(device)
            times.append(time.perf_counter() - t0)
        n = data.shape[0]
        out = {"variant": name, "samples_per_s": n / statistics.median(times),
               "step_us": 1e6 * statistics.median(times) / (n // 100),
               "first_epoch_s": first, "graphed": trainer._graphs is not None,
               "loss": float(sums["loss"]) / n}
        if profile:
            out.update(_profile(trainer, data, device))
        return out
    except Exception as exc:  # a variant that cannot run is reported, not fatal
        return {"variant": name, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    finally:
        training.GRAPH_STEPS = saved_k


def _profile(trainer: Trainer, data: torch.Tensor, device: torch.device) -> dict:
    """Kernels per step and their summed GPU time over one epoch, from torch.profiler."""
    if device.type != "cuda":
        return {}
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            trainer._train_epoch((data,))
            _sync(device)
        steps = data.shape[0] // 100
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        gpu_us = sum(e.self_device_time_total for e in kernels)
        top: dict[str, float] = {}
        for e in kernels:
            top[e.name] = top.get(e.name, 0.0) + e.self_device_time_total
        return {"kernels_per_step": len(kernels) / steps, "gpu_us_per_step": gpu_us / steps,
                "top_kernels_us_per_step": {k[:60]: v / steps for k, v in
                                            sorted(top.items(), key=lambda kv: -kv[1])[:8]}}
    except Exception as exc:
        return {"profile_error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rows", type=int, default=55000)
    ap.add_argument("--only", nargs="+", metavar="VARIANT",
                    help="run these variants only (quote each name)")
    ap.add_argument("--json")
    args = ap.parse_args()
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        ap.error(f"--device: {exc}")
    if args.rows < 100:
        ap.error(f"--rows {args.rows} must be at least 100 (one batch)")
    if args.epochs < 1:
        ap.error(f"--epochs {args.epochs} must be at least 1")
    unknown = [v for v in args.only or () if v not in VARIANTS]
    if unknown:
        ap.error(f"--only: unknown variant(s) {', '.join(map(repr, unknown))}; valid: "
                 f"{', '.join(map(repr, VARIANTS))}")
    gen = torch.Generator().manual_seed(0)
    data = torch.rand(args.rows, 784, generator=gen).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    out = {"device": name, "torch": torch.__version__, "kernel": platform.release(),
           "launch": launch_cost(device), "variants": []}
    print(json.dumps(out["launch"]), flush=True)
    names = args.only or list(VARIANTS)
    for v in names:
        row = run_variant(v, data, device, args.epochs, profile=v in (
            "default (penalty)", "stock fused Adam (penalty)", "eager (penalty)",
            "torch.compile step, graphed (penalty)",
            "torch.compile step, foreach Adam, graphed (penalty)"))
        out["variants"].append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
