"""Speed and memory benchmarks, as ratios measured in one run on one machine.

    .venv/bin/python benchmarks/run.py                      # everything, JSON + markdown
    .venv/bin/python benchmarks/run.py --only deep --quick  # one part, fewer steps

Parts:

* ``seed``: the seed configuration (MNIST, first 55,000 training images, 784 -> 64 sigmoid
  -> 784 linear, MSE + 1e-3 penalty, Adam 1e-3, batch 100, 3 epochs) through the public
  estimator: samples/s (median epoch after the first), test MSE and mean ``||J||_F^2``;
  the same without the penalty (the closed form's overhead; on a CPU also step against
  step in alternating rounds, ``penalty_step_overhead``); and the seed's Keras model
  (``../shared/bench/seed_keras.py``) run in the same benchmark run when a Python with
  Keras is given (``--keras-python``, JAX backend).
* ``deep``: a deep encoder 784-512-128-32 (sigmoid), one training step (forward, backward,
  Adam) at batch 100 with each way of computing the penalty: none, ours exact (the
  Jacobian built from the layers), ours estimated with 1 and 4 probes, generic
  ``torch.func`` (``vmap(jacrev)``), and the one-backward-pass-per-code-unit loop written
  here as the reference; the penalty values side by side, and peak memory (CPU: peak RSS of a
  fresh process per method, above the no-penalty one; GPU: ``max_memory_allocated``).

Targets (issue 5) are ratios: ours against the seed's Keras model on the same machine, the
closed form's overhead, the exact penalty against the per-unit loop.

Threads: ``--threads`` (default: all cores) is set for every part, and on a CPU the Keras
process is confined to as many cores; run on a quiet machine. The seed part also times the
five matrix products of one step alone on a CPU (``gemm_ceiling``): torch's GEMM time of
one step, called one by one on cache-hot inputs, against which ours and Keras's speeds read
as a share (a fused implementation could shave a little off it, not much).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
KERAS_SCRIPT = REPO.parent / "shared" / "bench" / "seed_keras.py"
DEEP = (784, 512, 128, 32)
METHODS = ("none", "exact", "hutchinson-1", "hutchinson-4", "torch.func", "per-unit loop")


# -- the seed configuration ---------------------------------------------------------------


def _median_time(fn, device: str, reps: int = 200) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls (after a warm-up)."""
    dev = torch.device(device)
    for _ in range(10):
        fn()
    times = []
    for _ in range(reps):
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_ceiling(device: str, batch: int = 100, d: int = 784, k: int = 64,
                 thread_scaling: bool = False) -> dict:
    """The five matrix products of one seed step alone (float32): ``x W^T``, ``h V^T``,
    ``g^T h``, ``g V``, ``dz^T x``, called one by one on cache-hot inputs: a step that
    computes them in float32 on this machine can hardly beat ``batch`` samples per their
    time, so ours and Keras's speeds read as a share of this ceiling.
    On a CPU, also a 2048 x 2048 product at one thread and at the run's thread count: if
    more threads do not speed it up, the machine has one core's worth of arithmetic."""
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    x, g = (torch.rand(batch, d, generator=gen).to(dev) for _ in range(2))
    h, dz = (torch.rand(batch, k, generator=gen).to(dev) for _ in range(2))
    W, V = torch.rand(k, d, generator=gen).to(dev), torch.rand(d, k, generator=gen).to(dev)

    def five():
        x @ W.T, h @ V.T, g.T @ h, g @ V, dz.T @ x

    t = _median_time(five, device)
    out = {"step_gemms_us": t * 1e6, "samples_per_s": batch / t}
    if thread_scaling and dev.type == "cpu":  # once, after the fits: it switches threads
        A, B = torch.rand(2048, 2048, generator=gen), torch.rand(2048, 2048, generator=gen)
        threads = torch.get_num_threads()
        gflops = {}
        for n in sorted({1, threads}):
            torch.set_num_threads(n)
            gflops[n] = 2 * 2048**3 / _median_time(lambda: A @ B, device, reps=5) / 1e9
        torch.set_num_threads(threads)
        out["gemm_2048_gflops_by_threads"] = gflops
    return out


