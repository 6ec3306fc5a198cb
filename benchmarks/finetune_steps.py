"""The cost of one fine-tuning step, by what the step does (ratios within one run).

    .venv/bin/python benchmarks/finetune_steps.py [--device cpu] [--threads 1] [--rounds 30]

The reproduction's fine-tuning network (784-1000-10 sigmoid MLP, ``ClassifierModule``),
batch 100, SGD with Nesterov momentum, one step (forward, backward, update) on random
inputs in [0, 1] with the MNIST scaling:

* ``plain``: cross-entropy only;
* ``dropout``: dropout 0.5 on the hidden layer (the reproduction's setting);
* ``adversarial``: dropout and adversarial training (weight 0.5, L2 step 1.0, the
  reproduction's default), stepped as the trainer steps it on a CPU
  (``forward_backward``: the gradient into the parameters only; on CUDA the trainer also
  captures its steps in graphs, and this benchmark steps eagerly);
* ``adversarial, plain backward``: the same with ``loss.backward()``, which also forms the
  input's gradient (the trainer's step before 2026-11-28).

Each round times ``--steps`` steps of every case in turn, starting one case later each
round (so that a busy neighbour slows all of them alike); the times are medians over
rounds, and the ratios medians of the ratios to ``plain`` within each round (so not quite
the ratio of the medians). On a CPU run it on a quiet machine, at the torch threads the
reproduction uses per process (1 on this 2-core machine). JSON and markdown go to
``--out`` (``finetune_steps.json`` / ``.md``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from contractive.classifier import ClassifierModule

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "plain": ({}, True),
    "dropout": ({"dropout": 0.5}, True),
    "adversarial": ({"dropout": 0.5, "adversarial_weight": 0.5, "adversarial_epsilon": 1.0,
                     "adversarial_norm": "l2"}, True),
    "adversarial, plain backward": ({"dropout": 0.5, "adversarial_weight": 0.5,
                                     "adversarial_epsilon": 1.0, "adversarial_norm": "l2"},
                                    False),
}


def _stepper(settings: dict, fused: bool, device: torch.device, batch: int):
    """A function running n steps of one case; its module, optimizer and data are fixed."""
    module = ClassifierModule([784, 1000], 10, "sigmoid", seed=0, **settings).to(device)
    module.input_scale.fill_(1 / 255)
    module.train()
    opt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    gen = torch.Generator(device).manual_seed(0)
    x = torch.rand(batch, 784, generator=gen, device=device) * 255
    y = torch.randint(0, 10, (batch,), generator=gen, device=device)

    def run(n: int) -> None:
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            if fused:
                module.forward_backward(x, y, generator=gen)
            else:
                module(x, y, generator=gen)["loss"].backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return run


def measure(device: torch.device, rounds: int, steps: int, batch: int = 100) -> dict:
    runs = {name: _stepper(s, fused, device, batch) for name, (s, fused) in CASES.items()}
    for run in runs.values():
        run(3)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            runs[name](steps)
            times[name].append((time.perf_counter() - t0) / steps)
    return {name: {"step_ms": 1e3 * statistics.median(t),
                   "x_plain": statistics.median(a / p for a, p in zip(t, times["plain"]))}
            for name, t in times.items()}


def markdown(result: dict) -> str:
    lines = [f"Fine-tuning step, 784-1000-10, batch {result['batch']}, {result['device']}, "
             f"{result['threads']} thread(s), torch {result['torch']}, {result['date']}:", "",
             "| step | ms | x plain |", "|---|---|---|"]
    lines += [f"| {name} | {r['step_ms']:.2f} | {r['x_plain']:.2f} |"
              for name, r in result["cases"].items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--steps", type=int, default=10, help="steps of a case per round")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args()
    if args.rounds < 1 or args.steps < 1 or args.threads < 1:
        ap.error("--rounds, --steps and --threads must be >= 1")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        ap.error(f"--device {args.device!r}: not a torch device (cpu, cuda, cuda:N)")
    if device.type not in ("cpu", "cuda") or (device.type == "cuda"
                                              and not torch.cuda.is_available()):
        ap.error(f"--device {args.device!r}: this benchmark runs on cpu or an available cuda")
    torch.set_num_threads(args.threads)
    name = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    result = {"device": name,
              "threads": args.threads, "torch": torch.__version__, "batch": 100,
              "machine": platform.machine(), "date": time.strftime("%Y-%m-%d"),
              "rounds": args.rounds, "steps": args.steps,
              "cases": measure(device, args.rounds, args.steps)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "finetune_steps.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "finetune_steps.md").write_text(markdown(result))
    sys.stdout.write(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