def penalty_step_overhead(X: torch.Tensor, rounds: int = 40, steps: int = 25) -> dict:
    """CPU: the training step with the closed-form penalty against the step without it,
    timed in alternating rounds of ``steps`` steps each (random batches of 100 rows of the
    resident ``X``), the order swapped every round. This machine's speed drifts between
    whole fits; within a pair of rounds far less, so the median of the per-round ratios is
    the steadier figure for the target (1.10x)."""
    from contractive.models import CAEConfig, ContractiveAutoencoderModule
    from contractive.training import TrainConfig, Trainer, gather

    trainers = {lam: Trainer(ContractiveAutoencoderModule(
        CAEConfig(in_features=X.shape[1], n_components=64, contractive_weight=lam), seed=0),
        TrainConfig(batch_size=100), torch.device("cpu")) for lam in (1e-3, 0.0)}
    gen = torch.Generator().manual_seed(0)
    times: dict[float, list[float]] = {lam: [] for lam in trainers}
    for r in range(rounds + 1):
        for lam in (1e-3, 0.0) if r % 2 else (0.0, 1e-3):
            batches = [torch.randint(0, len(X), (100,), generator=gen) for _ in range(steps)]
            t0 = time.perf_counter()
            for idx in batches:
                trainers[lam]._step(gather((X,), idx))
            if r:  # round 0 warms up
                times[lam].append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(times[1e-3], times[0.0])]
    return {"median_ratio": statistics.median(ratios),
            "p10_ratio": float(np.percentile(ratios, 10)),
            "p90_ratio": float(np.percentile(ratios, 90)),
            "step_us_penalty": 1e6 * statistics.median(times[1e-3]) / steps,
            "step_us_no_penalty": 1e6 * statistics.median(times[0.0]) / steps,
            "rounds": rounds, "steps_per_round": steps}


def bench_seed(device: str, data_dir: str | None, epochs: int, repeats: int) -> dict:
    """The seed configuration, ``repeats`` times with and without the penalty, interleaved
    (this machine's speed drifts): samples/s is the median over every epoch but the first
    of each fit; the test figures are the first fit's (all fits are identical)."""
    from contractive import ContractiveAutoencoder
    from contractive.data import load_mnist

    ds = load_mnist(data_dir)
    X, X_test = ds.X_train[:55000], ds.X_test
    out: dict = {}
    # a CPU's ceiling only: on a GPU five eager launches time the launches, not the GEMMs
    cpu = torch.device(device).type == "cpu"
    ceilings = []
    for _ in range(repeats):
        if cpu:
            ceilings.append(gemm_ceiling(device))  # between fits: this machine's speed drifts
        for name, lam in (("penalty", 1e-3), ("no penalty", 0.0)):
            est = ContractiveAutoencoder(
                n_components=64, contractive_weight=lam, learning_rate=1e-3, batch_size=100,
                max_epochs=epochs, device=device, random_state=0,
            ).fit(X)
            times = [h["time_s"] for h in est.history_]
            if name not in out:
                out[name] = {
                    "epoch_s": [],
                    "test_mse": -est.score(X_test),
                    "test_mean_jacobian_frobenius_sq": float(np.mean(est.penalty(X_test))),
                }
            out[name]["epoch_s"] += times[1:] or times
    if device.startswith("cuda"):  # the same, eager: what the CUDA graphs buy
        os.environ["CONTRACTIVE_CUDA_GRAPHS"] = "0"
        est = ContractiveAutoencoder(
            n_components=64, contractive_weight=1e-3, learning_rate=1e-3, batch_size=100,
            max_epochs=epochs, device=device, random_state=0,
        ).fit(X)
        os.environ.pop("CONTRACTIVE_CUDA_GRAPHS")
        out["penalty, eager"] = {
            "epoch_s": [h["time_s"] for h in est.history_][1:],
            "test_mse": -est.score(X_test),
            "test_mean_jacobian_frobenius_sq": float(np.mean(est.penalty(X_test))),
        }
    for name in ("penalty", "no penalty", "penalty, eager"):
        if name in out:
            out[name]["samples_per_s"] = len(X) / statistics.median(out[name]["epoch_s"])
    out["penalty_overhead"] = (out["no penalty"]["samples_per_s"]
                               / out["penalty"]["samples_per_s"])
    if not cpu:
        return out
    out["penalty_step_overhead"] = penalty_step_overhead(torch.as_tensor(X))
    ceilings.append(gemm_ceiling(device, thread_scaling=True))
    step_us = statistics.median(c["step_gemms_us"] for c in ceilings)
    out["gemm_ceiling"] = {
        "samples_per_s": 100 / (step_us * 1e-6), "step_gemms_us": step_us,
        **{k: v for k, v in ceilings[-1].items() if k.startswith("gemm_2048")},
    }
    return out


def _pinned(cmd: list[str], threads: int | None) -> list[str]:
    """``cmd`` confined to ``threads`` CPUs with ``taskset`` (when fewer than all and
    ``taskset`` exists): XLA sizes its thread pool from the CPUs it may use, so Keras then
    runs on as many cores as our ``--threads``."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not threads or not cpus or threads >= len(cpus) or not shutil.which("taskset"):
        return cmd
    return ["taskset", "-c", ",".join(map(str, cpus[:threads])), *cmd]


def bench_keras(python: str, data_dir: str | None, epochs: int,
                script: Path = KERAS_SCRIPT, threads: int | None = None) -> dict | None:
    if not python:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "keras.json"
        cmd = [python, str(script), "--variants", "plain,fixed", "--epochs", str(epochs),
               "--json", str(result)]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        env = {**os.environ, "KERAS_BACKEND": "jax"}
        proc = subprocess.run(_pinned(cmd, threads), capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not result.exists():
            return {"error": (proc.stderr or proc.stdout)[-500:]}
        data = json.loads(result.read_text())
    by = {r["variant"]: r for r in data["results"]}
    return {
        "versions": data["versions"],
        "penalty": {"samples_per_s": by["fixed"]["samples_per_s_rest"],
                    "test_mse": by["fixed"]["test_mse"],
                    "test_mean_jacobian_frobenius_sq": by["fixed"]["test_mean_jac_frob_sq"]},
        "no penalty": {"samples_per_s": by["plain"]["samples_per_s_rest"]},
    }


# -- the deep encoder ---------------------------------------------------------------------


def _deep_module(method: str, device: torch.device):
    from contractive.models import CAEConfig, ContractiveAutoencoderModule

    concrete = {"exact": "exact", "hutchinson-1": "hutchinson", "hutchinson-4": "hutchinson"}
    cfg = CAEConfig(in_features=DEEP[0], n_components=DEEP[-1], hidden_layer_sizes=DEEP[1:-1],
                    contractive_weight=0.0 if method == "none" else 1e-3,
                    penalty_method=concrete.get(method, "exact"),
                    n_probes=4 if method == "hutchinson-4" else 1)
    return ContractiveAutoencoderModule(cfg, seed=0).to(device)


def _reference_penalty(module, x: torch.Tensor, method: str) -> torch.Tensor:
    """The outside references: per-unit autograd loop, and generic torch.func."""
    from contractive.penalty import func_jacobian, squared_norm

    if method == "torch.func":
        return squared_norm(func_jacobian(module.encoder, x)).mean()
    xr = x.detach().requires_grad_(True)
    h = module.encoder(xr)
    total = 0.0
    for j in range(h.shape[1]):  # one backward pass per code unit
        (g,) = torch.autograd.grad(h[:, j].sum(), xr, create_graph=True)
        total = total + g.pow(2).sum(1)
    return total.mean()


def _step_fn(module, method: str, opt):
    def step(x, gen):
        if method in ("torch.func", "per-unit loop"):
            h = module.encoder(x)
            rec = module.decode(h)
            pen = _reference_penalty(module, x, method)
            loss = (rec - x).pow(2).mean() + 1e-3 * pen
        else:
            terms = module(x, generator=gen)
            loss, pen = terms["loss"], terms["penalty"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return pen
    return step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def deep_one(method: str, device_name: str, steps: int, batch: int = 100) -> dict:
    """Step time and penalty value of one method (run in its own process for memory)."""
    device = torch.device(device_name)
    module = _deep_module(method, device)
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch, DEEP[0], generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():  # the penalty's value on the fixed batch, before training
        value = float(module.penalty(x).mean())
    if method != "none":
        module.config.contractive_weight = 1e-3
    step = _step_fn(module, method, opt)
    for _ in range(3):
        step(x, gen)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        pen = step(x, gen)
        _sync(device)
        times.append(time.perf_counter() - t0)
    # value of this method's penalty on the same fixed weights as the exact one
    fresh = _deep_module(method, device)
    with torch.enable_grad():
        if method in ("torch.func", "per-unit loop"):
            est = float(_reference_penalty(fresh, x, method))
        elif method == "none":
            est = None
        else:
            est = float(np.mean([float(fresh(x, generator=torch.Generator(device=device)
                                              .manual_seed(s))["penalty"]) for s in range(20)]))
    del pen
    out = {"method": method, "step_ms": 1e3 * statistics.median(times),
           "exact_value": value, "value": est}
    if device.type == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it is not inherited
    from the parent across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_deep(device: str, steps: int, threads: int) -> dict:
    rows = []
    for method in METHODS:
        cmd = [sys.executable, __file__, "--deep-one", method, "--device", device,
               "--steps", str(steps), "--threads", str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append({"method": method, "error": proc.stderr[-400:]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = next(r for r in rows if r["method"] == "none")
    loop = next(r for r in rows if r["method"] == "per-unit loop")
    for r in rows:
        if "step_ms" in r:
            r["vs_no_penalty"] = r["step_ms"] / base["step_ms"]
            r["speedup_vs_loop"] = loop["step_ms"] / r["step_ms"]
        key = "peak_mb" if "peak_mb" in base else "peak_rss_mb"
        if key in r and key in base:
            r["extra_memory_mb"] = r[key] - base[key]
    return {"architecture": "-".join(map(str, DEEP)), "batch": 100, "rows": rows}


# -- report -------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']}; device {result['device']}; "
             f"torch {result['torch']}; threads {result['threads']}.", ""]
    seed = result.get("seed")
    if seed:
        keras = result.get("keras") or {}
        lines += ["| seed configuration (784-64-784, batch 100) | samples/s | test MSE | "
                  "test mean ||J||_F^2 |", "|---|---|---|---|"]
        for name in ("penalty", "no penalty", "penalty, eager"):
            if name not in seed:
                continue
            r = seed[name]
            lines.append(f"| contractive, {name} | {r['samples_per_s']:,.0f} | "
                         f"{r['test_mse']:.4f} | {r['test_mean_jacobian_frobenius_sq']:.2f} |")
        if "penalty" in keras:
            k = keras["penalty"]
            lines.append(f"| seed's Keras model (JAX), penalty | {k['samples_per_s']:,.0f} | "
                         f"{k['test_mse']:.4f} | {k['test_mean_jacobian_frobenius_sq']:.2f} |")
            lines.append(f"| seed's Keras model (JAX), no penalty | "
                         f"{keras['no penalty']['samples_per_s']:,.0f} | | |")
        lines += ["", f"Closed-form penalty overhead: {seed['penalty_overhead']:.2f}x the "
                  "training time without it."]
        step = seed.get("penalty_step_overhead")
        if step:
            lines.append(f"The same, step against step in {step['rounds']} alternating rounds: "
                         f"{step['median_ratio']:.2f}x (10-90%: {step['p10_ratio']:.2f}-"
                         f"{step['p90_ratio']:.2f}x; {step['step_us_penalty']:.0f} against "
                         f"{step['step_us_no_penalty']:.0f} us).")
        if "penalty" in keras:
            ratio = seed["penalty"]["samples_per_s"] / keras["penalty"]["samples_per_s"]
            lines.append(f"Ours against the seed's Keras model (JAX): {ratio:.2f}x samples/s.")
        ceil = seed.get("gemm_ceiling")
        if ceil:
            share = f"ours {seed['penalty']['samples_per_s'] / ceil['samples_per_s']:.0%}"
            if "penalty" in keras:
                share += f", Keras {keras['penalty']['samples_per_s'] / ceil['samples_per_s']:.0%}"
            lines.append(f"Ceiling: the five matrix products of one step alone take "
                         f"{ceil['step_gemms_us']:.0f} us, {ceil['samples_per_s']:,.0f} "
                         f"samples/s ({share} of it).")
            if "gemm_2048_gflops_by_threads" in ceil:
                by = ", ".join(f"{v:.0f} GFLOP/s at {n} thread{'s' * (int(n) > 1)}"
                               for n, v in ceil["gemm_2048_gflops_by_threads"].items())
                lines.append(f"A 2048 x 2048 product: {by}.")
        lines.append("")
    deep = result.get("deep")
    if deep:
        lines += [f"| deep encoder {deep['architecture']}, batch 100 | step ms | x no penalty "
                  "| speed-up vs per-unit loop | penalty value (exact) | extra memory MB |",
                  "|---|---|---|---|---|---|"]
        for r in deep["rows"]:
            if "error" in r:
                lines.append(f"| {r['method']} | failed | | | | |")
                continue
            value = "" if r["value"] is None else f"{r['value']:.4g} ({r['exact_value']:.4g})"
            lines.append(f"| {r['method']} | {r['step_ms']:.2f} | {r['vs_no_penalty']:.2f} | "
                         f"{r['speedup_vs_loop']:.1f} | {value} | "
                         f"{r.get('extra_memory_mb', float('nan')):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("seed", "deep"), help="run one part")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--keras-python", default=os.environ.get("KERAS_PYTHON", ""),
                    help="a Python with keras and jax, for the seed's Keras model")
    ap.add_argument("--keras-script", default=str(KERAS_SCRIPT),
                    help="the seed's Keras script (default ../shared/bench/seed_keras.py)")
    ap.add_argument("--quick", action="store_true", help="fewer steps and epochs")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="fits of the seed configuration")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--deep-one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps or (5 if args.quick else 30)
    if args.deep_one:
        print(json.dumps(deep_one(args.deep_one, args.device, steps)))
        return 0
    data_dir = args.data_dir if Path(args.data_dir).is_dir() else None
    epochs = 2 if args.quick else 3
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or \
        platform.machine()
    result = {"machine": f"{name}, {os.cpu_count()} cores", "device": args.device,
              "torch": torch.__version__, "threads": args.threads,
              "date": time.strftime("%Y-%m-%d")}
    if args.only in (None, "seed"):
        result["seed"] = bench_seed(args.device, data_dir, epochs, args.repeats)
        result["keras"] = bench_keras(args.keras_python, data_dir, epochs,
                                      Path(args.keras_script),
                                      args.threads if args.device == "cpu" else None)
    if args.only in (None, "deep"):
        result["deep"] = bench_deep(args.device, steps, args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.device.replace(':', '')}-{args.only or 'all'}"
    (out / f"{tag}.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (out / f"{tag}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
